"""Window attention in the vision encoder (Qwen2.5-VL, Bai et al. 2025, arXiv 2502.13923, §2.1).

With dynamic resolution (dynamic_resolution.py) a large image is many patches, and full attention
over N patches costs O(N²). Qwen2.5-VL lets most ViT layers attend only **within windows** of
112×112 pixels (8×8 patches of 14 px: 4×4 merge units of 2×2 patches), and keeps a few layers
(`full_attention_layers`) with full attention over the image; the cost of a windowed layer grows
linearly with the image.

    packed patches (N, D), in patchify_qwen2vl's order (merge units of m² consecutive patches)
    window_index(grid_thw)   -> the merge units regrouped window by window (each window contiguous),
                                with cu_window_seqlens, the window boundaries in patches: what
                                transformers' Qwen2.5-VL passes to flash-attention
    window_batches(grid_thw) -> (num_windows, S) gather index, S = patches per full window, -1 where a
                                window at the image's edge is padded: windows as a batch, (W, S, D)

Windows tile each image (each frame of a video) from its top-left corner; a window at the right or
bottom edge holds what is left of the image. The full-attention layers batch the frames the same way
(`frame_batches`: each frame a row, padded to the longest), which computes what a block-diagonal mask
over the packed sequence computes, at O(F·L²) instead of O((Σ L)²). `DynamicResolutionViT` puts it
together: Conv3d patch embedding, pre-norm blocks with 2D RoPE, windowed or full, the 2×2 merger.
With `positions="learned"` it instead adds a learned (D, g, g) position table, resized bilinearly to
each image's patch grid (the ViT / SigLIP way of chapter 01, stretched): the alternative chapter 08
measures 2D RoPE against on images larger than any seen in training.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import TransformerBlock
from .checks import choice, integer, positive_ints, tensor
from .dynamic_resolution import (PatchEmbed, PatchMerger, grid_list, vision_cu_seqlens, vision_position_ids,
                                 vision_rope)


def window_units(window_size, patch_size, merge_size):
    """The window's side in merge units (Qwen2.5-VL: 112 px / 14 px / 2 = 4)."""
    for name, value in (("window_size", window_size), ("patch_size", patch_size), ("merge_size", merge_size)):
        integer(name, value, low=1)
    side = window_size // (patch_size * merge_size)
    if side < 1 or side * patch_size * merge_size != window_size:
        raise ValueError(f"window_size={window_size} must be a positive multiple of patch_size·merge_size = "
                         f"{patch_size * merge_size}")
    return side


def window_index(grid_thw, window_size=112, patch_size=14, merge_size=2):
    """(merge units regrouped window by window (N/m²,) long, cu_window_seqlens (W + 1,) long in patches)."""
    side = window_units(window_size, patch_size, merge_size)
    order, lengths, offset = [], [], 0
    for t, h, w in grid_list(grid_thw, merge_size):
        units_h, units_w = h // merge_size, w // merge_size
        rows, cols = -(-units_h // side), -(-units_w // side)                   # windows per column / row
        units = torch.arange(t * units_h * units_w).reshape(t, units_h, units_w)
        padded = torch.full((t, rows * side, cols * side), -1, dtype=torch.long)
        padded[:, :units_h, :units_w] = units
        # (t, rows, side, cols, side) -> (t, rows, cols, side, side): one window after another
        windows = padded.reshape(t, rows, side, cols, side).permute(0, 1, 3, 2, 4).reshape(t * rows * cols, -1)
        for window in windows:
            kept = window[window >= 0]
            order.append(kept + offset)
            lengths.append(len(kept) * merge_size ** 2)
        offset += t * units_h * units_w
    return torch.cat(order), torch.tensor([0] + lengths).cumsum(0)


def window_batches(grid_thw, window_size=112, patch_size=14, merge_size=2):
    """(num_windows, S) long: the patches of each window (S = side²·m²), -1 where the window is padded."""
    index, cu = window_index(grid_thw, window_size, patch_size, merge_size)
    unit = merge_size ** 2
    patches = (index[:, None] * unit + torch.arange(unit)).reshape(-1)       # regrouped patch order
    size = (window_units(window_size, patch_size, merge_size) * merge_size) ** 2
    batches = torch.full((len(cu) - 1, size), -1, dtype=torch.long)
    for k in range(len(cu) - 1):
        batches[k, :cu[k + 1] - cu[k]] = patches[cu[k]:cu[k + 1]]
    return batches


def frame_batches(grid_thw, merge_size=2):
    """(num_frames, L) long: the patches of each frame (L = the longest frame), -1 past a shorter frame's end.
    Full attention over frames of different sizes as one padded batch: O(F·L²), not the O((Σ L)²) of
    a block-diagonal mask over the packed sequence."""
    cu = vision_cu_seqlens(grid_thw, merge_size)
    lengths = cu[1:] - cu[:-1]
    offsets = torch.arange(int(lengths.max()))
    return torch.where(offsets < lengths[:, None], cu[:-1, None] + offsets, -1)


def attend_in_batches(block, x, batches, rope=None):
    """Run `block` on x (N, D) grouped by `batches` (G, S) (-1 = padding, masked as keys) -> (N, D).
    rope: (cos, sin), each (N, head_dim // 2), of the packed tokens, or None."""
    present = batches >= 0
    gather = batches.clamp(min=0)
    rope = None if rope is None else (rope[0][gather], rope[1][gather])
    out = block(x[gather], key_padding_mask=present, rope=rope)                            # (G, S, D)
    return torch.zeros_like(x).index_copy(0, batches[present], out[present])


@dataclass
class DynamicViTConfig:
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    out_dim: int = 64                     # the LM's width, after the merger
    window_size: int = 112                # in pixels; None: full attention in every layer
    full_attention_layers: tuple = (3,)   # Qwen2.5-VL-7B: (7, 15, 23, 31) of 32
    merger_norm: str = "layernorm"        # "rmsnorm" for Qwen2.5-VL
    in_channels: int = 3
    positions: str = "rope"               # "rope": Qwen2-VL's 2D RoPE; "learned": a learned table, interpolated
    position_grid: int = 8                # "learned": the table's side in patches (resized to each image's grid)

    def __post_init__(self):
        positive_ints(self, "dim", "depth", "heads", "mlp_ratio", "patch_size", "temporal_patch_size", "merge_size",
                      "out_dim", "in_channels", "position_grid")
        if self.window_size is not None:
            integer("window_size", self.window_size, low=1)
        layers = self.full_attention_layers
        if not isinstance(layers, (tuple, list)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.depth for i in layers):
            raise ValueError(f"full_attention_layers must be a tuple of layer indices in [0, depth={self.depth}), "
                             f"got {layers!r}")
        choice("merger_norm", self.merger_norm, ("layernorm", "rmsnorm"))
        if self.positions not in ("rope", "learned"):
            raise ValueError(f"positions must be 'rope' or 'learned', got {self.positions!r}")


class DynamicResolutionViT(nn.Module):
    """patches (N, C·tps·p·p) of packed images, grid_thw (n, 3) -> merged tokens (N / m², out_dim), in input order."""

    def __init__(self, config: DynamicViTConfig = None):
        super().__init__()
        c = self.config = config or DynamicViTConfig()
        if c.dim % c.heads or (c.dim // c.heads) % 4:
            raise ValueError(f"dim / heads = {c.dim}/{c.heads} must be a whole multiple of 4 (2D RoPE)")
        if c.window_size is not None:
            window_units(c.window_size, c.patch_size, c.merge_size)
        if c.positions == "learned":      # the ViT / CLIP / SigLIP way, as in chapter 01, resized per image
            self.pos_embed = nn.Parameter(torch.randn(c.dim, c.position_grid, c.position_grid) * 0.02)
        self.patch_embed = PatchEmbed(c.dim, c.patch_size, c.temporal_patch_size, c.in_channels)
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads, c.mlp_ratio * c.dim) for _ in range(c.depth))
        self.merger = PatchMerger(c.out_dim, c.dim, c.merge_size, c.merger_norm)

    def learned_positions(self, grid_thw):
        """(N, D): the learned (D, g, g) table resized bilinearly to each frame's (h, w) patch grid, in patch order."""
        parts = []
        for t, h, w in grid_list(grid_thw, self.config.merge_size):
            table = F.interpolate(self.pos_embed[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            rows, cols = vision_position_ids(torch.tensor([[1, h, w]]), self.config.merge_size).T.tolist()
            parts.append(table[:, rows, cols].T.repeat(t, 1))                     # (t·h·w, D)
        return torch.cat(parts)

    def windowed(self, layer):
        return self.config.window_size is not None and layer not in self.config.full_attention_layers

    def forward(self, patches, grid_thw):
        c = self.config
        width = c.in_channels * c.temporal_patch_size * c.patch_size ** 2
        tensor("patches", patches, dims=2, kind="float", shape=f"(N, C·t·p·p) = (N, {width})")
        if patches.shape[1] != width:
            raise ValueError(f"patches must be (N, C·t·p·p) = (N, {width}), got {tuple(patches.shape)}: "
                             f"make them with patchify_qwen2vl")
        if not isinstance(grid_thw, (torch.Tensor, list, tuple)):
            raise TypeError(f"grid_thw must be a (n, 3) tensor or list of (t, h, w), got {type(grid_thw).__name__}")
        grids = grid_list(grid_thw, c.merge_size)
        if len(patches) != sum(t * h * w for t, h, w in grids):
            raise ValueError(f"patches has {len(patches)} rows but grid_thw {grids} holds "
                             f"{sum(t * h * w for t, h, w in grids)} patches")
        device = patches.device
        x = self.patch_embed(patches)                                              # (N, D)
        if c.positions == "rope":
            rope = vision_rope(vision_position_ids(grid_thw, c.merge_size).to(device), c.dim // c.heads)
        else:                                         # absolute positions, added once; no rotation in attention
            x, rope = x + self.learned_positions(grid_thw), None
        frames = frame_batches(grid_thw, c.merge_size).to(device)                  # (F, L)
        if c.window_size is not None:
            windows = window_batches(grid_thw, c.window_size, c.patch_size, c.merge_size).to(device)   # (W, S)
        for layer, block in enumerate(self.blocks):
            x = attend_in_batches(block, x, windows if self.windowed(layer) else frames, rope)
        return self.merger(x)
