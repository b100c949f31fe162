"""Do the visual tokens keep the detail? A counting probe for chapter 08's any-resolution experiments.

Qwen2-VL (arXiv 2409.12191, §2.1 and its resolution ablation) and LLaVA-OneVision (arXiv 2408.03326,
§3 and its AnyRes-Max study) make claims about what reaches the language model: how many visual tokens
an image becomes and whether its small objects survive. This module measures exactly that, cheaply
enough to train 21 encoders in a CPU minute: a small DynamicResolutionViT (window_attention.py) and
a linear **count head** on each merged token, which answers

    "how many shapes are there ?"        = sum over the image's tokens of head(token)[0]
    "how many small shapes are there ?"  = sum over the image's tokens of head(token)[1]

(rounded; right or wrong against the scene's answer). The head learns from where each object is: the
target of a token is the number of objects (and small objects) whose centre falls in the part of the
image it covers. That dense signal is what makes a few hundred steps enough; a language model reading
the same tokens would have to learn the same counts from one answer word per image.

An `Arm` is one way to feed the images (the rows of the chapter's tables):

    Arm(resize=None)            dynamic resolution: each canvas at its own size, tokens follow it
    Arm(resize=(32, 32))        a fixed square resize (area-averaged down, bilinear up), as LLaVA-1.5
    Arm(max_tokens=4)           native resolution, then AnyRes-Max's bilinear token reduction to <= 4
    Arm(positions="learned")    a learned position table resized to each grid, instead of 2D RoPE
    Arm(window_size=64)         Qwen2.5-VL's window attention (windows of 64 px)

    encode_canvases(scenes, arm)      -> [ProbeExample], one per canvas scene
    CountProbe(arm)(patches, grid)    -> (tokens, 2) per-token counts of the packed images
    train_probe(arm, seed, examples)  -> CountProbe in eval mode
    probe_accuracy(model, examples)   -> (2,) % right: all shapes, small shapes
    run_arm(arm_name, seed, ...)      one training run on freshly drawn canvases -> its accuracies per size
    run_arms(jobs, workers=2)         the runs in worker processes (one torch thread each)
"""

import functools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .anyres import reduce_tokens
from .data.canvas import CANVAS_SIZES, canvas_configs, render_canvas, sample_canvas_scenes
from .dynamic_resolution import patchify_qwen2vl
from .patching import check_images
from .train import TrainConfig, fit
from .window_attention import DynamicResolutionViT, DynamicViTConfig

PIXEL_MEAN, PIXEL_STD = (0.27, 0.27, 0.25), (0.22, 0.19, 0.21)
TRAIN_SIZES = tuple(size for size in CANVAS_SIZES if size != (128, 128))     # 128 x 128 is held out
TEST_SIZES = CANVAS_SIZES + ((192, 192),)                                  # two sizes no run trains on


@dataclass(frozen=True)
class Arm:
    resize: tuple = None          # (height, width) every image is resized to; None: its own size
    positions: str = "rope"       # "rope" (Qwen2-VL's 2D RoPE) or "learned" (a table, resized per image)
    max_tokens: int = None        # AnyRes-Max: reduce each image's token map to at most this many tokens
    window_size: int = None       # window attention, in pixels; None: full attention
    patch_size: int = 16          # one Shapes cell per patch
    merge_size: int = 2
    temporal_patch_size: int = 1  # images only: Qwen2-VL's 2 would repeat every image


ARMS = {
    "dynamic": Arm(),
    "fixed 32x32": Arm(resize=(32, 32)),
    "fixed 128x128": Arm(resize=(128, 128)),
    "fixed 64x64": Arm(resize=(64, 64)),
    "native, <= 4 tokens": Arm(max_tokens=4),
    "learned positions": Arm(positions="learned"),
    "window attention": Arm(window_size=64),
}


class ProbeExample(NamedTuple):
    patches: torch.Tensor         # (N, 3·tps·p·p)
    grid_thw: torch.Tensor        # (3,)
    token_counts: torch.Tensor    # (tokens, 2): objects, small objects whose centre each token covers
    answers: torch.Tensor         # (2,): how many shapes, how many small shapes


def token_grid(arm, height, width):
    """(rows, cols) of the token map an image of height x width pixels becomes under `arm`."""
    if arm.resize is not None:
        height, width = arm.resize
    unit = arm.patch_size * arm.merge_size
    if height % unit or width % unit:
        raise ValueError(f"a {height} x {width} image is not a whole number of {unit}-px merge windows")
    rows, cols = height // unit, width // unit
    if arm.max_tokens is not None:
        rows, cols = reduce_tokens(torch.zeros(1, rows, cols), arm.max_tokens).shape[1:]
    return rows, cols


def resize_images(images, size):
    """images (B, 3, H, W) -> (B, 3, *size): area-averaged when shrinking, bilinear when growing; size None: as is."""
    check_images(images, 1)
    if size is None:
        return images
    shrinking = size[0] * size[1] < images.shape[2] * images.shape[3]
    return F.interpolate(images, size=size, mode="area" if shrinking else "bilinear",
                         align_corners=None if shrinking else False)


def encode_canvases(scenes, arm, resize=resize_images):
    """Canvas scenes (one CanvasConfig) -> [ProbeExample]: rendered, resize(images, arm.resize), patchified."""
    images = resize(render_canvas(scenes), arm.resize)
    images = (images - torch.tensor(PIXEL_MEAN)[:, None, None]) / torch.tensor(PIXEL_STD)[:, None, None]
    rows, cols = token_grid(arm, scenes.config.height_px, scenes.config.width_px)
    # the token each object's centre lies in; x, y in [0, 1] survive any resize of the whole image
    token = (scenes.y * rows).long().clamp(max=rows - 1) * cols + (scenes.x * cols).long().clamp(max=cols - 1)
    small = scenes.present & (scenes.size == 0)
    # with one frame per patch, patchifying B images as B frames puts image after image: split it per image
    patches, grid = patchify_qwen2vl(images, arm.patch_size, 1, arm.merge_size)
    grid = torch.tensor([1, grid[1], grid[2]])                     # (t, h, w) of one image
    p, tps = arm.patch_size, arm.temporal_patch_size                  # Qwen2-VL's tps = 2: the image twice
    patches = patches.reshape(len(patches), 3, 1, p, p).expand(-1, -1, tps, -1, -1).reshape(len(patches), -1)
    counts = torch.zeros(len(scenes), rows * cols, 2)
    counts[..., 0].scatter_add_(1, token, scenes.present.float())
    counts[..., 1].scatter_add_(1, token, small.float())
    return [ProbeExample(x, grid, c, c.sum(0)) for x, c in zip(patches.split(len(patches) // len(scenes)), counts)]


def collate(examples):
    """[ProbeExample] -> (patches (ΣN, ...), grid_thw (n, 3), token_counts (Σtokens, 2), tokens per image, answers (n, 2))."""
    return (torch.cat([e.patches for e in examples]), torch.stack([e.grid_thw for e in examples]),
            torch.cat([e.token_counts for e in examples]), [len(e.token_counts) for e in examples],
            torch.stack([e.answers for e in examples]))


class CountProbe(nn.Module):
    """A one-layer DynamicResolutionViT and a Linear count head: packed patches -> (tokens, 2) counts."""

    def __init__(self, arm=Arm(), dim=32, depth=1, token_dim=32):
        super().__init__()
        self.arm = arm
        self.vit = DynamicResolutionViT(DynamicViTConfig(
            dim=dim, depth=depth, heads=dim // 16, mlp_ratio=2, patch_size=arm.patch_size,
            temporal_patch_size=arm.temporal_patch_size, merge_size=arm.merge_size, out_dim=token_dim,
            window_size=arm.window_size, full_attention_layers=(), positions=arm.positions,
            position_grid=64 // arm.patch_size))
        self.head = nn.Linear(token_dim, 2)

    def forward(self, patches, grid_thw):
        tokens = self.vit(patches, grid_thw)                                      # (N / m², token_dim)
        if self.arm.max_tokens is not None:                                       # AnyRes-Max, image by image
            m = self.arm.merge_size
            sizes = (grid_thw[:, 1] // m * (grid_thw[:, 2] // m)).tolist()
            maps = [t.T.reshape(-1, h, w) for t, (h, w) in zip(tokens.split(sizes), (grid_thw[:, 1:] // m).tolist())]
            tokens = torch.cat([reduce_tokens(x, self.arm.max_tokens).flatten(1).T for x in maps])
        return self.head(tokens)


def train_probe(arm, seed, examples, steps=200, batch_size=16, lr=1e-2):
    """A CountProbe trained for `steps` steps of `batch_size` random examples (MSE on the token counts)."""
    torch.manual_seed(seed)
    model = CountProbe(arm)
    order = torch.Generator().manual_seed(seed)

    def batch(step):
        return collate([examples[i] for i in torch.randint(len(examples), (batch_size,), generator=order).tolist()])

    fit(model, batch, lambda m, b: F.mse_loss(m(b[0], b[1]), b[2]),
        TrainConfig(steps=steps, lr=lr, warmup_steps=25, seed=seed, device="cpu", progress=False))
    return model.eval()


@torch.no_grad()
def probe_accuracy(model, examples):
    """(2,) float: % of images whose rounded count is right, for all shapes and for small shapes."""
    patches, grid_thw, _, tokens_per_image, answers = collate(examples)
    counts = torch.stack([t.sum(0) for t in model(patches, grid_thw).split(tokens_per_image)])
    return (counts.round() == answers).float().mean(0) * 100


@functools.lru_cache(maxsize=4)
def canvas_data(arm, per_size, seed, split, sizes):
    """{(height, width): [ProbeExample]} on canvases of each size (objects 1-4), drawn from `seed`; cached,
    so that the runs of one arm in one process encode them once."""
    generator = torch.Generator().manual_seed(seed)
    return {(c.height_px, c.width_px): encode_canvases(sample_canvas_scenes(per_size, c, generator=generator,
                                                                            split=split), arm)
            for c in canvas_configs(sizes, max_objects=4)}


def run_arm(arm_name, seed, steps=200, train_per_size=250, test_per_size=80):
    """One run: train on TRAIN_SIZES canvases, test on TEST_SIZES -> {"arm", "seed", "accuracy": {size: (2,)}}.

    The canvases are the same for every arm and seed (drawn with fixed seeds); `seed` sets the
    initialisation and the batch order.
    """
    arm = ARMS[arm_name]
    train = [e for examples in canvas_data(arm, train_per_size, 0, "train", TRAIN_SIZES).values() for e in examples]
    model = train_probe(arm, seed, train, steps)
    tests = canvas_data(arm, test_per_size, 1, "test", TEST_SIZES)
    return {"arm": arm_name, "seed": seed,
            "accuracy": {size: probe_accuracy(model, examples).tolist() for size, examples in tests.items()}}


def _run_job(job):
    torch.set_num_threads(1)                    # two workers on two cores: each single-threaded
    return run_arm(*job)


def run_arms(jobs, workers=2):
    """[(arm_name, seed, ...run_arm arguments)] -> [run_arm results], in order, in `workers` processes.

    Each run is a few hundred small steps, bound by Python more than by arithmetic: one thread per
    run and two runs at a time do twice the work of one two-threaded run. workers=0 runs them here.
    """
    if workers == 0:
        return [run_arm(*job) for job in jobs]
    with ProcessPoolExecutor(min(workers, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        return list(pool.map(_run_job, jobs))
