"""Pixel unshuffle for visual tokens (InternVL, Chen et al. 2024, "How Far Are We to GPT-4V?").

A ViT turns an image into an H × W grid of tokens with C channels. Every token becomes a
token of the language model, so a 448-pixel image with 14-pixel patches costs 1024 LM
tokens. InternVL-1.5 merges each r × r window of neighbouring tokens into one token with
r²·C channels before the projector: r = 2 gives 4× fewer visual tokens, and nothing is
thrown away, the same numbers are only laid out differently.

    pixel_unshuffle(x, r):   (B, H, W, C)  ->  (B, H/r, W/r, C·r²)       channels-last grid
    pixel_shuffle(y, r):     the inverse,  (B, H/r, W/r, C·r²) -> (B, H, W, C)

Inside a merged channel vector there are two reasonable orders:

    order="internvl"  r² blocks of C channels, one per token of the r × r window in raster
                      order (top-left, top-right, bottom-left, bottom-right for r = 2):
                      merged[c + C·(i·r + j)] = x[r·h + i, r·w + j, c]
                      This is what InternVL's `pixel_shuffle(x, scale_factor=0.5)` produces.
    order="torch"     channel slowest, window offset fastest, as in
                      `torch.nn.functional.pixel_unshuffle` on a (B, C, H, W) image:
                      merged[c·r² + i·r + j] = x[r·h + i, r·w + j, c]

Both hold the same r²·C numbers and differ by a fixed permutation of the channels. A
projector that starts with a LayerNorm and a Linear layer (InternVL's `mlp1`) absorbs any
fixed permutation in its weights, so the order does not matter for learning; it only
matters when loading weights trained with the other one.
"""

import torch
import torch.nn.functional as F

from .checks import tensor

ORDERS = ("internvl", "torch")


def _check(x, factor, order, name="x"):
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor must be a positive int, got {factor!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a channels-last token grid (B, H, W, C), got {shape}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def pixel_unshuffle(x, factor=2, order="internvl"):
    """Merge each factor × factor window of tokens: (B, H, W, C) -> (B, H/r, W/r, C·r²)."""
    _check(x, factor, order)
    B, H, W, C = x.shape
    r = factor
    if H % r or W % r:
        raise ValueError(f"the token grid {H}x{W} of x (B, H, W, C) = {tuple(x.shape)} "
                         f"is not divisible by factor={r}")
    x = x.reshape(B, H // r, r, W // r, r, C)          # (B, h, i, w, j, C): token (r·h + i, r·w + j)
    if order == "internvl":
        x = x.permute(0, 1, 3, 2, 4, 5)                # (B, h, w, i, j, C): window offset slowest
    else:
        x = x.permute(0, 1, 3, 5, 2, 4)                # (B, h, w, C, i, j): channel slowest
    return x.reshape(B, H // r, W // r, C * r * r)


def pixel_shuffle(x, factor=2, order="internvl"):
    """The inverse of `pixel_unshuffle`: (B, H, W, C·r²) -> (B, H·r, W·r, C)."""
    _check(x, factor, order)
    B, H, W, D = x.shape
    r = factor
    if D % (r * r):
        raise ValueError(f"the channels of x (B, H, W, C·r²) = {tuple(x.shape)} are not divisible "
                         f"by factor²={r * r}")
    C = D // (r * r)
    if order == "internvl":
        x = x.reshape(B, H, W, r, r, C).permute(0, 1, 3, 2, 4, 5)   # (B, h, i, w, j, C)
    else:
        x = x.reshape(B, H, W, C, r, r).permute(0, 1, 4, 2, 5, 3)   # (B, h, i, w, j, C)
    return x.reshape(B, H * r, W * r, C)


def pixel_unshuffle_torch(x, factor=2):
    """order="torch" computed with PyTorch's own op: channels-last -> (B, C, H, W) -> back.

    The reference path the tests check `pixel_unshuffle(x, r, order="torch")` against."""
    _check(x, factor, "torch")
    merged = F.pixel_unshuffle(x.permute(0, 3, 1, 2), factor)   # (B, C·r², H/r, W/r)
    return merged.permute(0, 2, 3, 1)


def internvl_pixel_shuffle(x, scale_factor=0.5):
    """InternVL's own reshapes (its `pixel_shuffle`, version 2), kept to test the "internvl" order.

    Written the way InternVL writes it: two view/permute rounds, each merging pairs along
    one axis. x is (B, H, W, C).
    """
    tensor("x", x, dims=4, shape="(B, H, W, C)")
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3)


def order_permutation(channels, factor=2):
    """Indices p with unshuffle(x, "torch")[..., k] == unshuffle(x, "internvl")[..., p[k]]."""
    r2 = factor * factor
    k = torch.arange(channels * r2)
    c, window = k // r2, k % r2            # "torch" channel k = c·r² + window
    return window * channels + c           # the same number's index in the "internvl" order


def tokens_to_grid(tokens, grid_size=None):
    """(B, N, C) tokens in raster order -> (B, H, W, C); a square grid unless grid_size=(H, W)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be (B, N, C), got {shape}")
    B, N, C = tokens.shape
    if grid_size is None:
        side = int(round(N ** 0.5))
        if side * side != N:
            raise ValueError(f"tokens have N={N}, not a square grid: pass grid_size=(H, W)")
        grid_size = (side, side)
    H, W = grid_size
    if H * W != N:
        raise ValueError(f"grid_size {H}x{W} does not hold N={N} tokens")
    return tokens.reshape(B, H, W, C)
