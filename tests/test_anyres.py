"""AnyRes (LLaVA-NeXT, LLaVA-OneVision): best resolution, crops, unpad, token reduction, packing, counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.anyres import (
    anyres_crops, anyres_grid_pinpoints, anyres_num_tokens, pack_anyres_features, reduce_tokens,
    resize_and_pad, select_best_resolution, unpad_features,
)

# LLaVA-NeXT's five 336-pixel pinpoints, here as (height, width) (the set is the same either way round)
NEXT = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]
SMALL = anyres_grid_pinpoints(32, (3, 3))       # toy scale: 32-pixel crops, 8-pixel patches, T = 16


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- select_best_resolution

@pytest.mark.parametrize("image_size, expected", [
    ((1000, 3000), (336, 1008)),   # wide: 1 × 3 crops keep 1008·336 pixels, every other pinpoint far fewer
    ((3000, 1000), (1008, 336)),   # the same image turned: (height, width) order matters
    ((1344, 1344), (672, 672)),    # square: scale 1/2 keeps 672·672
    ((1344, 2688), (336, 672)),    # (336, 672), (672, 672), (336, 1008) all keep 672·336: the one wasting 0 wins
    ((100, 200), (336, 672)),      # small: every pinpoint keeps all 20 000 pixels (no credit for upscaling);
                                   # (336, 672) and (672, 336) waste the same: the first listed wins
])
def test_best_resolution_hand_computed(image_size, expected):
    assert select_best_resolution(image_size, NEXT) == expected


def test_best_resolution_exact_ties_keep_the_first_candidate():
    assert select_best_resolution((100, 200), [(672, 336), (336, 672)]) == (672, 336)
    assert select_best_resolution((100, 200), [(336, 672), (672, 336)]) == (336, 672)
    # equal effective 10 000 pixels: fewer wasted beats listed first
    assert select_best_resolution((100, 100), [(300, 300), (200, 200)]) == (200, 200)
    # more kept beats less wasted
    assert select_best_resolution((1000, 1000), [(100, 100), (700, 700)]) == (700, 700)


def llava_next_select(original_wh, resolutions_wh):
    """LLaVA-NeXT's rule in its own PIL convention: sizes and candidates are (width, height)."""
    ow, oh = original_wh
    scored = []
    for k, (w, h) in enumerate(resolutions_wh):
        s = min(w / ow, h / oh)
        effective = min(int(ow * s) * int(oh * s), ow * oh)
        scored.append((-effective, w * h - effective, k))
    return resolutions_wh[min(scored)[2]]


def test_best_resolution_matches_the_width_height_reference_with_both_swapped():
    pinpoints = anyres_grid_pinpoints(384, (6, 6))
    sizes = torch.randint(20, 3000, (200, 2), generator=torch.Generator().manual_seed(1)).tolist()
    for H, W in sizes + [[336, 336], [384, 768], [100, 200]]:
        wh = llava_next_select((W, H), [(w, h) for h, w in pinpoints])
        assert select_best_resolution((H, W), pinpoints) == (wh[1], wh[0])


def test_grid_pinpoints():
    assert anyres_grid_pinpoints(336, (2, 2)) == [(336, 336), (336, 672), (672, 336), (672, 672)]
    onevision = anyres_grid_pinpoints(384, (6, 6))          # "(1x1),...,(6x6)"
    assert len(onevision) == 36 and onevision[0] == (384, 384) and onevision[-1] == (2304, 2304)
    assert anyres_grid_pinpoints(10, (2, 3), min_grid=(2, 2)) == [(20, 20), (20, 30)]


# ---------------------------------------------------------------- resize, pad, crops

def test_resize_and_pad_centres_the_image_hand_computed():
    ones = torch.ones(1, 16, 64)
    canvas = resize_and_pad(ones, (32, 64))                  # width fills (scale 1), height 16, bars of 8
    assert canvas.shape == (1, 32, 64)
    assert torch.equal(canvas[:, 8:24], ones) and canvas[:, :8].abs().sum() == 0 and canvas[:, 24:].abs().sum() == 0
    canvas = resize_and_pad(torch.ones(1, 11, 64), (32, 64), pad_value=-1.0)   # 21 rows of pad: 10 above, 11 below
    assert (canvas[:, 10:21] == 1).all() and (canvas[:, :10] == -1).all() and (canvas[:, 21:] == -1).all()
    canvas = resize_and_pad(torch.ones(2, 64, 16), (64, 32))               # portrait: bars left and right
    assert (canvas[:, :, 8:24] == 1).all() and (canvas[:, :, :8] == 0).all() and (canvas[:, :, 24:] == 0).all()
    # 40 × 100 into 64 × 96: scale_w = 0.96 < scale_h = 1.6, new height ceil(40·0.96) = ceil(38.4) = 39
    assert (resize_and_pad(torch.ones(1, 40, 100), (64, 96))[0, :, 0] != 0).sum() == 39


def test_crops_reassemble_to_the_padded_canvas_exactly():
    image = randn(3, 40, 100)
    # (64, 96): scale 0.96 keeps 96·38 = 3648 pixels; (32, 96) keeps 80·32, (64, 64) 64·25
    pixels, grid = anyres_crops(image, SMALL, 32)
    assert grid == (2, 3) and pixels.shape == (1 + 6, 3, 32, 32)
    canvas = resize_and_pad(image, (64, 96))
    stitched = pixels[1:].reshape(2, 3, 3, 32, 32).permute(2, 0, 3, 1, 4).reshape(3, 64, 96)
    assert torch.equal(stitched, canvas)
    assert torch.equal(pixels[1 + 1 * 3 + 2], canvas[:, 32:64, 64:96])      # crop k = i·b + j, raster order


def test_base_image_is_the_whole_image_squashed_to_the_crop():
    image = randn(3, 40, 100)
    pixels, _ = anyres_crops(image, SMALL, 32)
    expected = F.interpolate(image[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[0]
    assert torch.equal(pixels[0], expected)


def test_crops_keep_dtype_and_gradients():
    image = randn(3, 50, 20).double().requires_grad_()
    pixels, grid = anyres_crops(image, SMALL, 32)
    assert pixels.dtype == torch.float64 and grid == (2, 1)
    pixels.sum().backward()
    assert image.grad.shape == image.shape and image.grad.abs().sum() > 0


# ---------------------------------------------------------------- unpad

@pytest.mark.parametrize("map_hw, original, rows, cols", [
    ((24, 48), (200, 600), (4, 20), (0, 48)),   # aspect 3 > 2: new_h = 200·48/600 = 16, pad (24 − 16) // 2 = 4
    ((48, 24), (600, 200), (0, 48), (4, 20)),   # portrait: new_w = 200·48/600 = 16, columns 4:20
    ((24, 48), (300, 600), (0, 24), (0, 48)),   # same aspect as the canvas: nothing removed
    ((24, 48), (213, 600), (3, 21), (0, 48)),   # new_h = int(17.04) = 17, pad 3: keeps 24 − 6 = 18 rows
    ((24, 48), (55, 176), (4, 20), (0, 48)),    # 55·(48/176) = 14.999…: round(·, 7) gives 15, pad 4
])
def test_unpad_hand_computed(map_hw, original, rows, cols):
    features = torch.arange(2 * map_hw[0] * map_hw[1], dtype=torch.float32).reshape(2, *map_hw)
    assert torch.equal(unpad_features(features, original), features[:, rows[0]:rows[1], cols[0]:cols[1]])


@pytest.mark.parametrize("image_hw", [(16, 64), (64, 16)])
def test_unpad_removes_exactly_the_tokens_that_saw_padding(image_hw):
    pixels, (a, b) = anyres_crops(torch.ones(1, *image_hw), SMALL, 32)      # 1 × 2 (or 2 × 1) crops, bars of 8
    canvas = pixels[1:].reshape(a, b, 1, 32, 32).permute(2, 0, 3, 1, 4).reshape(1, 32 * a, 32 * b)
    features = F.avg_pool2d(canvas, 8)                                       # one "token" per 8 × 8 patch
    assert (features == 0).any()
    assert (unpad_features(features, image_hw) == 1).all()
    assert unpad_features(features, image_hw).numel() == (features == 1).sum()


# ---------------------------------------------------------------- reduce

def test_reduce_by_two_is_bilinear_and_equals_2x2_average_pooling():
    features = randn(4, 60, 60)
    reduced = reduce_tokens(features, 900)                                    # s = sqrt(3600 / 900) = 2
    assert reduced.shape == (4, 30, 30)
    torch.testing.assert_close(reduced, F.avg_pool2d(features[None], 2)[0])
    assert reduce_tokens(randn(4, 30, 120), 900).shape == (4, 15, 60)


def test_reduce_rounding_matches_the_reference():
    features = randn(4, 50, 70)
    s = math.sqrt(50 * 70 / 1000)                                             # 1.87: (int(50 // s), int(70 // s))
    expected = F.interpolate(features[None], size=(26, 37), mode="bilinear", align_corners=False)[0]
    assert (int(50 // s), int(70 // s)) == (26, 37)
    assert torch.equal(reduce_tokens(features, 1000), expected)


def test_reduce_is_the_identity_below_the_threshold():
    features = randn(4, 30, 30)
    assert reduce_tokens(features, 900) is features and reduce_tokens(features, 5000) is features
    features = randn(4, 36, 30)                                               # 1080 = 1.2·900: s = 1.095 < 1.1
    assert reduce_tokens(features, 900) is features
    assert reduce_tokens(features, 900, slack=1.0).shape == (4, 32, 27)       # 36 // 1.095, 30 // 1.095


# ---------------------------------------------------------------- pack and count

def test_pack_layout_by_hand():
    base = 100 + torch.arange(4.0)[:, None].expand(4, 3)                     # T = 4 tokens: a 2 × 2 map
    crops = torch.arange(8.0)[:, None].expand(8, 3).reshape(2, 4, 3)         # crop 0: 0..3, crop 1: 4..7
    newline = torch.full((3,), -1.0)
    packed = pack_anyres_features(base, crops, (1, 2), (10, 20), newline)    # aspect 2 = canvas: no unpad
    assert packed[:, 0].tolist() == [100, 101, 102, 103, 0, 1, 4, 5, -1, 2, 3, 6, 7, -1]
    packed = pack_anyres_features(base, crops, (2, 1), (20, 10))             # portrait, no newline
    assert packed[:, 0].tolist() == [100, 101, 102, 103, 0, 1, 2, 3, 4, 5, 6, 7]


def test_pack_equals_a_token_by_token_construction():
    side, (a, b), D = 4, (2, 3), 5
    base, crops, newline = randn(side ** 2, D), randn(a * b, side ** 2, D, seed=1), randn(D, seed=2)
    original = (50, 100)                       # aspect 2 > canvas 8 × 12 tokens (1.5): bars top and bottom
    r0, r1, c0, c1 = 1, 7, 0, 12               # new_h = 50·12/100 = 6, pad (8 − 6) // 2 = 1: rows 1:7
    expected = [base]
    for r in range(r0, r1):
        for c in range(c0, c1):
            expected.append(crops[(r // side) * b + c // side, (r % side) * side + c % side][None])
        expected.append(newline[None])
    assert torch.equal(pack_anyres_features(base, crops, (a, b), original, newline), torch.cat(expected))


@pytest.mark.parametrize("max_tokens", [None, 40, 100])
@pytest.mark.parametrize("newline", [True, False])
def test_num_tokens_equals_the_packed_length(max_tokens, newline):
    for H, W in [(16, 64), (64, 16), (40, 100), (32, 32), (96, 96), (213, 600), (600, 213), (7, 300), (100, 99)]:
        pixels, grid = anyres_crops(torch.zeros(1, H, W), SMALL, 32)
        features = randn(pixels.shape[0], 16, 2)                              # a (32 // 8)² = 16-token encoder
        packed = pack_anyres_features(features[0], features[1:], grid, (H, W),
                                      torch.zeros(2) if newline else None, max_tokens)
        assert anyres_num_tokens((H, W), SMALL, 32, 8, max_tokens, newline) == packed.shape[0]


def test_num_tokens_at_onevision_scale():
    pinpoints, T = anyres_grid_pinpoints(384, (6, 6)), 27 * 27                # SigLIP-384/14, anyres_max_9
    for H, W in [(480, 640), (1080, 1920), (4000, 500), (384, 384), (2000, 2000), (300, 1200)]:
        a, b = (s // 384 for s in select_best_resolution((H, W), pinpoints))
        features = randn(1 + a * b, T, 2)
        packed = pack_anyres_features(features[0], features[1:], (a, b), (H, W), torch.zeros(2), 9 * T)
        assert anyres_num_tokens((H, W), pinpoints, 384, 14, 9 * T) == packed.shape[0]
        assert packed.shape[0] <= T + 9 * T * 1.1 ** 2 + 6 * 27             # the budget, plus one newline per row


def test_num_tokens_without_unpad_reduction_or_newline_is_one_plus_ab_times_T():
    for (H, W), ab in [((64, 96), 6), ((32, 32), 1), ((96, 32), 3), ((32, 64), 2)]:
        assert anyres_num_tokens((H, W), SMALL, 32, 8, newline=False) == (ab + 1) * 16
    assert anyres_num_tokens((10, 20), SMALL, 32, 8, newline=False) == 16 + 4 * 2   # 1 × 1 crop, 2:1 unpadded
    assert anyres_num_tokens((336, 1008), NEXT, 336, 14, newline=False) == 4 * 576   # LLaVA-1.6, 1 × 3 crops
    assert anyres_num_tokens((336, 1008), NEXT, 336, 14) == 576 + 24 * 73


# ---------------------------------------------------------------- bad input

def test_bad_inputs():
    with pytest.raises(ValueError, match=r"image must be a \(C, H, W\)"):
        anyres_crops(torch.rand(40, 100), SMALL, 32)
    with pytest.raises(ValueError, match=r"image must be a \(C, H, W\)"):
        anyres_crops(torch.rand(1, 3, 40, 100), SMALL, 32)
    with pytest.raises(ValueError, match="floating-point"):
        anyres_crops(torch.zeros(3, 40, 100, dtype=torch.uint8), SMALL, 32)
    with pytest.raises(ValueError, match="grid_pinpoints must be a non-empty"):
        anyres_crops(torch.rand(3, 40, 100), [], 32)
    with pytest.raises(ValueError, match="grid_pinpoints must be a non-empty"):
        select_best_resolution((40, 100), [])
    with pytest.raises(ValueError, match="can hold a 1 x 1000 image"):
        select_best_resolution((1, 1000), [(32, 32), (64, 64)])           # scaled to fit: 0 rows in both
    with pytest.raises(ValueError, match="multiples .* of crop_size=32"):
        anyres_crops(torch.rand(3, 40, 100), [(32, 48)], 32)
    with pytest.raises(ValueError, match="multiples .* of crop_size=336"):
        anyres_num_tokens((40, 100), [(336, 700)], 336, 14)
    with pytest.raises(ValueError, match="image_size must be"):
        select_best_resolution((40, 0), NEXT)
    with pytest.raises(ValueError, match="square"):
        pack_anyres_features(randn(5, 2), randn(2, 5, 2), (1, 2), (10, 20))
    with pytest.raises(ValueError, match=r"crops must be \(a·b, T, D\)"):
        pack_anyres_features(randn(4, 2), randn(3, 4, 2), (1, 2), (10, 20))
    with pytest.raises(ValueError, match="image_newline"):
        pack_anyres_features(randn(4, 2), randn(2, 4, 2), (1, 2), (10, 20), torch.zeros(3))
    with pytest.raises(ValueError, match="max_tokens"):
        pack_anyres_features(randn(4, 2), randn(2, 4, 2), (1, 2), (10, 20), max_tokens=0)
    with pytest.raises(ValueError, match="max_tokens"):
        reduce_tokens(randn(2, 4, 4), 0)
    with pytest.raises(ValueError, match="max_tokens"):
        anyres_num_tokens((40, 100), SMALL, 32, 8, max_tokens=-3)
    with pytest.raises(ValueError, match=r"features must be a feature map \(D, h, w\)"):
        unpad_features(randn(4, 4), (10, 20))
    with pytest.raises(ValueError, match="original_size"):
        unpad_features(randn(2, 4, 4), (10,))
    with pytest.raises(ValueError, match="patch_size"):
        anyres_num_tokens((40, 100), SMALL, 32, 64)
