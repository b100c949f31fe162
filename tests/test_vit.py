import pytest
import torch

from minivlm.patching import patchify, unpatchify
from minivlm.vit import ViT, ViTClassifier, ViTConfig, sincos_2d


@pytest.mark.parametrize("positions", ["learned", "sincos", "none"])
@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_shapes_and_other_image_sizes(positions, pool):
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=32, patch_size=4, dim=32, depth=2, heads=4, positions=positions, pool=pool))
    tokens, pooled = vit(torch.rand(2, 3, 32, 32))
    assert tokens.shape == (2, 64, 32) and pooled.shape == (2, 32)
    out = vit(torch.rand(2, 3, 48, 48))
    assert out.tokens.shape == (2, 144, 32) and out.pooled.shape == (2, 32)
    maps = vit.attention_maps(torch.rand(2, 3, 48, 48))
    assert len(maps) == 2 and maps[0].shape == (2, 4, 144 + (pool == "cls"), 144 + (pool == "cls"))


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_attention_maps_path_equals_sdpa_path(pool):
    """attention_maps runs the plain-math attention; replaying its last map by hand gives forward's tokens."""
    torch.manual_seed(0)
    vit = ViT(ViTConfig(dim=32, depth=2, heads=2, pool=pool)).eval()
    images = torch.rand(2, 3, 32, 32)
    x, rope = vit.embed(images)
    for block in vit.blocks:
        x_math, weights = block.forward_with_weights(x, rope=rope)
        x_sdpa = block(x, rope=rope)
        torch.testing.assert_close(x_math, x_sdpa, rtol=1e-5, atol=1e-5)
        x = x_sdpa
    out = vit(images)
    torch.testing.assert_close(vit.pool(vit.norm(x)).pooled, out.pooled)
    maps = vit.attention_maps(images)
    assert all(torch.allclose(m.sum(-1), torch.ones_like(m[..., 0])) for m in maps)
    torch.testing.assert_close(maps[-1], weights)


def test_positions_matter_and_bag_of_patches_is_permutation_equivariant():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 16, 16)
    flipped = unpatchify(patchify(images, 4).flip(1), 4, 16)     # same patches, reversed order
    bag = ViT(ViTConfig(image_size=16, patch_size=4, dim=16, depth=1, heads=2, positions="none"))
    assert torch.allclose(bag(images)[1], bag(flipped)[1], atol=1e-5)
    learned = ViT(ViTConfig(image_size=16, patch_size=4, dim=16, depth=1, heads=2, positions="sincos"))
    assert not torch.allclose(learned(images)[1], learned(flipped)[1], atol=1e-4)


def test_learned_positions_interpolate_to_same_grid_identity():
    vit = ViT(ViTConfig(image_size=32, patch_size=4, dim=16, depth=1, heads=2))
    assert vit.position_embedding(8, 8, "cpu") is vit.pos_embed
    assert vit.position_embedding(12, 12, "cpu").shape == (1, 144, 16)


def test_sincos_2d_rows_and_columns():
    table = sincos_2d(3, 4, 16)
    assert table.shape == (12, 16)
    assert torch.equal(table[0, :8], table[3, :8])      # same row -> same row half
    assert torch.equal(table[0, 8:], table[4, 8:])      # same column -> same column half
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)


def test_classifier_and_parameter_count():
    model = ViTClassifier(ViTConfig(dim=32, depth=2, heads=4), num_classes=5)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 5)
    patch_embed = 32 * 3 * 4 * 4 + 32                                  # Conv2d(3, 32, 4, 4)
    block = 4 * (32 * 32 + 32) + 2 * 2 * 32 + (32 * 128 + 128 + 128 * 32 + 32)
    positions, final_norm, head = 64 * 32, 2 * 32, 32 * 5 + 5
    assert sum(p.numel() for p in model.parameters()) == patch_embed + positions + 2 * block + final_norm + head


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="not divisible"):
        ViTConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="positions must be one of"):
        ViTConfig(positions="absolute")
    vit = ViT(ViTConfig(dim=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="channels"):
        vit(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="empty batch"):
        vit(torch.rand(0, 3, 32, 32))
