"""Projectors: the bridge from vision tokens to language-model tokens.

A ViT gives (B, N, Dv) patch tokens; the language model reads (B, N', Dt) embeddings.
The projector maps one to the other. Three designs, from the papers in order:

    "linear"     LLaVA (Liu et al. 2023, "Visual Instruction Tuning"):
                 one Linear(Dv, Dt) per token                            N' = N
    "mlp"        LLaVA-1.5 (Liu et al. 2023, "Improved Baselines with Visual Instruction
                 Tuning"): Linear(Dv, Dt) -> GELU -> Linear(Dt, Dt)        N' = N
    "unshuffle"  InternVL-1.5 (Chen et al. 2024): pixel unshuffle merges each r × r window
                 of tokens into one (pixel_unshuffle.py), then LayerNorm(Dv·r²) ->
                 Linear(Dv·r², Dt) -> GELU -> Linear(Dt, Dt), InternVL's `mlp1`   N' = N / r²

The patch tokens are in raster order on a square grid (or pass `grid_size=(H, W)`).

One more, outside PROJECTORS, for loading real weights (interop.py):

    PixelShuffleLinearProjector   Idefics3 / SmolVLM's connector (Laurençon et al. 2024,
                 arXiv 2408.12637; SmolVLM, Marafioti et al. 2025, arXiv 2504.05299): pixel
                 unshuffle by r, then one bias-free Linear(Dv·r², Dt)            N' = N / r²
                 Its "pixel_shuffle" lays the channels out in InternVL's order; nanoVLM's
                 modality projector is the same layer.
"""

import torch.nn as nn

from .checks import tensor
from .pixel_unshuffle import pixel_unshuffle, tokens_to_grid

PROJECTORS = ("linear", "mlp", "unshuffle")


def _check_tokens(tokens, dim):
    tensor("tokens", tokens, kind="float", shape=f"(B, N, {dim})")
    if tokens.dim() != 3 or tokens.shape[-1] != dim:
        raise ValueError(f"vision tokens must be (B, N, {dim}), got {tuple(tokens.shape)}")


class LinearProjector(nn.Module):
    """LLaVA: (B, N, Dv) -> (B, N, Dt) with one linear map."""

    def __init__(self, vision_dim, text_dim):
        super().__init__()
        self.vision_dim = vision_dim
        self.proj = nn.Linear(vision_dim, text_dim)

    def forward(self, tokens, grid_size=None):
        _check_tokens(tokens, self.vision_dim)
        return self.proj(tokens)


class MLPProjector(nn.Module):
    """LLaVA-1.5 "mlp2x_gelu": (B, N, Dv) -> Linear -> GELU -> Linear -> (B, N, Dt)."""

    def __init__(self, vision_dim, text_dim):
        super().__init__()
        self.vision_dim = vision_dim
        self.fc1 = nn.Linear(vision_dim, text_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(text_dim, text_dim)

    def forward(self, tokens, grid_size=None):
        _check_tokens(tokens, self.vision_dim)
        return self.fc2(self.act(self.fc1(tokens)))


class UnshuffleProjector(nn.Module):
    """InternVL: (B, N, Dv) -> pixel unshuffle (B, N/r², Dv·r²) -> LayerNorm -> MLP -> (B, N/r², Dt)."""

    def __init__(self, vision_dim, text_dim, factor=2, order="internvl"):
        super().__init__()
        self.vision_dim, self.factor, self.order = vision_dim, factor, order
        merged = vision_dim * factor * factor
        self.norm = nn.LayerNorm(merged)
        self.fc1 = nn.Linear(merged, text_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(text_dim, text_dim)

    def merge(self, tokens, grid_size=None):
        """(B, N, Dv) -> (B, N/r², Dv·r²): neighbouring r × r tokens become one."""
        _check_tokens(tokens, self.vision_dim)
        grid = pixel_unshuffle(tokens_to_grid(tokens, grid_size), self.factor, self.order)
        return grid.reshape(grid.shape[0], -1, grid.shape[-1])

    def forward(self, tokens, grid_size=None):
        return self.fc2(self.act(self.fc1(self.norm(self.merge(tokens, grid_size)))))


class PixelShuffleLinearProjector(nn.Module):
    """Idefics3 / SmolVLM: (B, N, Dv) -> pixel unshuffle (B, N/r², Dv·r²) -> Linear, no bias -> (B, N/r², Dt)."""

    def __init__(self, vision_dim, text_dim, factor=2, order="internvl", bias=False):
        super().__init__()
        self.vision_dim, self.factor, self.order = vision_dim, factor, order
        self.proj = nn.Linear(vision_dim * factor * factor, text_dim, bias=bias)

    def merge(self, tokens, grid_size=None):
        """(B, N, Dv) -> (B, N/r², Dv·r²), as UnshuffleProjector.merge."""
        _check_tokens(tokens, self.vision_dim)
        grid = pixel_unshuffle(tokens_to_grid(tokens, grid_size), self.factor, self.order)
        return grid.reshape(grid.shape[0], -1, grid.shape[-1])

    def forward(self, tokens, grid_size=None):
        return self.proj(self.merge(tokens, grid_size))


def num_visual_tokens(kind, num_patches, factor=2):
    """How many LM tokens a projector of this kind makes from num_patches ViT tokens."""
    return num_patches // (factor * factor) if kind == "unshuffle" else num_patches


def build_projector(kind, vision_dim, text_dim, factor=2, order="internvl"):
    """One of PROJECTORS by name."""
    if kind == "linear":
        return LinearProjector(vision_dim, text_dim)
    if kind == "mlp":
        return MLPProjector(vision_dim, text_dim)
    if kind == "unshuffle":
        return UnshuffleProjector(vision_dim, text_dim, factor, order)
    raise ValueError(f"projector kind must be one of {PROJECTORS}, got {kind!r}")
