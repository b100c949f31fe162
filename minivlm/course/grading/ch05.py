"""Checks for chapter 05 (LLaVA and InternVL's pixel unshuffle).

    from minivlm.course.grading import ch05
    ch05.check_pixel_unshuffle(pixel_unshuffle)
    ch05.check_answer_labels(answer_labels)
    ch05.check_splice_image(splice_image)
    ch05.check_prefix_mask(prefix_mask)
    ch05.check_set_stage(set_stage)                      # an experiment: trains a small LLaVA for a few seconds
    ch05.check_visual_tokens_448(visual_tokens_448)      # concept questions
    ch05.check_projector_input_width(projector_input_width)
    ch05.check_loss_targets(loss_targets)

Each check draws its sizes, factors, token ids, positions and seeds at random (`check_rng`), compares
with the reference (`minivlm.pixel_unshuffle`, the label and splice rules of `minivlm.models.llava`,
`attention.causal_mask`) and recognises the usual mistakes (PyTorch's channel order instead of
InternVL's, the window read column by column, the <assistant> token or padding left in the loss, a
row without <assistant> labelled anyway, the <image> placeholder kept next to the visual tokens, a
prefix that lets the answer see the future, the LM left training in stage 1) to give a specific hint.
"""


import torch

from minivlm import pretrained
from minivlm.attention import causal_mask
from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng,
                                    expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.course.grading.clip_tower import train_clip_vision
from minivlm.data import ShapesGenerator, Tokenizer, WorldConfig, sample_vqa
from minivlm.data.tokenizer import SPECIAL_TOKENS
from minivlm.evaluate import encode_vqa, vqa_accuracy
from minivlm.lm import IGNORE_INDEX
from minivlm.models.llava import Llava, LlavaConfig, encode_chat
from minivlm.pixel_unshuffle import pixel_unshuffle
from minivlm.projector import build_projector, num_visual_tokens
from minivlm.train import TrainConfig, fit
from minivlm.vit import ViTConfig


# -----------------------------------------------------------------------------
# pixel unshuffle


def _unshuffle_mistakes(x, r):
    """(wrong value, what to change) for the usual pixel-unshuffle mistakes on this input."""
    B, H, W, C = x.shape
    windows = x.reshape(B, H // r, r, W // r, r, C)              # (B, h, i, w, j, C)
    return [
        (pixel_unshuffle(x, r, order="torch"),
         "that is PyTorch's order (channel slowest). InternVL keeps each token's C channels together, "
         "the window's r² tokens one after the other: permute to (B, H/r, W/r, r, r, C)."),
        (windows.permute(0, 1, 3, 4, 2, 5).reshape(B, H // r, W // r, C * r * r),
         "the window is read column by column. Raster order is top-left, top-right, bottom-left, "
         "bottom-right: the row offset i must come before the column offset j."),
        (x.reshape(B, H // r, W // r, C * r * r),
         "a plain reshape mixes tokens from different rows: split H and W into (H/r, r) and (W/r, r) first, "
         "then permute so both window offsets sit next to the channels."),
        (windows.permute(0, 3, 1, 2, 4, 5).reshape(B, W // r, H // r, C * r * r),
         "rows and columns of the merged grid are swapped: keep H/r before W/r."),
    ]


@check("pixel_unshuffle", points=2)
def check_pixel_unshuffle(pixel_unshuffle_fn):
    rng = check_rng()
    g = torch_generator(rng)
    h = rng.randint(2, 5)
    square = rng.randint(1, 4)
    cases = [  # (B, h, w, C, factor or None for the default, dtype): the grid is (h·r) × (w·r)
        (rng.randint(1, 3), h, h + rng.randint(1, 3), rng.randint(2, 6), 2, torch.float32),       # non-square
        (rng.randint(1, 3), rng.choice([2, 4]), rng.choice([2, 4]), rng.randint(1, 4), rng.choice([3, 4]),
         torch.float64),
        (1, 1, rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 4), torch.float32),            # one merged row
        (rng.randint(1, 3), square, square, rng.randint(1, 5), None, torch.int64),                 # factor's default
    ]
    for B, h, w, C, factor, dtype in cases:
        r = factor or 2
        x = (torch.randn(B, h * r, w * r, C, generator=g) * 100).to(dtype)
        H, W = h * r, w * r
        what = f"pixel_unshuffle(x ({B}, {H}, {W}, {C}) {str(dtype)[6:]}" + (f", factor={r})" if factor else ")")
        expected = pixel_unshuffle(x, r)
        args = (x, factor) if factor else (x,)
        out = call_learner(pixel_unshuffle_fn, *args, what="pixel_unshuffle")
        if isinstance(out, torch.Tensor) and r != 2 and tuple(out.shape) == (B, H // 2, W // 2, 4 * C):
            raise Hint(f"{what} has shape {tuple(out.shape)}, expected {tuple(expected.shape)}. "
                       "Hint: use the factor argument everywhere, not a hard-coded 2.")
        if isinstance(out, torch.Tensor) and H != W and tuple(out.shape) == (B, W // r, H // r, C * r * r):
            raise Hint(f"{what} has shape {tuple(out.shape)}, expected {tuple(expected.shape)}. "
                       "Hint: rows and columns of the merged grid are swapped: keep H/r before W/r.")
        expect_shape(out, expected.shape, what,
                     hint="(B, H, W, C) -> (B, H/r, W/r, C·r²): the grid shrinks by r each way, channels grow by r².")
        expect_known_mistakes(out, expected, _unshuffle_mistakes(x, r), what, exact=True,
                              hint="out[b, h, w][c + C·(i·r + j)] = x[b, r·h + i, r·w + j, c], in x's dtype.")


# -----------------------------------------------------------------------------
# the answer-only labels


def _reference_labels(input_ids, attention_mask, assistant_id):
    """The ids after the first <assistant> where attention_mask is True, else -100 (as models.llava.encode_chat)."""
    is_assistant = input_ids == assistant_id
    after = (is_assistant.long().cumsum(1) - is_assistant.long()) > 0
    return input_ids.masked_fill(~(after & attention_mask), IGNORE_INDEX)


def _chat_rows(rng, rows, assistant_id, pad_id, words):
    """Right-padded rows "<bos> <user> <image> question… <assistant> answer… <eos>" -> input_ids, attention_mask.

    `rows` lists each row's kind: "chat", "long" (a chat row longer than any other: the others are padded),
    "prompt" (it ends at <assistant>: nothing to answer yet) or "cut" (cut off before its <assistant>)."""
    tok = Tokenizer()
    sequences = []
    for kind in rows:
        question = [rng.choice(words) for _ in range(rng.randint(7, 9) if kind == "long" else rng.randint(1, 6))]
        answer = [rng.choice(words) for _ in range(3 if kind == "long" else rng.randint(1, 3))]
        prompt = [tok.bos_id, tok.user_id, tok.image_id, *question]
        sequences.append(prompt if kind == "cut" else
                         [*prompt, assistant_id] if kind == "prompt" else [*prompt, assistant_id, *answer, tok.eos_id])
    length = max(map(len, sequences))
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, sequence in enumerate(sequences):
        input_ids[b, :len(sequence)] = torch.tensor(sequence)
        attention_mask[b, :len(sequence)] = True
    return input_ids, attention_mask


def _shuffled(rng, items):
    return rng.sample(items, len(items))


def _label_mistakes(input_ids, attention_mask, assistant_id):
    """(wrong labels, what to change) for the usual mistakes on this batch."""
    tok = Tokenizer()
    is_assistant = input_ids == assistant_id
    from_assistant = is_assistant.long().cumsum(1) > 0
    after = from_assistant & ~is_assistant
    first = is_assistant.int().argmax(1)[:, None]                  # 0 in a row without <assistant>
    positions = torch.arange(input_ids.shape[1])[None]
    expected = _reference_labels(input_ids, attention_mask, assistant_id)
    mistakes = [
        (input_ids.masked_fill(~(from_assistant & attention_mask), IGNORE_INDEX),
         "the <assistant> token itself is part of the prompt: label only the tokens after it."),
        (input_ids.masked_fill(~after, IGNORE_INDEX),
         "padding is still labelled: also set -100 where attention_mask is False."),
        (input_ids.masked_fill(~(after & attention_mask), 0),
         "ignored positions must hold -100 (cross_entropy's ignore_index), not 0."),
        (input_ids.masked_fill(~(after & attention_mask & (input_ids != tok.eos_id)), IGNORE_INDEX),
         "keep <eos> in the labels: the model must learn to stop after the answer."),
        (input_ids.masked_fill(~attention_mask, IGNORE_INDEX),
         "the loss must cover the answer only, not the prompt: -100 up to and including <assistant>."),
        (input_ids.masked_fill(~((positions > first) & attention_mask), IGNORE_INDEX),
         "a row without <assistant> has no answer: all its labels are -100 (argmax finds position 0 when "
         "the token is missing; a cumsum does not)."),
        (torch.cat([expected[:, 1:], torch.full_like(expected[:, :1], IGNORE_INDEX)], 1),
         "don't shift the labels: label t is input_ids[t] (the LM shifts by one inside its loss)."),
    ]
    if assistant_id != tok.assistant_id:
        mistakes.append((_reference_labels(input_ids, attention_mask, tok.assistant_id),
                         f"use the assistant_id argument, not a hard-coded {tok.assistant_id}."))
    return mistakes


@check("answer_labels", points=2)
def check_answer_labels(answer_labels):
    rng = check_rng()
    tok = Tokenizer()
    words = list(range(len(SPECIAL_TOKENS), len(tok)))            # ordinary words, no special token
    other_assistant = rng.choice(words)                           # an <assistant> id of another vocabulary
    cases = [  # (row kinds, assistant_id, pad id, what the case adds)
        (_shuffled(rng, ["long", *["chat"] * rng.randint(1, 4)]), tok.assistant_id, tok.pad_id, ""),
        (_shuffled(rng, ["chat", "chat", "prompt", "cut"]), tok.assistant_id, tok.pad_id,
         " (a row ends at <assistant>, one has none)"),
        (["chat"] * rng.randint(2, 4) + ["cut"], other_assistant, tok.pad_id, ""),
        (_shuffled(rng, ["long", *["chat"] * rng.randint(1, 3)]), tok.assistant_id, tok.eos_id, " (padded with <eos>'s id)"),
    ]
    for kinds, assistant_id, pad_id, note in cases:
        input_ids, attention_mask = _chat_rows(rng, kinds, assistant_id, pad_id,
                                               [w for w in words if w != other_assistant])
        what = f"answer_labels(input_ids {tuple(input_ids.shape)}{note}, attention_mask, assistant_id={assistant_id})"
        expected = _reference_labels(input_ids, attention_mask, assistant_id)
        out = call_learner(answer_labels, input_ids, attention_mask, assistant_id, what="answer_labels")
        expect_shape(out, input_ids.shape, what, hint="one label per input token, (B, L).")
        expect_known_mistakes(out, expected, _label_mistakes(input_ids, attention_mask, assistant_id), what,
                              exact=True, hint="labels = input_ids after the first <assistant> where attention_mask "
                                               "is True, -100 everywhere else, as a long tensor.")


# -----------------------------------------------------------------------------
# splicing the visual tokens in place of <image>


def _reference_splice(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, image_position + 1:]], dim=1)


@check("splice_image", points=1)
def check_splice_image(splice_image):
    rng = check_rng()
    g = torch_generator(rng)
    L = rng.randint(3, 12)
    cases = [  # (B, L, T, D, image_position, dtype)
        (rng.randint(1, 4), L, rng.randint(4, 9), rng.randint(2, 8), rng.randint(1, L - 2), torch.float32),
        (rng.randint(1, 4), rng.randint(2, 9), 1, rng.randint(1, 6), 0, torch.float64),   # <image> first, T = 1
        (rng.randint(1, 4), L, rng.randint(2, 9), rng.randint(2, 8), L - 1, torch.float32),  # <image> last
        (rng.randint(1, 3), 1, rng.randint(2, 6), rng.randint(2, 6), 0, torch.float32),     # a prompt of just <image>
    ]
    for B, L, T, D, p, dtype in cases:
        text = torch.randn(B, L, D, generator=g).to(dtype)
        image = torch.randn(B, T, D, generator=g).to(dtype)
        what = (f"splice_image(text_embeds ({B}, {L}, {D}), image_embeds ({B}, {T}, {D}), image_position={p})"
                + (f" in {str(dtype)[6:]}" if dtype != torch.float32 else ""))
        expected = _reference_splice(text, image, p)
        out = call_learner(splice_image, text, image, p, what="splice_image")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, L + T, D):
            raise Hint(f"{what} has shape {(B, L + T, D)}, expected {tuple(expected.shape)}. Hint: the <image> "
                       "placeholder is replaced by the visual tokens, not kept beside them: skip text position "
                       "image_position.")
        expect_shape(out, expected.shape, what, hint="L - 1 + T tokens: the placeholder becomes T visual tokens.")
        without = torch.cat([text[:, :p], text[:, p + 1:]], 1)
        expect_known_mistakes(out, expected, [
            (torch.cat([text[:, :p + 1], image, text[:, p + 2:]], 1),
             "the visual tokens go where the placeholder was: keep text[:, :image_position], not one more."),
            (torch.cat([text[:, :p], image, text[:, p:L - 1]], 1),
             "after the visual tokens comes the text after the placeholder: text[:, image_position + 1:]."),
            (torch.cat([image, without], 1), "the visual tokens go at image_position, not at the start."),
            (torch.cat([without, image], 1), "the visual tokens go at image_position, not at the end."),
        ], what, exact=True, hint="text before the placeholder, then the T visual tokens, then the text after it, "
                                  "in the inputs' dtype.")


# -----------------------------------------------------------------------------
# prefix attention


def _reference_prefix_mask(prefix):
    """Causal, or query and key both in the prefix (models.llava.Llava.prefix_attention)."""
    S = prefix.shape[1]
    return causal_mask(S, S, prefix.device) | (prefix[:, :, None] & prefix[:, None, :])


def _leading_prefix(lengths, S):
    """(B, S) bool: True on each row's first lengths[b] positions (the image and question come first)."""
    return torch.arange(S)[None] < torch.tensor(lengths)[:, None]


@check("prefix_mask", points=1)
def check_prefix_mask(prefix_mask):
    rng = check_rng()
    B, S = rng.randint(2, 5), rng.randint(4, 12)
    cases = [
        (S, [rng.randint(1, S - 1) for _ in range(B)]),
        (S + 1, [S + 1, 0, rng.randint(1, S)]),            # a row all prefix (nothing to answer), one all answer
        (1, [1]),
    ]
    for S, lengths in cases:
        prefix = _leading_prefix(lengths, S)
        what = f"prefix_mask(prefix ({len(lengths)}, {S}), prefix lengths {lengths})"
        expected = _reference_prefix_mask(prefix)
        out = call_learner(prefix_mask, prefix, what="prefix_mask")
        expect_shape(out, expected.shape, what, hint="one (S, S) mask per row: (B, S, S).")
        if out.dtype != torch.bool:
            raise Hint(f"{what} has dtype {out.dtype}, expected torch.bool (True = may attend).")
        causal = torch.ones(S, S, dtype=torch.bool).tril().expand(len(lengths), S, S)
        both = prefix[:, :, None] & prefix[:, None, :]
        expect_known_mistakes(out, expected, [
            (causal.clone(), "that is plain causal attention: also let two prefix tokens see each other "
                             "(prefix[:, :, None] & prefix[:, None, :])."),
            (both.clone(), "the answer tokens see nothing: keep the causal part too (causal | prefix pairs)."),
            (causal | prefix[:, :, None], "a prefix token would see the answer: both the query and the key must "
                                          "be in the prefix (prefix[:, :, None] & prefix[:, None, :])."),
            (~causal | both, "the causal part is flipped: True on and below the diagonal (tril), not above."),
            (causal.transpose(1, 2) | both, "the causal part is flipped: True on and below the diagonal (tril), "
                                            "not above (mask[b, i, j] is query i, key j)."),
            (causal.tril(-1) | both, "a token may attend to itself: keep the diagonal (tril(), not tril(-1))."),
        ], what, exact=True, hint="mask[b, i, j] = (j <= i) or (prefix[b, i] and prefix[b, j]).")


# -----------------------------------------------------------------------------
# the experiment: LLaVA's two stages, with the learner's recipe

# One-object Shapes scenes, a CLIP tower trained for 60 steps, the pretrained LM of chapter 04: ~6 s of
# CPU time on one core. Over 15 draws of this check with the correct recipe, the held-out answer loss goes
# from 0.96-1.41 (random projector) to 0.29-0.44 after stage 1 and to 0.12-0.20 after stage 2 (0.16 to
# 0.28 lower); the frozen LM answers 0-24% of the position questions before stage 1, 49-100% after it.
# A recipe that keeps the LM frozen in stage 2 still lowers the loss by 0.09-0.13 there (the projector
# goes on learning): the weights check, not the loss, is what catches that one.
STAGES_EXPERIMENT = dict(pool=1000, test_scenes=100, images_per_step=16, clip_steps=60, stage1_steps=50,
                         stage2_steps=60, lr=3e-3)
STAGE1_LOSS = 0.6          # held-out answer loss after stage 1 must fall below this,
STAGE1_POSITION = 0.30     # the frozen LM must answer this share of the position questions after stage 1 (34% seen once in CI),
STAGE2_GAIN = 0.05         # and stage 2 must lower the loss by at least this much
PARTS = ("vision", "projector", "lm")


def _llava_config(tokenizer):
    lm_config = pretrained.default_config(tokenizer)
    return LlavaConfig(vocab_size=len(tokenizer), patch_size=8, text_dim=lm_config.dim, text_depth=lm_config.depth,
                       text_heads=lm_config.heads, max_seq_len=lm_config.max_seq_len, prefix="causal")


def _trains(stage):
    """What trains in LLaVA's stage 1 and stage 2 (Llava.set_stage)."""
    return {"vision": False, "projector": True, "lm": stage == 2}


_PART_HINTS = {
    ("vision", 1): "the ViT (from CLIP) stays frozen in both stages, however it arrives: model.vision.requires_grad_(False).",
    ("vision", 2): "the ViT (from CLIP) stays frozen in both stages, however it arrives: model.vision.requires_grad_(False).",
    ("projector", 1): "the projector trains in both stages, however it arrives: model.projector.requires_grad_(True).",
    ("projector", 2): "the projector trains in both stages, however it arrives: model.projector.requires_grad_(True).",
    ("lm", 1): "stage 1 trains the projector alone against the frozen LM: model.lm.requires_grad_(False).",
    ("lm", 2): "stage 2 unfreezes the LM, however it arrives: model.lm.requires_grad_(True).",
}


def _refuse_set_stage(*args, **kwargs):
    raise Hint("set_stage called model.set_stage, the answer key: set requires_grad on model.vision, "
               "model.projector and model.lm yourself.")


def _expect_stage_flags(model, stage, arrived):
    """Every parameter of each part has the requires_grad of `stage`, else a Hint naming the part."""
    for name, module in [("model", model), *((f"model.{part}", getattr(model, part)) for part in PARTS)]:
        if "requires_grad" in vars(module):
            raise Hint(f"set_stage set `{name}.requires_grad`, which only adds an attribute to the module. Hint: call "
                       f"the method, {name}.requires_grad_(True or False), which sets it on every parameter.")
    for part, trains in _trains(stage).items():
        flags = [p.requires_grad for p in getattr(model, part).parameters()]
        wrong = sum(flag != trains for flag in flags)
        if wrong:
            state = "do not train" if trains else "still train"
            raise Hint(f"after set_stage(model, {stage}) on {arrived}, {wrong} of the {len(flags)} parameters of "
                       f"model.{part} {state}. Hint: {_PART_HINTS[part, stage]}")


def _call_set_stage(set_stage, model, stage):
    """set_stage(model, stage) through call_learner, with a hint in this exercise's terms if it changed the weights."""
    try:
        call_learner(set_stage, model, stage, what="set_stage")
    except Hint as error:
        if "modified its input `model` in place" not in str(error):
            raise
        raise Hint(f"set_stage(model, {stage}) changed the model's weights. Hint: only switch requires_grad; each "
                   "stage starts from the weights the previous one learned.") from None


def _check_flags(set_stage, model, rng):
    """The recipe sets the flags of each stage whatever the model's flags were before."""
    g = torch_generator(rng)
    arrivals = {
        "a fresh model (every parameter trainable)": lambda: model.requires_grad_(True),
        "a model with every parameter frozen": lambda: model.requires_grad_(False),
        "a model with random requires_grad flags": lambda: [p.requires_grad_(bool(torch.rand(1, generator=g) < 0.5))
                                                            for p in model.parameters()],
    }
    order = [(arrived, stage) for arrived in arrivals for stage in (1, 2)]
    rng.shuffle(order)
    for arrived, stage in order:
        arrivals[arrived]()
        _call_set_stage(set_stage, model, stage)
        _expect_stage_flags(model, stage, arrived)
        other = 3 - stage
        _call_set_stage(set_stage, model, other)
        _expect_stage_flags(model, other, f"the model of stage {stage}")


def _stages_setup(seed):
    """Training and held-out data, and a Llava with a CLIP-trained ViT and the pretrained LM, as chapter 05 builds it."""
    setup, tokenizer = STAGES_EXPERIMENT, Tokenizer()
    world, pool = WorldConfig(max_objects=1), setup["pool"]
    scenes, images = ShapesGenerator(world, 32, "train", seed=seed).batch(pool)
    vqa = encode_vqa(tokenizer, sample_vqa(scenes, 4, seed=seed))
    test_scenes, test_images = ShapesGenerator(world, 32, "test", seed=seed + 1).batch(setup["test_scenes"])
    test_pairs = sample_vqa(test_scenes, 4, seed=seed + 1)
    config = _llava_config(tokenizer)
    model = Llava(config).load_language_model(pretrained.language_model(config.lm_config(), device="cpu"))

    clip = train_clip_vision(config.vision_config(), tokenizer, scenes, images, model.normalize, setup["clip_steps"])
    model.load_vision_tower(clip.vision)

    first_row = torch.searchsorted(vqa["image_index"], torch.arange(pool + 1)).tolist()
    lengths = vqa["attention_mask"].sum(1)

    def vqa_batches(step, per_step=setup["images_per_step"]):
        start = (step * per_step) % (pool - per_step + 1)
        rows = slice(first_row[start], first_row[start + per_step])
        length = int(lengths[rows].max())
        return (images[start:start + per_step], vqa["input_ids"][rows, :length], vqa["attention_mask"][rows, :length],
                vqa["labels"][rows, :length], vqa["image_index"][rows] - start)

    return model, vqa_batches, (tokenizer, test_images, test_pairs, encode_vqa(tokenizer, test_pairs))


@torch.no_grad()
def _held_out(model, test):
    """(answer-token loss, accuracy per question kind) on the held-out questions."""
    tokenizer, images, pairs, batch = test
    model.eval()
    loss = model(images, batch["input_ids"], batch["attention_mask"], batch["labels"], batch["image_index"]).loss
    accuracy = vqa_accuracy(model, tokenizer, images, pairs)
    model.train()
    return loss.item(), accuracy


def _state(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


def _changed(model, before):
    """Which parts' weights differ from `before` (a _state of each part)."""
    return {part: any(not torch.equal(value, before[part][key]) for key, value in getattr(model, part).state_dict().items())
            for part in PARTS}


def _train_stage(set_stage, model, stage, batches, first_step, steps):
    """Run the learner's recipe for `stage`, then `steps` steps of fit; return which parts changed."""
    _call_set_stage(set_stage, model, stage)
    before = {part: _state(getattr(model, part)) for part in PARTS}
    fit(model, lambda step: batches(first_step + step), lambda m, b: m(*b, validate=False).loss,
        TrainConfig(steps=steps, lr=STAGES_EXPERIMENT["lr"], warmup_steps=min(30, steps), device="cpu", progress=False))
    return _changed(model, before)


def _expect_changes(changed, stage):
    for part, trains in _trains(stage).items():
        if changed[part] != trains:
            verb = "did not change" if trains else "changed"
            raise Hint(f"during stage {stage} the weights of model.{part} {verb}. Hint: {_PART_HINTS[part, stage]}")


@check("set_stage", points=3)
def check_set_stage(set_stage):
    rng = check_rng()
    seed = rng.getrandbits(31)
    setup = STAGES_EXPERIMENT
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)    # the models' initialisation; the learner's global RNG is restored afterwards

        # 1. the recipe itself, on a small model, arriving in any state (fast: no training)
        small = Llava(LlavaConfig(vision_dim=16, vision_depth=1, vision_heads=2, text_dim=16, text_depth=1,
                                  text_heads=2))
        small.set_stage = _refuse_set_stage
        _check_flags(set_stage, small, rng)

        # 2. measured: train stage 1 then stage 2 with the recipe, as chapter 05 does
        model, batches, test = _stages_setup(seed)
        model.set_stage = _refuse_set_stage
        start_loss, _ = _held_out(model, test)
        steps1, steps2 = setup["stage1_steps"], setup["stage2_steps"]
        _expect_changes(_train_stage(set_stage, model, 1, batches, 0, steps1), 1)
        stage1_loss, stage1_accuracy = _held_out(model, test)
        if not stage1_loss < STAGE1_LOSS:
            raise Hint(f"after {steps1} steps of stage 1 the held-out answer loss is {stage1_loss:.2f} "
                       f"(from {start_loss:.2f}), expected below {STAGE1_LOSS}. Hint: stage 1 trains the projector "
                       "alone, so that the frozen LM learns to read the visual tokens.")
        if not stage1_accuracy["position"] >= STAGE1_POSITION:
            raise Hint(f"after {steps1} steps of stage 1 the frozen LM answers {100 * stage1_accuracy['position']:.0f}% "
                       f"of the held-out position questions, expected at least {100 * STAGE1_POSITION:.0f}%. Hint: "
                       "stage 1 trains the projector alone, so that the frozen LM learns to read the visual tokens.")
        _expect_changes(_train_stage(set_stage, model, 2, batches, steps1, steps2), 2)
        stage2_loss, _ = _held_out(model, test)
        if not stage2_loss < stage1_loss - STAGE2_GAIN:
            raise Hint(f"after {steps2} steps of stage 2 the held-out answer loss is {stage2_loss:.2f}, from "
                       f"{stage1_loss:.2f} after stage 1: expected at least {STAGE2_GAIN} lower. Hint: stage 2 "
                       "trains the projector and the LM together.")


# -----------------------------------------------------------------------------
# concept questions


VISUAL_TOKENS_QUESTION = dict(image_size=448, patch_size=14, factor=2)


@check("visual_tokens_448", points=1)
def check_visual_tokens_448(visual_tokens_448):
    q = VISUAL_TOKENS_QUESTION
    answer = answer_number(call_learner(visual_tokens_448, what="visual_tokens_448"), "visual_tokens_448()", integer=True)
    side = ViTConfig(image_size=q["image_size"], patch_size=q["patch_size"]).grid_size
    expected = num_visual_tokens("unshuffle", side * side, q["factor"])
    if answer == expected:
        return
    for wrong, hint in [
        (side * side, "that is the ViT's token count, before the merge: each 2×2 window becomes one token."),
        (side * side // q["factor"], "a 2×2 window merges r² = 4 tokens into one, not 2."),
        (side, "that is the number of patches along one side: the grid has side × side tokens."),
        (side // q["factor"], "that is the merged grid's side: count its tokens (side × side)."),
    ]:
        if answer == wrong:
            raise Hint(f"visual_tokens_448() is {answer}. Hint: {hint}")
    raise Hint(f"visual_tokens_448() is {answer}, not the number of visual tokens. Hint: count the ViT's patches "
               "(image size / patch size along each side), then divide by the tokens one merged token holds.")


PROJECTOR_WIDTH_QUESTION = dict(vision_dim=1024, factor=2)    # InternViT-300M's width, InternVL2's 2×2 merge


@check("projector_input_width", points=1)
def check_projector_input_width(projector_input_width):
    q = PROJECTOR_WIDTH_QUESTION
    answer = answer_number(call_learner(projector_input_width, what="projector_input_width"), "projector_input_width()", integer=True)
    with torch.random.fork_rng(devices=[]):
        expected = build_projector("unshuffle", q["vision_dim"], 8, q["factor"]).fc1.in_features
    if answer == expected:
        return
    for wrong, hint in [
        (q["vision_dim"], "that is a ViT token's width, before the merge: a merged token holds the channels of "
                          "every token of its window."),
        (q["vision_dim"] * q["factor"], "a 2×2 window holds r² = 4 tokens, not 2."),
        (q["vision_dim"] // q["factor"] ** 2, "the number of tokens shrinks by r²; the width of each grows by r²."),
    ]:
        if answer == wrong:
            raise Hint(f"projector_input_width() is {answer}. Hint: {hint}")
    raise Hint(f"projector_input_width() is {answer}. Hint: pixel unshuffle lays the r × r window's tokens side by "
               "side in one vector, channels included; the projector's LayerNorm and first Linear read that vector.")


LOSS_TARGETS_QUESTION = dict(question="what color is the circle ?", answer="red", visual_tokens=4)
LOSS_TARGETS_OPTIONS = {
    "a": "every position, the visual tokens included",
    "b": "every text token, but not the visual tokens",
    "c": "only the answer and <eos>",
}


def _loss_targets_letter():
    """The option that names the positions with a label, computed with models.llava on the question's row."""
    q, tokenizer = LOSS_TARGETS_QUESTION, Tokenizer()
    batch = encode_chat(tokenizer, [q["question"]], [q["answer"]])
    with torch.random.fork_rng(devices=[]):
        model = Llava(LlavaConfig(vocab_size=len(tokenizer), vision_dim=16, vision_depth=1, vision_heads=2,
                                  text_dim=16, text_depth=1, text_heads=2))
    merged = model.merge_image_tokens(batch["input_ids"], torch.zeros(1, q["visual_tokens"], 16),
                                      batch["attention_mask"], batch["labels"])
    labelled = int((merged.labels != IGNORE_INDEX).sum())
    counts = {"a": merged.labels.shape[1], "b": batch["input_ids"].shape[1] - 1,
              "c": len(tokenizer.encode(q["answer"], add_eos=True))}
    return next(letter for letter, count in counts.items() if count == labelled)


@check("loss_targets", points=1)
def check_loss_targets(loss_targets):
    answer = answer_choice(call_learner(loss_targets, what="loss_targets"), LOSS_TARGETS_OPTIONS, "loss_targets()")
    if answer == _loss_targets_letter():
        return
    raise Hint({
        "a": f'"{answer}" is not it. Hint: a visual token has no word to predict, and the question is given, not '
             "something the model should learn to produce.",
        "b": f'"{answer}" is not it. Hint: the model is always given the question; what should it learn to say '
             "after <assistant>?",
        "c": f'"{answer}" is not it. Hint: look at which labels encode_chat leaves different from -100.',
    }[answer])
