"""Images as tokens: cut an image into patches and embed each one (ViT, Dosovitskiy et al. 2020).

An image (B, C, H, W) becomes a sequence of N = (H/p)·(W/p) patches in raster order
(row by row, left to right). Each patch is flattened channel-first, (C, p, p) -> C·p·p,
which is exactly the layout of a Conv2d weight (D, C, p, p). That is why the two ways
of embedding patches below compute the same thing:

    conv:   Conv2d(C, D, kernel_size=p, stride=p)           -> (B, D, H/p, W/p) -> (B, N, D)
    linear: patchify -> (B, N, C·p·p) @ W.T + b, with W = conv.weight.reshape(D, C·p·p)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import integer, tensor


def check_images(images, patch_size, channels=None, name="images"):
    """Raise a clear ValueError unless `images` is (B, C, H, W) with H and W divisible by `patch_size`."""
    integer("patch_size", patch_size, low=1)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    tensor(name, images, kind="float")                  # uint8 pixels: the message says to divide by 255
    B, C, H, W = images.shape
    if B == 0:
        raise ValueError(f"{name} is an empty batch (B = 0): expected at least one image")
    if channels is not None and C != channels:
        raise ValueError(f"{name} has {C} channels, expected {channels} (shape (B, {channels}, H, W))")
    if H % patch_size or W % patch_size:
        raise ValueError(f"{name} size {H}x{W} is not divisible by patch_size={patch_size}")


def patchify(images, patch_size):
    """(B, C, H, W) -> (B, N, C·p·p) with N = (H/p)·(W/p) patches in raster order."""
    check_images(images, patch_size)
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p)      # split rows and columns into (grid, within-patch)
    x = x.permute(0, 2, 4, 1, 3, 5)                     # (B, H/p, W/p, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(patches, patch_size, image_size, channels=3):
    """Inverse of `patchify`: (B, N, C·p·p) -> (B, C, H, W). `image_size` is H or (H, W)."""
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    p = patch_size
    B, N, D = patches.shape
    if N != (H // p) * (W // p) or D != channels * p * p:
        raise ValueError(f"patches must be (B, {(H // p) * (W // p)}, {channels * p * p}) for a "
                         f"{H}x{W} image with patch_size={p}, got {tuple(patches.shape)}")
    x = patches.reshape(B, H // p, W // p, channels, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)                     # (B, C, H/p, p, W/p, p)
    return x.reshape(B, channels, H, W)


class PatchEmbed(nn.Module):
    """Patch embedding as a strided convolution: (B, C, H, W) -> (B, N, D)."""

    def __init__(self, patch_size=4, in_channels=3, dim=64):
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images):
        check_images(images, self.patch_size, self.in_channels)
        x = self.proj(images)                           # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)             # (B, N, D)

    def forward_linear(self, images):
        """The same embedding computed as a linear map on flattened patches."""
        return patch_embed_linear(images, self.proj.weight, self.proj.bias, self.patch_size)


def patch_embed_linear(images, conv_weight, conv_bias, patch_size):
    """Embed patches with a plain matrix multiply, using a Conv2d's (D, C, p, p) weight."""
    weight = conv_weight.reshape(conv_weight.shape[0], -1)   # (D, C·p·p): same order as patchify
    return F.linear(patchify(images, patch_size), weight, conv_bias)
