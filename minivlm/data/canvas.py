"""The Shapes world at any size: canvases of any height x width, with objects small enough to need detail.

A canvas is a rows x cols grid of square cells of `cell_px` pixels (rows, cols even, so every cell
lies in one quadrant). Objects keep the world's words: a "large" object fills ~0.8 of its cell, a
"small" one is 3 pixels across (a 3 x 3 square, a 5-pixel plus for a circle, a 1-1-3 triangle) on
every canvas, centred on a pixel. Resizing a 128 x 128 canvas to 32 x 32 (area averaging) fades a
small object to at most 56% of its contrast (~31% on average) while a large one keeps full-contrast
pixels. Scenes are the world's `SceneBatch` with a `CanvasConfig` as their config, so
`caption(scenes, i)` and `scenes.objects(i)` work unchanged:

    CanvasConfig(height_px, width_px, cell_px=16, ...)   one canvas size and its world
    canvas_configs(sizes=CANVAS_SIZES, **fields)          -> list[CanvasConfig], grids to match
    sample_canvas_scenes(B, config)                       -> SceneBatch, tensors (B, N)
    render_canvas(scenes)                                 -> images (B, 3, height_px, width_px) float32 in [0, 1]
    canvas_questions(scenes, i) / sample_canvas_vqa(...)  -> list[QA] / [(scene index, QA)]   canvas_text.py

Train, val and test never share a scene: the split is a content hash (objects and canvas) mod 100.
"""

import math
from dataclasses import dataclass

import torch

from ..checks import booleans, number
from .render import paint
from .world import (COLORS, SHAPES, SPLIT_PERCENT, SceneBatch, _mix, check_shapes_and_colors, sample_split,
                    scene_hash)

CANVAS_SIZES = ((32, 32), (32, 64), (64, 32), (64, 64), (64, 128), (128, 64), (128, 128))  # (height, width) px


@dataclass(frozen=True)
class CanvasConfig:
    height_px: int
    width_px: int
    cell_px: int = 16
    min_objects: int = 1
    max_objects: int = 4
    small_fraction: float = 0.5   # chance that an object is small
    small_radius_px: float = 1.2  # half-width of a small object in pixels: 3 pixels across
    large_radius: float = 0.4     # half-width of a large object in cell widths, as in the world
    jitter: bool = True           # False: centred in the cell; True: anywhere inside it, a pixel from its edge
    shapes: tuple = SHAPES
    colors: tuple = tuple(COLORS)

    def __post_init__(self):
        if not isinstance(self.cell_px, int) or self.cell_px < 4:
            raise ValueError(f"cell_px must be an int >= 4, got {self.cell_px!r}")
        for name in ("height_px", "width_px"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2 * self.cell_px or value % (2 * self.cell_px):
                raise ValueError(f"{name} must be an int multiple of 2 * cell_px = {2 * self.cell_px} "
                                 f"(an even number of cells), got {value!r}")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (self.min_objects, self.max_objects)):
            raise ValueError(f"min_objects and max_objects must be ints, "
                             f"got {self.min_objects!r}, {self.max_objects!r}")
        if not 1 <= self.min_objects <= self.max_objects <= self.cells:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {self.cells} (cells of a {self.rows} x "
                             f"{self.cols} grid), got min_objects={self.min_objects}, max_objects={self.max_objects}")
        number("small_fraction", self.small_fraction, low=0, high=1)
        number("small_radius_px", self.small_radius_px, above=0)
        number("large_radius", self.large_radius, above=0)
        if not 0 <= self.small_fraction <= 1:
            raise ValueError(f"small_fraction must be in [0, 1], got {self.small_fraction!r}")
        small, large = self.radii_px
        if not 0.5 <= small < large:
            raise ValueError(f"need 0.5 <= small_radius_px < large_radius * cell_px = {large}, got {small!r}")
        low, high = _centre_range(large, self.cell_px)
        if not low <= self.cell_px // 2 <= high:
            raise ValueError(f"large_radius {self.large_radius!r} ({large:g} px) does not fit a {self.cell_px}-pixel "
                             f"cell with a pixel to spare on each side")
        booleans(self, "jitter")
        check_shapes_and_colors(self)

    @property
    def rows(self):
        return self.height_px // self.cell_px

    @property
    def cols(self):
        return self.width_px // self.cell_px

    @property
    def cells(self):
        return self.rows * self.cols

    @property
    def radii_px(self):
        """(small, large) half-widths in pixels, indexed like SIZES."""
        return (float(self.small_radius_px), float(self.large_radius * self.cell_px))


def canvas_configs(sizes=CANVAS_SIZES, *, cell_px=16, min_objects=1, max_objects=9, **fields):
    """One CanvasConfig per (height_px, width_px), object counts clamped to each grid's cells."""
    configs = []
    for height, width in sizes:
        cells = (height // cell_px) * (width // cell_px)
        most = min(max_objects, cells)
        configs.append(CanvasConfig(height, width, cell_px, min(min_objects, most), most, **fields))
    return configs


def _centre_range(radius, cell_px):
    """(low, high): whole-pixel offsets k (centre at k + 0.5 px from the cell's edge) that keep the object's
    pixels k - r .. k + r (r = floor(radius)) inside its cell with a pixel to spare: neighbours never touch."""
    return math.floor(radius) + 1, cell_px - 2 - math.floor(radius)


# ----------------------------------------------------------------------------- sampling and splits

def _sample_any(batch_size, config, generator, device):
    B, N, P, C = batch_size, config.max_objects, config.cell_px, config.cols
    kw = dict(generator=generator, device=device)
    count = torch.randint(config.min_objects, N + 1, (B,), **kw)
    present = torch.arange(N, device=device) < count[:, None]
    cell = torch.rand(B, config.cells, **kw).argsort(1)[:, :N]  # a random permutation: distinct cells
    shape_ids = torch.tensor([SHAPES.index(s) for s in config.shapes], device=device)
    color_ids = torch.tensor([tuple(COLORS).index(c) for c in config.colors], device=device)
    shape = shape_ids[torch.randint(len(shape_ids), (B, N), **kw)]
    color = color_ids[torch.randint(len(color_ids), (B, N), **kw)]
    size = (torch.rand(B, N, **kw) >= config.small_fraction).long()  # 0 = small, 1 = large
    offset = torch.full((2, B, N), P // 2, device=device)  # centre pixel of the cell, per axis
    if config.jitter:  # any whole pixel that keeps the object inside its cell
        ranges = torch.tensor([_centre_range(r, P) for r in config.radii_px], device=device)[size]  # (B, N, 2)
        low, span = ranges[..., 0], ranges[..., 1] - ranges[..., 0] + 1
        offset = low + (torch.rand(2, B, N, **kw) * span).long().clamp(max=span - 1)
    x = ((cell % C) * P + offset[0] + 0.5).float() / config.width_px
    y = ((cell // C) * P + offset[1] + 0.5).float() / config.height_px
    keep = lambda t: torch.where(present, t, torch.zeros((), dtype=t.dtype, device=device))
    return SceneBatch(keep(shape), keep(color), keep(size), keep(x), keep(y), keep(cell), present, config)


def canvas_scene_hash(scenes):
    """(B,) int64 in [0, 2**31): the world's scene_hash mixed with the canvas (size, grid, radii)."""
    c = scenes.config
    key = c.height_px
    for value, base in ((c.width_px, 4099), (c.cell_px, 257), (round(c.radii_px[0] * 64), 4099),
                        (round(c.radii_px[1] * 64), 4099)):
        key = _mix(key) * base + value  # stays below 2**62
    return _mix(scene_hash(scenes) + _mix(key) * 2**31)


def canvas_scene_split(scenes):
    """(B,) long: index into SPLITS of each canvas scene's split."""
    percent = canvas_scene_hash(scenes) % 100
    return (percent >= SPLIT_PERCENT["val"][0]).long() + (percent >= SPLIT_PERCENT["test"][0]).long()


def sample_canvas_scenes(batch_size, config, *, generator=None, device="cpu", split=None):
    """Draw `batch_size` random scenes on `config`'s canvas; with `split`, only scenes of that split.

    Returns a SceneBatch of (B, N) tensors, N = config.max_objects; x, y in [0, 1] are object centres
    at pixel centres, cell = row * config.cols + col, size 0 = small, 1 = large.
    """
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    if not isinstance(config, CanvasConfig):
        raise ValueError(f"config must be a CanvasConfig, got {type(config).__name__}")
    return sample_split(batch_size, split, lambda n: _sample_any(n, config, generator, device), canvas_scene_hash,
                        config)


# ----------------------------------------------------------------------------- rendering

def render_canvas(scenes, *, device=None):
    """Paint canvas scenes into (B, 3, height_px, width_px) float32 images in [0, 1], pixel for pixel.

    The same shapes, colours and background as render(), measured in pixels: to see a canvas at
    another resolution, resize the image (that is the point: small objects fade).
    """
    config = scenes.config
    if not isinstance(config, CanvasConfig):
        raise ValueError(f"scenes must come from sample_canvas_scenes (config a CanvasConfig), "
                         f"got config {type(config).__name__}: use render() for the fixed-size world")
    if device is not None:
        scenes = scenes.to(device)
    device = scenes.x.device
    H, W = config.height_px, config.width_px
    dx = torch.arange(W, device=device) + 0.5 - scenes.x[..., None] * W  # (B, N, W) pixels from the centre
    dy = torch.arange(H, device=device) + 0.5 - scenes.y[..., None] * H  # (B, N, H)
    r = torch.tensor(config.radii_px, device=device)[scenes.size][..., None]  # (B, N, 1)
    far = 4.0 * (H + W) ** 2  # larger than any term of paint(): adding it rules a pixel out
    return paint(scenes, dx, dy, r, far)
