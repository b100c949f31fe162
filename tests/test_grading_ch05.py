"""The chapter 05 checks pass the reference and other correct implementations, say "not implemented yet"
to a stub, and give a specific hint (not a pass) to typical mistakes, whatever sizes they draw."""

import random

import pytest
import torch

from minivlm.course.grading import ch05
from minivlm.data import Tokenizer
from minivlm.lm import IGNORE_INDEX
from minivlm.models.llava import Llava, LlavaConfig, encode_chat
from minivlm.pixel_unshuffle import pixel_unshuffle

SEEDS = [1, 2, 3, 4]


def stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- correct implementations

def answer_labels(input_ids, attention_mask, assistant_id):
    is_assistant = input_ids == assistant_id
    after = (is_assistant.long().cumsum(1) - is_assistant.long()) > 0
    return input_ids.masked_fill(~(after & attention_mask), IGNORE_INDEX)


def splice_image(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, image_position + 1:]], dim=1)


def prefix_mask(prefix):
    S = prefix.shape[1]
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    return causal | (prefix[:, :, None] & prefix[:, None, :])


def set_stage(model, stage):
    model.vision.requires_grad_(False)
    model.projector.requires_grad_(True)
    model.lm.requires_grad_(stage == 2)


def unshuffle_by_strides(x, factor=2):
    """The window's tokens one after the other, each with its C channels: strided slices in raster order."""
    r = factor
    return torch.cat([x[:, i::r, j::r] for i in range(r) for j in range(r)], dim=-1)


def labels_loop(input_ids, attention_mask, assistant_id):
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for b, row in enumerate(input_ids.tolist()):
        if assistant_id in row:
            for t in range(row.index(assistant_id) + 1, len(row)):
                if attention_mask[b, t]:
                    labels[b, t] = row[t]
    return labels


def splice_by_filling(text_embeds, image_embeds, image_position):
    B, L, D = text_embeds.shape
    T, p = image_embeds.shape[1], image_position
    out = text_embeds.new_empty(B, L - 1 + T, D)
    out[:, :p] = text_embeds[:, :p]
    out[:, p:p + T] = image_embeds
    out[:, p + T:] = text_embeds[:, p + 1:]
    return out


def prefix_mask_from_lengths(prefix):
    S = prefix.shape[1]
    i = torch.arange(S)
    inside = i[None] < prefix.sum(1, keepdim=True)               # the prefix is the first tokens of each row
    return (i[:, None] >= i[None, :]) | (inside[:, :, None] & inside[:, None, :])


def set_stage_by_name(model, stage):
    for name, parameter in model.named_parameters():
        part = name.split(".")[0]
        parameter.requires_grad = part == "projector" or (part == "lm" and stage == 2)


CORRECT = [
    (ch05.check_pixel_unshuffle, pixel_unshuffle),
    (ch05.check_pixel_unshuffle, unshuffle_by_strides),
    (ch05.check_answer_labels, answer_labels),
    (ch05.check_answer_labels, labels_loop),
    (ch05.check_splice_image, splice_image),
    (ch05.check_splice_image, splice_by_filling),
    (ch05.check_prefix_mask, prefix_mask),
    (ch05.check_prefix_mask, prefix_mask_from_lengths),
]


@pytest.mark.parametrize("check, fn", CORRECT)
def test_correct_implementations_pass(check, fn, grade):
    passed, out = grade(check, fn)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check", [ch05.check_pixel_unshuffle, ch05.check_answer_labels, ch05.check_splice_image,
                                   ch05.check_prefix_mask, ch05.check_set_stage, ch05.check_visual_tokens_448,
                                   ch05.check_projector_input_width, ch05.check_loss_targets])
def test_a_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_the_reference_labels_are_encode_chats():
    tokenizer = Tokenizer()
    batch = encode_chat(tokenizer, ["how many circles are there ?", "what color is the large square ?"], ["two", "red"])
    assert torch.equal(ch05._reference_labels(batch["input_ids"], batch["attention_mask"], tokenizer.assistant_id),
                       batch["labels"])


# ----------------------------------------------------------------------------- typical mistakes

def unshuffle_torch_order(x, factor=2):
    return pixel_unshuffle(x, factor, order="torch")


def unshuffle_column_first(x, factor=2):
    B, H, W, C = x.shape
    r = factor
    return x.reshape(B, H // r, r, W // r, r, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // r, W // r, C * r * r)


def unshuffle_plain_reshape(x, factor=2):
    B, H, W, C = x.shape
    return x.reshape(B, H // factor, W // factor, C * factor * factor)


def unshuffle_fixed_factor(x, factor=2):
    return pixel_unshuffle(x, 2)


def unshuffle_grid_swapped(x, factor=2):
    B, H, W, C = x.shape
    r = factor
    return x.reshape(B, H // r, r, W // r, r, C).permute(0, 3, 1, 2, 4, 5).reshape(B, W // r, H // r, C * r * r)


def unshuffle_as_float(x, factor=2):
    return pixel_unshuffle(x, factor).float()


def unshuffle_old_sizes(x, factor=2):
    """Hard-coded to the old check's x (2, 4, 6, 3) and factor 2."""
    return x.reshape(2, 2, 2, 3, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 2, 3, 12)


def labels_with_assistant(input_ids, attention_mask, assistant_id):
    from_assistant = (input_ids == assistant_id).long().cumsum(1) > 0
    return input_ids.masked_fill(~(from_assistant & attention_mask), IGNORE_INDEX)


def labels_with_padding(input_ids, attention_mask, assistant_id):
    return answer_labels(input_ids, torch.ones_like(attention_mask), assistant_id)


def labels_zero_ignored(input_ids, attention_mask, assistant_id):
    labels = answer_labels(input_ids, attention_mask, assistant_id)
    return labels.masked_fill(labels == IGNORE_INDEX, 0)


def labels_everything(input_ids, attention_mask, assistant_id):
    return input_ids.masked_fill(~attention_mask, IGNORE_INDEX)


def labels_from_argmax(input_ids, attention_mask, assistant_id):
    first = (input_ids == assistant_id).int().argmax(1, keepdim=True)      # 0 when a row has no <assistant>
    after = torch.arange(input_ids.shape[1])[None] > first
    return input_ids.masked_fill(~(after & attention_mask), IGNORE_INDEX)


def labels_shifted(input_ids, attention_mask, assistant_id):
    labels = answer_labels(input_ids, attention_mask, assistant_id)
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], 1)


def labels_assistant_six(input_ids, attention_mask, assistant_id):
    return answer_labels(input_ids, attention_mask, 6)


def labels_pad_by_id(input_ids, attention_mask, assistant_id):
    return answer_labels(input_ids, input_ids != 0, assistant_id)


def labels_in_place(input_ids, attention_mask, assistant_id):
    is_assistant = input_ids == assistant_id
    after = (is_assistant.long().cumsum(1) - is_assistant.long()) > 0
    return input_ids.masked_fill_(~(after & attention_mask), IGNORE_INDEX)


def labels_old_length(input_ids, attention_mask, assistant_id):
    """Hard-coded to the old check's rows of 11 tokens."""
    return answer_labels(input_ids[:, :11], attention_mask[:, :11], assistant_id)


def splice_keeps_placeholder(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position + 1], image_embeds, text_embeds[:, image_position + 1:]], 1)


def splice_drops_wrong_token(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, image_position:-1]], 1)


def splice_at_start(text_embeds, image_embeds, image_position):
    return torch.cat([image_embeds, text_embeds[:, :image_position], text_embeds[:, image_position + 1:]], 1)


def splice_at_end(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], text_embeds[:, image_position + 1:], image_embeds], 1)


def splice_negative_slice(text_embeds, image_embeds, image_position):
    after = text_embeds.shape[1] - image_position - 1
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, -after:]], 1)   # -0: everything


def splice_as_float(text_embeds, image_embeds, image_position):
    return splice_image(text_embeds, image_embeds, image_position).float()


def splice_three_visual_tokens(text_embeds, image_embeds, image_position):
    """Hard-coded to the old check's 3 visual tokens."""
    return splice_image(text_embeds, image_embeds[:, :3], image_position)


def prefix_mask_causal_only(prefix):
    S = prefix.shape[1]
    return torch.ones(S, S, dtype=torch.bool).tril().expand(len(prefix), S, S)


def prefix_mask_no_causal(prefix):
    return prefix[:, :, None] & prefix[:, None, :]


def prefix_mask_query_leak(prefix):
    S = prefix.shape[1]
    return torch.ones(S, S, dtype=torch.bool).tril() | prefix[:, :, None]


def prefix_mask_float(prefix):
    return prefix_mask(prefix).float()


def prefix_mask_strict(prefix):
    S = prefix.shape[1]
    return torch.ones(S, S, dtype=torch.bool).tril(-1) | (prefix[:, :, None] & prefix[:, None, :])


def prefix_mask_transposed(prefix):
    return prefix_mask(prefix).transpose(1, 2)


def prefix_mask_old_size(prefix):
    """Hard-coded to the old check's sequences of 5 tokens."""
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    return causal | (prefix[:, :, None] & prefix[:, None, :])


MISTAKES = [
    (ch05.check_pixel_unshuffle, unshuffle_torch_order, "PyTorch's order"),
    (ch05.check_pixel_unshuffle, unshuffle_column_first, "column by column"),
    (ch05.check_pixel_unshuffle, unshuffle_plain_reshape, "plain reshape"),
    (ch05.check_pixel_unshuffle, unshuffle_fixed_factor, "factor argument"),
    (ch05.check_pixel_unshuffle, unshuffle_grid_swapped, "rows and columns"),
    (ch05.check_pixel_unshuffle, unshuffle_as_float, "dtype"),
    (ch05.check_pixel_unshuffle, unshuffle_old_sizes, "❌"),
    (ch05.check_answer_labels, labels_with_assistant, "<assistant> token itself"),
    (ch05.check_answer_labels, labels_with_padding, "padding"),
    (ch05.check_answer_labels, labels_zero_ignored, "not 0"),
    (ch05.check_answer_labels, labels_everything, "answer only"),
    (ch05.check_answer_labels, labels_from_argmax, "a row without <assistant> has no answer"),
    (ch05.check_answer_labels, labels_shifted, "don't shift"),
    (ch05.check_answer_labels, labels_assistant_six, "assistant_id argument"),
    (ch05.check_answer_labels, labels_pad_by_id, "padding is still labelled"),
    (ch05.check_answer_labels, labels_in_place, "in place"),
    (ch05.check_answer_labels, labels_old_length, "❌"),
    (ch05.check_splice_image, splice_keeps_placeholder, "not kept beside"),
    (ch05.check_splice_image, splice_drops_wrong_token, "image_position + 1"),
    (ch05.check_splice_image, splice_at_start, "not at the start"),
    (ch05.check_splice_image, splice_at_end, "not at the end"),
    (ch05.check_splice_image, splice_negative_slice, "❌"),
    (ch05.check_splice_image, splice_as_float, "dtype"),
    (ch05.check_splice_image, splice_three_visual_tokens, "L - 1 + T"),
    (ch05.check_prefix_mask, prefix_mask_causal_only, "plain causal"),
    (ch05.check_prefix_mask, prefix_mask_no_causal, "keep the causal part"),
    (ch05.check_prefix_mask, prefix_mask_query_leak, "would see the answer"),
    (ch05.check_prefix_mask, prefix_mask_float, "torch.bool"),
    (ch05.check_prefix_mask, prefix_mask_strict, "keep the diagonal"),
    (ch05.check_prefix_mask, prefix_mask_transposed, "flipped"),
    (ch05.check_prefix_mask, prefix_mask_old_size, "❌"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


KEY_CASES = [
    (ch05.check_pixel_unshuffle, unshuffle_by_strides, True),
    (ch05.check_pixel_unshuffle, unshuffle_torch_order, False),
    (ch05.check_pixel_unshuffle, unshuffle_fixed_factor, False),
    (ch05.check_pixel_unshuffle, unshuffle_grid_swapped, False),
    (ch05.check_answer_labels, labels_loop, True),
    (ch05.check_answer_labels, labels_from_argmax, False),
    (ch05.check_answer_labels, labels_assistant_six, False),
    (ch05.check_answer_labels, labels_pad_by_id, False),
    (ch05.check_splice_image, splice_by_filling, True),
    (ch05.check_splice_image, splice_negative_slice, False),
    (ch05.check_splice_image, splice_drops_wrong_token, False),
    (ch05.check_prefix_mask, prefix_mask_from_lengths, True),
    (ch05.check_prefix_mask, prefix_mask_strict, False),
    (ch05.check_prefix_mask, prefix_mask_old_size, False),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", KEY_CASES)
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and out.startswith("✅" if passes else "❌"), out


# ----------------------------------------------------------------------------- the experiment: set_stage

def set_stage_lm_still_trains(model, stage):
    model.vision.requires_grad_(False)
    model.projector.requires_grad_(True)


def set_stage_attribute(model, stage):
    model.vision.requires_grad = False              # an attribute of the module: no parameter is frozen
    model.lm.requires_grad = stage == 2


def set_stage_trusts_arrival(model, stage):
    """Freezes what it remembers to, and trusts the rest to be as a fresh model has it."""
    model.lm.requires_grad_(stage == 2)


def set_stage_freezes_only(model, stage):
    model.vision.requires_grad_(False)
    if stage == 1:
        model.lm.requires_grad_(False)


def set_stage_lm_alone_in_stage_2(model, stage):
    model.vision.requires_grad_(False)
    model.projector.requires_grad_(stage == 1)
    model.lm.requires_grad_(stage == 2)


def set_stage_lm_frozen_throughout(model, stage):
    set_stage(model, 1)


def set_stage_calls_the_answer_key(model, stage):
    model.set_stage(stage)


def set_stage_resets_the_projector(model, stage):
    set_stage(model, stage)
    if stage == 1:
        for module in model.projector.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


STAGE_MISTAKES = [
    (set_stage_lm_still_trains, "parameters of model.lm"),
    (set_stage_attribute, "only adds an attribute"),
    (set_stage_trusts_arrival, "however it arrives"),
    (set_stage_freezes_only, "do not train"),
    (set_stage_lm_alone_in_stage_2, "model.projector do not train"),
    (set_stage_lm_frozen_throughout, "model.lm do not train"),
    (set_stage_calls_the_answer_key, "answer key"),
    (set_stage_resets_the_projector, "changed the model's weights"),
]


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("wrong, hint", STAGE_MISTAKES)
def test_stage_mistakes_get_a_hint_before_any_training(wrong, hint, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch05, "_stages_setup", stub)           # they must fail on the flags, before training
    passed, out = grade(ch05.check_set_stage, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("fn", [set_stage, set_stage_by_name])
def test_correct_recipes_set_the_flags_whatever_the_draw(fn, seed):
    model = Llava(LlavaConfig(vision_dim=16, vision_depth=1, vision_heads=2, text_dim=16, text_depth=1, text_heads=2))
    ch05._check_flags(fn, model, random.Random(seed))       # raises a Hint otherwise


def test_a_correct_recipe_passes_the_measured_stages(grade):
    """The full experiment, once: trains stage 1 and stage 2 of a small LLaVA (a few seconds)."""
    passed, out = grade(ch05.check_set_stage, set_stage_by_name)
    assert passed and out.startswith("✅"), out


def test_too_little_stage_1_fails_the_measured_loss(monkeypatch, grade):
    monkeypatch.setattr(ch05, "STAGES_EXPERIMENT", {**ch05.STAGES_EXPERIMENT, "clip_steps": 1, "stage1_steps": 1})
    passed, out = grade(ch05.check_set_stage, set_stage)
    assert not passed and "after 1 steps of stage 1 the held-out answer loss" in out, out


def test_measured_weights_catch_a_recipe_the_flags_did_not_see(monkeypatch, grade):
    monkeypatch.setattr(ch05, "_check_flags", lambda *args: None)
    monkeypatch.setattr(ch05, "STAGES_EXPERIMENT", {**ch05.STAGES_EXPERIMENT, "clip_steps": 1, "stage1_steps": 2,
                                                    "stage2_steps": 2})
    monkeypatch.setattr(ch05, "STAGE1_LOSS", float("inf"))
    monkeypatch.setattr(ch05, "STAGE1_POSITION", 0.0)
    passed, out = grade(ch05.check_set_stage, set_stage_lm_frozen_throughout)
    assert not passed and "during stage 2 the weights of model.lm did not change" in out, out
    passed, out = grade(ch05.check_set_stage, set_stage_lm_still_trains)
    assert not passed and "during stage 1 the weights of model.lm changed" in out, out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch05.check_visual_tokens_448, lambda: (448 // 14) ** 2 // 2 ** 2),
    (ch05.check_visual_tokens_448, lambda: torch.tensor(256)),
    (ch05.check_projector_input_width, lambda: 1024 * 2 * 2),
    (ch05.check_loss_targets, lambda: "c"),
    (ch05.check_loss_targets, lambda: " C "),
])
def test_right_answers_pass(check, answer, grade):
    passed, out = grade(check, answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch05.check_visual_tokens_448, lambda: 1024, "before the merge"),
    (ch05.check_visual_tokens_448, lambda: 512, "not 2"),
    (ch05.check_visual_tokens_448, lambda: 16, "merged grid's side"),
    (ch05.check_visual_tokens_448, lambda: 300, "count the ViT's patches"),
    (ch05.check_visual_tokens_448, lambda: "256", "should return an int"),
    (ch05.check_visual_tokens_448, lambda: 256.0, "should return an int"),
    (ch05.check_projector_input_width, lambda: 1024, "before the merge"),
    (ch05.check_projector_input_width, lambda: 2048, "not 2"),
    (ch05.check_projector_input_width, lambda: 256, "width of each grows"),
    (ch05.check_projector_input_width, lambda: True, "should return an int"),
    (ch05.check_loss_targets, lambda: "a", "no word to predict"),
    (ch05.check_loss_targets, lambda: "b", "always given the question"),
    (ch05.check_loss_targets, lambda: "d", 'one of "a", "b", "c"'),
    (ch05.check_loss_targets, lambda: 3, 'one of "a", "b", "c"'),
])
def test_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌") and hint in out, out


def test_the_answers_are_computed_from_the_package():
    assert ch05._loss_targets_letter() == "c"
