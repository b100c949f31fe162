"""The Shapes world in motion: short videos of coloured shapes that move, come in and go.

Qwen2-VL (arXiv 2409.12191) reads a video as frames sampled at 2 fps through the same ViT as its
images (two consecutive frames share a 3D patch), so a video here is just F frames of the world's
images. Each object moves in a straight line at constant velocity, mostly along one axis and at least
`min_speed` per frame (so "which way" has one answer), stays inside the image on every frame, never
touches another object while both are on screen, and (with `appear_disappear`) is present only on
frames appear <= f < disappear, for at least half the video:

    VideoConfig(frames=8, image_size=32, ...)  one video world
    sample_videos(B, config)                   -> VideoBatch, tensors (B, N)
    render_video(videos)                       -> frames (B, F, 3, H, W) float32 in [0, 1]
    video_frame(videos, f)                     -> SceneBatch of frame f: the world's text code reads it
    video_objects(videos, i, frame=None)       -> video i as plain dicts (all objects, or those on frame f)
    video_questions(videos, i) / sample_video_vqa(...) -> list[QA] / [(video index, QA)]   video_text.py

Positions and velocities are in image units (the image is [0, 1] x [0, 1], y downwards): object n is at
(x0 + vx * f, y0 + vy * f) on frame f. Train, val and test never share a video: the split is a content
hash (objects, motion, times and the config's frames and radii) mod 100.
"""

import numbers
from dataclasses import dataclass, fields

import torch

from .render import paint
from .world import (COLORS, NUMBER_WORDS, SHAPES, SIZES, SPLIT_PERCENT, SceneBatch, _mix, check_shapes_and_colors,
                    sample_split)

DRIFT = 0.25          # the off-axis speed is at most this fraction of the main one
COLLISION_ROUNDS = 12  # redraws of the objects that touch an earlier one, before a video is dropped (crowded ones)


@dataclass(frozen=True)
class VideoConfig:
    frames: int = 8
    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 3
    radii: tuple = (0.06, 0.10)   # half-width of a (small, large) object in image widths
    min_speed: float = 0.03       # image widths per frame along the main axis (~1 pixel at 32 px)
    max_speed: float = 0.06
    appear_disappear: bool = True
    shapes: tuple = SHAPES
    colors: tuple = tuple(COLORS)

    def __post_init__(self):
        if not isinstance(self.frames, int) or not 2 <= self.frames <= 64:
            raise ValueError(f"frames must be an int in [2, 64], got {self.frames!r}")
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an int >= 8 (pixels, square frames), got {self.image_size!r}")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (self.min_objects, self.max_objects)):
            raise ValueError(f"min_objects and max_objects must be ints, got {self.min_objects!r}, {self.max_objects!r}")
        most = len(NUMBER_WORDS) - 1
        if not 1 <= self.min_objects <= self.max_objects <= most:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {most}, "
                             f"got min_objects={self.min_objects}, max_objects={self.max_objects}")
        radii = tuple(float(r) for r in self.radii)
        if len(radii) != 2 or not 0 < radii[0] < radii[1] <= 0.25:
            raise ValueError(f"radii must be (small, large) with 0 < small < large <= 0.25, got {self.radii!r}")
        object.__setattr__(self, "radii", radii)
        if not isinstance(self.min_speed, numbers.Real) or not 0 < self.min_speed:
            raise ValueError(f"min_speed must be a number > 0, got {self.min_speed!r}")
        room = 1 - 2 * (radii[1] + 1 / self.image_size)  # what a large object can travel inside the image
        if not isinstance(self.max_speed, numbers.Real) or not self.min_speed <= self.max_speed <= room / (self.frames - 1):
            raise ValueError(f"max_speed must be in [min_speed, {room / (self.frames - 1):.4g}] (a large object "
                             f"crossing {self.frames} frames stays inside the image), got {self.max_speed!r}")
        if not isinstance(self.appear_disappear, bool):
            raise ValueError(f"appear_disappear must be a bool, got {self.appear_disappear!r}")
        check_shapes_and_colors(self)

    @property
    def min_duration(self):
        """The fewest frames an object is on screen: half the video, at least two."""
        return max(2, (self.frames + 1) // 2)


@dataclass
class VideoBatch:
    """B videos of N object slots. Attributes index the global SHAPES / COLORS / SIZES."""
    shape: torch.Tensor      # (B, N) long
    color: torch.Tensor      # (B, N) long
    size: torch.Tensor       # (B, N) long
    x0: torch.Tensor         # (B, N) float, centre on frame 0, left to right in [0, 1]
    y0: torch.Tensor         # (B, N) float, centre on frame 0, top to bottom in [0, 1]
    vx: torch.Tensor         # (B, N) float, image widths per frame
    vy: torch.Tensor         # (B, N) float
    appear: torch.Tensor     # (B, N) long, first frame on screen
    disappear: torch.Tensor  # (B, N) long, first frame gone again (frames if never)
    present: torch.Tensor    # (B, N) bool, slot holds an object
    config: VideoConfig

    def _tensors(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}

    def __len__(self):
        return self.shape.shape[0]

    def to(self, device):
        return VideoBatch(**{k: v.to(device) for k, v in self._tensors().items()}, config=self.config)

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral):  # keep the batch dimension: videos[i] is a batch of one
            if not -len(self) <= index < len(self):
                raise IndexError(f"video index {index} out of range for {len(self)} videos")
            index = slice(index, index + 1 or None)
        return VideoBatch(**{k: v[index] for k, v in self._tensors().items()}, config=self.config)

    @property
    def count(self):
        return self.present.sum(1)  # (B,)

    @property
    def visible(self):
        """(B, N, F) bool: object n is on screen on frame f."""
        f = torch.arange(self.config.frames, device=self.present.device)
        return self.present[..., None] & (self.appear[..., None] <= f) & (f < self.disappear[..., None])

    def positions(self):
        """(x, y), each (B, N, F): every object's centre on every frame (also where it is off screen)."""
        f = torch.arange(self.config.frames, device=self.x0.device, dtype=self.x0.dtype)
        return self.x0[..., None] + self.vx[..., None] * f, self.y0[..., None] + self.vy[..., None] * f

    @property
    def direction(self):
        """(B, N) long index into DIRECTIONS: the way each object moves (its main axis and sign)."""
        horizontal = self.vx.abs() >= self.vy.abs()
        return torch.where(horizontal, (self.vx > 0).long(), 2 + (self.vy > 0).long())


DIRECTIONS = ("left", "right", "top", "bottom")  # the world's words: "top" = upwards, "bottom" = downwards


def concat_videos(batches):
    tensors = [b._tensors() for b in batches]
    return VideoBatch(**{k: torch.cat([t[k] for t in tensors]) for k in tensors[0]}, config=batches[0].config)


def video_frame(videos, f):
    """Frame f of every video as the world's SceneBatch (B, N): only the objects on screen are present,
    cell is the quadrant (row * 2 + col), config the VideoConfig (its shapes and colors are what
    text.sample_qa needs), so caption / questions / sample_qa ask about that one frame."""
    if not isinstance(f, numbers.Integral) or not 0 <= f < videos.config.frames:
        raise ValueError(f"frame must be an int in [0, {videos.config.frames}), got {f!r}")
    present = videos.visible[:, :, f]
    x, y = (p[:, :, f] for p in videos.positions())
    cell = (y >= 0.5).long() * 2 + (x >= 0.5).long()
    keep = lambda t: torch.where(present, t, torch.zeros((), dtype=t.dtype, device=t.device))
    return SceneBatch(keep(videos.shape), keep(videos.color), keep(videos.size), keep(x), keep(y), keep(cell),
                      present, videos.config)


def video_objects(videos, i, frame=None):
    """Video i as plain dicts, one per present object in slot order; with `frame`, the world's dicts of
    the objects on that frame (scenes.objects)."""
    if frame is not None:
        return video_frame(videos[i], frame).objects(0)
    columns = [t[i].tolist() for t in (videos.shape, videos.color, videos.size, videos.x0, videos.y0, videos.vx,
                                       videos.vy, videos.appear, videos.disappear, videos.direction, videos.present)]
    names = tuple(COLORS)
    return [{"shape": SHAPES[s], "color": names[c], "size": SIZES[z], "x0": x0, "y0": y0, "vx": vx, "vy": vy,
             "appear": a, "disappear": d, "direction": DIRECTIONS[w]}
            for s, c, z, x0, y0, vx, vy, a, d, w, p in zip(*columns) if p]


# ----------------------------------------------------------------------------- sampling

def _draw_motion(size, config, kw):
    """Start (x0, y0) and velocity (vx, vy), each (B, N): mostly along one axis, the whole path inside."""
    B, N = size.shape
    axis = torch.randint(2, (B, N), **kw)  # 0: horizontal, 1: vertical
    sign = torch.randint(2, (B, N), **kw) * 2 - 1
    speed = config.min_speed + torch.rand(B, N, **kw) * (config.max_speed - config.min_speed)
    drift = speed * DRIFT * (2 * torch.rand(B, N, **kw) - 1)
    vx = torch.where(axis == 0, sign * speed, drift)
    vy = torch.where(axis == 0, drift, sign * speed)
    r = torch.tensor(config.radii, device=size.device)[size] + 1 / config.image_size  # a pixel to spare
    start = []
    for v in (vx, vy):  # start where frames 0 .. F-1 all stay inside
        travel = v * (config.frames - 1)
        low, high = r - travel.clamp(max=0), 1 - r - travel.clamp(min=0)
        start.append(low + torch.rand(B, N, **kw) * (high - low))
    return start[0], start[1], vx, vy


def _touching(videos):
    """(B, N) bool: slot n's box (half-width radius + a pixel) meets an earlier slot's on a frame both are on."""
    x, y = videos.positions()  # (B, N, F)
    r = torch.tensor(videos.config.radii, device=x.device)[videos.size][..., None] + 0.5 / videos.config.image_size
    near = lambda p: (p[:, :, None] - p[:, None]).abs() < r[:, :, None] + r[:, None]  # (B, N, N, F)
    both = videos.visible[:, :, None] & videos.visible[:, None]
    N = x.shape[1]
    earlier = torch.ones(N, N, dtype=torch.bool, device=x.device).tril(-1)  # [n, m]: m < n
    return ((near(x) & near(y) & both).any(-1) & earlier).any(-1)


def _draw_videos(batch_size, config, kw):
    B, N, F = batch_size, config.max_objects, config.frames
    device = kw["device"]
    count = torch.randint(config.min_objects, N + 1, (B,), **kw)
    present = torch.arange(N, device=device) < count[:, None]
    shape_ids = torch.tensor([SHAPES.index(s) for s in config.shapes], device=device)
    color_ids = torch.tensor([tuple(COLORS).index(c) for c in config.colors], device=device)
    shape = shape_ids[torch.randint(len(shape_ids), (B, N), **kw)]
    color = color_ids[torch.randint(len(color_ids), (B, N), **kw)]
    size = torch.randint(len(SIZES), (B, N), **kw)
    appear = torch.zeros(B, N, dtype=torch.long, device=device)
    disappear = torch.full((B, N), F, device=device)
    if config.appear_disappear:
        span = F - config.min_duration + 1
        duration = config.min_duration + (torch.rand(B, N, **kw) * span).long().clamp(max=span - 1)
        slack = F - duration + 1
        appear = (torch.rand(B, N, **kw) * slack).long().clamp(max=slack - 1)
        disappear = appear + duration
    videos = VideoBatch(shape, color, size, *_draw_motion(size, config, kw), appear, disappear, present, config)
    for _ in range(COLLISION_ROUNDS):  # redraw the motion of every object that touches an earlier one
        touching = _touching(videos) & present
        if not touching.any():
            break
        fresh = _draw_motion(size, config, kw)
        for name, value in zip(("x0", "y0", "vx", "vy"), fresh):
            setattr(videos, name, torch.where(touching, value, getattr(videos, name)))
    videos = videos[~(_touching(videos) & present).any(1)]  # the few still touching are dropped
    # empty slots hold zeros, so two equal videos are equal tensors
    for name, value in videos._tensors().items():
        if name != "present":
            setattr(videos, name, torch.where(videos.present, value, torch.zeros((), dtype=value.dtype, device=device)))
    return videos


def _sample_any(batch_size, config, generator, device):
    kw = dict(generator=generator, device=device)
    kept, have = [], 0
    while True:
        videos = _draw_videos(2 * (batch_size - have) + 4 if kept else batch_size + 4, config, kw)
        kept.append(videos)
        have += len(videos)
        if have >= batch_size:
            return concat_videos(kept)[:batch_size]


def sample_videos(batch_size, config=VideoConfig(), *, generator=None, device="cpu", split=None):
    """Draw `batch_size` random videos; with `split`, only videos whose content hash falls in that split.

    Returns a VideoBatch of (B, N) tensors, N = config.max_objects.
    """
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    if not isinstance(config, VideoConfig):
        raise ValueError(f"config must be a VideoConfig, got {type(config).__name__}")
    drawn = []

    def draw(n):
        # world.sample_split keeps scenes by hash: hand it one-slot stand-in scenes (the video's index
        # in `drawn` and its hash), then gather the videos it kept
        videos = _sample_any(n, config, generator, device)
        start = sum(map(len, drawn))
        drawn.append(videos)
        index = torch.arange(start, start + n, device=device)[:, None]
        zeros, ones = torch.zeros(n, 1, device=device), torch.ones(n, 1, dtype=torch.bool, device=device)
        return SceneBatch(index, video_hash(videos)[:, None], index, zeros, zeros, index, ones, config)

    kept = sample_split(batch_size, split, draw, lambda stand_in: stand_in.color[:, 0], config)
    return concat_videos(drawn)[kept.shape[:, 0]]


# ----------------------------------------------------------------------------- splits

def video_hash(videos):
    """(B,) int64 in [0, 2**31): a hash of each video's content, independent of slot order (and of the
    image size: the same video at 32 and 64 pixels is one video, in one split)."""
    quantise = lambda v, scale: torch.round(v * scale).long() + scale  # non-negative for |v| <= 1
    key = videos.shape
    for value, base in ((videos.color, 16), (videos.size, 4), (quantise(videos.x0, 1024), 2049),
                        (quantise(videos.y0, 1024), 2049), (quantise(videos.vx, 4096), 8193),
                        (quantise(videos.vy, 4096), 8193), (videos.appear, 65), (videos.disappear, 65)):
        key = _mix(key) * base + value  # stays below 2**62
    per_object = torch.where(videos.present, _mix(key), 0)
    h = _mix(per_object.sum(1) + videos.count * 0x3C6EF372)
    c = videos.config
    world = _mix(_mix(c.frames * 4099 + round(c.radii[0] * 4096)) * 4099 + round(c.radii[1] * 4096))
    return _mix(h + world * 2**31)


def video_split(videos):
    """(B,) long: index into SPLITS of each video's split."""
    percent = video_hash(videos) % 100
    return (percent >= SPLIT_PERCENT["val"][0]).long() + (percent >= SPLIT_PERCENT["test"][0]).long()


# ----------------------------------------------------------------------------- rendering

def render_video(videos, *, device=None):
    """Paint videos into (B, F, 3, H, W) float32 frames in [0, 1], H = W = config.image_size.

    The world's shapes, colours and background (render.paint), every frame of every video in one pass.
    """
    if not isinstance(videos, VideoBatch):
        raise ValueError(f"videos must be a VideoBatch from sample_videos, got {type(videos).__name__}")
    if device is not None:
        videos = videos.to(device)
    device = videos.x0.device
    (B, N), F, S = videos.shape.shape, videos.config.frames, videos.config.image_size
    flat = lambda t: t.transpose(1, 2).reshape(B * F, N)  # (B, N, F) -> (B * F, N): a scene per frame
    per_frame = lambda t: t[:, None].expand(B, F, N).reshape(B * F, N)
    x, y = videos.positions()
    cell = torch.zeros(B * F, N, dtype=torch.long, device=device)  # paint does not use it
    frames = SceneBatch(per_frame(videos.shape), per_frame(videos.color), per_frame(videos.size), flat(x), flat(y),
                        cell, flat(videos.visible), videos.config)
    pixels = (torch.arange(S, device=device, dtype=torch.float32) + 0.5) / S  # pixel centres in [0, 1]
    dx = pixels - frames.x[..., None]  # (B * F, N, W)
    dy = pixels - frames.y[..., None]  # (B * F, N, H)
    r = torch.tensor(videos.config.radii, device=device)[frames.size][..., None]  # (B * F, N, 1)
    return paint(frames, dx, dy, r, far=8.0).view(B, F, 3, S, S)
