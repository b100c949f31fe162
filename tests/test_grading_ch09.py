"""The chapter 09 checks pass the reference and other correct implementations, say "not implemented yet"
to a stub, and give a specific hint (not a pass) to typical mistakes, whatever sizes they draw."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.course.grading import ch09
from minivlm.data.video import sample_videos
from minivlm.dynamic_resolution import patchify_qwen2vl
from minivlm.time_probe import Arm, area_counts, encode_videos, source_config
from minivlm.video_frames import pool_frame_tokens

SEEDS = [1, 2, 3, 4]


def stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- correct implementations

def patchify_reference(frames, patch_size, temporal_patch_size, merge_size):
    return patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)


def patchify_by_loops(frames, patch_size, temporal_patch_size, merge_size):
    """Tubelet by tubelet, merge window by merge window, patch by patch: each a (C, tps, p, p) volume flattened."""
    T, C, H, W = frames.shape
    p, tps, m = patch_size, temporal_patch_size, merge_size
    rows = []
    for t in range(T // tps):
        clip = frames[t * tps:(t + 1) * tps].transpose(0, 1)                # (C, tps, H, W)
        for wr in range(H // p // m):
            for wc in range(W // p // m):
                for r in range(m):
                    for c in range(m):
                        y, x = (wr * m + r) * p, (wc * m + c) * p
                        rows.append(clip[:, :, y:y + p, x:x + p].reshape(-1))
    return torch.stack(rows), torch.tensor([T // tps, H // p, W // p], dtype=torch.long)


def patchify_by_unfold(frames, patch_size, temporal_patch_size, merge_size):
    """Cut the tubelets with unfold, then regroup the raster-order patches window by window."""
    T, C, H, W = frames.shape
    p, tps, m = patch_size, temporal_patch_size, merge_size
    t, h, w = T // tps, H // p, W // p
    clips = frames.reshape(t, tps, C, H, W).transpose(1, 2)                 # (t, C, tps, H, W)
    cubes = clips.unfold(3, p, p).unfold(4, p, p)                           # (t, C, tps, h, w, p, p)
    cubes = cubes.permute(0, 3, 4, 1, 2, 5, 6)                              # (t, h, w, C, tps, p, p)
    cubes = cubes.reshape(t, h // m, m, w // m, m, -1).permute(0, 1, 3, 2, 4, 5)
    return cubes.reshape(t * h * w, -1), torch.tensor([t, h, w])


def positions_reference(text_before, grid_thw, text_after, merge_size=2, seconds_per_grid=None,
                        tokens_per_second=2):
    t, h, w = (int(v) for v in grid_thw)
    return ch09._reference_positions(text_before, (t, h, w), text_after, merge_size, seconds_per_grid,
                                     tokens_per_second)


def positions_by_loops(text_before, grid_thw, text_after, merge_size=2, seconds_per_grid=None, tokens_per_second=2):
    t, h, w = grid_thw.tolist()
    ids = [(i, i, i) for i in range(text_before)]
    s = text_before
    for k in range(t):
        time = k if seconds_per_grid is None else math.floor(k * seconds_per_grid * tokens_per_second)
        for r in range(h // merge_size):
            for c in range(w // merge_size):
                ids.append((s + time, s + r, s + c))
    start = max(max(i) for i in ids[s:]) + 1
    ids += [(start + i,) * 3 for i in range(text_after)]
    return torch.tensor(ids, dtype=torch.long).T


def pool_reference(tokens, stride=2):
    return pool_frame_tokens(tokens, stride)


def pool_by_scale_factor(tokens, stride=2):
    """The same grid by hand: sample point (i + 0.5)·h/h' − 0.5, clamped, the two neighbours weighted."""
    _, h, w, _ = tokens.shape

    def axis(n):
        out = -(-n // stride)
        pos = ((torch.arange(out, dtype=torch.float64) + 0.5) * n / out - 0.5).clamp(min=0)
        low = pos.floor().long().clamp(max=n - 1)
        high = (low + 1).clamp(max=n - 1)
        return low, high, (pos - low).to(tokens.dtype)

    (r0, r1, wr), (c0, c1, wc) = axis(h), axis(w)
    rows = tokens[:, r0] * (1 - wr)[None, :, None, None] + tokens[:, r1] * wr[None, :, None, None]
    return rows[:, :, c0] * (1 - wc)[None, None, :, None] + rows[:, :, c1] * wc[None, None, :, None]


def counts_reference(videos, frame_index, rows, cols):
    return area_counts(videos, frame_index, rows, cols)


def counts_by_loops(videos, frame_index, rows, cols):
    x, y = videos.positions()
    B, N, _ = x.shape
    out = torch.zeros(B, len(frame_index), rows, cols)
    for b in range(B):
        for k, f in enumerate(frame_index.tolist()):
            if f < 0:
                continue
            for n in range(N):
                if videos.visible[b, n, f]:
                    out[b, k, min(int(y[b, n, f] * rows), rows - 1), min(int(x[b, n, f] * cols), cols - 1)] += 1
    return out


def counts_by_one_hot(videos, frame_index, rows, cols):
    x, y = videos.positions()
    f = torch.where(frame_index >= 0, frame_index, 0)
    shown = videos.visible[:, :, f] & (frame_index >= 0)
    row = F.one_hot((y[:, :, f] * rows).floor().long().clamp(0, rows - 1), rows)        # (B, N, T, rows)
    col = F.one_hot((x[:, :, f] * cols).floor().long().clamp(0, cols - 1), cols)        # (B, N, T, cols)
    return torch.einsum("bnt,bntr,bntc->btrc", shown.float(), row.float(), col.float())


CORRECT = [
    (ch09.check_patchify_video, patchify_qwen2vl),
    (ch09.check_patchify_video, patchify_reference),
    (ch09.check_patchify_video, patchify_by_loops),
    (ch09.check_patchify_video, patchify_by_unfold),
    (ch09.check_video_position_ids, positions_reference),
    (ch09.check_video_position_ids, positions_by_loops),
    (ch09.check_pool_frames, pool_frame_tokens),
    (ch09.check_pool_frames, pool_reference),
    (ch09.check_pool_frames, pool_by_scale_factor),
]


@pytest.mark.parametrize("check, fn", CORRECT)
def test_correct_implementations_pass(check, fn, grade):
    passed, out = grade(check, fn)
    assert passed and out.startswith("✅"), out


ALL_CHECKS = [ch09.check_patchify_video, ch09.check_video_position_ids, ch09.check_pool_frames,
              ch09.check_area_counts, ch09.check_video_tokens_4s, ch09.check_absolute_time_id,
              ch09.check_raster_offset]


@pytest.mark.parametrize("check", ALL_CHECKS)
def test_a_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_the_written_out_variants_are_the_references():
    torch.manual_seed(0)
    frames = torch.randn(6, 3, 8, 12)
    for got, want in zip(ch09._tubelet_variant(frames, 2, 2, 2), patchify_qwen2vl(frames, 2, 2, 2)):
        assert torch.equal(got, want)
    for args in [(3, (2, 4, 6), 2, 2, None, 2), (2, (4, 2, 4), 1, 2, 0.75, 2), (0, (3, 3, 3), 2, 1, 0.5, 1)]:
        assert torch.equal(ch09._positions_variant(*args), ch09._reference_positions(*args))
    videos = sample_videos(6, source_config(32), generator=torch.Generator().manual_seed(0))
    frame_index = torch.tensor([-3, 0, 5, 15, 9])
    for rows, cols in [(2, 2), (3, 5), (4, 1)]:
        assert torch.equal(ch09._counts_variant(videos, frame_index, rows, cols),
                           area_counts(videos, frame_index, rows, cols))


def test_the_experiment_encodes_with_the_learners_counts():
    """encode_videos counts the targets with the function it is given: the check's probe trains on the learner's."""
    videos = sample_videos(4, source_config(32), generator=torch.Generator().manual_seed(0))
    arm = Arm(sizes=(32,))
    mine = encode_videos(videos, arm, counts=lambda v, frame_index, rows, cols: torch.zeros(len(v), len(frame_index),
                                                                                            rows, cols))
    reference = encode_videos(videos, arm)
    assert not mine.targets.any() and reference.targets.any()
    assert torch.equal(mine.patches, reference.patches)


# ----------------------------------------------------------------------------- typical mistakes

def _patchify_wrong(**switches):
    def wrong(frames, patch_size, temporal_patch_size, merge_size):
        return ch09._tubelet_variant(frames, patch_size, temporal_patch_size, merge_size, **switches)
    return wrong


def patchify_temporal_first(frames, patch_size, temporal_patch_size, merge_size):
    """The patch vector as (tps, C, py, px), written as a learner would."""
    T, C, H, W = frames.shape
    p, tps, m = patch_size, temporal_patch_size, merge_size
    t, h, w = T // tps, H // p, W // p
    x = frames.reshape(t, tps, C, h // m, m, p, w // m, m, p).permute(0, 3, 6, 4, 7, 1, 2, 5, 8)
    return x.reshape(t * h * w, -1), torch.tensor([t, h, w])


def patchify_every_frame(frames, patch_size, temporal_patch_size, merge_size):
    """Each frame patchified on its own, as an image: repeated into a tubelet of its own."""
    parts = [patchify_qwen2vl(frame[None], patch_size, temporal_patch_size, merge_size) for frame in frames]
    patches = torch.cat([patch for patch, _ in parts])
    t, h, w = parts[0][1].tolist()
    return patches, torch.tensor([len(frames), h, w])


def patchify_frames_as_channels(frames, patch_size, temporal_patch_size, merge_size):
    """Every frame its own tubelet of depth 1: the patch vectors are C·p·p long."""
    return patchify_qwen2vl(frames, patch_size, 1, merge_size)


def patchify_raster_order(frames, patch_size, temporal_patch_size, merge_size):
    T, C, H, W = frames.shape
    p, tps = patch_size, temporal_patch_size
    x = frames.reshape(T // tps, tps, C, H // p, p, W // p, p).permute(0, 3, 5, 2, 1, 4, 6)
    return x.reshape(-1, C * tps * p * p), torch.tensor([T // tps, H // p, W // p])


def patchify_grid_of_frames(frames, patch_size, temporal_patch_size, merge_size):
    patches, grid = patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)
    return patches, torch.tensor([len(frames), *grid[1:].tolist()])


def patchify_float_grid(frames, patch_size, temporal_patch_size, merge_size):
    patches, grid = patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)
    return patches, grid.float()


def patchify_as_float32(frames, patch_size, temporal_patch_size, merge_size):
    patches, grid = patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)
    return patches.float(), grid


def patchify_in_place(frames, patch_size, temporal_patch_size, merge_size):
    frames[0, 0, 0, 0] = 7.0
    return patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)


def _positions_wrong(**switches):
    def wrong(text_before, grid_thw, text_after, merge_size=2, seconds_per_grid=None, tokens_per_second=2):
        return ch09._positions_variant(text_before, tuple(grid_thw.tolist()), text_after, merge_size,
                                       seconds_per_grid, tokens_per_second, **switches)
    return wrong


def positions_one_id_per_token_after(text_before, grid_thw, text_after, merge_size=2, seconds_per_grid=None,
                                     tokens_per_second=2):
    """Written as a learner would: the text after the video at s + the number of video tokens."""
    ids = positions_by_loops(text_before, grid_thw, text_after, merge_size, seconds_per_grid, tokens_per_second)
    t, h, w = grid_thw.tolist()
    start = text_before + t * (h // merge_size) * (w // merge_size)
    if text_after:
        ids[:, -text_after:] = torch.arange(start, start + text_after)
    return ids


def positions_unmerged(text_before, grid_thw, text_after, merge_size=2, seconds_per_grid=None, tokens_per_second=2):
    return positions_by_loops(text_before, grid_thw, text_after, 1, seconds_per_grid, tokens_per_second)


def positions_transposed(*args, **kwargs):
    return positions_by_loops(*args, **kwargs).T


def positions_float(*args, **kwargs):
    return positions_by_loops(*args, **kwargs).float()


def positions_ignore_seconds(text_before, grid_thw, text_after, merge_size=2, seconds_per_grid=None,
                             tokens_per_second=2):
    return positions_by_loops(text_before, grid_thw, text_after, merge_size)


def _pool_wrong(make):
    def wrong(tokens, stride=2):
        _, h, w, _ = tokens.shape
        return make(tokens, stride, (math.ceil(h / stride), math.ceil(w / stride)))
    return wrong


pool_average = _pool_wrong(lambda x, s, size: F.avg_pool2d(x.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1))
pool_floor = _pool_wrong(lambda x, s, size: F.interpolate(
    x.permute(0, 3, 1, 2), size=(x.shape[1] // s, x.shape[2] // s), mode="bilinear").permute(0, 2, 3, 1))
pool_scale_factor = _pool_wrong(lambda x, s, size: F.interpolate(
    x.permute(0, 3, 1, 2), scale_factor=1 / s, mode="bilinear").permute(0, 2, 3, 1))
pool_align_corners = _pool_wrong(lambda x, s, size: F.interpolate(
    x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1))
pool_no_permute = _pool_wrong(lambda x, s, size: F.interpolate(x, size=size, mode="bilinear"))
pool_not_permuted_back = _pool_wrong(lambda x, s, size: F.interpolate(x.permute(0, 3, 1, 2), size=size,
                                                                      mode="bilinear"))
pool_reshape = _pool_wrong(lambda x, s, size: F.interpolate(
    x.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]), size=size, mode="bilinear").reshape(
    x.shape[0], *size, x.shape[3]))
pool_area = _pool_wrong(lambda x, s, size: F.interpolate(x.permute(0, 3, 1, 2), size=size,
                                                         mode="area").permute(0, 2, 3, 1))
pool_as_float32 = _pool_wrong(lambda x, s, size: pool_frame_tokens(x, s).float())


def pool_stride_ignored(tokens, stride=2):
    return pool_frame_tokens(tokens, 2)


MISTAKES = [
    (ch09.check_patchify_video, patchify_temporal_first, "the channel first, then the frame"),
    (ch09.check_patchify_video, _patchify_wrong(vector="tcyx"), "the channel first, then the frame"),
    (ch09.check_patchify_video, _patchify_wrong(vector="yxct"), "channels first"),
    (ch09.check_patchify_video, _patchify_wrong(vector="ctxy"), "(py, px), not (px, py)"),
    (ch09.check_patchify_video, patchify_every_frame, "not one tubelet per frame"),
    (ch09.check_patchify_video, _patchify_wrong(tubelets="per_frame"), "not one tubelet per frame"),
    (ch09.check_patchify_video, patchify_frames_as_channels, "not one tubelet per frame"),
    (ch09.check_patchify_video, patchify_raster_order, "plain raster order"),
    (ch09.check_patchify_video, _patchify_wrong(order="raster"), "plain raster order"),
    (ch09.check_patchify_video, _patchify_wrong(order="merge_transposed"), "(m_row, m_col), not"),
    (ch09.check_patchify_video, _patchify_wrong(order="columns_first"), "the window to the right comes next"),
    (ch09.check_patchify_video, patchify_grid_of_frames, "t counts tubelets"),
    (ch09.check_patchify_video, _patchify_wrong(grid="frames"), "t counts tubelets"),
    (ch09.check_patchify_video, _patchify_wrong(grid="merged"), "not merge windows"),
    (ch09.check_patchify_video, patchify_float_grid, "grid_thw has dtype torch.float32"),
    (ch09.check_patchify_video, patchify_as_float32, "expected torch.float64"),
    (ch09.check_patchify_video, patchify_in_place, "modified its input `frames` in place"),
    (ch09.check_video_position_ids, positions_one_id_per_token_after, "the number of video tokens"),
    (ch09.check_video_position_ids, _positions_wrong(after="tokens"), "the number of video tokens"),
    (ch09.check_video_position_ids, _positions_wrong(after="temporal"), "than the temporal stream"),
    (ch09.check_video_position_ids, _positions_wrong(after="t"), "than the temporal stream"),
    (ch09.check_video_position_ids, _positions_wrong(after="max_no_plus_one"), "not the largest id itself"),
    (ch09.check_video_position_ids, positions_ignore_seconds, "not the tubelet's index"),
    (ch09.check_video_position_ids, _positions_wrong(time="index"), "not the tubelet's index"),
    (ch09.check_video_position_ids, _positions_wrong(time="seconds"), "multiply by tokens_per_second too"),
    (ch09.check_video_position_ids, _positions_wrong(time="round"), "floor, not round"),
    (ch09.check_video_position_ids, _positions_wrong(swap=True), "the second one counts rows"),
    (ch09.check_video_position_ids, _positions_wrong(flat=True), "that is 1D RoPE"),
    (ch09.check_video_position_ids, positions_unmerged, "the video's run holds t·(h/m)·(w/m) tokens"),
    (ch09.check_video_position_ids, positions_transposed, "one row per stream"),
    (ch09.check_video_position_ids, positions_float, "dtype torch.int64"),
    (ch09.check_pool_frames, pool_average, "that is average pooling"),
    (ch09.check_pool_frames, pool_floor, "an odd side keeps its last row"),
    (ch09.check_pool_frames, pool_scale_factor, "last row"),
    (ch09.check_pool_frames, pool_align_corners, "align_corners=False"),
    (ch09.check_pool_frames, pool_no_permute, "permute the (F, h, w, D) maps to (F, D, h, w) first"),
    (ch09.check_pool_frames, pool_not_permuted_back, "permute the pooled (F, D, h', w') maps back"),
    (ch09.check_pool_frames, pool_reshape, "reshape does not move the channels"),
    (ch09.check_pool_frames, pool_area, "not by area averaging"),
    (ch09.check_pool_frames, pool_as_float32, "expected torch.float64"),
    (ch09.check_pool_frames, pool_stride_ignored, "has shape"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


KEY_CASES = [
    (ch09.check_patchify_video, patchify_by_loops, True),
    (ch09.check_patchify_video, patchify_temporal_first, False),
    (ch09.check_patchify_video, patchify_every_frame, False),
    (ch09.check_patchify_video, patchify_raster_order, False),
    (ch09.check_patchify_video, patchify_grid_of_frames, False),
    (ch09.check_video_position_ids, positions_by_loops, True),
    (ch09.check_video_position_ids, positions_one_id_per_token_after, False),
    (ch09.check_video_position_ids, _positions_wrong(after="t"), False),
    (ch09.check_video_position_ids, positions_ignore_seconds, False),
    (ch09.check_video_position_ids, _positions_wrong(swap=True), False),
    (ch09.check_pool_frames, pool_by_scale_factor, True),
    (ch09.check_pool_frames, pool_average, False),
    (ch09.check_pool_frames, pool_align_corners, False),
    (ch09.check_pool_frames, pool_floor, False),
    (ch09.check_pool_frames, pool_no_permute, False),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", KEY_CASES)
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and out.startswith("✅" if passes else "❌"), out


# ----------------------------------------------------------------------------- the experiment: area_counts

def _counts_wrong(**switches):
    return lambda videos, frame_index, rows, cols: ch09._counts_variant(videos, frame_index, rows, cols, **switches)


def counts_rows_from_x(videos, frame_index, rows, cols):
    """x and y swapped, written as a learner would."""
    x, y = videos.positions()
    return counts_by_one_hot_xy(videos, frame_index, rows, cols, y, x)


def counts_by_one_hot_xy(videos, frame_index, rows, cols, x, y):
    f = torch.where(frame_index >= 0, frame_index, 0)
    shown = videos.visible[:, :, f] & (frame_index >= 0)
    row = F.one_hot((y[:, :, f] * rows).floor().long().clamp(0, rows - 1), rows)
    col = F.one_hot((x[:, :, f] * cols).floor().long().clamp(0, cols - 1), cols)
    return torch.einsum("bnt,bntr,bntc->btrc", shown.float(), row.float(), col.float())


def counts_negative_wraps(videos, frame_index, rows, cols):
    """Indexing with the negative frames as they are: Python's x[-1] is the last frame."""
    x, y = videos.positions()
    shown = videos.visible[:, :, frame_index]
    row = F.one_hot((y[:, :, frame_index] * rows).floor().long().clamp(0, rows - 1), rows)
    col = F.one_hot((x[:, :, frame_index] * cols).floor().long().clamp(0, cols - 1), cols)
    return torch.einsum("bnt,bntr,bntc->btrc", shown.float(), row.float(), col.float())


def counts_shape_cols_rows(videos, frame_index, rows, cols):
    return area_counts(videos, frame_index, rows, cols).transpose(2, 3)


def counts_as_long(videos, frame_index, rows, cols):
    return area_counts(videos, frame_index, rows, cols).long()


def counts_in_place(videos, frame_index, rows, cols):
    frame_index.clamp_(min=0)
    return area_counts(videos, frame_index, rows, cols)


COUNT_MISTAKES = [
    (counts_rows_from_x, "the row is floor(y · rows)"),
    (_counts_wrong(swap=True), "the row is floor(y · rows)"),
    (_counts_wrong(flip=True), "row 0 is the top"),
    (_counts_wrong(on="present"), "not every object of the video"),
    (_counts_wrong(on="all"), "count only the objects on screen on that frame (videos.visible)"),
    (counts_negative_wraps, "must not wrap around"),
    (_counts_wrong(negative="wrap"), "must not wrap around"),
    (_counts_wrong(negative="clamp"), "not frame 0's counts"),
    (_counts_wrong(cell="round"), "floor, not round"),
    (counts_shape_cols_rows, "(B, T, rows, cols): rows down the image"),
    (counts_as_long, "return them as floats"),
    (counts_in_place, "modified its input `frame_index` in place"),
]


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("wrong, hint", COUNT_MISTAKES)
def test_count_mistakes_get_a_hint_before_any_training(wrong, hint, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch09, "_measure", stub)                  # they must fail on the probe, before training
    passed, out = grade(ch09.check_area_counts, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("fn", [counts_reference, counts_by_loops, counts_by_one_hot])
def test_correct_counts_pass_the_probe(fn, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch09, "_measure", stub)                  # reaching the experiment is passing the probe
    passed, out = grade(ch09.check_area_counts, fn)
    assert not passed and "not implemented yet" in out, out


def test_correct_counts_pass_the_measured_experiment(grade):
    """The full experiment, once: trains one time probe (about 3 s)."""
    passed, out = grade(ch09.check_area_counts, counts_by_one_hot)
    assert passed and out == "✅ area_counts: passed\n", out        # one line, the same every run (nbval compares it)


def test_too_little_training_fails_the_measured_threshold(monkeypatch, grade):
    monkeypatch.setattr(ch09, "PROBE_EXPERIMENT", {**ch09.PROBE_EXPERIMENT, "train_videos": 20, "test_videos": 20,
                                                   "steps": 1})
    passed, out = grade(ch09.check_area_counts, counts_reference)
    assert not passed and "after 1 steps on targets counted by your area_counts" in out, out
    assert "expected at least 80%" in out, out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch09.check_video_tokens_4s, lambda: 1024),
    (ch09.check_video_tokens_4s, lambda: torch.tensor(1024)),
    (ch09.check_absolute_time_id, lambda: 12),
    (ch09.check_raster_offset, lambda: 24),
])
def test_right_answers_pass(check, answer, grade):
    passed, out = grade(check, answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch09.check_video_tokens_4s, lambda: 4096, "the ViT's patch count"),
    (ch09.check_video_tokens_4s, lambda: 2048, "make t = 4 tubelets, not 8"),
    (ch09.check_video_tokens_4s, lambda: 8192, "frames come in pairs"),
    (ch09.check_video_tokens_4s, lambda: 256, "one frame pair's tokens"),
    (ch09.check_video_tokens_4s, lambda: 512, "so 4 pairs of them"),
    (ch09.check_video_tokens_4s, lambda: 16, "the merged grid's side"),
    (ch09.check_video_tokens_4s, lambda: 1000, "two per tubelet"),
    (ch09.check_video_tokens_4s, lambda: 1024.0, "should return an int"),
    (ch09.check_absolute_time_id, lambda: 3, "Qwen2-VL's temporal id"),
    (ch09.check_absolute_time_id, lambda: 6, "multiply by tokens_per_second too"),
    (ch09.check_absolute_time_id, lambda: 16, "the 4th frame pair is t_index 3"),
    (ch09.check_absolute_time_id, lambda: 24, "not its first frame's index 6"),
    (ch09.check_absolute_time_id, lambda: 5, "seconds_per_grid = 2 / fps"),
    (ch09.check_raster_offset, lambda: 1, "M-RoPE's offset in the temporal stream"),
    (ch09.check_raster_offset, lambda: -24, "positive"),
    (ch09.check_raster_offset, lambda: 48, "not two frames' worth"),
    (ch09.check_raster_offset, lambda: 96, "count merged tokens"),
    (ch09.check_raster_offset, lambda: 6, "one row of tokens"),
    (ch09.check_raster_offset, lambda: 4, "one column of tokens"),
    (ch09.check_raster_offset, lambda: 7, "frame pair after frame pair"),
    (ch09.check_raster_offset, lambda: "24", "should return an int"),
])
def test_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌") and hint in out, out


def test_the_answers_are_computed_from_the_package():
    assert ch09._absolute_time_offset(1.0, 3, 2) == 12
    assert ch09._absolute_time_offset(2.0, 3, 2) == 6                  # at 2 fps a pair is 1 s: half the ids
    assert ch09._raster_offset(4, 6) == 24
    frames = torch.zeros(8, 3, 448, 448)
    patches, grid = patchify_qwen2vl(frames, 14, 2, 2)
    assert grid.tolist() == [4, 32, 32] and len(patches) // 4 == 1024
