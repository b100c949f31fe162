"""Flamingo's Perceiver resampler (Alayrac et al. 2022, arXiv 2204.14198, §2.1 and Figure 3).

Any number of image or frame features in, a fixed number of visual tokens out:

    media (B, T, N, D)   T images (or frames) of N tokens each; (B, N, D) means T = 1
      + media_pos_emb[:T]                 a learned embedding per media slot (time), (T, 1, D)
    latents (L, D), learned, one copy per media -> (B, T, L, D)
    depth × [ latents = latents + attn(media, latents)      keys/values from [media; latents]
              latents = latents + ff(latents) ]             LayerNorm, Linear, GELU, Linear
    -> LayerNorm -> (B, T, L, D)

The attention is a Perceiver's (Jaegle et al. 2021, arXiv 2103.03206) with one change Flamingo
makes: the keys and values come from the media tokens **and the latents themselves**
concatenated, so a latent can also keep what it already holds. Media and latents have their own
LayerNorm; the projections have no bias; each media slot is resampled on its own (no attention
across t). However large N is, the language model receives L tokens per image.

Parameter names and semantics follow lucidrains' flamingo-pytorch 0.1.2 (`PerceiverResampler`),
so its weights map one to one: `latents`, `media_pos_emb`, and `layers[i] = (attn, ff)` with
`attn.norm_media`, `attn.norm_latents`, `attn.to_q`, `attn.to_kv` (keys, then values) and
`attn.to_out`, and `ff` = Sequential(LayerNorm, Linear, GELU, Linear).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import integer, number


def feed_forward(dim, mult=4):
    """LayerNorm, Linear(D, mult·D), GELU, Linear(mult·D, D), bias-free: (..., D) -> (..., D)."""
    integer("dim", dim, low=1)
    number("mult", mult, above=0)
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latents (B, T, L, D) attend to [media (B, T, N, D); latents]: -> (B, T, L, D)."""

    def __init__(self, dim, dim_head=64, heads=8):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media, latents):
        media, latents = self.norm_media(media), self.norm_latents(latents)
        B, T, L, _ = latents.shape
        q = self.to_q(latents)                                                   # (B, T, L, H·d)
        k, v = self.to_kv(torch.cat([media, latents], dim=2)).chunk(2, dim=-1)   # (B, T, N + L, H·d) each
        q, k, v = (self.split_heads(t) for t in (q, k, v))                       # (B·T, H, ·, d)
        out = F.scaled_dot_product_attention(q, k, v)                            # scale d^-1/2, as Flamingo
        out = out.transpose(1, 2).reshape(B, T, L, self.heads * self.dim_head)
        return self.to_out(out)

    def split_heads(self, x):
        B, T, S, _ = x.shape
        return x.reshape(B * T, S, self.heads, self.dim_head).transpose(1, 2)


class PerceiverResampler(nn.Module):
    """media (B, T, N, D) or (B, N, D) -> (B, T, L, D): L = num_latents tokens per image, whatever N."""

    def __init__(self, dim, depth, dim_head=64, heads=8, num_latents=64, num_media_embeds=4, ff_mult=4):
        super().__init__()
        for name, value in (("dim", dim), ("depth", depth), ("dim_head", dim_head), ("heads", heads),
                            ("num_latents", num_latents), ("num_media_embeds", num_media_embeds)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.dim, self.num_media_embeds = dim, num_media_embeds
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.media_pos_emb = nn.Parameter(torch.randn(num_media_embeds, 1, dim))
        self.layers = nn.ModuleList(nn.ModuleList([PerceiverAttention(dim, dim_head, heads),
                                                   feed_forward(dim, ff_mult)]) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, media):
        if not isinstance(media, torch.Tensor) or media.dim() not in (3, 4) or media.shape[-1] != self.dim:
            shape = tuple(media.shape) if isinstance(media, torch.Tensor) else type(media).__name__
            raise ValueError(f"media must be (B, T, N, D) or (B, N, D) with D = {self.dim}, got {shape}")
        if media.dim() == 3:
            media = media.unsqueeze(1)
        B, T, N, D = media.shape
        if T > self.num_media_embeds:
            raise ValueError(f"media holds T = {T} images per row, more than num_media_embeds="
                             f"{self.num_media_embeds} (one learned time embedding each)")
        media = media + self.media_pos_emb[:T]                                   # (B, T, N, D)
        latents = self.latents.expand(B, T, *self.latents.shape)                 # (B, T, L, D)
        for attn, ff in self.layers:
            latents = latents + attn(media, latents)
            latents = latents + ff(latents)
        return self.norm(latents)
