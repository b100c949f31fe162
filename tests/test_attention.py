import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minivlm.attention import MultiHeadAttention, attention_math, build_mask, causal_mask


def qkv(B=2, H=4, L=5, S=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, L, d, generator=g), torch.randn(B, H, S, d, generator=g),
            torch.randn(B, H, S, d, generator=g))


def test_math_path_equals_sdpa_with_and_without_masks():
    q, k, v = qkv()
    out, weights = attention_math(q, k, v)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 5))
    mask = causal_mask(5, 5)
    out, _ = attention_math(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
    random_mask = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    random_mask[..., 0] = True                       # every query keeps at least one key
    out, weights = attention_math(q, k, v, random_mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=random_mask), atol=1e-5)
    assert torch.all(weights[~random_mask.expand_as(weights)] == 0)


def test_causal_mask_bottom_right_alignment():
    assert causal_mask(3, 3).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert causal_mask(2, 4).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_module_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, 4)
    theirs = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 6, 32)
    padding = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    expected, _ = theirs(x, x, x, key_padding_mask=~padding)       # torch: True = ignore
    assert torch.allclose(ours(x, key_padding_mask=padding), expected, atol=1e-5)
    expected_causal, _ = theirs(x, x, x, attn_mask=~causal_mask(6, 6))
    assert torch.allclose(ours(x, is_causal=True), expected_causal, atol=1e-5)


def test_causality_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2)
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)
    assert torch.allclose(attn(x, is_causal=True)[:, :4], attn(y, is_causal=True)[:, :4], atol=1e-6)
    assert not torch.allclose(attn(x)[:, :4], attn(y)[:, :4], atol=1e-3)


def test_kv_cache_step_by_step_equals_full_causal():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2)
    x = torch.randn(2, 7, 16)
    full = attn(x, is_causal=True)
    cache = {}
    prefix = attn(x[:, :4], is_causal=True, kv_cache=cache)
    steps = [attn(x[:, t:t + 1], is_causal=True, kv_cache=cache) for t in range(4, 7)]
    assert torch.allclose(torch.cat([prefix] + steps, 1), full, atol=1e-5)
    assert cache["k"].shape == (2, 2, 7, 8)


def test_cross_attention_and_weights():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, context_dim=24)
    x, context = torch.randn(2, 3, 16), torch.randn(2, 9, 24)
    out, weights = attn.forward_with_weights(x, context)
    assert out.shape == (2, 3, 16) and weights.shape == (2, 4, 3, 9)
    assert torch.allclose(out, attn(x, context), atol=1e-5)


def test_bad_masks_raise_clear_errors():
    attn = MultiHeadAttention(16, 2)
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="attn_mask must broadcast"):
        attn(x, attn_mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask must be a bool"):
        attn(x, attn_mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        attn(x, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        attn(torch.randn(5, 16))


def test_build_mask_combines_all_three():
    padding = torch.tensor([[True, True, False]])
    allowed = torch.tensor([[True, False, True]] * 3)
    mask = build_mask(1, 1, 3, 3, allowed, padding, is_causal=True)
    assert mask.shape == (1, 1, 3, 3)
    assert mask[0, 0].tolist() == [[True, False, False], [True, False, False], [True, False, False]]
