"""Multi-head attention (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d + mask) V

Shapes: queries come from x (B, L, D), keys and values from `context` (B, S, Dc), which
is x itself for self-attention; each of H heads works on D/H channels, (B, H, L, D/H).

Masks are boolean with PyTorch's SDPA convention, True = "may attend":
    attn_mask          broadcastable to (B, H, L, S): (L, S), (B, L, S) or (B, 1|H, L, S)
    key_padding_mask   (B, S), True at real tokens, False at padding
    is_causal          query i attends keys 0..i (aligned bottom-right when a KV cache
                       makes S > L, so the newest query sees every cached key)
A query row whose keys are all masked has no defined output (NaN), as in PyTorch.

The three are combined into one boolean mask first (`build_mask`, or None when nothing is
masked), then attention runs. Two paths compute the same thing: `forward` calls
`F.scaled_dot_product_attention` (fast, fused); `forward_with_weights` calls `attention_math`,
the formula written out, and also returns the attention weights.

Grouped-query attention (GQA, Ainslie et al. 2023, arXiv 2305.13245), `kv_heads` < H: the
keys and values have only H_kv heads (B, H_kv, S, d), each shared by H / H_kv query heads;
the KV cache stores the H_kv heads. kv_heads=None is plain multi-head attention.
"""

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import integer
from .rope import apply_rope


def attention_math(q, k, v, mask=None):
    """softmax(q kᵀ/√d, masked) v for (B, H, L, d) inputs; returns (output, weights (B, H, L, S))."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def causal_mask(query_len, key_len, device=None):
    """(L, S) bool, True where query i may see key j: j <= i + (S - L)."""
    offset = key_len - query_len
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(diagonal=offset)


def build_mask(batch, heads, query_len, key_len, attn_mask=None, key_padding_mask=None,
               is_causal=False, device=None):
    """Combine the three kinds of mask into one bool mask broadcastable to (B, H, L, S), or None."""
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise ValueError(f"attn_mask must be a bool tensor (True = may attend), got {attn_mask.dtype}")
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(1)
        expected = (batch, heads, query_len, key_len)
        ok = 2 <= attn_mask.dim() <= 4 and all(
            a in (1, e) for a, e in zip(attn_mask.shape[::-1], expected[::-1]))
        if not ok or attn_mask.shape[-2:] != (query_len, key_len):
            raise ValueError(f"attn_mask must broadcast to (B, H, L, S) = {expected} with last dims "
                             f"(L, S) = ({query_len}, {key_len}), got {tuple(attn_mask.shape)}")
        mask = attn_mask
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, key_len):
            raise ValueError(f"key_padding_mask must be (B, S) = ({batch}, {key_len}), "
                             f"got {tuple(key_padding_mask.shape)}")
        padding = key_padding_mask.bool()[:, None, None, :]
        mask = padding if mask is None else mask & padding
    if is_causal:
        causal = causal_mask(query_len, key_len, device)
        mask = causal if mask is None else mask & causal
    return mask


class AttentionOutput(NamedTuple):
    output: torch.Tensor     # (B, L, D)
    weights: torch.Tensor    # (B, H, L, S), each row sums to 1


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with H heads over (B, L, D) inputs."""

    def __init__(self, dim, num_heads, *, context_dim=None, bias=True, kv_heads=None):
        super().__init__()
        integer("dim", dim, low=1)
        integer("num_heads", num_heads, low=1)
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        kv_heads = num_heads if kv_heads is None else kv_heads
        if not isinstance(kv_heads, int) or kv_heads < 1 or num_heads % kv_heads:
            raise ValueError(f"kv_heads must be a positive divisor of num_heads={num_heads}, got {kv_heads!r}")
        self.num_heads = num_heads
        self.kv_heads = kv_heads        # < num_heads: grouped-query attention (GQA, arXiv 2305.13245)
        self.head_dim = dim // num_heads
        context_dim = context_dim or dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(context_dim, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(context_dim, kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x, context=None, *, attn_mask=None, key_padding_mask=None, is_causal=False,
                rope=None, kv_cache=None):
        """x (B, L, D); context (B, S, Dc), or None for self-attention -> (B, L, D).

        rope: (cos, sin) for the new positions, applied to queries and keys (self-attention).
        kv_cache: a dict this layer owns; keys/values of earlier calls are kept in it and reused.
        """
        q, k, v = self.project(x, context, rope, kv_cache)
        mask = build_mask(*q.shape[:3], k.shape[2], attn_mask, key_padding_mask, is_causal, x.device)
        return self.merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def forward_with_weights(self, x, context=None, *, attn_mask=None, key_padding_mask=None, is_causal=False,
                             rope=None, kv_cache=None):
        """The same result through the plain-math path, with the attention weights (B, H, L, S)."""
        q, k, v = self.project(x, context, rope, kv_cache)
        mask = build_mask(*q.shape[:3], k.shape[2], attn_mask, key_padding_mask, is_causal, x.device)
        out, weights = attention_math(q, k, v, mask)
        return AttentionOutput(self.merge_heads(out), weights)

    def project(self, x, context, rope, kv_cache):
        """Queries (B, H, L, d) from x; keys and values (B, H, S, d) from the context and the cache."""
        if x.dim() != 3:
            raise ValueError(f"x must be (B, L, D), got {tuple(x.shape)}")
        context = x if context is None else context
        q = self.split_heads(self.q_proj(x))
        k = self.split_heads(self.k_proj(context), self.kv_heads)
        v = self.split_heads(self.v_proj(context), self.kv_heads)
        if rope is not None:
            q, k = apply_rope(q, k, *rope)
        if kv_cache is not None:
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=2)
                v = torch.cat([kv_cache["v"], v], dim=2)
            kv_cache["k"], kv_cache["v"] = k, v
        if self.kv_heads != self.num_heads:   # GQA: query head h reads key/value head h // (H / H_kv)
            group = self.num_heads // self.kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return q, k, v

    def split_heads(self, x, heads=None):
        B, L, _ = x.shape
        heads = heads or self.num_heads
        return x.reshape(B, L, heads, self.head_dim).transpose(1, 2)            # (B, H, L, d)

    def merge_heads(self, x):
        B, H, L, d = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(B, L, H * d))             # (B, L, D)
