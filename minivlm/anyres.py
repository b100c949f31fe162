"""AnyRes: a large image as a grid of crops (LLaVA-NeXT / LLaVA-1.6, Liu et al. 2024, blog post
"LLaVA-NeXT: Improved reasoning, OCR, and world knowledge"), with the AnyRes-Max token budget of
LLaVA-OneVision (Li et al. 2024, arXiv 2408.03326, §3).

A vision encoder sees one crop × crop image (336 for CLIP ViT-L/14, 384 for SigLIP). AnyRes keeps a
large image's detail by cutting it into crops of that size, and adds the whole image, squashed, for
the global view:

    image (C, H, W)
      select_best_resolution   of the grid pinpoints (a·crop, b·crop), the one that keeps the most of the
                               image's pixels, then wastes the fewest
      resize_and_pad           aspect kept, centred on a pad_value canvas of that size
    anyres_crops -> pixels (1 + a·b, C, crop, crop): the base image first, then the a × b crops in
                    raster order; grid (a, b) = (rows, columns)

    encoder + projector: each of the 1 + a·b images -> T = (crop // patch)² tokens of width D (not here)

    pack_anyres_features(base (T, D), crops (a·b, T, D), grid, original_size, image_newline, max_tokens)
      stitch       (a·b, T, D) -> (D, a·√T, b·√T)    one feature map of the whole padded canvas
      unpad        drop the rows (or columns) that only saw padding             -> (D, h, w)
      reduce       AnyRes-Max: if h·w > max_tokens, bilinear down by s = sqrt(h·w / max_tokens)
      newline      the learned image_newline (D,) appended after every row      -> (D, h, w + 1)
      -> [base tokens; the map's rows, flattened]    (T + h·(w + 1), D)
    anyres_num_tokens: that length from the sizes alone, without running any model.

The newline token tells the language model, which reads a 1D sequence, where a row of the 2D map
ends; the base image gets none (it has a fixed √T × √T shape). LLaVA-OneVision's "anyres_max_9"
with SigLIP-384/14 (T = 27² = 729) is max_tokens = 9·729 = 6561, with grid pinpoints (1x1)..(6x6).

Conventions: every size here is (height, width), like a torch tensor's shape and transformers'
`LlavaNextImageProcessor`. LLaVA-NeXT's own `mm_utils.py` takes PIL's (width, height) for the image
size and for the pinpoints alike: swap both to compare. Reference semantics matched exactly:
`select_best_resolution` (int() truncation, upscaling earns nothing, ties -> fewer wasted pixels,
exact ties -> the first candidate), `resize_and_pad_image` (the tighter side fills, the other is
ceil(side·scale), left/top offset floor(pad / 2)), `divide_to_patches` (raster order), transformers'
`unpad_image` (int(round(x, 7)), symmetric slicing) and the `anyres_max` reduction of
`llava_arch.py` / `pack_image_features` (reduce only when s > 1.1, size int(h // s), bilinear,
align_corners=False). Pixels differ slightly: the reference resizes with PIL (bicubic); here
F.interpolate(mode="bilinear", antialias=True) does, which filters when downscaling as PIL does.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

REDUCE_SLACK = 1.1      # LLaVA-NeXT / transformers reduce only when s = sqrt(h·w / max_tokens) > 1.1


def _pair(value, name):
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{name} must be (height, width), two positive ints, got {value!r}")
    return int(value[0]), int(value[1])


def _positive(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {value!r}")


def _pinpoints(grid_pinpoints, crop_size=None):
    if not isinstance(grid_pinpoints, (tuple, list)) or len(grid_pinpoints) == 0:
        raise ValueError(f"grid_pinpoints must be a non-empty list of (height, width), got {grid_pinpoints!r}")
    points = [_pair(p, "each of grid_pinpoints") for p in grid_pinpoints]
    if crop_size is not None and any(h % crop_size or w % crop_size for h, w in points):
        raise ValueError(f"grid_pinpoints must be multiples (a·crop, b·crop) of crop_size={crop_size}, "
                         f"got {points}")
    return points


def _check_tensor(x, name, dims, layout):
    if not isinstance(x, torch.Tensor) or x.dim() != dims:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be {layout}, got {shape}")


def select_best_resolution(image_size, grid_pinpoints):
    """The pinpoint (height, width) that keeps the most of an image_size = (H, W) image, then wastes least.

    For each candidate (h, w): scale = min(w / W, h / H) fits the image inside, aspect kept;
    effective = min(int(W·scale)·int(H·scale), W·H) (upscaling adds no information), wasted = h·w − effective.
    Max effective wins, ties go to min wasted, exact ties to the candidate listed first.
    """
    H, W = _pair(image_size, "image_size")
    best, best_effective, best_wasted = None, 0, math.inf
    for h, w in _pinpoints(grid_pinpoints):
        scale = min(w / W, h / H)
        effective = min(int(W * scale) * int(H * scale), W * H)
        wasted = h * w - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (h, w), effective, wasted
    if best_effective == 0:
        raise ValueError(f"none of grid_pinpoints {grid_pinpoints} can hold a {H} x {W} image: scaled to fit, "
                         f"it keeps no whole pixel in any of them")
    return best


def anyres_grid_pinpoints(crop_size, max_grid=(3, 3), min_grid=(1, 1)):
    """Every a × b grid of crops with min_grid <= (a, b) <= max_grid, as (height, width) = (a·crop, b·crop).

    LLaVA-OneVision's "(1x1),...,(6x6)" is anyres_grid_pinpoints(384, (6, 6)), 36 candidates; rows vary
    slowest, the order of transformers' `image_grid_pinpoints` read as (height, width).
    """
    _positive(crop_size, "crop_size")
    (a0, b0), (a1, b1) = _pair(min_grid, "min_grid"), _pair(max_grid, "max_grid")
    if a0 > a1 or b0 > b1:
        raise ValueError(f"min_grid {min_grid} must not exceed max_grid {max_grid}")
    return [(a * crop_size, b * crop_size) for a in range(a0, a1 + 1) for b in range(b0, b1 + 1)]


def _resize(image, size, antialias):
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]


def _fitted_size(image_size, target_size):
    """`resize_and_pad_image`'s arithmetic: the image's (height, width) inside target_size, aspect kept."""
    (H, W), (th, tw) = image_size, target_size
    scale_w, scale_h = tw / W, th / H
    if scale_w < scale_h:                                   # width fills, bars above and below
        return min(math.ceil(H * scale_w), th), tw
    return th, min(math.ceil(W * scale_h), tw)             # height fills, bars left and right


def resize_and_pad(image, target_size, pad_value=0.0, antialias=True):
    """image (C, H, W) -> (C, th, tw): resized with its aspect kept, centred on a pad_value canvas.

    pad_value=0.0 is the reference's black canvas (it pads before normalising; on an already
    normalised image, 0 is the mean colour instead).
    """
    _check_tensor(image, "image", 3, "a (C, H, W) tensor")
    th, tw = _pair(target_size, "target_size")
    nh, nw = _fitted_size(tuple(image.shape[1:]), (th, tw))
    top, left = (th - nh) // 2, (tw - nw) // 2             # the extra pixel of an odd pad goes bottom/right
    resized = _resize(image, (nh, nw), antialias)           # (C, nh, nw)
    return F.pad(resized, (left, tw - nw - left, top, th - nh - top), value=pad_value)


class AnyResCrops(NamedTuple):
    pixels: torch.Tensor    # (1 + a·b, C, crop, crop): base image first, then the crops in raster order
    grid: tuple             # (a, b) = (rows, columns) of crops


def anyres_crops(image, grid_pinpoints, crop_size, pad_value=0.0, antialias=True):
    """image (C, H, W) -> AnyResCrops(pixels (1 + a·b, C, crop, crop), grid (a, b)), as `process_anyres_image`.

    The base image is the whole image resized to crop × crop without keeping its aspect, as LLaVA-NeXT
    and LLaVA-OneVision do (`image.resize((s, s))`).
    """
    _check_tensor(image, "image", 3, "a (C, H, W) tensor")
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating-point (C, H, W) tensor, got dtype {image.dtype}")
    _positive(crop_size, "crop_size")
    (C, H, W), c = image.shape, crop_size
    th, tw = select_best_resolution((H, W), _pinpoints(grid_pinpoints, c))
    a, b = th // c, tw // c
    canvas = resize_and_pad(image, (th, tw), pad_value, antialias)            # (C, a·c, b·c)
    crops = canvas.reshape(C, a, c, b, c).permute(1, 3, 0, 2, 4)             # (a, b, C, c, c)
    base = _resize(image, (c, c), antialias)                                  # (C, c, c), squashed
    return AnyResCrops(torch.cat([base[None], crops.reshape(a * b, C, c, c)]), (a, b))


def _unpad_box(h, w, original_size):
    """Rows r0:r1 and columns c0:c1 of an (h, w) map of the padded canvas that saw the image."""
    H, W = original_size
    if W / H > w / h:                                       # image wider than the canvas: bars top and bottom
        new_h = int(round(H * (w / W), 7))
        pad = (h - new_h) // 2
        return pad, h - pad, 0, w                           # symmetric: keeps h − 2·pad (new_h + 1 if odd)
    new_w = int(round(W * (h / H), 7))
    pad = (w - new_w) // 2
    return 0, h, pad, w - pad


def unpad_features(features, original_size):
    """features (D, h, w) of the padded canvas -> (D, h', w'): transformers' `unpad_image`, original (H, W)."""
    _check_tensor(features, "features", 3, "a feature map (D, h, w)")
    r0, r1, c0, c1 = _unpad_box(*features.shape[1:], _pair(original_size, "original_size"))
    return features[:, r0:r1, c0:c1]


def _reduced_shape(h, w, max_tokens, slack):
    scale = math.sqrt(h * w / max_tokens)
    return (int(h // scale), int(w // scale)) if scale > slack else (h, w)


def reduce_tokens(features, max_tokens, slack=REDUCE_SLACK):
    """features (D, h, w) -> (D, h // s, w // s) bilinear, s = sqrt(h·w / max_tokens), only when s > slack.

    Below the threshold the features are returned unchanged. slack=1.1 is the reference's; slack=1.0
    reduces whenever h·w > max_tokens.
    """
    _check_tensor(features, "features", 3, "a feature map (D, h, w)")
    _positive(max_tokens, "max_tokens")
    if not isinstance(slack, (int, float)) or slack < 1:
        raise ValueError(f"slack must be a number >= 1, got {slack!r}")
    size = _reduced_shape(*features.shape[1:], max_tokens, slack)
    if size == tuple(features.shape[1:]):
        return features
    return F.interpolate(features[None], size=size, mode="bilinear", align_corners=False)[0]


def pack_anyres_features(base, crops, grid, original_size, image_newline=None, max_tokens=None):
    """base (T, D), crops (a·b, T, D) -> (N, D) = [base; unpadded, reduced map rows + newline], N = T + h·(w + 1).

    With image_newline=None no newline is appended: N = T + h·w.
    """
    _check_tensor(base, "base", 2, "the base image's tokens (T, D)")
    T, D = base.shape
    side = math.isqrt(T)
    if side * side != T:
        raise ValueError(f"base (T, D) = {tuple(base.shape)}: T must be a square √T × √T feature map")
    a, b = _pair(grid, "grid")
    if not isinstance(crops, torch.Tensor) or tuple(crops.shape) != (a * b, T, D):
        shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
        raise ValueError(f"crops must be (a·b, T, D) = {(a * b, T, D)} for grid {(a, b)}, got {shape}")
    original_size = _pair(original_size, "original_size")
    if image_newline is not None and (not isinstance(image_newline, torch.Tensor) or image_newline.shape != (D,)):
        shape = tuple(image_newline.shape) if isinstance(image_newline, torch.Tensor) else type(image_newline).__name__
        raise ValueError(f"image_newline must be (D,) = ({D},) or None, got {shape}")
    if max_tokens is not None:
        _positive(max_tokens, "max_tokens")
    fmap = crops.reshape(a, b, side, side, D).permute(4, 0, 2, 1, 3)         # (D, a, √T, b, √T)
    fmap = fmap.reshape(D, a * side, b * side)                                # the padded canvas
    fmap = unpad_features(fmap, original_size)                                # (D, h, w)
    if max_tokens is not None:
        fmap = reduce_tokens(fmap, max_tokens)
    if image_newline is not None:
        newline = image_newline.to(fmap)[:, None, None].expand(D, fmap.shape[1], 1)
        fmap = torch.cat([fmap, newline], dim=2)                              # (D, h, w + 1)
    rows = fmap.reshape(D, -1).T                                              # (h·(w + 1), D), raster order
    return torch.cat([base, rows])


def anyres_num_tokens(image_size, grid_pinpoints, crop_size, patch_size, max_tokens=None, newline=True):
    """The length N of `pack_anyres_features` for an image_size = (H, W) image, from the sizes alone.

    T = (crop_size // patch_size)² tokens per crop; N = T + h·(w + newline), (h, w) the unpadded
    (and reduced) map of the a·√T × b·√T canvas.
    """
    H, W = _pair(image_size, "image_size")
    _positive(crop_size, "crop_size")
    _positive(patch_size, "patch_size")
    if patch_size > crop_size:
        raise ValueError(f"patch_size={patch_size} must not exceed crop_size={crop_size}")
    if max_tokens is not None:
        _positive(max_tokens, "max_tokens")
    side = crop_size // patch_size
    th, tw = select_best_resolution((H, W), _pinpoints(grid_pinpoints, crop_size))
    r0, r1, c0, c1 = _unpad_box(th // crop_size * side, tw // crop_size * side, (H, W))
    h, w = r1 - r0, c1 - c0
    if max_tokens is not None:
        h, w = _reduced_shape(h, w, max_tokens, REDUCE_SLACK)
    return side * side + h * (w + int(bool(newline)))
