"""The pre-norm transformer block every model here is built from (ViT, CLIP's text tower, the LM).

    x = x + attn(attn_norm(x))       multi-head self-attention over (B, L, D) (attention.py)
    x = x + mlp(mlp_norm(x))         a position-wise MLP, (B, L, D) -> (B, L, D)

Normalising the input of each branch and adding its output to an untouched residual stream
("pre-norm", as in GPT-2 and ViT) keeps deep stacks trainable without warm-up tricks. Two
choices of the block, not two copies of it:

    norm="layernorm", mlp="gelu"    ViT (arXiv 2010.11929), CLIP's text tower: LayerNorm,
                                    fc2(gelu(fc1 x)), biases everywhere
    norm="rmsnorm",   mlp="swiglu"  LLaMA (arXiv 2302.13971), lm.py: RMSNorm, SwiGLU, no biases

The pieces, each from its paper:
    RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467)  x / sqrt(mean(x²) + eps) · g: no mean, no bias
    SwiGLU  (Shazeer 2020, arXiv 2002.05202)            w2(silu(w1 x) ⊙ w3 x), a gated MLP
    GELU MLP (Hendrycks & Gimpel 2016)                  fc2(gelu(fc1 x))

A post-norm BERT layer (BLIP-2's Q-Former) normalises after the residual add instead: a
different block, which lives with the Q-Former.
"""

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x², last dim) + eps) · weight over (..., D), computed in float32."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x_float = x.float()
        normed = x_float * torch.rsqrt(x_float.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x): a gated MLP, (..., D) -> (..., D)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)   # gate
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)   # value
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)   # back to D

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


GELUS = ("exact", "tanh")


class MLP(nn.Module):
    """fc2(gelu(fc1 x)): the ViT / GPT-2 feed-forward, (..., D) -> (..., D).
    gelu="exact" uses the erf GELU; "tanh" its tanh approximation (GPT-2, SigLIP)."""

    def __init__(self, dim, hidden_dim, gelu="exact"):
        super().__init__()
        if gelu not in GELUS:
            raise ValueError(f"gelu must be one of {GELUS}, got {gelu!r}")
        self.approximate = "none" if gelu == "exact" else "tanh"
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class BlockOutput(NamedTuple):
    output: torch.Tensor     # (B, L, D)
    weights: torch.Tensor    # (B, H, L, S), the attention weights of this block


class TransformerBlock(nn.Module):
    """Pre-norm block over (B, L, D): attention, then an MLP, each added to the residual stream."""

    def __init__(self, dim, heads, mlp_hidden, *, norm="layernorm", mlp="gelu", bias=True, kv_heads=None,
                 norm_eps=None, gelu="exact"):
        """kv_heads < heads: grouped-query attention; norm_eps None: the norm's default (LayerNorm 1e-5,
        RMSNorm 1e-6); gelu "exact" or "tanh" for mlp="gelu"."""
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}, got {mlp!r}")
        make_norm = nn.LayerNorm if norm == "layernorm" else RMSNorm
        eps = {} if norm_eps is None else {"eps": norm_eps}
        self.attn_norm = make_norm(dim, **eps)
        self.attn = MultiHeadAttention(dim, heads, bias=bias, kv_heads=kv_heads)
        self.mlp_norm = make_norm(dim, **eps)
        self.mlp = MLP(dim, mlp_hidden, gelu) if mlp == "gelu" else SwiGLU(dim, mlp_hidden)

    def forward(self, x, *, attn_mask=None, key_padding_mask=None, is_causal=False, rope=None, kv_cache=None):
        """x (B, L, D) -> (B, L, D). Masks, rope and kv_cache go to the attention (attention.py)."""
        x = x + self.attn(self.attn_norm(x), attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                          is_causal=is_causal, rope=rope, kv_cache=kv_cache)
        return x + self.mlp(self.mlp_norm(x))

    def forward_with_weights(self, x, *, attn_mask=None, key_padding_mask=None, is_causal=False, rope=None):
        """The same block through the plain-math attention, also returning its weights (B, H, L, S)."""
        attended = self.attn.forward_with_weights(self.attn_norm(x), attn_mask=attn_mask,
                                                  key_padding_mask=key_padding_mask, is_causal=is_causal, rope=rope)
        x = x + attended.output
        return BlockOutput(x + self.mlp(self.mlp_norm(x)), attended.weights)
