"""The chapter 06 checks pass the reference and other correct implementations, say "not implemented yet"
to a stub, and give a specific hint (not a pass) to typical mistakes, whatever sizes they draw."""

import pytest
import torch
import torch.nn.functional as F

from minivlm.blip2_objectives import itc_logits
from minivlm.course.grading import ch06
from minivlm.data import Tokenizer
from minivlm.models import blip2 as blip2_module
from minivlm.models.blip2 import Blip2Config, Blip2Stage1
from minivlm.qformer import QFormerConfig, qformer_attention_mask
from minivlm.vit import ViT, ViTConfig

SEEDS = [1, 2, 3, 4]


def stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- correct implementations

def mask_by_rules(num_queries, text_mask, objective):
    B, T = text_mask.shape
    Q = num_queries
    is_query = torch.arange(Q + T) < Q
    row_query, col_query = is_query[:, None], is_query[None, :]
    if objective == "itc":
        allowed = row_query == col_query
    elif objective == "itm":
        allowed = torch.ones(Q + T, Q + T, dtype=torch.bool)
    else:
        causal = torch.ones(Q + T, Q + T, dtype=torch.bool).tril()
        allowed = (row_query & col_query) | (~row_query & (col_query | causal))
    keys = torch.cat([torch.ones(B, Q, dtype=torch.bool), text_mask], dim=1)
    return allowed[None] & keys[:, None, :]


def mask_by_loops(num_queries, text_mask, objective):
    B, T = text_mask.shape
    Q, L = num_queries, num_queries + T
    mask = torch.zeros(B, L, L, dtype=torch.bool)
    for b in range(B):
        for i in range(L):
            for j in range(L):
                if j >= Q and not text_mask[b, j - Q]:
                    continue
                if objective == "itm":
                    mask[b, i, j] = True
                elif objective == "itc":
                    mask[b, i, j] = (i < Q) == (j < Q)
                else:
                    mask[b, i, j] = j < Q if i < Q else (j < Q or j <= i)
    return mask


def itc_by_matmul(query_features, text_features, logit_scale):
    queries = query_features / query_features.norm(dim=-1, keepdim=True)
    texts = text_features / text_features.norm(dim=-1, keepdim=True)
    per_query = queries @ texts.T                              # (B, Q, B): broadcast over images
    return logit_scale * per_query.max(dim=1).values


def layer_by_reference(layer, x, num_queries, image_features, mask):
    x = layer.self_attn(x, x, mask)
    queries, text = x[:, :num_queries], x[:, num_queries:]
    if layer.cross_attn is not None:
        queries = layer.cross_attn(queries, image_features)
    queries = layer.query_ffn(queries)
    if text.shape[1] == 0:
        return queries
    return torch.cat([queries, layer.text_ffn(text)], dim=1)


def layer_by_split(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    queries, text = torch.split(h, [num_queries, h.shape[1] - num_queries], dim=1)
    if layer.cross_attn:
        queries = layer.cross_attn(queries, image_features, None)
    return torch.cat([layer.query_ffn(queries), layer.text_ffn(text)], dim=1)


def itm_by_reference(image_tokens, text_ids, text_mask, negative_text, negative_image):
    B = image_tokens.shape[0]
    pair_tokens = torch.cat([image_tokens, image_tokens, image_tokens[negative_image]])
    pair_ids = torch.cat([text_ids, text_ids[negative_text], text_ids])
    pair_mask = torch.cat([text_mask, text_mask[negative_text], text_mask])
    labels = torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(2 * B, dtype=torch.long)])
    return pair_tokens, pair_ids, pair_mask, labels


def itm_by_indices(image_tokens, text_ids, text_mask, negative_text, negative_image):
    B = image_tokens.shape[0]
    everyone = torch.arange(B)
    image = torch.cat([everyone, everyone, negative_image])
    text = torch.cat([everyone, negative_text, everyone])
    return image_tokens[image], text_ids[text], text_mask[text], (torch.arange(3 * B) < B).long()


def soft_prompt(model, images):
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    return model.projector(model.qformer(tokens))


CORRECT = [
    (ch06.check_qformer_attention_mask, qformer_attention_mask),
    (ch06.check_qformer_attention_mask, mask_by_rules),
    (ch06.check_qformer_attention_mask, mask_by_loops),
    (ch06.check_itc_logits, itc_logits),
    (ch06.check_itc_logits, itc_by_matmul),
    (ch06.check_qformer_layer, layer_by_reference),
    (ch06.check_qformer_layer, layer_by_split),
    (ch06.check_itm_batch, itm_by_reference),
    (ch06.check_itm_batch, itm_by_indices),
]


@pytest.mark.parametrize("check, fn", CORRECT)
def test_correct_implementations_pass(check, fn, grade):
    passed, out = grade(check, fn)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check", [ch06.check_qformer_attention_mask, ch06.check_itc_logits, ch06.check_qformer_layer,
                                   ch06.check_itm_batch, ch06.check_soft_prompt, ch06.check_visual_tokens_blip2,
                                   ch06.check_cross_attention_layers, ch06.check_generation_mask])
def test_a_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_the_reference_itm_batch_is_blip2_stage1s(monkeypatch):
    """What Blip2Stage1.forward hands its ITM pass, for given negatives, is ch06's reference batch."""
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    vit = ViT(ViTConfig(image_size=32, patch_size=8, dim=24, depth=1, heads=2))
    model = Blip2Stage1(vit, Blip2Config(QFormerConfig(dim=16, depth=1, heads=2, mlp_hidden=32, image_dim=24,
                                                       num_queries=2, vocab_size=len(tokenizer)), embed_dim=8))
    captions = ["two red circles .", "a blue square .", "one green triangle and a red circle .", "a circle ."]
    ids, mask = tokenizer.batch_encode(captions, add_bos=True, add_eos=True)
    images = torch.rand(4, 3, 32, 32)
    negative_text, negative_image = torch.tensor([2, 0, 3, 1]), torch.tensor([3, 2, 1, 0])
    monkeypatch.setattr(blip2_module, "hard_negatives", lambda *args: (negative_text, negative_image))
    calls, targets = [], []
    qformer_forward, cross_entropy = model.qformer.forward, F.cross_entropy
    monkeypatch.setattr(model.qformer, "forward", lambda *args: calls.append(args) or qformer_forward(*args))
    monkeypatch.setattr(blip2_module.F, "cross_entropy",
                        lambda logits, target, **kw: targets.append(target) or cross_entropy(logits, target, **kw))
    model(images, ids, mask)
    pair_tokens, pair_ids, pair_attention = calls[1]
    expected = ch06._reference_itm_batch(model.image_tokens(images), ids, mask, negative_text, negative_image)
    assert torch.equal(pair_tokens, expected[0]) and torch.equal(pair_ids, expected[1])
    assert torch.equal(pair_attention, qformer_attention_mask(2, expected[2], "itm"))
    itm_targets = [target for target in targets if target.shape == (3 * 4,)]     # F is torch's: ITC's calls too
    assert len(itm_targets) == 1 and torch.equal(itm_targets[0], expected[3])


# ----------------------------------------------------------------------------- typical mistakes

def _mask_parts(num_queries, text_mask):
    B, T = text_mask.shape
    L = num_queries + T
    is_query = torch.arange(L) < num_queries
    keys = torch.cat([torch.ones(B, num_queries, dtype=torch.bool), text_mask], dim=1)[:, None, :]
    return is_query[:, None], is_query[None, :], torch.ones(L, L, dtype=torch.bool).tril(), keys


def _mask_with_itg(itg):
    """The reference mask, except for objective "itg", built by itg(rq, cq, causal) before the padding."""
    def mask(num_queries, text_mask, objective):
        if objective != "itg":
            return qformer_attention_mask(num_queries, text_mask, objective)
        rq, cq, causal, keys = _mask_parts(num_queries, text_mask)
        return itg(rq, cq, causal)[None] & keys
    return mask


mask_itg_text_blind = _mask_with_itg(lambda rq, cq, causal: (rq & cq) | (~rq & ~cq & causal))
mask_itg_queries_see_text = _mask_with_itg(lambda rq, cq, causal: rq | (~rq & (cq | causal)))
mask_itg_triu = _mask_with_itg(lambda rq, cq, causal: (rq & cq) | (~rq & (cq | causal.T)))
mask_itg_plain_causal = _mask_with_itg(lambda rq, cq, causal: causal)
mask_itg_strict = _mask_with_itg(lambda rq, cq, causal: (rq & cq) | (~rq & (cq | causal.tril(-1))))
mask_itg_text_sees_all = _mask_with_itg(lambda rq, cq, causal: (rq & cq) | ~rq)


def mask_padding_attended(num_queries, text_mask, objective):
    return qformer_attention_mask(num_queries, torch.ones_like(text_mask), objective)


def mask_padding_rows_too(num_queries, text_mask, objective):
    keys = torch.cat([torch.ones(text_mask.shape[0], num_queries, dtype=torch.bool), text_mask], dim=1)
    return qformer_attention_mask(num_queries, text_mask, objective) & keys[:, :, None]


def mask_itc_text_sees_queries(num_queries, text_mask, objective):
    if objective != "itc":
        return qformer_attention_mask(num_queries, text_mask, objective)
    rq, cq, causal, keys = _mask_parts(num_queries, text_mask)
    return ((rq & cq) | ~rq)[None] & keys


def mask_itc_queries_see_text(num_queries, text_mask, objective):
    if objective != "itc":
        return qformer_attention_mask(num_queries, text_mask, objective)
    rq, cq, causal, keys = _mask_parts(num_queries, text_mask)
    return (rq | (~rq & ~cq))[None] & keys


def mask_transposed(num_queries, text_mask, objective):
    return qformer_attention_mask(num_queries, text_mask, objective).transpose(1, 2)


def mask_float(num_queries, text_mask, objective):
    return qformer_attention_mask(num_queries, text_mask, objective).float()


def mask_unbatched(num_queries, text_mask, objective):
    return qformer_attention_mask(num_queries, text_mask, objective)[0]


def mask_itm_for_all(num_queries, text_mask, objective):
    return qformer_attention_mask(num_queries, text_mask, "itm")


def itc_mean(query_features, text_features, logit_scale):
    cosines = torch.einsum("iqe,je->ijq", F.normalize(query_features, dim=-1), F.normalize(text_features, dim=-1))
    return logit_scale * cosines.mean(-1)


def itc_unnormalised(query_features, text_features, logit_scale):
    return logit_scale * torch.einsum("iqe,je->ijq", query_features, text_features).amax(-1)


def itc_transposed(query_features, text_features, logit_scale):
    return itc_logits(query_features, text_features, logit_scale).T


def itc_no_scale(query_features, text_features, logit_scale):
    return itc_logits(query_features, text_features, 1.0)


def itc_texts_unnormalised(query_features, text_features, logit_scale):
    return logit_scale * torch.einsum("iqe,je->ijq", F.normalize(query_features, dim=-1), text_features).amax(-1)


def itc_queries_unnormalised(query_features, text_features, logit_scale):
    return logit_scale * torch.einsum("iqe,je->ijq", query_features, F.normalize(text_features, dim=-1)).amax(-1)


def itc_normalised_over_queries(query_features, text_features, logit_scale):
    return logit_scale * torch.einsum("iqe,je->ijq", F.normalize(query_features, dim=1),
                                      F.normalize(text_features, dim=-1)).amax(-1)


def itc_divided(query_features, text_features, logit_scale):
    return itc_logits(query_features, text_features, 1.0) / logit_scale


def itc_first_query(query_features, text_features, logit_scale):
    return logit_scale * F.normalize(query_features[:, 0], dim=-1) @ F.normalize(text_features, dim=-1).T


def itc_no_reduction(query_features, text_features, logit_scale):
    return logit_scale * torch.einsum("iqe,je->ijq", F.normalize(query_features, dim=-1),
                                      F.normalize(text_features, dim=-1))


def layer_text_cross_attends(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    if layer.cross_attn is not None:
        h = layer.cross_attn(h, image_features)
    return torch.cat([layer.query_ffn(h[:, :num_queries]), layer.text_ffn(h[:, num_queries:])], dim=1)


def layer_one_ffn(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    queries, text = h[:, :num_queries], h[:, num_queries:]
    if layer.cross_attn is not None:
        queries = layer.cross_attn(queries, image_features)
    return layer.query_ffn(torch.cat([queries, text], dim=1))


def layer_text_ffn_for_all(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    queries, text = h[:, :num_queries], h[:, num_queries:]
    if layer.cross_attn is not None:
        queries = layer.cross_attn(queries, image_features)
    return layer.text_ffn(torch.cat([queries, text], dim=1))


def layer_ffns_swapped(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    queries, text = h[:, :num_queries], h[:, num_queries:]
    if layer.cross_attn is not None:
        queries = layer.cross_attn(queries, image_features)
    return torch.cat([layer.text_ffn(queries), layer.query_ffn(text)], dim=1)


def layer_residual_everywhere(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    queries, text = h[:, :num_queries], h[:, num_queries:]
    if layer.cross_attn is not None:
        queries = queries + layer.cross_attn(queries, image_features)
    return torch.cat([queries + layer.query_ffn(queries), text + layer.text_ffn(text)], dim=1)


def layer_cross_skipped(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    return torch.cat([layer.query_ffn(h[:, :num_queries]), layer.text_ffn(h[:, num_queries:])], dim=1)


def layer_cross_always(layer, x, num_queries, image_features, mask):
    h = layer.self_attn(x, x, mask)
    queries = layer.cross_attn(h[:, :num_queries], image_features)
    return torch.cat([layer.query_ffn(queries), layer.text_ffn(h[:, num_queries:])], dim=1)


def layer_mask_ignored(layer, x, num_queries, image_features, mask):
    return layer_by_reference(layer, x, num_queries, image_features, None)


def layer_text_first(layer, x, num_queries, image_features, mask):
    out = layer_by_reference(layer, x, num_queries, image_features, mask)
    return torch.cat([out[:, num_queries:], out[:, :num_queries]], dim=1)


def layer_extra_residual(layer, x, num_queries, image_features, mask):
    h = x + layer.self_attn(x, x, mask)
    queries, text = h[:, :num_queries], h[:, num_queries:]
    if layer.cross_attn is not None:
        queries = layer.cross_attn(queries, image_features)
    return torch.cat([layer.query_ffn(queries), layer.text_ffn(text)], dim=1)


def layer_queries_only(layer, x, num_queries, image_features, mask):
    return layer_by_reference(layer, x, num_queries, image_features, mask)[:, :num_queries]


def itm_labels_swapped(*args):
    pair_tokens, pair_ids, pair_mask, labels = itm_by_reference(*args)
    return pair_tokens, pair_ids, pair_mask, 1 - labels


def itm_wrong_side(image_tokens, text_ids, text_mask, negative_text, negative_image):
    return itm_by_reference(image_tokens, text_ids, text_mask, negative_image, negative_text)


def itm_mask_not_following(image_tokens, text_ids, text_mask, negative_text, negative_image):
    pair_tokens, pair_ids, _, labels = itm_by_reference(image_tokens, text_ids, text_mask, negative_text,
                                                        negative_image)
    return pair_tokens, pair_ids, torch.cat([text_mask] * 3), labels


def itm_no_negative_images(image_tokens, text_ids, text_mask, negative_text, negative_image):
    _, pair_ids, pair_mask, labels = itm_by_reference(image_tokens, text_ids, text_mask, negative_text, negative_image)
    return torch.cat([image_tokens] * 3), pair_ids, pair_mask, labels


def itm_no_negative_texts(image_tokens, text_ids, text_mask, negative_text, negative_image):
    pair_tokens, _, pair_mask, labels = itm_by_reference(image_tokens, text_ids, text_mask, negative_text,
                                                         negative_image)
    return pair_tokens, torch.cat([text_ids] * 3), pair_mask, labels


def itm_mask_of_the_negative_image(image_tokens, text_ids, text_mask, negative_text, negative_image):
    pair_tokens, pair_ids, _, labels = itm_by_reference(image_tokens, text_ids, text_mask, negative_text,
                                                        negative_image)
    return pair_tokens, pair_ids, torch.cat([text_mask, text_mask[negative_image], text_mask]), labels


def itm_labels_one_zero_one(*args):
    pair_tokens, pair_ids, pair_mask, labels = itm_by_reference(*args)
    B = len(labels) // 3
    return pair_tokens, pair_ids, pair_mask, torch.cat([labels[:B], labels[B:2 * B], labels[:B]])


def itm_float_labels(*args):
    pair_tokens, pair_ids, pair_mask, labels = itm_by_reference(*args)
    return pair_tokens, pair_ids, pair_mask, labels.float()


def itm_three_outputs(*args):
    return itm_by_reference(*args)[:3]


MISTAKES = [
    (ch06.check_qformer_attention_mask, mask_itg_text_blind, "a text token also sees every query"),
    (ch06.check_qformer_attention_mask, mask_itg_queries_see_text, "the queries see the queries only"),
    (ch06.check_qformer_attention_mask, mask_itg_triu, "tril, not triu"),
    (ch06.check_qformer_attention_mask, mask_itg_plain_causal, "plain causal"),
    (ch06.check_qformer_attention_mask, mask_padding_attended, "padding keys are attended"),
    (ch06.check_qformer_attention_mask, mask_padding_rows_too, "(NaN)"),
    (ch06.check_qformer_attention_mask, mask_itc_text_sees_queries, "the text must not see the queries"),
    (ch06.check_qformer_attention_mask, mask_transposed, "transposed"),
    (ch06.check_qformer_attention_mask, mask_float, "torch.bool"),
    (ch06.check_qformer_attention_mask, mask_unbatched, "one mask per row"),
    (ch06.check_qformer_attention_mask, mask_itm_for_all, "that is itm's mask"),
    (ch06.check_qformer_attention_mask, mask_itg_strict, "tril(), not tril(-1)"),
    (ch06.check_qformer_attention_mask, mask_itg_text_sees_all, "must not see later text"),
    (ch06.check_qformer_attention_mask, mask_itc_queries_see_text, "the queries must not see the text"),
    (ch06.check_itc_logits, itc_mean, "not their mean"),
    (ch06.check_itc_logits, itc_unnormalised, "L2-normalise"),
    (ch06.check_itc_logits, itc_transposed, "transposed"),
    (ch06.check_itc_logits, itc_no_scale, "multiply the cosines by logit_scale"),
    (ch06.check_itc_logits, itc_first_query, "not only the first"),
    (ch06.check_itc_logits, itc_texts_unnormalised, "normalise the text features too"),
    (ch06.check_itc_logits, itc_queries_unnormalised, "normalise the query features too"),
    (ch06.check_itc_logits, itc_normalised_over_queries, "not over the queries"),
    (ch06.check_itc_logits, itc_divided, "don't divide"),
    (ch06.check_itc_logits, itc_no_reduction, "reduce over the queries with a max"),
    (ch06.check_qformer_layer, layer_text_cross_attends, "only the queries cross-attend"),
    (ch06.check_qformer_layer, layer_one_ffn, "the text has its own feed-forward"),
    (ch06.check_qformer_layer, layer_text_ffn_for_all, "the queries have their own feed-forward"),
    (ch06.check_qformer_layer, layer_ffns_swapped, "the feed-forwards are swapped"),
    (ch06.check_qformer_layer, layer_residual_everywhere, "without adding the input again"),
    (ch06.check_qformer_layer, layer_cross_skipped, "this layer has a cross-attention"),
    (ch06.check_qformer_layer, layer_cross_always, "layer.cross_attn is None"),
    (ch06.check_qformer_layer, layer_mask_ignored, "pass the mask to the self-attention"),
    (ch06.check_qformer_layer, layer_text_first, "the queries first, then the text"),
    (ch06.check_qformer_layer, layer_extra_residual, "already add the residual"),
    (ch06.check_qformer_layer, layer_queries_only, "the text tokens come back too"),
    (ch06.check_itm_batch, itm_labels_swapped, "the labels are swapped"),
    (ch06.check_itm_batch, itm_wrong_side, "the negatives are on the wrong side"),
    (ch06.check_itm_batch, itm_mask_not_following, "the mask follows its ids"),
    (ch06.check_itm_batch, itm_no_negative_images, "take the negative image of each text"),
    (ch06.check_itm_batch, itm_no_negative_texts, "take the negative text of each image"),
    (ch06.check_itm_batch, itm_mask_of_the_negative_image, "the mask follows its ids"),
    (ch06.check_itm_batch, itm_labels_one_zero_one, "only the first B rows are true pairs"),
    (ch06.check_itm_batch, itm_float_labels, "class indices"),
    (ch06.check_itm_batch, itm_three_outputs, "should return 4 tensors"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


KEY_CASES = [
    (ch06.check_qformer_attention_mask, mask_by_loops, True),
    (ch06.check_qformer_attention_mask, mask_itg_text_blind, False),
    (ch06.check_qformer_attention_mask, mask_padding_rows_too, False),
    (ch06.check_qformer_attention_mask, mask_transposed, False),
    (ch06.check_itc_logits, itc_by_matmul, True),
    (ch06.check_itc_logits, itc_transposed, False),
    (ch06.check_itc_logits, itc_first_query, False),
    (ch06.check_qformer_layer, layer_by_split, True),
    (ch06.check_qformer_layer, layer_cross_skipped, False),
    (ch06.check_qformer_layer, layer_mask_ignored, False),
    (ch06.check_itm_batch, itm_by_indices, True),
    (ch06.check_itm_batch, itm_wrong_side, False),
    (ch06.check_itm_batch, itm_mask_not_following, False),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", KEY_CASES)
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and out.startswith("✅" if passes else "❌"), out


# ----------------------------------------------------------------------------- the experiment: soft_prompt

def soft_prompt_unnormalised(model, images):
    with torch.no_grad():
        tokens = model.vision(images).tokens
    return model.projector(model.qformer(tokens))


def soft_prompt_no_projector(model, images):
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    return model.qformer(tokens)


def soft_prompt_vit_tokens(model, images):
    return model.vision(model.normalize(images)).tokens


def soft_prompt_pooled(model, images):
    with torch.no_grad():
        pooled = model.vision(model.normalize(images)).pooled
    return model.projector(model.qformer(pooled[:, None]))


def soft_prompt_with_vit_gradient(model, images):
    tokens = model.vision(model.normalize(images)).tokens
    return model.projector(model.qformer(tokens))


def soft_prompt_all_no_grad(model, images):
    with torch.no_grad():
        return soft_prompt(model, images)


def soft_prompt_answer_key(model, images):
    return model.encode_images(images)


def soft_prompt_bumps_the_lm(model, images):
    with torch.no_grad():
        model.lm.tok_emb.weight[0] += 1e-3
    return soft_prompt(model, images)


SOFT_PROMPT_MISTAKES = [
    (soft_prompt_unnormalised, "model.normalize(images)"),
    (soft_prompt_no_projector, "that is the Q-Former's output"),
    (soft_prompt_vit_tokens, "those are the ViT's patch tokens"),
    (soft_prompt_pooled, "not the pooled vector"),
    (soft_prompt_with_vit_gradient, "reaches the ViT"),
    (soft_prompt_all_no_grad, "carries no gradient"),
    (soft_prompt_answer_key, "the answer key"),
    (soft_prompt_bumps_the_lm, "modified its input `model` in place"),
]


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("wrong, hint", SOFT_PROMPT_MISTAKES)
def test_soft_prompt_mistakes_get_a_hint_before_any_training(wrong, hint, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch06, "_soft_prompt_setup", stub)      # they must fail on the small models, before training
    passed, out = grade(ch06.check_soft_prompt, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


@pytest.mark.parametrize("seed", [0, *SEEDS])
def test_a_correct_soft_prompt_passes_the_small_models(seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch06, "_soft_prompt_setup", stub)      # reaching the experiment is passing the probe
    passed, out = grade(ch06.check_soft_prompt, soft_prompt)
    assert not passed and "not implemented yet" in out, out


def test_a_correct_soft_prompt_passes_the_measured_experiment(grade):
    """The full experiment, once: trains stage 2 of two small BLIP-2s, Q = 1 and Q = 8 (a few seconds)."""
    passed, out = grade(ch06.check_soft_prompt, soft_prompt)
    assert passed and out == "✅ soft_prompt: passed\n", out      # one line, the same every run (nbval compares it)


def test_too_little_training_fails_the_measured_accuracy(monkeypatch, grade):
    monkeypatch.setattr(ch06, "SOFT_PROMPT_EXPERIMENT", {**ch06.SOFT_PROMPT_EXPERIMENT, "clip_steps": 1, "steps": 1,
                                                         "pool": 100, "test_scenes": 20})
    passed, out = grade(ch06.check_soft_prompt, soft_prompt)
    assert not passed and "after 1 steps of stage 2: Q=1: " in out and ", Q=8: " in out, out
    assert "expected at least" in out, out


def test_the_measured_weights_catch_what_the_small_models_did_not_see(monkeypatch, grade):
    monkeypatch.setattr(ch06, "_probe", lambda *args: None)
    monkeypatch.setattr(ch06, "SOFT_PROMPT_EXPERIMENT", {**ch06.SOFT_PROMPT_EXPERIMENT, "clip_steps": 1, "steps": 2,
                                                         "pool": 100, "test_scenes": 20})

    def bumps_the_vit(model, images):
        with torch.no_grad():
            model.vision.norm.weight += 1e-3
        return soft_prompt(model, images)

    passed, out = grade(ch06.check_soft_prompt, soft_prompt_bumps_the_lm)
    assert not passed and "the LM's weights changed" in out, out
    passed, out = grade(ch06.check_soft_prompt, bumps_the_vit)
    assert not passed and "the ViT's weights changed" in out, out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch06.check_visual_tokens_blip2, lambda: 32),
    (ch06.check_visual_tokens_blip2, lambda: torch.tensor(32)),
    (ch06.check_cross_attention_layers, lambda: 12 // 2),
    (ch06.check_generation_mask, lambda: "itg"),
    (ch06.check_generation_mask, lambda: " ITG "),
])
def test_right_answers_pass(check, answer, grade):
    passed, out = grade(check, answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch06.check_visual_tokens_blip2, lambda: 256, "the ViT's patch count"),
    (ch06.check_visual_tokens_blip2, lambda: 257, "with [CLS]"),
    (ch06.check_visual_tokens_blip2, lambda: 288, "the patches don't reach the LLM"),
    (ch06.check_visual_tokens_blip2, lambda: 16, "the patch grid's side"),
    (ch06.check_visual_tokens_blip2, lambda: 64, "one projected vector per learned query"),
    (ch06.check_visual_tokens_blip2, lambda: 32.0, "should return an int"),
    (ch06.check_cross_attention_layers, lambda: 5, "layer 0 cross-attends too"),
    (ch06.check_cross_attention_layers, lambda: 12, "not every layer"),
    (ch06.check_cross_attention_layers, lambda: 24, "count layers, not sub-layers"),
    (ch06.check_cross_attention_layers, lambda: 3, "i % cross_attention_every == 0"),
    (ch06.check_cross_attention_layers, lambda: "6", "should return an int"),
    (ch06.check_generation_mask, lambda: "itc", "sees no query"),
    (ch06.check_generation_mask, lambda: "itm", "later words included"),
    (ch06.check_generation_mask, lambda: "lm", 'one of "itc", "itm", "itg"'),
])
def test_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌") and hint in out, out


def test_the_answers_are_computed_from_the_package():
    assert ch06._generation_objective() == "itg"
