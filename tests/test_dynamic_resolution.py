"""Qwen2-VL's dynamic resolution: patch order, position ids, Conv3d == Linear, the merger, packing, bad input."""

import pytest
import torch

from minivlm import rope
from minivlm.blocks import TransformerBlock
from minivlm.dynamic_resolution import (PatchEmbed, PatchMerger, block_diagonal_mask, patchify_qwen2vl, smart_resize,
                                        unpatchify_qwen2vl, vision_cu_seqlens, vision_position_ids, vision_rope)


def test_every_patch_vector_is_its_crop_channel_time_row_col():
    torch.manual_seed(0)
    frames = torch.randn(4, 3, 8, 12)                         # T = 4 frames, p = 2, m = 2: h = 4, w = 6
    patches, grid = patchify_qwen2vl(frames, patch_size=2, temporal_patch_size=2, merge_size=2)
    assert grid.tolist() == [2, 4, 6] and patches.shape == (2 * 4 * 6, 3 * 2 * 2 * 2)
    ids = vision_position_ids(grid, merge_size=2)
    for k in range(len(patches)):
        t, (row, col) = k // 24, ids[k].tolist()
        crop = frames[2 * t:2 * t + 2, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2]     # (tps, C, p, p)
        assert torch.equal(patches[k], crop.permute(1, 0, 2, 3).reshape(-1))         # (C, tps, py, px)


def test_merge_windows_are_consecutive_and_row_major():
    ids = vision_position_ids(torch.tensor([1, 4, 4]), merge_size=2)
    assert ids[:8].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]
    assert ids[8:12].tolist() == [[2, 0], [2, 1], [3, 0], [3, 1]]
    two = vision_position_ids(torch.tensor([[2, 2, 2], [1, 2, 4]]))
    assert two.shape == (2 * 4 + 8, 2) and torch.equal(two[:4], two[4:8])            # frames repeat their ids


def test_one_image_is_repeated_to_the_temporal_patch():
    image = torch.rand(1, 3, 8, 8)
    patches, grid = patchify_qwen2vl(image, patch_size=4, merge_size=1)
    twice, _ = patchify_qwen2vl(image.expand(2, -1, -1, -1), patch_size=4, merge_size=1)
    assert grid.tolist() == [1, 2, 2] and torch.equal(patches, twice)


@pytest.mark.parametrize("T, H, W, p, m", [(2, 28, 56, 14, 2), (4, 12, 8, 2, 2), (2, 9, 6, 3, 1)])
def test_round_trip(T, H, W, p, m):
    frames = torch.rand(T, 3, H, W)
    patches, grid = patchify_qwen2vl(frames, p, 2, m)
    assert torch.equal(unpatchify_qwen2vl(patches, grid, 3, p, 2, m), frames)


@pytest.mark.parametrize("H, W, tokens", [(28, 28, 1), (56, 28, 2), (224, 224, 64), (448, 224, 128), (56, 112, 8)])
def test_token_counts_follow_the_image(H, W, tokens):
    patches, grid = patchify_qwen2vl(torch.rand(1, 3, H, W))
    assert len(patches) == (H // 14) * (W // 14) and len(patches) // 4 == tokens
    merged = PatchMerger(16, 8)(torch.randn(len(patches), 8))
    assert merged.shape == (tokens, 16)


def test_conv3d_patch_embedding_is_a_linear_map_on_patch_vectors():
    torch.manual_seed(0)
    embed = PatchEmbed(32, patch_size=14, temporal_patch_size=2)
    patches, _ = patchify_qwen2vl(torch.rand(1, 3, 56, 28))
    torch.testing.assert_close(embed.conv3d(patches), embed.as_linear()(patches), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embed(patches), embed.conv3d(patches), rtol=1e-5, atol=1e-5)
    assert embed.proj.bias is None and embed.proj.stride == (2, 14, 14)


def test_vision_rope_in_raster_order_is_chapter_02s_2d_rope():
    ids = vision_position_ids(torch.tensor([1, 3, 5]), merge_size=1)
    cos, sin = vision_rope(ids, 16)
    ref_cos, ref_sin = rope.rope_2d_cos_sin(3, 5, 16)
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)


def test_merger_reads_each_merge_window():
    torch.manual_seed(0)
    merger = PatchMerger(dim=10, context_dim=6, merge_size=2)
    x = torch.randn(16, 6)
    normed = torch.nn.functional.layer_norm(x, (6,), merger.ln_q.weight, merger.ln_q.bias, eps=1e-6)
    windows = normed.reshape(4, 4 * 6)
    expected = merger.mlp[2](torch.nn.functional.gelu(merger.mlp[0](windows)))
    torch.testing.assert_close(merger(x), expected)
    assert set(merger.state_dict()) == {"ln_q.weight", "ln_q.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
                                        "mlp.2.bias"}
    rms = PatchMerger(dim=10, context_dim=6, norm="rmsnorm")
    assert set(rms.state_dict()) == {"ln_q.weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    assert rms.ln_q.eps == 1e-6 and merger.ln_q.eps == 1e-6


def test_packed_sequence_equals_each_image_alone():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 32)
    grids = torch.tensor([[1, 2, 4], [1, 4, 4], [2, 2, 2]])
    lengths = [8, 16, 4, 4]                       # frames: the video's two frames are blocks of their own
    cu = vision_cu_seqlens(grids)
    assert cu.tolist() == [0, 8, 24, 28, 32]
    x = torch.randn(1, 32, 16)
    cos, sin = vision_rope(vision_position_ids(grids), 8)
    packed = block(x, attn_mask=block_diagonal_mask(cu), rope=(cos, sin))
    start = 0
    for n in lengths:
        alone = block(x[:, start:start + n], rope=(cos[start:start + n], sin[start:start + n]))
        torch.testing.assert_close(packed[:, start:start + n], alone, rtol=1e-5, atol=1e-5)
        start += n


def test_block_diagonal_mask_by_hand():
    assert block_diagonal_mask(torch.tensor([0, 2, 3])).int().tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("size, expected", [
    ((280, 560), (280, 560)),                 # already multiples of 28
    ((42, 70), (56, 56)),                     # round half to even: 1.5 -> 2, 2.5 -> 2 (then min_pixels holds)
    ((300, 500), (308, 504)),
    ((2000, 3000), (812, 1204)),              # over max_pixels: ÷ sqrt(6e6 / 1003520) = 2.445, floored
    ((28, 30), (56, 84)),                     # under min_pixels: × sqrt(3136 / 840) = 1.93, ceiled
])
def test_smart_resize_by_hand(size, expected):
    height, width = smart_resize(*size, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    assert (height, width) == expected and height % 28 == 0 == width % 28


@pytest.mark.parametrize("call, message", [
    (lambda: patchify_qwen2vl(torch.rand(1, 3, 30, 28)), "multiples of patch_size·merge_size = 28"),
    (lambda: patchify_qwen2vl(torch.rand(3, 3, 28, 28)), "multiple of temporal_patch_size=2"),
    (lambda: patchify_qwen2vl(torch.rand(3, 28, 28)), r"\(T, C, H, W\)"),
    (lambda: vision_position_ids(torch.tensor([1, 3, 4])), "multiples of merge_size=2"),
    (lambda: vision_position_ids(torch.zeros(0, 3, dtype=torch.long)), "grid_thw is empty"),
    (lambda: PatchMerger(8, 4)(torch.randn(6, 4)), "multiple of merge_size"),
    (lambda: PatchEmbed(8, patch_size=2)(torch.randn(4, 5)), "C·tps·p·p = 24"),
    (lambda: unpatchify_qwen2vl(torch.randn(3, 24), torch.tensor([1, 2, 2]), 3, 2, 2, 1), r"\(4, 24\)"),
    (lambda: smart_resize(20, 100), "at least factor=28"),
    (lambda: PatchMerger(8, 4, norm="batchnorm"), "norm must be"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
