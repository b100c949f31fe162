"""Naive dynamic resolution (Qwen2-VL, Wang et al. 2024, arXiv 2409.12191, §2.1).

An image keeps (about) its own size. It is resized only to multiples of patch·merge pixels
(`smart_resize`), cut into p×p patches, and every patch becomes a token: the number of visual
tokens follows the image, instead of every image being squashed to one square.

    frames (T, C, H, W)     an image is T = 1, repeated to temporal_patch_size frames
      -> patchify_qwen2vl -> patches (t·h·w, C·tps·p·p), grid_thw = (t, h, w)   h = H/p, w = W/p
      -> PatchEmbed (Conv3d, kernel = stride = (tps, p, p), no bias) -> (t·h·w, D)
      -> ViT blocks with 2D RoPE at vision_position_ids (row, col); no position table
      -> PatchMerger: each m×m window of neighbours -> one token (t·h·w / m², D_lm)

The token order is the Qwen2-VL image processor's: (t, h/m, w/m, m_row, m_col), so each m×m merge
window is m² consecutive tokens and the merger is a plain reshape; each patch vector is ordered
(channel, temporal, py, px), what the Conv3d's weight reads.

Several images of different sizes go through the ViT **packed** into one sequence, never padded to
the largest: `vision_cu_seqlens` gives the offsets where each frame starts (as flash-attention's
cu_seqlens), and `block_diagonal_mask` the (N, N) mask that keeps every frame's attention to itself.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import RMSNorm
from .checks import integer, tensor
from .rope import rope_frequencies


def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 1280):
    """Qwen2-VL's target (height, width): multiples of `factor`, the aspect kept, the area in range."""
    if height < factor or width < factor:
        raise ValueError(f"height={height} and width={width} must both be at least factor={factor}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"the aspect ratio must be at most 200, got {height} x {width}")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def check_frames(frames, patch_size, temporal_patch_size, merge_size):
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
        raise ValueError(f"frames must be a tensor (T, C, H, W), got {tuple(getattr(frames, 'shape', ()))}")
    T, _, H, W = frames.shape
    side = patch_size * merge_size
    if H == 0 or W == 0 or H % side or W % side:
        raise ValueError(f"frames' height and width must be positive multiples of patch_size·merge_size = {side}, "
                         f"got {H} x {W} (see smart_resize)")
    if T != 1 and T % temporal_patch_size:
        raise ValueError(f"the number of frames must be 1 or a multiple of temporal_patch_size="
                         f"{temporal_patch_size}, got {T}")


def patchify_qwen2vl(frames, patch_size=14, temporal_patch_size=2, merge_size=2):
    """frames (T, C, H, W) -> (patches (t·h·w, C·tps·p·p), grid_thw (3,) long), in Qwen2-VL's order."""
    check_frames(frames, patch_size, temporal_patch_size, merge_size)
    if frames.shape[0] == 1:
        frames = frames.expand(temporal_patch_size, -1, -1, -1)
    T, C, H, W = frames.shape
    p, tps, m = patch_size, temporal_patch_size, merge_size
    t, h, w = T // tps, H // p, W // p
    x = frames.reshape(t, tps, C, h // m, m, p, w // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)            # (t, h/m, w/m, m_row, m_col, C, tps, py, px)
    patches = x.reshape(t * h * w, C * tps * p * p)
    return patches, torch.tensor([t, h, w], device=frames.device)


def unpatchify_qwen2vl(patches, grid_thw, channels=3, patch_size=14, temporal_patch_size=2, merge_size=2):
    """The inverse: patches (t·h·w, C·tps·p·p) and grid_thw (3,) -> frames (t·tps, C, h·p, w·p)."""
    tensor("patches", patches, dims=2, shape="(t·h·w, C·tps·p·p)")
    t, h, w = (int(v) for v in grid_thw)
    p, tps, m, C = patch_size, temporal_patch_size, merge_size, channels
    if tuple(patches.shape) != (t * h * w, C * tps * p * p):
        raise ValueError(f"patches must be (t·h·w, C·tps·p·p) = ({t * h * w}, {C * tps * p * p}) for grid_thw "
                         f"{(t, h, w)}, got {tuple(patches.shape)}")
    x = patches.reshape(t, h // m, w // m, m, m, C, tps, p, p)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)            # (t, tps, C, h/m, m_row, py, w/m, m_col, px)
    return x.reshape(t * tps, C, h * p, w * p)


def grid_list(grid_thw, merge_size=2):
    """grid_thw (3,) or (n, 3) -> [(t, h, w), ...] as ints, each h and w a positive multiple of merge_size."""
    integer("merge_size", merge_size, low=1)
    grids = torch.as_tensor(grid_thw).reshape(-1, 3).tolist()
    if not grids:
        raise ValueError("grid_thw is empty: no image to place")
    for t, h, w in grids:
        if t < 1 or h < 1 or w < 1 or h % merge_size or w % merge_size:
            raise ValueError(f"every grid (t, h, w) needs t >= 1 and h, w positive multiples of merge_size="
                             f"{merge_size}, got {(t, h, w)}")
    return grids


def vision_position_ids(grid_thw, merge_size=2):
    """(N, 2) long: the (row, col) of every vision token, in patchify_qwen2vl's order, image after image."""
    ids = []
    for t, h, w in grid_list(grid_thw, merge_size):
        rows = torch.arange(h)[:, None].expand(h, w)
        cols = torch.arange(w)[None, :].expand(h, w)
        # (h, w) -> (h/m, m, w/m, m) -> (h/m, w/m, m, m): each merge window's m² tokens together
        grid = torch.stack([rows, cols], dim=-1).reshape(h // merge_size, merge_size, w // merge_size, merge_size, 2)
        ids.append(grid.permute(0, 2, 1, 3, 4).reshape(h * w, 2).repeat(t, 1))
    return torch.cat(ids)


def vision_rope(position_ids, head_dim, theta=10000.0):
    """2D RoPE at (row, col) ids (N, 2) -> cos, sin (N, head_dim), Qwen2-VL's vision layout:
    D/4 frequencies theta^(-4i/D); per half of the head, D/4 channels turn with the row, D/4 with the col."""
    if head_dim % 4:
        raise ValueError(f"head_dim must be a multiple of 4 for 2D RoPE, got {head_dim}")
    inv_freq = rope_frequencies(head_dim // 2, theta, position_ids.device)                     # (D/4,)
    angles = (position_ids.float()[:, :, None] * inv_freq).reshape(len(position_ids), -1)       # (N, D/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def vision_cu_seqlens(grid_thw, merge_size=2):
    """(n_frames + 1,) long offsets: frame k's tokens are [cu[k], cu[k+1]) of the packed sequence."""
    lengths = [h * w for t, h, w in grid_list(grid_thw, merge_size) for _ in range(t)]
    return torch.tensor([0] + lengths).cumsum(0)


def block_diagonal_mask(cu_seqlens, device=None):
    """(N, N) bool, True where query i and key j lie in the same [cu[k], cu[k+1]) block."""
    cu_seqlens = torch.as_tensor(cu_seqlens, device=device)
    positions = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device)
    block = torch.searchsorted(cu_seqlens, positions, right=True)         # which block each token is in
    return block[:, None] == block[None, :]


class PatchEmbed(nn.Module):
    """Qwen2-VL's patch embedding: patches (N, C·tps·p·p) -> Conv3d(kernel = stride = (tps, p, p)) -> (N, D).

    A kernel as large as its stride sees each patch once: the conv is a matmul with the kernel flattened
    in the patch vectors' (channel, temporal, py, px) order. forward computes that matmul (on CPU several
    times faster than Conv3d's backward); `conv3d` runs the Conv3d itself, the same numbers.
    """

    def __init__(self, dim, patch_size=14, temporal_patch_size=2, in_channels=3):
        super().__init__()
        self.patch_shape = (in_channels, temporal_patch_size, patch_size, patch_size)
        kernel = (temporal_patch_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel, bias=False)

    def forward(self, patches):
        if patches.dim() != 2 or patches.shape[1] != math.prod(self.patch_shape):
            raise ValueError(f"patches must be (N, C·tps·p·p = {math.prod(self.patch_shape)}), "
                             f"got {tuple(patches.shape)}")
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1))

    def conv3d(self, patches):
        """The same map run as Qwen2-VL runs it: each patch vector a (C, tps, p, p) volume through the Conv3d."""
        return self.proj(patches.reshape(-1, *self.patch_shape)).reshape(len(patches), -1)

    def as_linear(self):
        """The same map as a Linear on the patch vectors: one kernel = one row of weights."""
        linear = nn.Linear(math.prod(self.patch_shape), self.proj.out_channels, bias=False)
        linear.weight.data.copy_(self.proj.weight.reshape(self.proj.out_channels, -1))
        return linear


class PatchMerger(nn.Module):
    """x (N, context_dim) -> norm -> each m² consecutive tokens concatenated -> Linear, GELU, Linear -> (N/m², dim).

    norm="layernorm" is Qwen2-VL's, "rmsnorm" Qwen2.5-VL's (both eps 1e-6); names as transformers'
    (`ln_q`, `mlp.0`, `mlp.2`).
    """

    def __init__(self, dim, context_dim, merge_size=2, norm="layernorm"):
        super().__init__()
        if norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {norm!r}")
        self.context_dim, self.hidden_size = context_dim, context_dim * merge_size ** 2
        self.ln_q = nn.LayerNorm(context_dim, eps=1e-6) if norm == "layernorm" else RMSNorm(context_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.GELU(),
                                 nn.Linear(self.hidden_size, dim))

    def forward(self, x):
        if x.dim() != 2 or x.shape[1] != self.context_dim or x.shape[0] % (self.hidden_size // self.context_dim):
            raise ValueError(f"x must be (N, context_dim={self.context_dim}) with N a multiple of merge_size² = "
                             f"{self.hidden_size // self.context_dim}, got {tuple(x.shape)}")
        return self.mlp(self.ln_q(x).reshape(-1, self.hidden_size))
