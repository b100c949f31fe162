"""Where was everything half a second ago? A probe for chapter 09's video experiments.

Qwen2-VL (arXiv 2409.12191, §2.1) numbers a video's tokens (time, row, col) with M-RoPE and reports it
beating 1D RoPE on video; LLaVA-OneVision (arXiv 2408.03326, §3) pools each frame's tokens to afford
more frames; Qwen2.5-VL (arXiv 2502.13923, §2.1) ties the temporal id to absolute time, for videos
sampled at any rate. Each is a claim about what an LM can find among a video's tokens, and this module
measures it cheaply enough for a CPU minute, in the spirit of chapter 08's count probe:

    source video (16 frames, 8 per second, data/video.py) -> frames read (sample_frame_indices)
      -> Qwen2VL (models/qwen2vl.py): a one-layer ViT, 8-px patches, 2 frames per tubelet, 2 x 2 merge
         -> (t, h, w) visual tokens, pooled per frame pair or not, after "<bos> <user>"
      -> its LM (one causal layer) with M-RoPE ids, 1D ids, or absolute-time ids
      -> a Linear head on every visual token: two counts for the part of the image the token covers,
         "now"  objects whose centre is there on the frame pair's first frame                (still)
         "then" objects whose centre was there half a second (4 source frames) earlier      (temporal)

"then" is the question an LM can only answer by attending to the same place one step back in
time: with M-RoPE that is the offset (Δt, Δrow, Δcol) = (-1, 0, 0) at every frame size; in raster
order it is -h·w, a different offset for every size of frame; with frame-index ids "one step back"
is half a second only at the frame rate the model was trained at.

The questions scored (answers: rounded sums of the head's counts over the tokens of a quadrant):

    "now"   how many shapes are at the top left ?                   every quadrant of every frame pair
    "then"  how many shapes were at the top left half a second ago ?   every frame pair from 0.5 s on
    "frame" how many shapes are at the top left at frame f ?         all 16 source frames, read or not:
                                                                     the nearest frame pair's "now"
    "cell"  how many shapes are in each of the 16 cells ?            64-px frames, 4 x 4 token map

An `Arm` is one way to read the videos (the rows of the chapter's tables); `ARMS` names them.
"""

import functools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import NamedTuple

import torch
import torch.nn as nn

from .checks import tensor
from .data import Tokenizer
from .data.video import VideoConfig, render_video, sample_videos
from .models.qwen2vl import Qwen2VL, Qwen2VLConfig, process_videos
from .train import TrainConfig, fit
from .video_frames import sample_frame_indices, seconds_per_grid
from .window_attention import DynamicViTConfig

SOURCE_FRAMES, SOURCE_FPS = 16, 8.0     # every source video: 2 seconds
LOOK_BACK = 4                           # source frames in half a second
TOKENS_PER_SECOND = 4                   # absolute time: one temporal id per quarter second
TOKENIZER = Tokenizer()


@dataclass(frozen=True)
class Arm:
    positions: str = "mrope"     # "mrope": (t, row, col) ids; "1d": every token its index (raster order)
    frames: int = 8              # frames read from each 16-frame source video
    pool_stride: int = 1         # LLaVA-OneVision's per-frame-pair pooling: 2 halves each side
    absolute_time: bool = False  # Qwen2.5-VL: temporal id = floor(time · TOKENS_PER_SECOND)
    sizes: tuple = (32, 64)      # frame sizes trained and tested on
    test_frames: int = None      # frames read at test time (another frame rate); None: `frames`

    def __post_init__(self):
        if self.positions not in ("mrope", "1d"):
            raise ValueError(f"positions must be 'mrope' or '1d', got {self.positions!r}")
        for name in ("frames", "test_frames"):
            value = getattr(self, name)
            if value is None and name == "test_frames":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value not in range(4, SOURCE_FRAMES + 1, 2):
                raise ValueError(f"{name} must be an even number of frames in [4, {SOURCE_FRAMES}] (frame pairs "
                                 f"of a {SOURCE_FRAMES}-frame video), got {value!r}")
        if isinstance(self.pool_stride, bool) or self.pool_stride not in (1, 2):
            raise ValueError(f"pool_stride must be 1 or 2 (a quadrant is the coarsest token the questions read), "
                             f"got {self.pool_stride!r}")
        sizes = tuple(self.sizes) if isinstance(self.sizes, (tuple, list)) else ()
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 32 or s % 32 for s in sizes):
            raise ValueError(f"sizes must be frame sizes in pixels, multiples of 32 (an even number of 16-px "
                             f"tokens per side, so that tokens tile the quadrants), got {self.sizes!r}")
        if self.pool_stride == 2 and min(sizes) < 64:
            raise ValueError(f"pool_stride=2 needs frames of at least 64 px (2 x 2 tokens after pooling), got {sizes}")
        object.__setattr__(self, "sizes", sizes)


ARMS = {
    "M-RoPE": Arm(test_frames=16),
    "1D RoPE (raster order)": Arm(positions="1d"),
    "M-RoPE, absolute time": Arm(absolute_time=True, test_frames=16),
    "4 frames x 16 tokens": Arm(frames=4, sizes=(64,)),
    "16 frames x 4 tokens (pooled)": Arm(frames=16, pool_stride=2, sizes=(64,)),
}


def source_config(image_size):
    """The world of every experiment: 16-frame videos of 1-3 shapes, each on screen for at least 8 frames."""
    return VideoConfig(frames=SOURCE_FRAMES, image_size=image_size, min_speed=0.02, max_speed=0.045)


def read_indices(frames):
    """(frames,) long: the source frames read, Qwen2-VL's sampling at frames / 2 per second."""
    return sample_frame_indices(SOURCE_FRAMES, SOURCE_FPS, fps=frames / SOURCE_FRAMES * SOURCE_FPS)


def model_config(arm):
    vision = DynamicViTConfig(dim=32, depth=1, heads=2, mlp_ratio=2, patch_size=8, out_dim=32, window_size=None,
                              full_attention_layers=())
    return Qwen2VLConfig(vision=vision, text_dim=32, text_depth=1, text_heads=2, max_seq_len=160,
                         positions=arm.positions, video_pool_stride=arm.pool_stride,
                         tokens_per_second=TOKENS_PER_SECOND)


class ProbeVideos(NamedTuple):
    patches: torch.Tensor        # (B·t·h·w, 3·2·8·8): every video's tubelets, packed
    grid_thw: torch.Tensor       # (B, 3): the ViT's grid of each video
    seconds: float               # seconds per frame pair, for absolute-time ids
    targets: torch.Tensor        # (B, t, h', w', 2): "now" and "then" counts of each LM token's area
    has_then: torch.Tensor       # (t,) bool: frame pairs at least half a second in
    frame_counts: torch.Tensor   # (B, 16, 2, 2): objects per quadrant on every source frame
    read: torch.Tensor           # (frames,) long: the source frames read


def area_counts(videos, frame_index, rows, cols):
    """(B, T, rows, cols) float: on each frame of frame_index (T,) long, the objects on screen whose centre
    lies in each cell of a rows x cols grid over the image; 0 everywhere for a frame index < 0."""
    x, y = videos.positions()
    f = frame_index.clamp(min=0)
    x, y, visible = x[:, :, f], y[:, :, f], videos.visible[:, :, f] & (frame_index >= 0)     # (B, N, T)
    cell = (y * rows).long().clamp(0, rows - 1) * cols + (x * cols).long().clamp(0, cols - 1)
    counts = torch.zeros(len(videos), len(frame_index), rows * cols)
    counts.scatter_add_(2, cell.transpose(1, 2), visible.transpose(1, 2).float())
    return counts.reshape(len(videos), len(frame_index), rows, cols)


def encode_videos(videos, arm, frames=None, counts=None):
    """A VideoBatch (one size) -> ProbeVideos: `frames` (default arm.frames) read, tokens' targets counted
    by `counts` (default area_counts; chapter 09's exercise passes the learner's)."""
    counts = counts or area_counts
    frames = frames or arm.frames
    config = model_config(arm)
    read = read_indices(frames)
    patches, grid = process_videos(list(render_video(videos)[:, read]), config)
    t, h, w = grid[0].tolist()
    m, s = config.vision.merge_size, config.video_pool_stride
    rows, cols = -(-h // m // s), -(-w // m // s)
    starts = read[::2]                                   # each frame pair's first frame
    now = counts(videos, starts, rows, cols)
    then = counts(videos, starts - LOOK_BACK, rows, cols)
    return ProbeVideos(patches, grid, seconds_per_grid(frames / SOURCE_FRAMES * SOURCE_FPS),
                       torch.stack([now, then], dim=-1), starts >= LOOK_BACK,
                       area_counts(videos, torch.arange(SOURCE_FRAMES), 2, 2), read)


class TimeProbe(nn.Module):
    """A tiny Qwen2VL and a Linear count head on its LM's states at the visual tokens: -> (B, t, h', w', 2)."""

    def __init__(self, arm=Arm()):
        super().__init__()
        self.arm = arm
        self.vlm = Qwen2VL(model_config(arm))
        self.head = nn.Linear(self.vlm.config.text_dim, 2)

    def forward(self, patches, grid_thw, seconds=None):
        tensor("patches", patches, dims=2, kind="float", shape="(N, C·t·p·p)")
        lm_grid = self.vlm.video_token_grid(grid_thw)
        t, h, w = (lm_grid[0] // torch.tensor([1, 2, 2])).tolist()
        B = len(grid_thw)
        prefix = torch.tensor([TOKENIZER.bos_id, TOKENIZER.user_id])
        ids = torch.cat([prefix, torch.full((t * h * w,), TOKENIZER.video_id)]).expand(B, -1)
        position_ids = self.vlm.position_ids(ids, None, None, grid_thw,
                                             [seconds] * B if self.arm.absolute_time else None)
        embeds = self.vlm.embed(None, None, ids, validate=False, video_patches=patches, video_grid_thw=grid_thw)
        states = self.vlm.lm.hidden_states(embeds, position_ids=position_ids)[:, len(prefix):]
        return self.head(states).reshape(B, t, h, w, 2)


def probe_loss(model, batch):
    predicted = model(batch.patches, batch.grid_thw, batch.seconds)
    weight = torch.stack([torch.ones_like(batch.has_then), batch.has_then]).T.float()     # (t, 2)
    return ((predicted - batch.targets) ** 2 * weight[None, :, None, None]).sum() / (
        weight.sum() * predicted[..., 0].numel() / len(weight))


@functools.lru_cache(maxsize=8)
def video_data(arm, count, seed, split, frames=None):
    """{size: ProbeVideos} of `count` videos per frame size in arm.sizes, drawn from `seed` (the same videos
    at every size and frame rate); cached, so the runs of one arm in one process encode them once."""
    return {size: encode_videos(sample_videos(count, source_config(size), generator=torch.Generator().manual_seed(seed),
                                              split=split), arm, frames) for size in arm.sizes}


def select(data, rows):
    per_video = len(data.patches) // len(data.grid_thw)
    patch_rows = (rows[:, None] * per_video + torch.arange(per_video)).reshape(-1)
    return data._replace(patches=data.patches[patch_rows], grid_thw=data.grid_thw[rows],
                         targets=data.targets[rows], frame_counts=data.frame_counts[rows])


def train_probe(arm, seed, data, steps=200, batch_size=16, lr=1e-2):
    """A TimeProbe trained for `steps` steps (MSE on the token counts), batches alternating over frame sizes."""
    torch.manual_seed(seed)
    model = TimeProbe(arm)
    order = torch.Generator().manual_seed(seed)
    sizes = sorted(data)

    def batch(step):
        videos = data[sizes[step % len(sizes)]]
        return select(videos, torch.randint(len(videos.grid_thw), (batch_size,), generator=order))

    fit(model, batch, probe_loss, TrainConfig(steps=steps, lr=lr, warmup_steps=25, seed=seed, device="cpu",
                                              progress=False))
    return model.eval()


def quadrants(counts):
    """(..., h', w') token-area counts -> (..., 2, 2) per quadrant (h' and w' even, or 1 x 1 -> not defined)."""
    h, w = counts.shape[-2:]
    return counts.reshape(*counts.shape[:-2], 2, h // 2, 2, w // 2).sum((-3, -1))


@torch.no_grad()
def probe_accuracy(model, data):
    """{question: % right}: "now", "then", "frame" per quadrant; "cell" per token area (None where not asked)."""
    predicted = model(data.patches, data.grid_thw, data.seconds)                 # (B, t, h', w', 2)
    right = lambda p, target: 100 * float((p.round() == target).float().mean())
    h = predicted.shape[2]
    now = quadrants(predicted[..., 0]) if h >= 2 else None
    result = {"now": right(now, quadrants(data.targets[..., 0])) if h >= 2 else None,
              "then": right(quadrants(predicted[..., 1])[:, data.has_then],
                            quadrants(data.targets[..., 1])[:, data.has_then]) if h >= 2 else None,
              "cell": right(predicted[..., 0], data.targets[..., 0]) if h > 2 else None}
    if now is not None:   # every source frame: the frame pair whose first frame is nearest
        starts = data.read[::2]
        nearest = (torch.arange(SOURCE_FRAMES)[:, None] - starts).abs().argmin(1)
        result["frame"] = right(now[:, nearest], data.frame_counts)
    return result


def run_arm(arm_name, seed, steps=150, train_videos=300, test_videos=100):
    """One run: train on train-split videos, test on test-split ones at arm.frames (and arm.test_frames)
    -> {"arm", "seed", "accuracy": {(size, frames read): {question: % right}}, "zero": the same for a probe
    that says zero everywhere (most quadrants are empty: the floor to read accuracies against)}.

    The videos are the same for every arm and seed (drawn with fixed seeds); `seed` sets the
    initialisation and the batch order.
    """
    arm = ARMS[arm_name]
    model = train_probe(arm, seed, video_data(arm, train_videos, 0, "train"), steps)
    accuracy, zero = {}, {}
    for frames in dict.fromkeys((arm.frames, arm.test_frames or arm.frames)):
        for size, data in video_data(arm, test_videos, 1, "test", frames).items():
            accuracy[size, frames] = probe_accuracy(model, data)
            zero[size, frames] = probe_accuracy(lambda *inputs: torch.zeros_like(data.targets), data)
    return {"arm": arm_name, "seed": seed, "accuracy": accuracy, "zero": zero}


def _run_jobs(jobs):
    torch.set_num_threads(1)                    # two workers on two cores: each single-threaded
    return [run_arm(*job) for job in jobs]


def run_arms(jobs, workers=2):
    """[(arm_name, seed, ...run_arm arguments)] -> [run_arm results], in order, in `workers` processes (0: here).

    One arm's jobs run in one process, one after another, so its videos are encoded once (video_data's
    cache); arms are handed out in the order they first appear: put the slowest first."""
    if workers == 0:
        return [run_arm(*job) for job in jobs]
    by_arm = {}
    for k, job in enumerate(jobs):
        by_arm.setdefault(job[0], []).append(k)
    results = [None] * len(jobs)
    with ProcessPoolExecutor(min(workers, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        groups = {pool.submit(_run_jobs, [jobs[k] for k in ks]): ks for ks in by_arm.values()}
        for future, ks in groups.items():
            for k, result in zip(ks, future.result()):
                results[k] = result
    return results
