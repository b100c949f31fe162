"""The Shapes world: its vocabulary, scenes of coloured shapes, and their train/val/test splits.

A scene is up to N objects (shape, colour, size, position) in distinct cells of a
grid x grid layout. Batches of scenes are a `SceneBatch` of (B, N) tensors; each role
that works on them has its own file, so later chapters can add time, documents or
preference pairs without touching the others:

    sample_scenes(B, config)        -> SceneBatch, tensors (B, N)              world.py
    render(scenes, image_size)      -> images (B, 3, H, W) float32 in [0, 1]   render.py
    caption / questions(scenes, i)  -> str / list[QA] for scene i              text.py
    ShapesDataset / ShapesGenerator -> examples / endless batches of both      datasets.py
    interleaved_documents / few_shot_episodes -> image-text documents, episodes   documents.py

Train, val and test never share a scene: a scene's split is its content hash mod 100.
"""

import numbers
from collections import OrderedDict
from dataclasses import dataclass, fields

import torch

from ..checks import booleans

SHAPES = ("circle", "square", "triangle")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COLORS = OrderedDict(
    red=(0.90, 0.10, 0.10),
    green=(0.10, 0.75, 0.20),
    blue=(0.15, 0.35, 1.00),
    yellow=(1.00, 0.90, 0.10),
    purple=(0.60, 0.20, 0.85),
    orange=(1.00, 0.55, 0.00),
    cyan=(0.10, 0.90, 0.95),
)
BACKGROUND = (0.2, 0.2, 0.2)  # dark grey, darker than every colour above
SIZES = ("small", "large")
SIZE_RADIUS = (0.25, 0.40)  # radius / half-width in cell widths: small ~0.5, large ~0.8 of the cell
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
SPLITS = ("train", "val", "test")
SPLIT_PERCENT = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}  # [low, high) of hash % 100


def check_shapes_and_colors(config):
    """Validate a frozen world config's `shapes` and `colors` (distinct known names) and store them as tuples."""
    for name, allowed in (("shapes", SHAPES), ("colors", tuple(COLORS))):
        values = tuple(getattr(config, name))
        if not values or len(set(values)) != len(values) or not set(values) <= set(allowed):
            raise ValueError(f"{name} must be distinct names from {allowed}, got {values!r}")
        object.__setattr__(config, name, values)


@dataclass(frozen=True)
class WorldConfig:
    min_objects: int = 1
    max_objects: int = 4
    grid: int = 2
    continuous: bool = False  # False: centred in the cell; True: jittered, still inside the cell
    shapes: tuple = SHAPES
    colors: tuple = tuple(COLORS)

    def __post_init__(self):
        if not isinstance(self.grid, int) or self.grid < 2 or self.grid % 2 or self.grid > 16:
            raise ValueError(f"grid must be an even int in [2, 16] (cells split into quadrants), got {self.grid!r}")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (self.min_objects, self.max_objects)):
            raise ValueError(f"min_objects and max_objects must be ints, got {self.min_objects!r}, {self.max_objects!r}")
        most = min(self.grid**2, len(NUMBER_WORDS) - 1)
        if not 1 <= self.min_objects <= self.max_objects <= most:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {most} (grid={self.grid}), "
                             f"got min_objects={self.min_objects}, max_objects={self.max_objects}")
        booleans(self, "continuous")
        check_shapes_and_colors(self)


@dataclass
class SceneBatch:
    """B scenes of N object slots. Attributes index the global SHAPES / COLORS / SIZES."""
    shape: torch.Tensor    # (B, N) long
    color: torch.Tensor    # (B, N) long
    size: torch.Tensor     # (B, N) long
    x: torch.Tensor        # (B, N) float, object centre in [0, 1], left to right
    y: torch.Tensor        # (B, N) float, object centre in [0, 1], top to bottom
    cell: torch.Tensor     # (B, N) long, row * grid + col
    present: torch.Tensor  # (B, N) bool, slot holds an object
    config: WorldConfig

    def _tensors(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}

    def __len__(self):
        return self.shape.shape[0]

    def to(self, device):
        return SceneBatch(**{k: v.to(device) for k, v in self._tensors().items()}, config=self.config)

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral):  # keep the batch dimension: scenes[i] is a batch of one
            if not -len(self) <= index < len(self):
                raise IndexError(f"scene index {index} out of range for {len(self)} scenes")
            index = slice(index, index + 1 or None)
        return SceneBatch(**{k: v[index] for k, v in self._tensors().items()}, config=self.config)

    @property
    def count(self):
        return self.present.sum(1)  # (B,)

    def objects(self, i):
        """Scene i as plain dicts, one per present object, in slot order."""
        columns = [t[i].tolist() for t in (self.shape, self.color, self.size, self.x, self.y, self.cell, self.present)]
        names = tuple(COLORS)
        return [{"shape": SHAPES[s], "color": names[c], "size": SIZES[z], "position": position_word(x, y),
                 "x": x, "y": y, "cell": cell} for s, c, z, x, y, cell, p in zip(*columns) if p]


def concat_scenes(batches):
    tensors = [b._tensors() for b in batches]
    return SceneBatch(**{k: torch.cat([t[k] for t in tensors]) for k in tensors[0]}, config=batches[0].config)


def scenes_from_objects(scenes, config=WorldConfig()):
    """Build a SceneBatch by hand: a list of scenes, each a list of {"shape", "color", "size", "cell"}
    dicts (names as strings; optional "x", "y", default the cell centre)."""
    B, N, G = len(scenes), max([config.max_objects, *map(len, scenes)]), config.grid
    rows = {k: torch.zeros(B, N, dtype=torch.long) for k in ("shape", "color", "size", "cell")}
    x, y, present = torch.zeros(B, N), torch.zeros(B, N), torch.zeros(B, N, dtype=torch.bool)
    for b, objects in enumerate(scenes):
        for n, o in enumerate(objects):
            for key, names in (("shape", SHAPES), ("color", tuple(COLORS)), ("size", SIZES)):
                if o[key] not in names:
                    raise ValueError(f"{key} must be one of {names}, got {o[key]!r}")
                rows[key][b, n] = names.index(o[key])
            if not 0 <= o["cell"] < G * G:
                raise ValueError(f"cell must be in [0, {G * G}) for grid={G}, got {o['cell']!r}")
            rows["cell"][b, n], present[b, n] = o["cell"], True
            x[b, n] = o.get("x", (o["cell"] % G + 0.5) / G)
            y[b, n] = o.get("y", (o["cell"] // G + 0.5) / G)
    return SceneBatch(**rows, x=x, y=y, present=present, config=config)


def position_word(x, y):
    return f"{'top' if y < 0.5 else 'bottom'} {'left' if x < 0.5 else 'right'}"


# ----------------------------------------------------------------------------- sampling

def _sample_any(batch_size, config, generator, device):
    B, N, G = batch_size, config.max_objects, config.grid
    kw = dict(generator=generator, device=device)
    count = torch.randint(config.min_objects, config.max_objects + 1, (B,), **kw)
    present = torch.arange(N, device=device) < count[:, None]
    cell = torch.rand(B, G * G, **kw).argsort(1)[:, :N]  # a random permutation: distinct cells
    shape_ids = torch.tensor([SHAPES.index(s) for s in config.shapes], device=device)
    color_ids = torch.tensor([tuple(COLORS).index(c) for c in config.colors], device=device)
    shape = shape_ids[torch.randint(len(shape_ids), (B, N), **kw)]
    color = color_ids[torch.randint(len(color_ids), (B, N), **kw)]
    size = torch.randint(len(SIZES), (B, N), **kw)
    x = ((cell % G).float() + 0.5) / G
    y = ((cell // G).float() + 0.5) / G
    if config.continuous:  # move the centre so the whole object stays inside its cell
        slack = (0.5 - torch.tensor(SIZE_RADIUS, device=device)[size]) / G
        x = x + (2 * torch.rand(B, N, **kw) - 1) * slack
        y = y + (2 * torch.rand(B, N, **kw) - 1) * slack
    # empty slots hold zeros, so two equal scenes are equal tensors
    keep = lambda t: torch.where(present, t, torch.zeros((), dtype=t.dtype, device=device))
    return SceneBatch(keep(shape), keep(color), keep(size), keep(x), keep(y), keep(cell), present, config)


def sample_scenes(batch_size, config=WorldConfig(), *, generator=None, device="cpu", split=None):
    """Draw `batch_size` random scenes; with `split`, only scenes whose hash falls in that split."""
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    if not isinstance(config, WorldConfig):
        raise ValueError(f"config must be a WorldConfig, got {type(config).__name__}")
    return sample_split(batch_size, split, lambda n: _sample_any(n, config, generator, device), scene_hash, config)


def sample_split(batch_size, split, draw, hash_fn, config):
    """`batch_size` scenes of `split` (all of draw(batch_size) when split is None): draw(n) returns n random
    scenes, hash_fn their content hashes (B,); a scene belongs to the split its hash % 100 falls in."""
    if split is None:
        return draw(batch_size)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    low, high = SPLIT_PERCENT[split]
    kept, have = [], 0
    for _ in range(1000):
        if have >= batch_size and kept:
            return concat_scenes(kept)[:batch_size]
        # rejection sampling: draw more than needed, keep the scenes that belong to this split
        candidates = draw(int((batch_size - have) * 100 / (high - low) * 1.2) + 16)
        percent = hash_fn(candidates) % 100
        candidates = candidates[(percent >= low) & (percent < high)]
        kept.append(candidates)
        have += len(candidates)
    raise ValueError(f"split {split!r} gets (almost) no scenes of this tiny world {config}: use a larger world")


# ----------------------------------------------------------------------------- splits

M31 = 0x7FFFFFFF


def _mix(h):
    """Scramble non-negative int64 values (< 2**62) into 31 bits; every product fits in int64."""
    h = (h ^ (h >> 31)) & M31
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & M31
    h = ((h ^ (h >> 12)) * 0x297A2D39) & M31
    return h ^ (h >> 15)


def scene_hash(scenes):
    """(B,) int64 in [0, 2**31): a hash of each scene's content, independent of slot order."""
    quantise = lambda v: torch.round(v * 1024).long()  # positions to 1/1024
    key = scenes.shape
    for value, base in ((scenes.color, 16), (scenes.size, 4), (scenes.cell, 256),
                        (quantise(scenes.x), 1025), (quantise(scenes.y), 1025)):
        key = key * base + value
    per_object = torch.where(scenes.present, _mix(key), 0)
    return _mix(per_object.sum(1) + scenes.count * 0x3C6EF372)


def scene_split(scenes):
    """(B,) long: index into SPLITS of each scene's split."""
    percent = scene_hash(scenes) % 100
    return (percent >= SPLIT_PERCENT["val"][0]).long() + (percent >= SPLIT_PERCENT["test"][0]).long()


# ----------------------------------------------------------------------------- labels

def classification_labels(scenes, task):
    """(B,) long labels: 'count' (number of objects), or 'color' / 'shape' / 'size' of the first object."""
    if task == "count":
        return scenes.count
    if task in ("color", "shape", "size"):
        return getattr(scenes, task)[:, 0].clone()
    raise ValueError(f"task must be 'count', 'color', 'shape' or 'size', got {task!r}")
