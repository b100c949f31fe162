"""Vision Transformer encoder (Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words", arXiv 2010.11929).

    images (B, C, H, W) -> patch embedding (B, N, D) -> + positions -> depth × pre-norm block
    -> final LayerNorm -> ViTOutput(tokens (B, N, D), pooled (B, D))

The blocks are blocks.TransformerBlock with LayerNorm and a GELU MLP:
    x = x + attn(attn_norm(x));  x = x + mlp(mlp_norm(x)).

Positions, one switch (`ViTConfig.positions`):
    "learned"  a learned vector per patch of the training grid (interpolated bicubically
               when the image size changes), as in ViT
    "sincos"   fixed 2D sine/cosine features of (row, col), as in MAE
    "rope2d"   no added vector; queries and keys are rotated by row and column (2D RoPE,
               see rope.py), so attention sees relative offsets
    "none"     no positions at all (a bag of patches)
Pooling: "mean" over patch tokens, or "cls", a learned token prepended to the sequence.

Options for loading SigLIP's vision tower (Zhai et al. 2023, arXiv 2303.15343; interop.py):
`gelu="tanh"` (its MLP uses the tanh GELU), `norm_eps=1e-6` (its LayerNorms) and
`mlp_hidden` (its MLP width is not a round multiple of dim). SigLIP has learned absolute
positions, biases everywhere, no class token and a final ("post") LayerNorm: ViT's defaults.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import TransformerBlock
from .patching import PatchEmbed
from . import rope as rope_lib
from .checks import integer, number, positive_ints

POSITIONS = ("learned", "sincos", "rope2d", "none")


@dataclass
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    positions: str = "learned"
    pool: str = "mean"
    gelu: str = "exact"           # "exact" (erf) or "tanh" (SigLIP) GELU in the MLP
    norm_eps: float = 1e-5        # every LayerNorm's eps (SigLIP: 1e-6)
    mlp_hidden: int = None        # MLP width; None -> int(dim · mlp_ratio)

    def __post_init__(self):
        positive_ints(self, "image_size", "patch_size", "channels", "dim", "depth", "heads")
        number("mlp_ratio", self.mlp_ratio, above=0)
        number("norm_eps", self.norm_eps, above=0)
        if self.mlp_hidden is not None:
            integer("mlp_hidden", self.mlp_hidden, low=1)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {self.pool!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.gelu not in ("exact", "tanh"):
            raise ValueError(f"gelu must be 'exact' or 'tanh', got {self.gelu!r}")

    @property
    def grid_size(self):
        return self.image_size // self.patch_size


def sincos_2d(grid_h, grid_w, dim, device=None):
    """Fixed 2D sin/cos position features (grid_h·grid_w, dim): half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for 2D sin/cos positions, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    rows = torch.arange(grid_h, device=device, dtype=torch.float32)[:, None].expand(grid_h, grid_w).reshape(-1)
    cols = torch.arange(grid_w, device=device, dtype=torch.float32)[None, :].expand(grid_h, grid_w).reshape(-1)
    row_angles, col_angles = rows[:, None] * omega, cols[:, None] * omega
    return torch.cat([row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=1)


class ViTOutput(NamedTuple):
    tokens: torch.Tensor     # (B, N, D), one per patch, in raster order
    pooled: torch.Tensor     # (B, D), the mean of the tokens or the class token


class ViT(nn.Module):
    """images (B, C, H, W) -> ViTOutput(tokens (B, N, D), pooled (B, D))."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.patch_size, c.channels, c.dim)
        if c.positions == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, c.grid_size ** 2, c.dim) * 0.02)
        if c.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        mlp_hidden = c.mlp_hidden or int(c.dim * c.mlp_ratio)
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads, mlp_hidden, norm_eps=c.norm_eps, gelu=c.gelu)
                                    for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def position_embedding(self, grid_h, grid_w, device):
        """Additive positions (1, N, D) for a grid_h × grid_w patch grid, or None."""
        c = self.config
        if c.positions == "sincos":
            return sincos_2d(grid_h, grid_w, c.dim, device)[None]
        if c.positions != "learned":
            return None
        if (grid_h, grid_w) == (c.grid_size, c.grid_size):
            return self.pos_embed
        table = self.pos_embed.reshape(1, c.grid_size, c.grid_size, c.dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, c.dim)

    def rotary(self, grid_h, grid_w, device):
        """(cos, sin) of shape (N [+1], D/H) for 2D RoPE, or None."""
        if self.config.positions != "rope2d":
            return None
        cos, sin = rope_lib.rope_2d_cos_sin(grid_h, grid_w, self.config.dim // self.config.heads, device=device)
        if self.config.pool == "cls":                  # the class token sits at no position: angle 0
            cos = torch.cat([torch.ones_like(cos[:1]), cos])
            sin = torch.cat([torch.zeros_like(sin[:1]), sin])
        return cos, sin

    def forward(self, images):
        x, rope = self.embed(images)
        for block in self.blocks:
            x = block(x, rope=rope)
        return self.pool(self.norm(x))

    def attention_maps(self, images):
        """The attention weights of every block: a list of depth tensors (B, heads, N', N'),
        N' = N (+ 1 with a class token, first). Computed through the plain-math attention."""
        x, rope = self.embed(images)
        maps = []
        for block in self.blocks:
            x, weights = block.forward_with_weights(x, rope=rope)
            maps.append(weights)
        return maps

    def embed(self, images):
        """images (B, C, H, W) -> the block stack's input (B, N', D) and its 2D-RoPE (cos, sin) or None."""
        c = self.config
        x = self.patch_embed(images)                                  # (B, N, D); checks the images
        grid_h, grid_w = images.shape[2] // c.patch_size, images.shape[3] // c.patch_size
        positions = self.position_embedding(grid_h, grid_w, images.device)
        if positions is not None:
            x = x + positions
        if c.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x, self.rotary(grid_h, grid_w, images.device)

    def pool(self, x):
        if self.config.pool == "cls":
            return ViTOutput(tokens=x[:, 1:], pooled=x[:, 0])
        return ViTOutput(tokens=x, pooled=x.mean(dim=1))


class ViTClassifier(nn.Module):
    """A ViT with a linear head on the pooled vector: images (B, C, H, W) -> logits (B, K)."""

    def __init__(self, config: ViTConfig, num_classes: int):
        super().__init__()
        self.vit = ViT(config)
        self.head = nn.Linear(config.dim, num_classes)

    def forward(self, images):
        return self.head(self.vit(images).pooled)
