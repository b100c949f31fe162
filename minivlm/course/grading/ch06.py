"""Checks for chapter 06 (BLIP-2's Q-Former).

    from minivlm.course.grading import ch06
    ch06.check_qformer_attention_mask(qformer_attention_mask)
    ch06.check_itc_logits(itc_logits)
    ch06.check_qformer_layer(qformer_layer)
    ch06.check_itm_batch(itm_batch)
    ch06.check_soft_prompt(soft_prompt)                    # an experiment: trains two small BLIP-2s for a few seconds
    ch06.check_visual_tokens_blip2(visual_tokens_blip2)    # concept questions
    ch06.check_cross_attention_layers(cross_attention_layers)
    ch06.check_generation_mask(generation_mask)

Each check draws its sizes, padding, objectives, scales, layers and seeds at random (`check_rng`),
compares with the reference (`minivlm.qformer`, `minivlm.blip2_objectives`, the ITM batch of
`models.blip2.Blip2Stage1.forward`, `models.blip2.Blip2.encode_images`) and recognises the usual
mistakes (an ITG mask whose text misses the queries or whose queries read the text, triu for tril,
attended padding, a transposed mask; a mean over queries, a missing normalisation or scale; text that
cross-attends, one FFN for both sides, a skipped self-attention mask; the ITM labels swapped or the
negatives on the wrong side; a ViT read without `normalize`, or with a gradient) to give a specific hint.
"""

import collections

import torch
import torch.nn.functional as F

from minivlm import pretrained
from minivlm.blip2_objectives import itc_logits
from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng,
                                    expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.course.grading.clip_tower import train_clip_vision
from minivlm.data import ShapesGenerator, Tokenizer, WorldConfig, sample_vqa
from minivlm.evaluate import encode_vqa, vqa_accuracy
from minivlm.models.blip2 import Blip2
from minivlm.models.llava import LlavaConfig
from minivlm.qformer import OBJECTIVES, QFormer, QFormerConfig, QFormerLayer, qformer_attention_mask
from minivlm.train import TrainConfig, fit


# -----------------------------------------------------------------------------
# the attention masks of the three stage-1 objectives


def _text_mask(rng, B, T, pattern="right"):
    """(B, T) bool: right-padded rows of random lengths (one full, one padded when B, T >= 2),
    or with `pattern="scattered"` padding anywhere but on the first token."""
    if pattern == "scattered":
        mask = [[True] + [rng.random() < 0.6 for _ in range(T - 1)] for _ in range(B)]
        if T > 1:
            mask[-1][rng.randrange(1, T)] = False
    else:
        lengths = [rng.randint(1, T) for _ in range(B)]
        if B >= 2 and T >= 2:
            lengths[0], lengths[1] = T, rng.randint(1, T - 1)
            rng.shuffle(lengths)
        mask = [[t < length for t in range(T)] for length in lengths]
    return torch.tensor(mask, dtype=torch.bool)


_MASK_RULES = {
    "itc": "the queries see only the queries and the text only the text",
    "itm": "everyone sees everyone (except the padding)",
    "itg": "the queries see the queries, and each text token every query and the text up to itself",
}


def _mask_mistakes(Q, text_mask, objective):
    """(wrong mask, what to change) for the usual mistakes on this input."""
    B, T = text_mask.shape
    L = Q + T
    is_query = torch.arange(L) < Q
    rq, cq = is_query[:, None], is_query[None, :]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    keys = torch.cat([torch.ones(B, Q, dtype=torch.bool), text_mask], dim=1)[:, None, :]     # (B, 1, L)

    def keyed(allowed):
        return allowed[None] & keys

    expected = qformer_attention_mask(Q, text_mask, objective)
    allowed = qformer_attention_mask(Q, torch.ones(1, T, dtype=torch.bool), objective)[0]    # before padding
    mistakes = [
        (allowed[None].expand(B, L, L).clone(),
         "padding keys are attended: no row may attend a column where text_mask is False (the queries' columns "
         "are always real)."),
        (expected & keys.transpose(1, 2),
         "mask the padding *keys* (columns) only: a padding row that attends nothing makes softmax divide by zero "
         "(NaN). Its output is ignored anyway."),
        (expected.transpose(1, 2),
         "the mask is transposed: mask[b, i, j] says whether row i (who reads) may attend column j (who is read)."),
    ]
    if objective == "itg":
        mistakes += [
            (keyed((rq & cq) | (~rq & ~cq & causal)),
             "in itg a text token also sees every query: they carry the image the caption must describe."),
            (keyed(rq | (~rq & (cq | causal))),
             "in itg the queries see the queries only: a query that read the text would hand the caption to the "
             "tokens that must predict it."),
            (keyed(causal),
             "plain causal attention is not it: in itg the queries see each other both ways; only the text is "
             "causal."),
            (keyed((rq & cq) | (~rq & (cq | causal.T))),
             "the causal part looks into the future: a text token sees itself and the text before it (tril, not "
             "triu)."),
            (keyed((rq & cq) | (~rq & (cq | causal.tril(-1)))),
             "a text token also sees itself: tril(), not tril(-1)."),
            (keyed((rq & cq) | ~rq),
             "in itg a text token must not see later text: it is predicting the next one (causal over the text)."),
        ]
    elif objective == "itc":
        mistakes += [
            (keyed((rq & cq) | ~rq),
             "in itc the text must not see the queries: each side is encoded alone (unimodal), and the two are "
             "only compared afterwards."),
            (keyed(rq | (~rq & ~cq)),
             "in itc the queries must not see the text: each side is encoded alone (unimodal)."),
        ]
    for other in OBJECTIVES:
        if other != objective:
            mistakes.append((qformer_attention_mask(Q, text_mask, other),
                             f"that is {other}'s mask: in {objective} {_MASK_RULES[objective]}."))
    return mistakes


@check("qformer_attention_mask", points=2)
def check_qformer_attention_mask(qformer_attention_mask_fn):
    rng = check_rng()
    objectives = rng.sample(OBJECTIVES, len(OBJECTIVES))
    cases = [(rng.randint(2, 4), rng.randint(1, 5), rng.randint(2, 7), objective, "right") for objective in objectives]
    cases += [
        (rng.randint(2, 4), rng.randint(2, 5), rng.randint(3, 7), rng.choice(OBJECTIVES), "scattered"),
        (1, 1, 1, rng.choice(OBJECTIVES), "right"),                                    # one query, one token
    ]
    for B, Q, T, objective, pattern in cases:
        text_mask = _text_mask(rng, B, T, pattern)
        what = (f"qformer_attention_mask({Q}, text_mask ({B}, {T}) with {int((~text_mask).sum())} padding, "
                f"{objective!r})")
        expected = qformer_attention_mask(Q, text_mask, objective)
        out = call_learner(qformer_attention_mask_fn, Q, text_mask, objective, what="qformer_attention_mask")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (Q + T, Q + T):
            raise Hint(f"{what} has shape {tuple(out.shape)}, expected {tuple(expected.shape)}. Hint: one mask per "
                       "row of the batch, since each row has its own padding.")
        expect_shape(out, expected.shape, what, hint="(B, Q+T, Q+T): rows and columns are the Q queries, then the "
                                                     "T text tokens.")
        if out.dtype != torch.bool:
            raise Hint(f"{what} has dtype {out.dtype}, expected torch.bool (True = may attend).")
        expect_known_mistakes(out, expected, _mask_mistakes(Q, text_mask, objective), what, exact=True,
                              hint="itc: each side sees itself; itm: everyone; itg: queries see queries, text sees "
                                   "all queries and the text up to itself; never a padding column.")


# -----------------------------------------------------------------------------
# ITC: the max over queries


def _features(g, shape, dtype):
    """Random features whose vectors have lengths far from 1: the function must normalise."""
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    lengths = 3 * torch.exp(torch.randn(*shape[:-1], 1, generator=g, dtype=torch.float64))
    return (x * lengths).to(dtype)


def _itc_mistakes(queries, texts, scale):
    zq, zt = F.normalize(queries, dim=-1), F.normalize(texts, dim=-1)
    cosines = torch.einsum("iqe,je->ijq", zq, zt)                     # (B images, B texts, Q)
    raw = torch.einsum("iqe,je->ijq", queries, texts)
    expected = scale * cosines.amax(-1)
    return [
        (scale * cosines.mean(-1), "take the best-matching query (max over queries), not their mean."),
        (scale * raw.amax(-1), "L2-normalise the query and the text features first (cosines, not dot products)."),
        (scale * torch.einsum("iqe,je->ijq", zq, texts).amax(-1), "normalise the text features too."),
        (scale * torch.einsum("iqe,je->ijq", queries, zt).amax(-1), "normalise the query features too."),
        (scale * torch.einsum("iqe,je->ijq", F.normalize(queries, dim=1), zt).amax(-1),
         "normalise each query vector over its E features (dim=-1), not over the queries."),
        (expected.T, "the logits are transposed: row i is image i, column j is text j (images × texts)."),
        (cosines.amax(-1), "multiply the cosines by logit_scale."),
        (cosines.amax(-1) / scale, "multiply by logit_scale, don't divide."),
        (scale * zq[:, 0] @ zt.T, "use every query, not only the first: the max over all Q of them."),
    ]


@check("itc_logits", points=1)
def check_itc_logits(itc_logits_fn):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [  # (B, Q, E, scale, dtype)
        (rng.randint(3, 6), rng.randint(2, 6), rng.randint(3, 8), round(rng.uniform(2, 20), 2), torch.float32),
        (rng.randint(2, 5), 1, rng.randint(2, 6), torch.tensor(round(rng.uniform(2, 20), 2)), torch.float32),
        (rng.randint(2, 5), rng.randint(3, 8), rng.randint(2, 6), torch.tensor(round(rng.uniform(2, 20), 2),
                                                                            dtype=torch.float64), torch.float64),
        (2, rng.randint(2, 4), rng.randint(2, 4), round(rng.uniform(2, 20), 2), torch.float32),
    ]
    for B, Q, E, scale, dtype in cases:
        queries, texts = _features(g, (B, Q, E), dtype), _features(g, (B, E), dtype)
        shown = f"{float(scale):g}" + (" (a tensor)" if isinstance(scale, torch.Tensor) else "")
        what = (f"itc_logits(query_features ({B}, {Q}, {E}), text_features ({B}, {E}), logit_scale={shown})"
                + (" in float64" if dtype == torch.float64 else ""))
        expected = itc_logits(queries, texts, scale)
        out = call_learner(itc_logits_fn, queries, texts, scale, what="itc_logits")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, B, Q) and Q > 1:
            raise Hint(f"{what} has shape {(B, B, Q)}, expected {(B, B)}. Hint: reduce over the queries with a max: "
                       "an image is as similar to a text as its best-matching query.")
        expect_shape(out, (B, B), what, hint="one logit per (image, text) pair: (B, B).")
        expect_known_mistakes(out, expected, _itc_mistakes(queries, texts, scale), what,
                              hint="logits[i, j] = logit_scale · max over q of cos(query_features[i, q], "
                                   "text_features[j]), in the inputs' dtype.")


# -----------------------------------------------------------------------------
# one Q-Former layer from its sub-layers


def _layer(rng, D, heads, image_dim, cross):
    config = QFormerConfig(dim=D, heads=heads, mlp_hidden=rng.choice([2, 3, 4]) * D, image_dim=image_dim)
    with torch.random.fork_rng(devices=[]):      # the learner's global RNG stays as it was
        torch.manual_seed(rng.getrandbits(31))
        layer = QFormerLayer(config, has_cross_attention=cross)
        for module in layer.modules():             # LayerNorms that are not the identity at the start
            if isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.normal_(module.weight, 1.0, 0.3)
                torch.nn.init.normal_(module.bias, 0.0, 0.3)
    return layer


@torch.no_grad()
def _layer_mistakes(layer, x, Q, image, mask):
    """(wrong output, what to change) for the usual mistakes on this layer and input."""
    def split(h):
        return h[:, :Q], h[:, Q:]

    def cat(queries, text):
        return queries if text.shape[1] == 0 else torch.cat([queries, text], 1)

    cross = layer.cross_attn
    h = layer.self_attn(x, x, mask)
    q, t = split(h)
    q_read = q if cross is None else cross(q, image)
    mistakes = []
    if cross is not None:
        both = cross(h, image)
        mistakes += [
            (cat(layer.query_ffn(split(both)[0]), layer.text_ffn(split(both)[1])),
             "only the queries cross-attend to the image (h[:, :num_queries]); the text tokens reach it through "
             "the self-attention."),
            (cat(layer.query_ffn(q), layer.text_ffn(t)),
             "this layer has a cross-attention (layer.cross_attn is not None): the queries read the image after "
             "the self-attention."),
        ]
    mistakes += [
        (layer.query_ffn(cat(q_read, t)), "the text has its own feed-forward weights: layer.text_ffn for the text, "
                                          "layer.query_ffn for the queries."),
        (layer.text_ffn(cat(q_read, t)), "the queries have their own feed-forward weights: layer.query_ffn for the "
                                         "queries, layer.text_ffn for the text."),
        (cat(layer.text_ffn(q_read), layer.query_ffn(t)), "the feed-forwards are swapped: layer.query_ffn for the "
                                                          "queries, layer.text_ffn for the text."),
    ]
    if t.shape[1]:
        mistakes.append((torch.cat([layer.text_ffn(t), layer.query_ffn(q_read)], 1),
                         "the output keeps the input's order: the queries first, then the text."))
    if mask is not None:
        h0 = layer.self_attn(x, x)
        q0, t0 = split(h0)
        q0 = q0 if cross is None else cross(q0, image)
        mistakes.append((cat(layer.query_ffn(q0), layer.text_ffn(t0)),
                         "pass the mask to the self-attention: layer.self_attn(x, x, mask) (it decides who sees "
                         "whom in each objective)."))
    h1 = x + layer.self_attn(x, x, mask)
    q1, t1 = split(h1)
    q1 = q1 if cross is None else cross(q1, image)
    mistakes.append((cat(layer.query_ffn(q1), layer.text_ffn(t1)),
                     "the sub-layers already add the residual and normalise (post-LN): x = layer.self_attn(x, x, "
                     "mask), not x + layer.self_attn(...)."))
    q2 = q if cross is None else q + cross(q, image)
    mistakes.append((cat(q2 + layer.query_ffn(q2), t + layer.text_ffn(t)),
                     "the sub-layers already add the residual and normalise (post-LN): use their outputs as they "
                     "are, without adding the input again."))
    return mistakes


@check("qformer_layer", points=2)
def check_qformer_layer(qformer_layer):
    rng = check_rng()
    g = torch_generator(rng)
    cross_first = rng.random() < 0.5
    cases = [  # (B, Q, T, cross-attention, objective of the mask or None)
        (rng.randint(2, 3), rng.randint(2, 5), rng.randint(2, 6), cross_first, rng.choice(OBJECTIVES)),
        (rng.randint(2, 3), rng.randint(2, 5), rng.randint(2, 6), not cross_first, rng.choice(OBJECTIVES)),
        (rng.randint(1, 3), rng.randint(2, 6), 0, True, None),                   # queries alone, as in stage 2
        (rng.randint(1, 3), rng.randint(1, 4), 0, False, None),
        (rng.randint(2, 3), 1, rng.randint(2, 5), True, "itg"),
    ]
    with one_thread():        # tiny attention ops: on a busy 2-core machine, two threads made them 100x slower
        for B, Q, T, cross, objective in cases:
            heads = rng.choice([1, 2, 4])
            D, image_dim, N = heads * rng.randint(2, 6), rng.randint(3, 12), rng.randint(2, 9)
            layer = _layer(rng, D, heads, image_dim, cross)
            x = torch.randn(B, Q + T, D, generator=g)
            image = torch.randn(B, N, image_dim, generator=g)
            mask = None if objective is None else qformer_attention_mask(Q, _text_mask(rng, B, T), objective)
            what = (f"qformer_layer(layer {'with' if cross else 'without'} cross-attention, x ({B}, {Q + T}, {D}), "
                    f"num_queries={Q}, image_features ({B}, {N}, {image_dim}), "
                    + ("mask=None)" if mask is None else f"the {objective!r} mask)"))
            with torch.no_grad():
                expected = layer(x, Q, image, mask)
            try:
                with torch.no_grad():
                    out = call_learner(qformer_layer, layer, x, Q, image, mask, what="qformer_layer")
            except TypeError as error:
                if cross or "NoneType" not in str(error):
                    raise
                raise Hint(f"{what} raised TypeError: {error}. Hint: this layer has no cross-attention "
                           "(layer.cross_attn is None: only one layer in cross_attention_every reads the image); skip "
                           "that step when it is None.") from None
            if isinstance(out, torch.Tensor) and T and tuple(out.shape) == (B, Q, D):
                raise Hint(f"{what} has shape {(B, Q, D)}, expected {tuple(expected.shape)}. Hint: the text tokens "
                           "come back too, after the queries (through layer.text_ffn).")
            expect_shape(out, expected.shape, what, hint="the queries, then the text: (B, Q+T, D), or (B, Q, D) when "
                                                         "there is no text.")
            expect_known_mistakes(out, expected, _layer_mistakes(layer, x, Q, image, mask), what,
                                  hint="self-attention over all tokens under mask; then the queries alone cross-attend "
                                       "to image_features (if layer.cross_attn); query_ffn on the queries, text_ffn on "
                                       "the text; queries first.")


# -----------------------------------------------------------------------------
# the ITM batch: true pairs and hard negatives


def _reference_itm_batch(tokens, text_ids, text_mask, negative_text, negative_image):
    """The ITM batch of models.blip2.Blip2Stage1.forward (tested against it)."""
    B = tokens.shape[0]
    pair_tokens = torch.cat([tokens, tokens, tokens[negative_image]])
    pair_ids = torch.cat([text_ids, text_ids[negative_text], text_ids])
    pair_mask = torch.cat([text_mask, text_mask[negative_text], text_mask])
    labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(tokens.device)
    return pair_tokens, pair_ids, pair_mask, labels


def _derangement(rng, B):
    """A random index for each of B pairs, never its own."""
    return torch.tensor([rng.choice([j for j in range(B) if j != i]) for i in range(B)])


def _itm_mistakes(tokens, ids, mask, negative_text, negative_image):
    """Per output, (wrong value, what to change)."""
    B = tokens.shape[0]
    side = ("the negatives are on the wrong side: the second B pairs keep each image and take its negative text "
            "(text_ids[negative_text]); the third B keep each text and take its negative image "
            "(image_tokens[negative_image]).")
    return {
        "pair_tokens": [
            (torch.cat([tokens, tokens, tokens[negative_text]]), side),
            (torch.cat([tokens, tokens[negative_image], tokens]), side),
            (torch.cat([tokens, tokens[negative_text], tokens]), side),
            (torch.cat([tokens, tokens, tokens]), "the third B pairs take the negative image of each text: "
                                                  "image_tokens[negative_image]."),
        ],
        "pair_ids": [
            (torch.cat([ids, ids[negative_image], ids]), side),
            (torch.cat([ids, ids, ids[negative_text]]), side),
            (torch.cat([ids, ids, ids[negative_image]]), side),
            (torch.cat([ids, ids, ids]), "the second B pairs take the negative text of each image: "
                                         "text_ids[negative_text]."),
        ],
        "pair_mask": [
            (torch.cat([mask, mask, mask]), "the mask follows its ids: text_mask[negative_text] where the ids are "
                                            "text_ids[negative_text], or the model reads padding as text."),
            (torch.cat([mask, mask[negative_image], mask]), "the mask follows its ids: text_mask[negative_text] "
                                                            "where the ids are text_ids[negative_text]."),
            (torch.cat([mask, mask, mask[negative_text]]), "the mask follows its ids: text_mask[negative_text] in the "
                                                           "second B rows, with text_ids[negative_text]."),
        ],
        "labels": [
            (torch.cat([torch.zeros(B), torch.ones(2 * B)]).long(),
             "the labels are swapped: 1 for the B true pairs (they match), 0 for the 2B negatives."),
            (torch.cat([torch.ones(B), torch.zeros(B), torch.ones(B)]).long(),
             "only the first B rows are true pairs: label 1 for them, 0 for both groups of negatives."),
        ],
    }


@check("itm_batch", points=1)
def check_itm_batch(itm_batch):
    rng = check_rng()
    g = torch_generator(rng)
    vocab = len(Tokenizer())
    for B in (rng.randint(3, 6), rng.randint(4, 7), 2):
        N, Dv, T = rng.randint(2, 6), rng.randint(2, 6), rng.randint(3, 8)
        tokens = torch.randn(B, N, Dv, generator=g)
        mask = _text_mask(rng, B, T)
        ids = torch.randint(4, vocab, (B, T), generator=g).masked_fill(~mask, Tokenizer().pad_id)
        negative_text = _derangement(rng, B)
        negative_image = _derangement(rng, B)
        while B > 2 and torch.equal(negative_text, negative_image):
            negative_image = _derangement(rng, B)
        what = (f"itm_batch(image_tokens ({B}, {N}, {Dv}), text_ids ({B}, {T}), text_mask, "
                f"negative_text={negative_text.tolist()}, negative_image={negative_image.tolist()})")
        expected = _reference_itm_batch(tokens, ids, mask, negative_text, negative_image)
        out = call_learner(itm_batch, tokens, ids, mask, negative_text, negative_image, what="itm_batch")
        if not isinstance(out, (tuple, list)) or len(out) != 4:
            raise Hint(f"{what} should return 4 tensors (pair_tokens, pair_ids, pair_mask, labels), got "
                       f"{type(out).__name__}" + (f" of length {len(out)}." if isinstance(out, (tuple, list)) else "."))
        mistakes = _itm_mistakes(tokens, ids, mask, negative_text, negative_image)
        names = ("pair_tokens", "pair_ids", "pair_mask", "labels")
        for name, value, wanted in zip(names, out, expected):
            part = f"{name} of {what}"
            expect_shape(value, wanted.shape, part, hint="3B rows: the B true pairs, each image with its negative "
                                                         "text, each text with its negative image.")
            if name == "labels" and isinstance(value, torch.Tensor) and value.dtype != torch.long:
                raise Hint(f"{part} has dtype {value.dtype}, expected torch.int64. Hint: cross_entropy reads the "
                           "labels as class indices (long): .long().")
            expect_known_mistakes(value, wanted, mistakes[name], part, exact=True,
                                  hint="true pairs, then (image i, text negative_text[i]), then (image "
                                       "negative_image[j], text j); labels 1, then 0 for the 2B negatives.")


# -----------------------------------------------------------------------------
# the experiment: stage 2's soft visual prompt, with 1 and with 8 queries

# One-object Shapes scenes, a CLIP tower trained for 60 steps, the pretrained LM of chapter 04, then
# 150 steps of stage 2 (Q-Former + projector; ViT and LM frozen) for each Q: the whole check takes 8-9 s at
# one thread on a 2-core CPU. Over 14 draws of this check with the correct function the held-out accuracy was
# 47-58% with Q = 1 and 77-89% with Q = 8, the answer prior (the most common training answer to each
# question) 28-34%: Q = 8 beat it by 44-58 points. A model trained on blank images (no visual information)
# reached 34-40% (3 draws, Q = 1 and 8), 2-8 points above the prior.
SOFT_PROMPT_EXPERIMENT = dict(pool=1000, test_scenes=200, images_per_step=16, clip_steps=60, steps=150, lr=3e-3,
                              queries=(1, 8), qformer=dict(dim=64, depth=2, heads=4, mlp_hidden=128))
PRIOR_MARGIN = 0.25    # with Q = 8, the held-out accuracy must beat the answer prior by this much


def _llava_config(tokenizer):
    lm_config = pretrained.default_config(tokenizer)
    return LlavaConfig(vocab_size=len(tokenizer), patch_size=8, text_dim=lm_config.dim, text_depth=lm_config.depth,
                       text_heads=lm_config.heads, max_seq_len=lm_config.max_seq_len, prefix="causal")


def _refuse_encode_images(*args, **kwargs):
    raise Hint("soft_prompt called model.encode_images, the answer key: run model.vision, model.qformer and "
               "model.projector yourself.")


def _plug(model, soft_prompt):
    """Make the learner's soft_prompt the model's encode_images (what forward and vqa_accuracy call)."""
    inside = []

    def encode_images(images):
        if inside:
            _refuse_encode_images()
        inside.append(True)
        try:
            return soft_prompt(model, images)
        finally:
            inside.pop()
    model.encode_images = encode_images
    return model


def _probe(soft_prompt, rng):
    """On a small Blip2 whose ViT still has requires_grad=True: values, shape and where the gradient goes."""
    g = torch_generator(rng)
    Dv, Dt, Q = rng.choice([8, 16]), rng.choice([12, 20]), rng.randint(2, 6)
    Dq = rng.choice([d for d in (8, 16, 24) if d != Dt])
    config = LlavaConfig(vision_dim=Dv, vision_depth=1, vision_heads=2, text_dim=Dt, text_depth=1, text_heads=2)
    qformer = QFormerConfig(dim=Dq, depth=rng.randint(1, 3), heads=2, mlp_hidden=2 * Dq, image_dim=Dv, num_queries=Q,
                            cross_attention_every=rng.randint(1, 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.getrandbits(31))
        model = Blip2(config, qformer)
    model.vision.requires_grad_(True)
    model.encode_images = _refuse_encode_images
    B = rng.randint(1, 4)
    images = torch.rand(B, 3, config.image_size, config.image_size, generator=g)
    what = f"soft_prompt(model with Q={Q} queries, images ({B}, 3, 32, 32))"
    with torch.no_grad():
        expected = Blip2.encode_images(model, images)
        raw = model.vision(images)
        wrong = [
            (model.projector(model.qformer(raw.tokens)),
             "the ViT reads standardised images: model.vision(model.normalize(images)), as in chapter 05."),
            (model.projector(model.qformer(model.vision(model.normalize(images)).pooled[:, None])),
             "the Q-Former reads every patch token (.tokens, (B, N, Dv)), not the pooled vector."),
        ]
    out = call_learner(soft_prompt, model, images, what="soft_prompt")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, Q, Dq):
        raise Hint(f"{what} has shape {(B, Q, Dq)}, expected {(B, Q, Dt)}: that is the Q-Former's output. Hint: "
                   "model.projector maps it to the LM's width.")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, raw.tokens.shape[1], Dv):
        raise Hint(f"{what} has shape {tuple(out.shape)}, expected {(B, Q, Dt)}: those are the ViT's patch tokens. "
                   "Hint: the Q-Former's Q queries read them (model.qformer), then model.projector.")
    expect_shape(out, (B, Q, Dt), what, hint="Q soft visual tokens in the LM's width: (B, Q, text_dim).")
    expect_known_mistakes(out, expected, wrong, what,
                          hint="model.projector(model.qformer(tokens)), tokens = model.vision(model.normalize("
                               "images)).tokens computed under torch.no_grad().")
    if not out.requires_grad:
        raise Hint(f"{what} carries no gradient, so the Q-Former and the projector can't train. Hint: only the "
                   "ViT runs under torch.no_grad(); no .detach() on what follows it.")
    out.square().sum().backward()
    if any(p.grad is not None for p in model.vision.parameters()):
        raise Hint(f"the gradient of {what} reaches the ViT. Hint: run the frozen ViT under torch.no_grad(): "
                   "stage 2 never trains it, so it needs no graph (less memory, less time).")
    if model.qformer.query_tokens.grad is None or model.projector.weight.grad is None:
        raise Hint(f"the gradient of {what} does not reach the Q-Former's queries or the projector. Hint: only "
                   "the ViT runs under torch.no_grad().")


def _answer_prior(train_pairs, test_pairs):
    """Accuracy on test_pairs of the most common training answer to each question (to each kind if unseen)."""
    by_question, by_kind = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
    for _, qa in train_pairs:
        by_question[qa.question][qa.answer] += 1
        by_kind[qa.kind][qa.answer] += 1
    guesses = [(by_question.get(qa.question) or by_kind[qa.kind]).most_common(1)[0][0] for _, qa in test_pairs]
    return sum(guess == qa.answer for guess, (_, qa) in zip(guesses, test_pairs)) / len(test_pairs)


def _soft_prompt_setup(seed):
    """Data, and a stage-2 Blip2 for each number of queries, with a CLIP-trained ViT and the pretrained LM."""
    setup, tokenizer = SOFT_PROMPT_EXPERIMENT, Tokenizer()
    world, pool = WorldConfig(max_objects=1), setup["pool"]
    scenes, images = ShapesGenerator(world, 32, "train", seed=seed).batch(pool)
    train_pairs = sample_vqa(scenes, 4, seed=seed)
    vqa = encode_vqa(tokenizer, train_pairs)
    test_scenes, test_images = ShapesGenerator(world, 32, "test", seed=seed + 1).batch(setup["test_scenes"])
    test_pairs = sample_vqa(test_scenes, 4, seed=seed + 1)
    config = _llava_config(tokenizer)
    models = {}
    for Q in setup["queries"]:
        torch.manual_seed(seed + Q)
        models[Q] = Blip2(config, QFormerConfig(**setup["qformer"], image_dim=config.vision_dim, num_queries=Q))

    normalize = models[Q].normalize
    clip = train_clip_vision(config.vision_config(), tokenizer, scenes, images, normalize, setup["clip_steps"])
    lm = pretrained.language_model(config.lm_config(), device="cpu")
    for model in models.values():
        model.load_vision_tower(clip.vision).load_language_model(lm).set_stage(2)

    first_row = torch.searchsorted(vqa["image_index"], torch.arange(pool + 1)).tolist()
    lengths = vqa["attention_mask"].sum(1)

    def vqa_batches(step, per_step=setup["images_per_step"]):
        start = (step * per_step) % (pool - per_step + 1)
        rows = slice(first_row[start], first_row[start + per_step])
        length = int(lengths[rows].max())
        return (images[start:start + per_step], vqa["input_ids"][rows, :length], vqa["attention_mask"][rows, :length],
                vqa["labels"][rows, :length], vqa["image_index"][rows] - start)

    test = (tokenizer, test_images, test_pairs, _answer_prior(train_pairs, test_pairs))
    return models, vqa_batches, test


def _state(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


def _unchanged(module, before):
    return all(torch.equal(value, before[key]) for key, value in module.state_dict().items())


def _train_and_measure(soft_prompt, model, batches, test):
    """Stage 2 with the learner's soft prompt: held-out accuracy; a Hint if the ViT or the LM changed."""
    tokenizer, images, pairs, _ = test
    vision, lm = _state(model.vision), _state(model.lm)
    _plug(model, soft_prompt)
    steps = SOFT_PROMPT_EXPERIMENT["steps"]
    fit(model, batches, lambda m, b: m(*b, validate=False).loss,
        TrainConfig(steps=steps, lr=SOFT_PROMPT_EXPERIMENT["lr"], warmup_steps=min(30, steps), device="cpu",
                    progress=False))
    Q = model.qformer.config.num_queries
    if not _unchanged(model.vision, vision):
        raise Hint(f"the ViT's weights changed while stage 2 trained (Q={Q}). Hint: soft_prompt only reads "
                   "model.vision, under torch.no_grad().")
    if not _unchanged(model.lm, lm):
        raise Hint(f"the LM's weights changed while stage 2 trained (Q={Q}). Hint: soft_prompt only computes the "
                   "visual prompt: it doesn't touch model.lm.")
    return vqa_accuracy(model, tokenizer, images, pairs)["all"]


@check("soft_prompt", points=3)
def check_soft_prompt(soft_prompt):
    rng = check_rng()
    seed = rng.getrandbits(31)
    setup = SOFT_PROMPT_EXPERIMENT
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)    # the models' initialisation; the learner's global RNG is restored afterwards
        for _ in range(2):         # 1. the function itself, on small models (fast: no training)
            _probe(soft_prompt, rng)
        models, batches, test = _soft_prompt_setup(seed)    # 2. measured: stage 2 with Q = 1 and Q = 8
        accuracy = {Q: _train_and_measure(soft_prompt, model, batches, test) for Q, model in models.items()}
    few, many = setup["queries"]
    prior = test[3]
    measured = (f"Q={few}: {accuracy[few]:.0%}, Q={many}: {accuracy[many]:.0%} of the held-out questions "
                f"(answer prior {prior:.0%})")
    if not accuracy[many] >= prior + PRIOR_MARGIN:
        raise Hint(f"after {setup['steps']} steps of stage 2: {measured}; expected at least "
                   f"{prior + PRIOR_MARGIN:.0%} with Q={many}. Hint: the LM can only answer from what the projected "
                   "query outputs tell it: ViT tokens -> model.qformer -> model.projector, with the gradient "
                   "reaching the Q-Former.")


# -----------------------------------------------------------------------------
# concept questions


BLIP2_TOKENS_QUESTION = dict(num_queries=32, image_size=224, patch_size=14)


@check("visual_tokens_blip2", points=1)
def check_visual_tokens_blip2(visual_tokens_blip2):
    q = BLIP2_TOKENS_QUESTION
    answer = answer_number(call_learner(visual_tokens_blip2, what="visual_tokens_blip2"), "visual_tokens_blip2()",
                           integer=True)
    with torch.random.fork_rng(devices=[]), torch.no_grad():      # a tiny stage-2 model with BLIP-2's 32 queries
        model = Blip2(LlavaConfig(vision_dim=8, vision_depth=1, vision_heads=2, text_dim=8, text_depth=1,
                                  text_heads=2),
                      QFormerConfig(dim=8, depth=1, heads=2, mlp_hidden=8, image_dim=8, num_queries=q["num_queries"]))
        expected = model.encode_images(torch.rand(1, 3, 32, 32)).shape[1]
    if answer == expected:
        return
    patches = (q["image_size"] // q["patch_size"]) ** 2
    for wrong, hint in [
        (patches, "that is the ViT's patch count: the LLM never sees the patches, only the Q-Former's query outputs."),
        (patches + 1, "that is the ViT's tokens with [CLS]: the LLM only sees the Q-Former's query outputs."),
        (patches + expected, "the patches don't reach the LLM: the queries read them and replace them."),
        (q["image_size"] // q["patch_size"], "that is the patch grid's side, and the LLM doesn't see the patches "
                                             "anyway: only the Q-Former's query outputs."),
    ]:
        if answer == wrong:
            raise Hint(f"visual_tokens_blip2() is {answer}. Hint: {hint}")
    raise Hint(f"visual_tokens_blip2() is {answer}, not the number of soft visual tokens. Hint: what reaches the LLM "
               "is one projected vector per learned query, whatever the image's size.")


CROSS_ATTENTION_QUESTION = dict(depth=12, cross_attention_every=2)


@check("cross_attention_layers", points=1)
def check_cross_attention_layers(cross_attention_layers):
    q = CROSS_ATTENTION_QUESTION
    answer = answer_number(call_learner(cross_attention_layers, what="cross_attention_layers"),
                           "cross_attention_layers()", integer=True)
    with torch.device("meta"):                  # shapes only: no memory, no random numbers
        qformer = QFormer(QFormerConfig(dim=8, depth=q["depth"], heads=2, mlp_hidden=8, image_dim=8,
                                        cross_attention_every=q["cross_attention_every"]))
    expected = sum(layer.cross_attn is not None for layer in qformer.layers)
    if answer == expected:
        return
    for wrong, hint in [
        (expected - 1, "layer 0 cross-attends too: layer i does when i % cross_attention_every == 0 (0, 2, 4, …)."),
        (q["depth"], "not every layer reads the image: only every cross_attention_every-th one."),
        (q["depth"] * 2, "count layers, not sub-layers: only every cross_attention_every-th layer reads the image."),
    ]:
        if answer == wrong:
            raise Hint(f"cross_attention_layers() is {answer}. Hint: {hint}")
    raise Hint(f"cross_attention_layers() is {answer}. Hint: layer i (from 0 to depth - 1) has a cross-attention "
               "when i % cross_attention_every == 0.")


GENERATION_MASK_OPTIONS = {objective: objective for objective in OBJECTIVES}


def _generation_objective():
    """The objective whose mask lets each text token see every query but no later text (from minivlm.qformer)."""
    Q, T = 2, 3
    for objective in OBJECTIVES:
        mask = qformer_attention_mask(Q, torch.ones(1, T, dtype=torch.bool), objective)[0]
        text_rows = mask[Q:]
        later = torch.ones(T, T, dtype=torch.bool).triu(1)
        if text_rows[:, :Q].all() and not (text_rows[:, Q:] & later).any():
            return objective


@check("generation_mask", points=1)
def check_generation_mask(generation_mask):
    answer = answer_choice(call_learner(generation_mask, what="generation_mask"), GENERATION_MASK_OPTIONS,
                           "generation_mask()")
    if answer == _generation_objective():
        return
    raise Hint({
        "itc": f'"{answer}" is not it. Hint: in itc the text sees no query at all (each side is encoded alone).',
        "itm": f'"{answer}" is not it. Hint: in itm a text token sees the whole caption, later words included.',
        "itg": f'"{answer}" is not it.',
    }[answer])
