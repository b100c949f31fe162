"""Which frames of a video a VLM reads, and how few tokens each may cost.

Qwen2-VL (Wang et al. 2024, arXiv 2409.12191, §2.1) samples a video at 2 frames per second and feeds
the frames through the image ViT, two consecutive frames per 3D patch (temporal_patch_size = 2), so the
number of frames is kept even. Qwen2.5-VL (arXiv 2502.13923, §2.1) gives the LM each frame pair's
absolute time, `seconds_per_grid` = temporal_patch_size / fps. LLaVA-OneVision (Li et al. 2024,
arXiv 2408.03326, §3) encodes every frame at the base resolution and shrinks each frame's token map
bilinearly by 2 per side, to afford more frames for the same tokens.

    video_frame_count(total_frames, video_fps, fps=2.0)   -> F: even, in [min_frames, max_frames], <= total
    sample_frame_indices(total_frames, video_fps, fps=2)  -> (F,) long: evenly spaced, first and last frame kept
    seconds_per_grid(fps, temporal_patch_size=2)          -> seconds between two temporal ids' frame pairs
    pool_frame_tokens(tokens (F, h, w, D), stride=2)      -> (F, ceil(h / stride), ceil(w / stride), D), bilinear

The frame count follows `qwen_vl_utils.smart_nframes` (fps mode): F = total / video_fps · fps, clamped to
[min_frames, min(max_frames, total)], floored to a multiple of the frame factor (2); the indices are
`linspace(0, total - 1, F)` rounded, as its video reader does. The pooling is LLaVA-OneVision's
`get_2dPool` in "bilinear" mode (F.interpolate, align_corners=False, size = ceil(side / stride)).
"""

import math

import torch
import torch.nn.functional as F

FRAME_FACTOR = 2        # Qwen2-VL's temporal_patch_size: frames come in pairs


def _positive_number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive, finite number, got {value!r}")


def video_frame_count(total_frames, video_fps, fps=2.0, min_frames=4, max_frames=768):
    """How many frames Qwen2-VL reads from a video of `total_frames` recorded at `video_fps`, sampled at `fps`."""
    if isinstance(total_frames, bool) or not isinstance(total_frames, int) or total_frames < FRAME_FACTOR:
        raise ValueError(f"total_frames must be an int >= {FRAME_FACTOR} (frames come in pairs), got {total_frames!r}")
    _positive_number(video_fps, "video_fps")
    _positive_number(fps, "fps")
    for name, value in (("min_frames", min_frames), ("max_frames", max_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < FRAME_FACTOR:
            raise ValueError(f"{name} must be an int >= {FRAME_FACTOR}, got {value!r}")
    if min_frames > max_frames:
        raise ValueError(f"min_frames ({min_frames}) must not exceed max_frames ({max_frames})")
    low = math.ceil(min_frames / FRAME_FACTOR) * FRAME_FACTOR
    high = math.floor(min(max_frames, total_frames) / FRAME_FACTOR) * FRAME_FACTOR
    wanted = total_frames / video_fps * fps
    return math.floor(min(max(wanted, low), high, total_frames) / FRAME_FACTOR) * FRAME_FACTOR


def sample_frame_indices(total_frames, video_fps, fps=2.0, min_frames=4, max_frames=768):
    """(F,) long: the frames read, evenly spaced over the video, the first and the last included."""
    count = video_frame_count(total_frames, video_fps, fps, min_frames, max_frames)
    return torch.linspace(0, total_frames - 1, count).round().long()


def seconds_per_grid(fps, temporal_patch_size=2):
    """Seconds covered by one temporal patch (Qwen2.5-VL's `second_per_grid_ts`): temporal_patch_size / fps."""
    _positive_number(fps, "fps")
    if isinstance(temporal_patch_size, bool) or not isinstance(temporal_patch_size, int) or temporal_patch_size < 1:
        raise ValueError(f"temporal_patch_size must be a positive int, got {temporal_patch_size!r}")
    return temporal_patch_size / fps


def pool_frame_tokens(tokens, stride=2):
    """tokens (F, h, w, D), one token map per frame -> (F, ceil(h / stride), ceil(w / stride), D), bilinear."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4 or 0 in tokens.shape:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a non-empty (F, h, w, D) tensor of per-frame token maps, got {shape}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    _, h, w, _ = tokens.shape
    maps = tokens.permute(0, 3, 1, 2)                                           # (F, D, h, w)
    pooled = F.interpolate(maps, size=(math.ceil(h / stride), math.ceil(w / stride)), mode="bilinear",
                           align_corners=False)
    return pooled.permute(0, 2, 3, 1)
