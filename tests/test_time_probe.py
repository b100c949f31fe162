"""Chapter 09's probe: targets counted as the video says, frames read as Qwen2-VL reads them, arms, a short run."""

import pytest
import torch

from minivlm.data.video import render_video, sample_videos
from minivlm.models.qwen2vl import process_videos
from minivlm.time_probe import (ARMS, LOOK_BACK, Arm, TimeProbe, area_counts, encode_videos, model_config,
                                probe_accuracy, quadrants, read_indices, run_arm, run_arms, source_config,
                                train_probe, video_data)


def videos(n=12, size=32, seed=0):
    return sample_videos(n, source_config(size), generator=torch.Generator().manual_seed(seed))


def test_area_counts_count_every_visible_centre_once():
    batch = videos(20)
    frames = torch.tensor([-3, 0, 5, 15])
    counts = area_counts(batch, frames, 2, 4)
    x, y = batch.positions()
    for b in range(len(batch)):
        for k, f in enumerate(frames.tolist()):
            expected = torch.zeros(2, 4)
            if f >= 0:
                for n in batch.visible[b, :, f].nonzero()[:, 0].tolist():
                    expected[min(int(y[b, n, f] * 2), 1), min(int(x[b, n, f] * 4), 3)] += 1
            assert torch.equal(counts[b, k], expected)
    assert torch.equal(counts[:, 1:].sum((2, 3)), batch.visible[:, :, frames[1:]].sum(1).float())


def test_frames_are_read_as_qwen2vl_samples_them():
    assert read_indices(8).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert read_indices(16).tolist() == list(range(16)) and read_indices(4).tolist() == [0, 5, 10, 15]


def test_encoded_videos_are_the_frames_read_and_their_counts():
    batch = videos()
    arm = Arm()
    data = encode_videos(batch, arm)
    patches, grid = process_videos(list(render_video(batch)[:, read_indices(8)]), model_config(arm))
    assert torch.equal(data.patches, patches) and torch.equal(data.grid_thw, grid)
    assert data.targets.shape == (12, 4, 2, 2, 2)                       # 4 frame pairs of 2 x 2 tokens
    starts = torch.tensor([0, 4, 9, 13])
    assert torch.equal(data.targets[..., 0], area_counts(batch, starts, 2, 2))
    assert torch.equal(data.targets[..., 1], area_counts(batch, starts - LOOK_BACK, 2, 2))
    assert data.has_then.tolist() == [False, True, True, True]
    pooled = encode_videos(videos(size=64), ARMS["16 frames x 4 tokens (pooled)"])
    assert pooled.grid_thw[0].tolist() == [8, 8, 8] and pooled.targets.shape == (12, 8, 2, 2, 2)


def test_the_probe_reads_one_count_pair_per_lm_token():
    for name, size, shape in (("M-RoPE", 32, (4, 2, 2)), ("M-RoPE", 64, (4, 4, 4)),
                              ("16 frames x 4 tokens (pooled)", 64, (8, 2, 2)), ("4 frames x 16 tokens", 64, (2, 4, 4))):
        data = encode_videos(videos(3, size), ARMS[name])
        assert TimeProbe(ARMS[name])(data.patches, data.grid_thw, data.seconds).shape == (3, *shape, 2)


def test_the_arms_number_the_tokens_their_way():
    data = encode_videos(videos(2), Arm(), frames=16)
    ids = torch.tensor([[1, 5] + [4] * 32] * 2)
    index_ids = TimeProbe(Arm()).vlm.position_ids(ids, None, None, data.grid_thw)[0, 0, 2::4]
    time_ids = TimeProbe(Arm(absolute_time=True)).vlm.position_ids(ids, None, None, data.grid_thw,
                                                                  [data.seconds] * 2)[0, 0, 2::4]
    assert (index_ids - 2).tolist() == list(range(8))                   # one id per frame pair
    assert (time_ids - 2).tolist() == list(range(8))                    # 0.25 s per pair x 4 ids per second
    train = encode_videos(videos(2), Arm())                             # 8 frames: 0.5 s per pair
    train_ids = TimeProbe(Arm(absolute_time=True)).vlm.position_ids(ids[:, :18], None, None, train.grid_thw,
                                                                   [train.seconds] * 2)[0, 0, 2::4]
    assert (train_ids - 2).tolist() == [0, 2, 4, 6]
    raster = TimeProbe(Arm(positions="1d")).vlm.position_ids(ids, None, None, data.grid_thw)
    assert all(stream[0].tolist() == list(range(34)) for stream in raster)


def test_quadrants_add_token_areas():
    counts = torch.arange(16.).reshape(1, 4, 4)
    assert quadrants(counts).tolist() == [[[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]]


def test_a_short_run_learns_and_is_reproducible():
    arm = Arm(sizes=(32,))
    train, test = video_data(arm, 200, 0, "train"), video_data(arm, 60, 1, "test")[32]
    torch.manual_seed(0)
    before = probe_accuracy(TimeProbe(arm).eval(), test)
    after = probe_accuracy(train_probe(arm, 0, train, steps=80), test)
    assert after["now"] > before["now"] + 20 and after["cell"] is None
    assert after == probe_accuracy(train_probe(arm, 0, train, steps=80), test)


def test_run_arms_here_is_run_arm():
    job = ("M-RoPE", 1, 4, 20, 10)
    result = run_arm(*job)
    assert run_arms([job], workers=0) == [result]
    assert result["arm"] == "M-RoPE" and set(result["accuracy"]) == {(32, 8), (64, 8), (32, 16), (64, 16)}
    assert set(result["accuracy"][64, 8]) == {"now", "then", "frame", "cell"}
    assert set(result["zero"]) == set(result["accuracy"]) and result["zero"][32, 8]["cell"] is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(positions="2d"), "positions must be 'mrope' or '1d'"),
    (dict(frames=7), "frames must be an even number of frames in \\[4, 16\\]"),
    (dict(frames=32), "frames must be an even number"),
    (dict(test_frames=2), "test_frames must be an even number"),
    (dict(pool_stride=4, sizes=(64,)), "pool_stride must be 1 or 2"),
    (dict(sizes=(48,)), "multiples of 32"),
    (dict(sizes=()), "multiples of 32"),
    (dict(pool_stride=2), "at least 64 px"),
])
def test_bad_arms_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Arm(**kwargs)


def test_run_arms_in_workers_gives_the_same_results_in_the_jobs_order():
    jobs = [("4 frames x 16 tokens", 0, 3, 16, 8), ("1D RoPE (raster order)", 0, 3, 16, 8),
            ("4 frames x 16 tokens", 1, 3, 16, 8)]
    assert run_arms(jobs, workers=2) == run_arms(jobs, workers=0)
