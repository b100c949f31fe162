"""minivlm.qformer: BLIP-2's Q-Former (arXiv 2301.12597) and the masks of its three stage-1 objectives."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.qformer import QFormer, QFormerConfig, qformer_attention_mask

T_, F_ = True, False


def small_config(**overrides):
    settings = dict(dim=16, depth=3, heads=2, mlp_hidden=32, image_dim=12, num_queries=3, vocab_size=20,
                    max_text_len=8)
    return QFormerConfig(**{**settings, **overrides})


# ----------------------------------------------------------------------------- masks

def test_masks_by_hand():
    text_mask = torch.tensor([[T_, T_, F_]])          # Q = 2 queries, then 3 text tokens, the last one padding
    itc = torch.tensor([[T_, T_, F_, F_, F_],
                        [T_, T_, F_, F_, F_],
                        [F_, F_, T_, T_, F_],
                        [F_, F_, T_, T_, F_],
                        [F_, F_, T_, T_, F_]])
    itm = torch.tensor([[T_, T_, T_, T_, F_]] * 5)
    itg = torch.tensor([[T_, T_, F_, F_, F_],
                        [T_, T_, F_, F_, F_],
                        [T_, T_, T_, F_, F_],
                        [T_, T_, T_, T_, F_],
                        [T_, T_, T_, T_, F_]])
    for objective, expected in (("itc", itc), ("itm", itm), ("itg", itg)):
        mask = qformer_attention_mask(2, text_mask, objective)
        assert mask.dtype == torch.bool and torch.equal(mask, expected[None]), objective


def test_masks_per_row_of_the_batch():
    text_mask = torch.tensor([[T_, T_, T_], [T_, F_, F_]])
    mask = qformer_attention_mask(1, text_mask, "itm")
    assert mask.shape == (2, 4, 4)
    assert torch.equal(mask[1], torch.tensor([[T_, T_, F_, F_]] * 4))
    assert torch.equal(mask[0], torch.ones(4, 4, dtype=torch.bool))


@pytest.mark.parametrize("args, problem", [
    ((0, torch.ones(1, 2, dtype=torch.bool), "itc"), "num_queries"),
    ((2, torch.ones(2, dtype=torch.bool), "itc"), "text_mask"),
    ((2, torch.ones(1, 2), "itc"), "text_mask"),
    ((2, torch.ones(1, 2, dtype=torch.bool), "lm"), "objective"),
])
def test_mask_bad_input(args, problem):
    with pytest.raises(ValueError, match=problem):
        qformer_attention_mask(*args)


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("every, with_cross", [(1, [0, 1, 2]), (2, [0, 2]), (3, [0])])
def test_cross_attention_where_stated(every, with_cross):
    model = QFormer(small_config(cross_attention_every=every))
    assert [i for i, layer in enumerate(model.layers) if layer.cross_attn is not None] == with_cross
    assert model.layers[0].cross_attn.key.in_features == 12          # projected from the image features' width


def test_query_init_and_bad_input():
    torch.manual_seed(0)
    model = QFormer(small_config(num_queries=400, dim=64, heads=4))
    assert abs(model.query_tokens.std().item() - 0.02) < 0.001
    model = QFormer(small_config())
    with pytest.raises(ValueError, match="image_features"):
        model(torch.randn(2, 5, 11))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.randn(2, 5, 12), torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 6, 6).bool())
    with pytest.raises(ValueError, match="num_queries"):
        QFormerConfig(num_queries=0)


def reference_on_queries(model, queries, image_features):
    """What transformers' Blip2QFormerModel computes on query_embeds, written out op by op (additive masks of 0)."""
    def attention(sub, x, kv):
        B, L, D = x.shape
        H = sub.heads
        split = lambda t: t.reshape(B, t.shape[1], H, D // H).permute(0, 2, 1, 3)
        scores = split(sub.query(x)) @ split(sub.key(kv)).transpose(-1, -2) / math.sqrt(D // H)
        context = (scores.softmax(-1) @ split(sub.value(kv))).permute(0, 2, 1, 3).reshape(B, L, D)
        return F.layer_norm(sub.out(context) + x, (D,), sub.norm.weight, sub.norm.bias, sub.norm.eps)

    x = F.layer_norm(queries, (queries.shape[-1],), model.embed_norm.weight, model.embed_norm.bias, 1e-12)
    for i, layer in enumerate(model.layers):
        x = attention(layer.self_attn, x, x)
        if i % model.config.cross_attention_every == 0:
            x = attention(layer.cross_attn, x, image_features)
        ffn = layer.query_ffn
        hidden = ffn.fc2(0.5 * ffn.fc1(x) * (1 + torch.erf(ffn.fc1(x) / math.sqrt(2))))
        x = F.layer_norm(hidden + x, (x.shape[-1],), ffn.norm.weight, ffn.norm.bias, ffn.norm.eps)
    return x


def test_queries_alone_match_blip2_qformer_semantics():
    torch.manual_seed(0)
    model = QFormer(small_config(depth=4)).double().eval()
    for parameter in model.parameters():                     # non-trivial norms and biases
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    image_features = torch.randn(2, 7, 12, dtype=torch.float64)
    queries = torch.randn(2, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        ours = model(image_features, query_embeds=queries)
        expected = reference_on_queries(model, queries, image_features)
        assert torch.allclose(ours, expected, atol=1e-10)
        assert torch.allclose(model(image_features), reference_on_queries(
            model, model.query_tokens.expand(2, -1, -1), image_features), atol=1e-10)


def test_the_objectives_decide_who_sees_whom():
    torch.manual_seed(0)
    model = QFormer(small_config()).eval()
    image = torch.randn(2, 5, 12)
    text = torch.randint(20, (2, 4))
    text_mask = torch.tensor([[T_, T_, T_, F_], [T_, T_, T_, T_]])
    other_text = text.clone()
    other_text[:, 2:] = (text[:, 2:] + 1) % 20
    with torch.no_grad():
        run = lambda ids, objective: model(image, ids, qformer_attention_mask(3, text_mask, objective))
        # itc: the queries are what they are without any text
        assert torch.allclose(run(text, "itc")[:, :3], model(image), atol=1e-5)
        # itg: queries see no text, and a text token sees no later text
        a, b = run(text, "itg"), run(other_text, "itg")
        assert torch.allclose(a[:, :5], b[:, :5], atol=1e-5) and not torch.allclose(a[:, 5:], b[:, 5:])
        # itm: queries read the text
        assert not torch.allclose(run(text, "itm")[:, :3], run(other_text, "itm")[:, :3])
        # padding is never read: change the padded token of row 0 only
        padded = text.clone()
        padded[0, 3] = (text[0, 3] + 1) % 20
        for objective in ("itc", "itm", "itg"):
            assert torch.allclose(run(text, objective)[0, :6], run(padded, objective)[0, :6], atol=1e-5)


def test_the_text_only_pass_is_the_text_half_of_the_itc_pass():
    torch.manual_seed(0)
    qformer = QFormer(QFormerConfig(dim=16, depth=3, heads=2, mlp_hidden=32, image_dim=8, num_queries=3,
                                    cross_attention_every=2, vocab_size=11, max_text_len=9))
    ids = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    joint = qformer(torch.randn(2, 5, 8), ids, qformer_attention_mask(3, mask, "itc"))
    text = qformer.encode_text(ids, mask)
    assert torch.allclose(text[mask], joint[:, 3:][mask], atol=1e-5)
    with pytest.raises(ValueError, match="text_mask must be a bool tensor shaped like text_ids"):
        qformer.encode_text(ids, mask[:, :4])
