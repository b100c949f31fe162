"""Qwen2.5-VL's window attention: the window order, windows as a batch == the block mask, packing, bad input."""

import pytest
import torch
import torch.nn.functional as F

from minivlm.dynamic_resolution import (block_diagonal_mask, patchify_qwen2vl, vision_cu_seqlens, vision_position_ids,
                                        vision_rope)
from minivlm.window_attention import DynamicResolutionViT, DynamicViTConfig, frame_batches, window_batches, window_index


def reference_window_index(grid_thw, window_size, patch_size, merge_size):
    """transformers' Qwen2.5-VL get_window_index, written out: pad by side - n % side (a whole empty window
    when n divides), fill -100, drop it; cu_window_seqlens made unique as its forward does."""
    side = window_size // merge_size // patch_size
    order, cu, offset = [], [0], 0
    for t, h, w in grid_thw.tolist():
        uh, uw = h // merge_size, w // merge_size
        index = torch.arange(t * uh * uw).reshape(t, uh, uw)
        pad_h, pad_w = side - uh % side, side - uw % side
        nh, nw = (uh + pad_h) // side, (uw + pad_w) // side
        padded = F.pad(index, (0, pad_w, 0, pad_h), "constant", -100)
        padded = padded.reshape(t, nh, side, nw, side).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, side, side)
        seqlens = (padded != -100).sum([2, 3]).reshape(-1)
        flat = padded.reshape(-1)
        order.append(flat[flat != -100] + offset)
        cu.extend((seqlens.cumsum(0) * merge_size ** 2 + cu[-1]).tolist())
        offset += t * uh * uw
    return torch.cat(order), torch.unique_consecutive(torch.tensor(cu))


def test_window_index_by_hand():
    index, cu = window_index(torch.tensor([1, 4, 12]), window_size=8, patch_size=1, merge_size=2)
    # merge units: a 2 x 6 grid; windows of 4 x 4 units: the first holds columns 0-3, the second 4-5
    assert index.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 4, 5, 10, 11]
    assert cu.tolist() == [0, 32, 48]


@pytest.mark.parametrize("grids", [[[1, 8, 8]], [[1, 16, 24]], [[2, 10, 6], [1, 4, 20]], [[1, 2, 2], [1, 18, 8]]])
def test_window_index_matches_qwen2_5_vl(grids):
    grid_thw = torch.tensor(grids)
    index, cu = window_index(grid_thw, window_size=112, patch_size=14, merge_size=2)
    ref_index, ref_cu = reference_window_index(grid_thw, 112, 14, 2)
    assert torch.equal(index, ref_index) and torch.equal(cu, ref_cu)


def test_window_batches_cover_every_patch_once():
    grid = torch.tensor([[1, 10, 6], [2, 4, 4]])
    batches = window_batches(grid, window_size=8, patch_size=1, merge_size=2)
    assert batches.shape[1] == 64                   # 4 x 4 merge units of 2 x 2 patches
    kept = batches[batches >= 0]
    assert torch.equal(kept.sort().values, torch.arange(60 + 32))


def small_vit(**changes):
    torch.manual_seed(0)
    config = DynamicViTConfig(**{**dict(dim=16, depth=3, heads=2, mlp_ratio=2, patch_size=2, out_dim=12,
                                        window_size=8, full_attention_layers=(2,)), **changes})
    return DynamicResolutionViT(config).eval()


def packed(sizes, p=2):
    torch.manual_seed(1)
    parts = [patchify_qwen2vl(torch.rand(1, 3, H, W), patch_size=p) for H, W in sizes]
    return torch.cat([x for x, _ in parts]), torch.stack([g for _, g in parts])


def reference_vit(vit, patches, grid_thw):
    """Windowed layers the Qwen2.5-VL way: regroup the merge units by window_index, block-diagonal mask over
    cu_window_seqlens, then back; full layers over each image."""
    c = vit.config
    x = vit.patch_embed(patches)
    cos, sin = vision_rope(vision_position_ids(grid_thw), c.dim // c.heads)
    index, cu = window_index(grid_thw, c.window_size, c.patch_size, c.merge_size)
    order = (index[:, None] * 4 + torch.arange(4)).reshape(-1)
    window_mask = block_diagonal_mask(cu)
    full_mask = block_diagonal_mask(vision_cu_seqlens(grid_thw))
    for layer, block in enumerate(vit.blocks):
        if vit.windowed(layer):
            out = block(x[order][None], attn_mask=window_mask, rope=(cos[order], sin[order]))[0]
            x = torch.empty_like(x)
            x[order] = out
        else:
            x = block(x[None], attn_mask=full_mask, rope=(cos, sin))[0]
    return vit.merger(x)


def test_windows_as_a_batch_equal_the_block_mask():
    vit = small_vit()
    patches, grid = packed([(20, 12), (8, 24)])
    torch.testing.assert_close(vit(patches, grid), reference_vit(vit, patches, grid), rtol=1e-5, atol=1e-5)


def test_one_window_over_the_image_is_full_attention():
    patches, grid = packed([(8, 8)])
    torch.testing.assert_close(small_vit(window_size=8)(patches, grid), small_vit(window_size=None)(patches, grid),
                               rtol=1e-5, atol=1e-5)
    patches, grid = packed([(16, 16)])
    assert not torch.allclose(small_vit(window_size=8)(patches, grid), small_vit(window_size=None)(patches, grid))


def test_packed_images_equal_each_alone():
    vit = small_vit()
    sizes = [(20, 12), (8, 24), (4, 4)]
    patches, grid = packed(sizes)
    out = vit(patches, grid)
    start = 0
    for H, W in sizes:
        alone, g = packed([(H, W)])
        patches_alone = patches[start * 4:start * 4 + len(alone)]
        n = len(alone) // 4
        torch.testing.assert_close(out[start:start + n], vit(patches_alone, g), rtol=1e-5, atol=1e-5)
        start += n
    assert out.shape == (start, 12)


@pytest.mark.parametrize("call, message", [
    (lambda: window_index(torch.tensor([1, 4, 4]), window_size=100), "multiple of patch_size·merge_size = 28"),
    (lambda: small_vit()(torch.randn(5, 24), torch.tensor([[1, 2, 2]])), "patches has 5 rows but grid_thw"),
    (lambda: small_vit(heads=8), "multiple of 4"),
    (lambda: small_vit(positions="absolute"), "positions must be 'rope' or 'learned'"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_frame_batches_by_hand():
    batches = frame_batches(torch.tensor([[1, 2, 2], [2, 2, 4]]))            # frames of 4, then 8 and 8 patches
    assert batches.tolist() == [[0, 1, 2, 3, -1, -1, -1, -1], list(range(4, 12)), list(range(12, 20))]


def test_learned_positions_are_the_table_at_its_own_size_resized_otherwise():
    vit = small_vit(positions="learned", position_grid=4, window_size=None)
    grid = torch.tensor([[1, 4, 4]])
    rows, cols = vision_position_ids(grid).T
    torch.testing.assert_close(vit.learned_positions(grid), vit.pos_embed[:, rows, cols].T)
    big = torch.tensor([[1, 8, 12]])
    resized = F.interpolate(vit.pos_embed[None], size=(8, 12), mode="bilinear", align_corners=False)[0]
    rows, cols = vision_position_ids(big).T
    torch.testing.assert_close(vit.learned_positions(big), resized[:, rows, cols].T)
    two_frames = vit.learned_positions(torch.tensor([[2, 4, 4]]))
    assert torch.equal(two_frames[:16], two_frames[16:])                    # the same table for every frame


def test_learned_positions_pack_like_rope():
    vit = small_vit(positions="learned", window_size=None)
    patches, grid = packed([(20, 12), (8, 24)])
    torch.testing.assert_close(vit(patches, grid)[15:], vit(patches[60:], grid[1:]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vit(patches, grid)[:15], vit(patches[:60], grid[:1]), rtol=1e-5, atol=1e-5)
