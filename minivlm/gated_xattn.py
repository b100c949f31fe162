"""Flamingo's gated cross-attention (Alayrac et al. 2022, arXiv 2204.14198, §2.2 and Figure 4).

A block inserted before a frozen LM layer lets the text read the images:

    x (B, L, D) text,  media (B, T, M, Dm) the Perceiver's M tokens for each of T images
    x = x + tanh(attn_gate) · xattn(LayerNorm(x), media)     queries from text, keys/values from media
    x = x + tanh(ff_gate)   · ff(x)                          LayerNorm, Linear, GELU, Linear
    -> (B, L, D)

Both gates are scalars initialised to 0, so at initialisation the block is the identity and the
frozen LM computes exactly what it computed alone; training opens the gates as far as it helps.

Which image may a token see? `media_locations` (B, L) is True at each `<image>` token. Counting
them, text_time = cumsum(media_locations), gives every token the number of the latest image at or
before it (the `<image>` token itself already belongs to its image); image j (1-based) may be read

    only_attend_immediate_media=True    iff text_time == j    (the latest image only: Flamingo)
    only_attend_immediate_media=False   iff text_time >= j    (every image so far)

A token before any image (text_time = 0) reads nothing: its cross-attention output is **zero**.
flamingo-pytorch 0.1.2 zeroes it in the immediate mode only; in the other mode its softmax over
all-masked keys is uniform, so such a token reads the mean of every image, the future ones too.
We zero it in both modes (what Flamingo's masking intends); everything else follows
flamingo-pytorch's `GatedCrossAttentionBlock`, whose parameter names we keep: `attn.norm`,
`attn.to_q`, `attn.to_kv` (keys, then values), `attn.to_out` (all bias-free), `attn_gate`, `ff`,
`ff_gate`.

For generation the media's keys and values are the same at every step: pass a `kv_cache` dict
and they are computed once, then read from it; `images_before` (B,) carries the image count of
the tokens already seen, as new tokens arrive one at a time.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .perceiver import feed_forward


def media_attention_mask(media_locations, num_media, only_attend_immediate_media=True, images_before=None):
    """(B, L, T) bool, True where text token i may read image j (the rule in the module docstring).

    media_locations (B, L) bool, True at `<image>` tokens; num_media = T; images_before (B,) long:
    images in the tokens before this chunk (default 0).
    """
    text_time = media_locations.long().cumsum(dim=-1)                            # (B, L)
    if images_before is not None:
        text_time = text_time + images_before[:, None]
    media_time = torch.arange(1, num_media + 1, device=media_locations.device)    # (T,)
    if only_attend_immediate_media:
        return text_time[..., None] == media_time
    return text_time[..., None] >= media_time


class MaskedCrossAttention(nn.Module):
    """Text (B, L, D) reads media (B, T, M, Dm) under the media mask -> (B, L, D)."""

    def __init__(self, dim, dim_head=64, heads=8, only_attend_immediate_media=True, media_dim=None):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.only_attend_immediate_media = only_attend_immediate_media
        inner = dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(media_dim or dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, media, media_locations=None, *, images_before=None, kv_cache=None):
        B, L, _ = x.shape
        q = self.split_heads(self.to_q(self.norm(x)))                            # (B, H, L, d)
        if kv_cache is not None and "k" in kv_cache:
            k, v = kv_cache["k"], kv_cache["v"]
        else:
            T, M = media.shape[1:3]
            k, v = (self.split_heads(t) for t in self.to_kv(media.reshape(B, T * M, -1)).chunk(2, dim=-1))
            if kv_cache is not None:
                kv_cache.update(k=k, v=v, num_media=T)
        if media_locations is None:                  # no locations: every token reads every image
            return self.merge_heads(F.scaled_dot_product_attention(q, k, v))
        T = kv_cache["num_media"] if kv_cache is not None else media.shape[1]
        M = k.shape[2] // T
        sees = media_attention_mask(media_locations, T, self.only_attend_immediate_media, images_before)
        reads_some = sees.any(dim=-1)                                           # (B, L)
        # rows that see no image get a harmless full mask here, and a zero output below
        sees = sees | ~reads_some[..., None]
        mask = sees.repeat_interleave(M, dim=-1)[:, None]                       # (B, 1, L, T·M)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.masked_fill(~reads_some[:, None, :, None], 0.0)
        return self.merge_heads(out)

    def split_heads(self, x):
        B, S, _ = x.shape
        return x.reshape(B, S, self.heads, self.dim_head).transpose(1, 2)

    def merge_heads(self, x):
        B, H, L, d = x.shape
        return self.to_out(x.transpose(1, 2).reshape(B, L, H * d))


class GatedCrossAttentionBlock(nn.Module):
    """x (B, L, D), media (B, T, M, Dm), media_locations (B, L) bool -> (B, L, D); the identity at init."""

    def __init__(self, dim, dim_head=64, heads=8, ff_mult=4, only_attend_immediate_media=True, media_dim=None):
        super().__init__()
        self.dim, self.media_dim = dim, media_dim or dim
        self.attn = MaskedCrossAttention(dim, dim_head, heads, only_attend_immediate_media, self.media_dim)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = feed_forward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x, media, media_locations=None, *, images_before=None, kv_cache=None, validate=True):
        """validate=False skips the one check that reads values (a GPU -> CPU sync): <image> count <= T."""
        self.check_inputs(x, media, media_locations, images_before, kv_cache, validate)
        x = x + self.attn(x, media, media_locations, images_before=images_before,
                          kv_cache=kv_cache) * self.attn_gate.tanh()
        return x + self.ff(x) * self.ff_gate.tanh()

    def check_inputs(self, x, media, media_locations, images_before, kv_cache, validate):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, L, D={self.dim}), got {tuple(getattr(x, 'shape', ()))}")
        B, L, _ = x.shape
        cached = kv_cache is not None and "k" in kv_cache
        if not cached and (not isinstance(media, torch.Tensor) or media.dim() != 4 or media.shape[0] != B
                           or media.shape[-1] != self.media_dim):
            raise ValueError(f"media must be (B, T, M, Dm) = ({B}, T, M, {self.media_dim}), "
                             f"got {tuple(getattr(media, 'shape', ()))}")
        if media_locations is None:
            return
        if not isinstance(media_locations, torch.Tensor) or media_locations.dtype != torch.bool:
            raise ValueError(f"media_locations must be a bool tensor (B, L), True at <image> tokens, "
                             f"got {getattr(media_locations, 'dtype', type(media_locations).__name__)}")
        if tuple(media_locations.shape) != (B, L):
            raise ValueError(f"media_locations must have shape (B, L) = ({B}, {L}), got {tuple(media_locations.shape)}")
        if images_before is not None and tuple(images_before.shape) != (B,):
            raise ValueError(f"images_before must have shape (B,) = ({B},), got {tuple(images_before.shape)}")
        if validate:
            T = kv_cache["num_media"] if cached else media.shape[1]
            count = media_locations.sum(dim=-1) + (0 if images_before is None else images_before)
            if int(count.max()) > T:
                row = int(count.argmax())
                raise ValueError(f"row {row} has {int(count[row])} <image> tokens in media_locations "
                                 f"but media holds T = {T} images")
