"""pixel_unshuffle matches InternVL's reshapes and PyTorch's op, is invertible, and loses nothing."""

import pytest
import torch
import torch.nn.functional as F

from minivlm.pixel_unshuffle import (
    internvl_pixel_shuffle, order_permutation, pixel_shuffle, pixel_unshuffle, pixel_unshuffle_torch,
    tokens_to_grid,
)


def grid(B=2, H=4, W=6, C=5, seed=0):
    return torch.randn(B, H, W, C, generator=torch.Generator().manual_seed(seed))


def test_shape():
    assert pixel_unshuffle(grid(), 2).shape == (2, 2, 3, 20)
    assert pixel_unshuffle(grid(H=6, W=6), 3).shape == (2, 2, 2, 45)
    assert pixel_unshuffle(grid(), 1).shape == (2, 4, 6, 5)


def test_internvl_order_is_raster_order_of_the_window():
    x = torch.arange(16.0).reshape(1, 4, 4, 1)          # token value = its raster index
    merged = pixel_unshuffle(x, 2, "internvl")
    assert merged[0, 0, 0].tolist() == [0, 1, 4, 5]       # top-left, top-right, bottom-left, bottom-right
    assert merged[0, 1, 1].tolist() == [10, 11, 14, 15]
    x = torch.randn(1, 2, 2, 3)
    blocks = pixel_unshuffle(x, 2)[0, 0, 0].reshape(4, 3)   # r² blocks of C channels
    assert torch.equal(blocks, torch.stack([x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]]))


@pytest.mark.parametrize("H, W", [(4, 4), (4, 6), (8, 2)])
def test_internvl_order_matches_internvl_pixel_shuffle(H, W):
    x = grid(H=H, W=W)
    assert torch.equal(pixel_unshuffle(x, 2, "internvl"), internvl_pixel_shuffle(x, 0.5))


@pytest.mark.parametrize("factor", [2, 3])
def test_torch_order_matches_torch_pixel_unshuffle(factor):
    x = grid(H=6, W=12)
    expected = F.pixel_unshuffle(x.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)
    assert torch.equal(pixel_unshuffle(x, factor, "torch"), expected)
    assert torch.equal(pixel_unshuffle_torch(x, factor), expected)


@pytest.mark.parametrize("order", ["internvl", "torch"])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_shuffle_inverts_unshuffle(order, factor):
    x = grid(H=6, W=6)
    assert torch.equal(pixel_shuffle(pixel_unshuffle(x, factor, order), factor, order), x)


def test_orders_differ_by_a_fixed_channel_permutation():
    x = grid(C=7)
    internvl, torch_order = pixel_unshuffle(x, 2, "internvl"), pixel_unshuffle(x, 2, "torch")
    assert not torch.equal(internvl, torch_order)
    assert torch.equal(torch_order, internvl[..., order_permutation(7, 2)])
    assert sorted(order_permutation(7, 2).tolist()) == list(range(28))


def test_nothing_is_lost_same_numbers():
    x = grid()
    merged = pixel_unshuffle(x, 2)
    assert merged.numel() == x.numel()
    assert torch.equal(merged.flatten().sort().values, x.flatten().sort().values)


def test_gradient_flows_through_unchanged():
    x = grid().requires_grad_()
    weights = torch.randn(2, 2, 3, 20)
    (pixel_unshuffle(x, 2) * weights).sum().backward()
    assert torch.equal(x.grad, pixel_shuffle(weights, 2))


def test_tokens_to_grid():
    tokens = torch.arange(2 * 16 * 3.0).reshape(2, 16, 3)
    assert torch.equal(tokens_to_grid(tokens)[1, 2, 3], tokens[1, 2 * 4 + 3])
    assert tokens_to_grid(tokens[:, :8], (2, 4)).shape == (2, 2, 4, 3)
    with pytest.raises(ValueError, match="square"):
        tokens_to_grid(tokens[:, :8])
    with pytest.raises(ValueError, match="grid_size"):
        tokens_to_grid(tokens, (3, 4))


def test_bad_inputs():
    with pytest.raises(ValueError, match="not divisible by factor=2"):
        pixel_unshuffle(grid(H=5), 2)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        pixel_unshuffle(torch.randn(4, 4, 3), 2)
    with pytest.raises(ValueError, match="order"):
        pixel_unshuffle(grid(), 2, order="tf")
    with pytest.raises(ValueError, match="factor"):
        pixel_unshuffle(grid(), 0)
    with pytest.raises(ValueError, match="factor"):
        pixel_unshuffle(grid(), 2.0)
    with pytest.raises(ValueError, match="not divisible"):
        pixel_shuffle(grid(C=5), 2)
