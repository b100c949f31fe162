import pytest
import torch
import torch.nn.functional as F

from minivlm.patching import PatchEmbed, patch_embed_linear, patchify, unpatchify


def test_patchify_shape_and_raster_order():
    images = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 3 * 4 * 4)
    # patch 4 is row 1, column 1 of the 2x3 patch grid; flattened channel-first (C, p, p)
    expected = images[:, :, 4:8, 4:8].reshape(2, -1)
    assert torch.equal(patches[:, 4], expected)


def test_patchify_matches_torch_unfold():
    images = torch.randn(3, 3, 16, 16)
    unfolded = F.unfold(images, kernel_size=4, stride=4).transpose(1, 2)   # (B, N, C*p*p)
    assert torch.equal(patchify(images, 4), unfolded)


def test_unpatchify_inverts_patchify():
    images = torch.randn(2, 3, 12, 20)
    assert torch.equal(unpatchify(patchify(images, 4), 4, (12, 20)), images)


def test_conv_equals_linear_on_flattened_patches():
    torch.manual_seed(0)
    embed = PatchEmbed(patch_size=4, in_channels=3, dim=32)
    images = torch.randn(2, 3, 32, 32)
    conv = embed(images)
    linear = embed.forward_linear(images)
    assert conv.shape == (2, 64, 32)
    assert torch.allclose(conv, linear, atol=1e-5)
    linear_again = patch_embed_linear(images, embed.proj.weight, embed.proj.bias, 4)
    assert torch.allclose(conv, linear_again, atol=1e-5)


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 30, 32), "not divisible by patch_size=4"),
    ((2, 1, 32, 32), "1 channels, expected 3"),
    ((0, 3, 32, 32), "empty batch"),
    ((3, 32, 32), r"\(B, C, H, W\)"),
])
def test_bad_images_raise_clear_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        PatchEmbed(4, 3, 16)(torch.randn(*shape))


def test_unpatchify_bad_shape():
    with pytest.raises(ValueError, match="patches must be"):
        unpatchify(torch.randn(1, 5, 48), 4, 16)
