"""Frame sampling (qwen_vl_utils.smart_nframes), Qwen2.5-VL's seconds per grid, LLaVA-OneVision's per-frame pooling."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.video_frames import pool_frame_tokens, sample_frame_indices, seconds_per_grid, video_frame_count


def reference_nframes(total, video_fps, fps=2.0, min_frames=4, max_frames=768):
    """smart_nframes in fps mode, written out: ceil / floor by the frame factor 2."""
    low = math.ceil(min_frames / 2) * 2
    high = math.floor(min(max_frames, total) / 2) * 2
    n = min(min(max(total / video_fps * fps, low), high), total)
    return math.floor(n / 2) * 2


@pytest.mark.parametrize("total, video_fps, fps, expected", [
    (300, 30, 2.0, 20),        # 10 s at 2 fps
    (301, 30, 2.0, 20),        # 20.07 -> floored to an even count
    (90, 30, 2.0, 6),
    (30, 30, 2.0, 4),          # 2 frames wanted, at least min_frames = 4
    (3, 30, 2.0, 2),           # fewer frames than min_frames: as many pairs as there are
    (100_000, 25, 2.0, 768),   # an hour: max_frames
    (250, 25, 1.0, 10),
    (250, 25, 0.5, 4),
])
def test_frame_counts(total, video_fps, fps, expected):
    assert video_frame_count(total, video_fps, fps) == expected == reference_nframes(total, video_fps, fps)
    assert video_frame_count(total, video_fps, fps) % 2 == 0


def test_indices_are_evenly_spaced_and_keep_both_ends():
    indices = sample_frame_indices(300, 30)
    assert indices.dtype == torch.long and len(indices) == 20
    assert indices[0] == 0 and indices[-1] == 299
    assert torch.equal(indices, torch.linspace(0, 299, 20).round().long())
    assert (indices[1:] > indices[:-1]).all()
    assert sample_frame_indices(3, 30).tolist() == [0, 2]


def test_seconds_per_grid():
    assert seconds_per_grid(2.0) == 1.0
    assert seconds_per_grid(4.0) == 0.5
    assert seconds_per_grid(1.0, temporal_patch_size=1) == 1.0


def test_pooling_halves_each_side_and_is_the_mean_of_2x2_at_even_sizes():
    torch.manual_seed(0)
    tokens = torch.randn(3, 8, 6, 5)
    pooled = pool_frame_tokens(tokens)
    assert pooled.shape == (3, 4, 3, 5)
    mean = F.avg_pool2d(tokens.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(pooled, mean)
    assert pool_frame_tokens(torch.randn(2, 27, 27, 4)).shape == (2, 14, 14, 4)       # SigLIP-384's 27²: ceil
    assert torch.equal(pool_frame_tokens(tokens, stride=1), tokens)
    frames_apart = pool_frame_tokens(torch.cat([tokens[:1], torch.zeros(1, 8, 6, 5)]))
    torch.testing.assert_close(frames_apart[0], pooled[0])                             # frame by frame


@pytest.mark.parametrize("call, message", [
    (lambda: video_frame_count(1, 30), "total_frames must be an int >= 2"),
    (lambda: video_frame_count(30.0, 30), "total_frames must be an int"),
    (lambda: video_frame_count(30, 0), "video_fps must be a positive"),
    (lambda: video_frame_count(30, 30, fps=-1), "fps must be a positive"),
    (lambda: video_frame_count(30, 30, min_frames=8, max_frames=4), "min_frames .8. must not exceed max_frames"),
    (lambda: seconds_per_grid(0), "fps must be a positive"),
    (lambda: seconds_per_grid(2, temporal_patch_size=0), "temporal_patch_size must be a positive int"),
    (lambda: pool_frame_tokens(torch.randn(8, 6, 5)), r"\(F, h, w, D\)"),
    (lambda: pool_frame_tokens(torch.randn(0, 8, 6, 5)), "non-empty"),
    (lambda: pool_frame_tokens(torch.randn(1, 8, 6, 5), stride=0), "stride must be a positive int"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
