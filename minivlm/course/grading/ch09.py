"""Checks for chapter 09 (video: tubelets, M-RoPE over a video, per-frame pooling, the time probe).

    from minivlm.course.grading import ch09
    ch09.check_patchify_video(patchify_video)
    ch09.check_video_position_ids(video_position_ids)
    ch09.check_pool_frames(pool_frames)
    ch09.check_area_counts(area_counts)                # an experiment: trains a time probe for ~3 s
    ch09.check_video_tokens_4s(video_tokens_4s)        # concept questions
    ch09.check_absolute_time_id(absolute_time_id)
    ch09.check_raster_offset(raster_offset)

Each check draws its sizes, grids, times, videos and frames at random (`check_rng`), compares with the
reference (`minivlm.dynamic_resolution.patchify_qwen2vl`, `minivlm.rope.mrope_position_ids`,
`minivlm.video_frames.pool_frame_tokens`, `minivlm.time_probe.area_counts`) and recognises the usual
mistakes (the frame axis before the channel in a patch vector, every frame a tubelet of its own, raster
order, grid_thw counting frames; text after a video counted one id per token or from the temporal stream
only, the temporal id not scaled to absolute time, rows and columns swapped; average pooling or floor sizes,
align_corners=True, channels-last maps handed to F.interpolate; x and y swapped, off-screen objects counted,
negative frame indices wrapping around, cells by round) to give a specific hint.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F

from minivlm.course.grading import (Hint, answer_number, call_learner, check, check_rng, expect_equal,
                                    expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.data.video import VideoConfig, sample_videos
from minivlm.dynamic_resolution import patchify_qwen2vl
from minivlm.rope import mrope_position_ids
from minivlm.time_probe import Arm, area_counts, encode_videos, probe_accuracy, source_config, train_probe
from minivlm.video_frames import pool_frame_tokens, seconds_per_grid


# -----------------------------------------------------------------------------
# tubelets: two frames per 3D patch, in Qwen2-VL's order


def _tubelet_variant(frames, p, tps, m, *, order="merge", vector="ctyx", tubelets="grouped", grid="tubelets"):
    """patchify_qwen2vl on a video, written out, with switches for the usual mistakes."""
    T0 = frames.shape[0]
    if tubelets == "per_frame":                      # every frame repeated into a tubelet of its own
        frames = frames.repeat_interleave(tps, dim=0)
    T, C, H, W = frames.shape
    t, h, w = T // tps, H // p, W // p
    x = frames.reshape(t, tps, C, h // m, m, p, w // m, m, p)
    # axes: 0 t, 1 tps, 2 C, 3 h/m, 4 m_row, 5 py, 6 w/m, 7 m_col, 8 px
    token = {"merge": (0, 3, 6, 4, 7), "raster": (0, 3, 4, 6, 7), "merge_transposed": (0, 3, 6, 7, 4),
             "columns_first": (0, 6, 3, 4, 7)}[order]
    inside = {"ctyx": (2, 1, 5, 8), "tcyx": (1, 2, 5, 8), "yxct": (5, 8, 2, 1), "ctxy": (2, 1, 8, 5)}[vector]
    patches = x.permute(*token, *inside).reshape(t * h * w, C * tps * p * p)
    sizes = {"tubelets": [t, h, w], "frames": [T0, h, w], "merged": [t, h // m, w // m]}[grid]
    return patches, torch.tensor(sizes, device=frames.device)


TUBELET_MISTAKES = [
    (dict(vector="tcyx"), "each patch vector is (channel, temporal, py, px), what the Conv3d's weight "
                          "(D, C, tps, p, p) reads: the channel first, then the frame within the tubelet."),
    (dict(vector="yxct"), "each patch vector is (channel, temporal, py, px): channels first, not pixels first."),
    (dict(vector="ctxy"), "inside a patch the pixels go row by row: (py, px), not (px, py)."),
    (dict(order="raster"), "that is plain raster order (row by row of patches): Qwen2-VL orders the tokens "
                           "(t, h/m, w/m, m_row, m_col), so each m×m merge window is m² consecutive tokens."),
    (dict(order="merge_transposed"), "inside a merge window the patches go row by row: (m_row, m_col), not "
                                     "(m_col, m_row)."),
    (dict(order="columns_first"), "the merge windows go row by row, (h/m, w/m): the window to the right comes "
                                  "next, not the one below."),
]
PER_FRAME_HINT = ("t = T / temporal_patch_size, not one tubelet per frame: frames 0 and 1 make tubelet 0, "
                  "frames 2 and 3 tubelet 1, ….")


@check("patchify_video", points=2)
def check_patchify_video(patchify_video_fn):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [  # (tubelets t, C, patch_size, temporal_patch_size, merge_size, merge windows down, across, dtype)
        (rng.randint(2, 3), rng.choice([1, 3]), rng.randint(2, 4), 2, 2, rng.randint(2, 3), rng.randint(2, 3),
         torch.float32),
        (rng.randint(2, 4), 3, rng.randint(2, 3), 2, rng.choice([2, 3]), rng.randint(2, 3), rng.randint(1, 3),
         torch.float64),
        (rng.randint(2, 3), rng.randint(1, 2), 2, 3, 2, rng.randint(1, 3), rng.randint(2, 3), torch.float32),
        (1, 3, rng.randint(2, 3), 2, 2, rng.randint(2, 3), rng.randint(1, 2), torch.float32),    # one tubelet
    ]
    for t, C, p, tps, m, down, across, dtype in cases:
        T, H, W = t * tps, down * m * p, across * m * p
        frames = torch.randn(T, C, H, W, generator=g, dtype=dtype)
        what = (f"patchify_video(frames ({T}, {C}, {H}, {W}), patch_size={p}, temporal_patch_size={tps}, "
                f"merge_size={m})")
        expected, expected_grid = patchify_qwen2vl(frames, p, tps, m)
        out = call_learner(patchify_video_fn, frames, p, tps, m, what="patchify_video")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Hint(f"{what} should return two things, (patches, grid_thw), got {type(out).__name__}.")
        patches, grid = out
        if isinstance(patches, torch.Tensor) and tuple(patches.shape) in ((T * (H // p) * (W // p), C * tps * p * p),
                                                                         (T * (H // p) * (W // p), C * p * p)):
            raise Hint(f"{what}'s patches have shape {tuple(patches.shape)}, expected {tuple(expected.shape)}. "
                       f"Hint: {PER_FRAME_HINT}")
        expect_shape(patches, expected.shape, f"{what}'s patches",
                     hint="one row per patch (t·h·w of them, t = T / temporal_patch_size), each C·tps·p·p long.")
        if patches.dtype != frames.dtype:
            raise Hint(f"{what}'s patches have dtype {patches.dtype}, expected {frames.dtype} (the frames' own).")
        mistakes = [(_tubelet_variant(frames, p, tps, m, **switches)[0], hint) for switches, hint in TUBELET_MISTAKES]
        expect_known_mistakes(patches, expected, mistakes, f"{what}'s patches", exact=True,
                              hint="reshape to (t, tps, C, h/m, m, p, w/m, m, p), then permute to "
                                   "(t, h/m, w/m, m_row, m_col, C, tps, py, px).")
        if not isinstance(grid, torch.Tensor):
            raise Hint(f"{what}'s grid_thw should be a tensor (3,) of dtype torch.int64, got {type(grid).__name__}.")
        for sizes, hint in [
            (_tubelet_variant(frames, p, tps, m, grid="frames")[1], "t counts tubelets, T / temporal_patch_size, "
                                                                    "not frames."),
            (_tubelet_variant(frames, p, tps, m, grid="merged")[1], "grid_thw counts patches, (t, H/p, W/p), not "
                                                                    "merge windows."),
        ]:
            if (grid.shape == sizes.shape and torch.equal(grid.cpu().long(), sizes)
                    and not torch.equal(sizes, expected_grid)):
                raise Hint(f"{what}'s grid_thw is {grid.tolist()}, expected {expected_grid.tolist()}. Hint: {hint}")
        expect_equal(grid, expected_grid, f"{what}'s grid_thw",
                     hint="(t, h, w): tubelets, patch rows, patch columns, as torch.int64.")


# -----------------------------------------------------------------------------
# M-RoPE position ids of text, a video, text


TEXT_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN = 5, 3, 4


def _reference_positions(text_before, grid, text_after, m, seconds, tokens_per_second):
    """(3, L) long from minivlm.rope.mrope_position_ids, for text, one video of grid (t, h, w), text."""
    t, h, w = grid
    run = t * (h // m) * (w // m)
    input_ids = torch.tensor([[TEXT_TOKEN] * text_before + [VIDEO_TOKEN] * run + [TEXT_TOKEN] * text_after])
    ids, _ = mrope_position_ids(input_ids, None, torch.tensor([[t, h, w]]), image_token_id=IMAGE_TOKEN,
                                video_token_id=VIDEO_TOKEN, spatial_merge_size=m, video_seconds_per_grid=seconds,
                                tokens_per_second=tokens_per_second)
    return ids[:, 0]


def _positions_variant(text_before, grid, text_after, m, seconds, tokens_per_second, *, after="max",
                       time="absolute", swap=False, flat=False):
    """The ids written out, with switches for the usual mistakes."""
    t, h, w = grid
    hm, wm = h // m, w // m
    s = text_before
    if flat:                                          # 1D RoPE: every token its index in all three streams
        L = s + t * hm * wm + text_after
        return torch.arange(L).expand(3, L).clone()
    index = torch.arange(t, dtype=torch.float64)
    if seconds is None or time == "index":
        time_ids = index.long()
    elif time == "seconds":                           # seconds, not scaled by tokens_per_second
        time_ids = (index * seconds).floor().long()
    elif time == "round":
        time_ids = (index * seconds * tokens_per_second).round().long()
    else:
        time_ids = (index * seconds * tokens_per_second).floor().long()
    block = torch.stack([time_ids[:, None, None].expand(t, hm, wm),
                         torch.arange(hm)[None, :, None].expand(t, hm, wm),
                         torch.arange(wm)[None, None, :].expand(t, hm, wm)]).reshape(3, -1) + s
    if swap:
        block = block[[0, 2, 1]]
    start = {"max": int(block.max()) + 1, "tokens": s + block.shape[1], "temporal": int(block[0].max()) + 1,
             "t": s + t, "max_no_plus_one": int(block.max())}[after]
    return torch.cat([torch.arange(s).expand(3, s), block, torch.arange(text_after).expand(3, text_after) + start],
                     dim=1)


POSITION_MISTAKES = [
    (dict(after="tokens"), "that counts the text after the video from s + the number of video tokens, as 1D RoPE "
                           "does: with M-RoPE it continues at the video block's largest id + 1."),
    (dict(after="temporal"), "the text after the video continues at the block's largest id + 1 over all three "
                             "streams: the rows and columns count further than the temporal stream."),
    (dict(after="t"), "the text after the video continues at the block's largest id + 1 over all three streams "
                      "(not s + t): the rows, the columns or the absolute times may count further."),
    (dict(after="max_no_plus_one"), "the first text token after the video takes the block's largest id + 1, not "
                                    "the largest id itself."),
    (dict(time="index"), "with seconds_per_grid, the temporal id is Qwen2.5-VL's absolute time: "
                         "floor(t_index · seconds_per_grid · tokens_per_second), not the tubelet's index."),
    (dict(time="seconds"), "the temporal id is floor(t_index · seconds_per_grid · tokens_per_second): multiply by "
                           "tokens_per_second too."),
    (dict(time="round"), "the temporal id is floor(t_index · seconds_per_grid · tokens_per_second): floor, not "
                         "round."),
    (dict(swap=True), "the streams are (temporal, row, col): the second one counts rows of the merged grid, the "
                      "third columns."),
    (dict(flat=True), "that is 1D RoPE, every token its own index: the video block gets (s + t, s + row, s + col) "
                      "over its merged grid."),
]


def _position_cases(rng):
    # (text_before, (t, h, w), text_after, merge_size, seconds_per_grid, tokens_per_second); None: not passed
    return [
        (rng.randint(1, 4), (2, 2 * rng.randint(2, 3), 2 * rng.randint(4, 5)), rng.randint(1, 3), None, None, None),
        (rng.randint(1, 3), (rng.randint(1, 2), 3 * rng.randint(1, 3), 3 * rng.randint(2, 3)), rng.randint(2, 3),
         3, None, None),
        (rng.randint(1, 3), (rng.randint(3, 4), 2 * rng.randint(1, 2), 2 * rng.randint(2, 3)), rng.randint(1, 3),
         2, rng.choice([1.5, 2.0]), None),
        (rng.randint(2, 4), (rng.randint(4, 5), 2, 2 * rng.randint(1, 3)), rng.randint(1, 2), None,
         rng.choice([0.75, 1.25]), rng.choice([2, 4])),
        (0, (rng.randint(3, 4), rng.randint(2, 4), rng.randint(2, 4)), rng.randint(1, 3), 1, 1.5, 1),
    ]


@check("video_position_ids", points=2)
def check_video_position_ids(video_position_ids_fn):
    rng = check_rng()
    for text_before, grid, text_after, merge, seconds, tps in _position_cases(rng):
        m = 2 if merge is None else merge
        tokens_per_second = 2 if tps is None else tps
        kwargs = {key: value for key, value in (("merge_size", merge), ("seconds_per_grid", seconds),
                                                 ("tokens_per_second", tps)) if value is not None}
        grid_thw = torch.tensor(grid)
        arguments = ", ".join([f"text_before={text_before}", f"grid_thw {list(grid)}", f"text_after={text_after}"]
                              + [f"{key}={value}" for key, value in kwargs.items()])
        what = f"video_position_ids({arguments})"
        expected = _reference_positions(text_before, grid, text_after, m, seconds, tokens_per_second)
        out = call_learner(video_position_ids_fn, text_before, grid_thw, text_after, what="video_position_ids",
                           **kwargs)
        L = expected.shape[1]
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (L, 3) and L != 3:
            raise Hint(f"{what} has shape {tuple(out.shape)}, expected (3, {L}). Hint: one row per stream "
                       "(temporal, row, col), one column per token.")
        unmerged = text_before + grid[0] * grid[1] * grid[2] + text_after
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] == unmerged and m > 1:
            raise Hint(f"{what} has shape {tuple(out.shape)}, expected (3, {L}). Hint: grid_thw counts patches "
                       f"before the {m}×{m} merge; the video's run holds t·(h/m)·(w/m) tokens.")
        expect_shape(out, (3, L), what, hint="(3, text_before + t·(h/m)·(w/m) + text_after).")
        if out.dtype != torch.long:
            raise Hint(f"{what} should hold integer ids of dtype torch.int64, got {out.dtype}.")
        mistakes = [(_positions_variant(text_before, grid, text_after, m, seconds, tokens_per_second, **switches),
                     hint) for switches, hint in POSITION_MISTAKES]
        expect_known_mistakes(out, expected, mistakes, what, exact=True,
                              hint="text ids count up in all three streams; the video block, from the next id s, "
                                   "is (s + time, s + row, s + col) over the merged grid in raster order; the text "
                                   "after it continues at the block's largest id + 1.")


# -----------------------------------------------------------------------------
# LLaVA-OneVision's per-frame pooling


def _pool_mistakes(tokens, stride):
    _, h, w, _ = tokens.shape
    ceil_size, floor_size = (math.ceil(h / stride), math.ceil(w / stride)), (h // stride, w // stride)
    maps = tokens.permute(0, 3, 1, 2)
    back = lambda pooled: pooled.permute(0, 2, 3, 1)
    bilinear = lambda x, size, corners=False: F.interpolate(x, size=size, mode="bilinear", align_corners=corners)
    scrambled = tokens.reshape(tokens.shape[0], tokens.shape[3], h, w)
    return [
        (back(F.avg_pool2d(maps, stride)), "that is average pooling, and its floor sizes drop an odd side's last "
                                           "row: LLaVA-OneVision interpolates bilinearly to ceil(side / stride)."),
        (back(bilinear(maps, floor_size)), "the pooled sides are ceil(h / stride) × ceil(w / stride): an odd side "
                                           "keeps its last row (math.ceil, not //)."),
        (back(F.avg_pool2d(maps, stride, ceil_mode=True)), "that is average pooling with ceil_mode: LLaVA-OneVision "
                                                           "interpolates bilinearly (F.interpolate, "
                                                           "mode=\"bilinear\")."),
        (back(F.interpolate(maps, size=ceil_size, mode="area")), "LLaVA-OneVision interpolates bilinearly "
                                                                 "(mode=\"bilinear\"), not by area averaging."),
        (back(F.interpolate(maps, size=ceil_size, mode="nearest")), "LLaVA-OneVision interpolates bilinearly "
                                                                    "(mode=\"bilinear\"), not nearest."),
        (back(bilinear(maps, ceil_size, corners=True)), "use align_corners=False, as LLaVA-OneVision's get_2dPool "
                                                        "(and the rest of the course) does."),
        (bilinear(tokens, ceil_size), "F.interpolate reads (N, C, H, W): permute the (F, h, w, D) maps to "
                                      "(F, D, h, w) first, and back after."),
        (bilinear(maps, ceil_size), "permute the pooled (F, D, h', w') maps back to (F, h', w', D)."),
        (bilinear(scrambled, ceil_size).reshape(tokens.shape[0], *ceil_size, tokens.shape[3]),
         "reshape does not move the channels: permute (F, h, w, D) to (F, D, h, w), and back after."),
    ]


@check("pool_frames", points=2)
def check_pool_frames(pool_frames_fn):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [  # (frames, h, w, D, stride or None, dtype)
        (rng.randint(1, 3), rng.choice([3, 5]), rng.choice([4, 6]), rng.randint(2, 6), None, torch.float32),
        (rng.randint(2, 4), rng.choice([4, 6]), rng.choice([5, 7]), rng.randint(3, 5), 2, torch.float64),
        (rng.randint(1, 2), rng.choice([5, 7]), rng.choice([5, 7, 8]), rng.randint(2, 4), 3, torch.float32),
        (rng.randint(2, 3), rng.choice([4, 6]), rng.choice([4, 8]), rng.randint(2, 4), None, torch.float32),
    ]
    for frames, h, w, D, stride, dtype in cases:
        tokens = torch.randn(frames, h, w, D, generator=g, dtype=dtype)
        s = 2 if stride is None else stride
        what = f"pool_frames(tokens ({frames}, {h}, {w}, {D})" + ("" if stride is None else f", stride={stride}") + ")"
        expected = pool_frame_tokens(tokens, s)
        out = (call_learner(pool_frames_fn, tokens, what="pool_frames") if stride is None
               else call_learner(pool_frames_fn, tokens, stride, what="pool_frames"))
        if isinstance(out, torch.Tensor) and out.dtype != dtype and out.is_floating_point():
            raise Hint(f"{what} has dtype {out.dtype}, expected {dtype} (the tokens' own).")
        try:
            expect_known_mistakes(out, expected, _pool_mistakes(tokens, s), what,
                                  hint="permute to (F, D, h, w), F.interpolate(size=(ceil(h/stride), "
                                       "ceil(w/stride)), mode=\"bilinear\", align_corners=False), permute back to "
                                       "(F, h', w', D).")
        except Hint as error:
            floor = (frames, h // s, w // s, D)
            if "has shape" in str(error) and tuple(out.shape) == floor != tuple(expected.shape):
                raise Hint(f"{what} has shape {floor}, expected {tuple(expected.shape)}. Hint: the pooled sides are "
                           "ceil(h / stride) × ceil(w / stride): an odd side keeps its last row.") from None
            raise


# -----------------------------------------------------------------------------
# the experiment: the time probe's targets, and a probe trained on them

# A TimeProbe (minivlm.time_probe: a tiny Qwen2VL, a one-layer ViT with 8-px patches and tubelets of two frames,
# the 2x2 merger, a one-layer LM with M-RoPE, and a Linear count head on every visual token) trained 150 steps on
# 300 train-split 32x32 videos (16 source frames, 8 read: 4 frame pairs of 2 x 2 tokens), the targets counted by
# the learner's area_counts; tested on 100 test-split videos against the reference's counts: how many shapes are
# in each quadrant on each frame pair's first frame ("now")? About 3 s at one thread on a 2-core CPU, seeded: the
# same every time. Over probe seeds 0-7 (the same videos) the reference's counts gave 93.7-94.7% right (seed 0:
# 94.1%); answering "zero" everywhere gets 67.9% (most quadrants are empty), a probe trained on the counts of
# other videos (shuffled) 69.5%, on all-zero counts 67.9%. The check asks for 80%, 13.7 points under the worst
# seed and 12 over the all-zero answer.
PROBE_EXPERIMENT = dict(size=32, train_videos=300, test_videos=100, steps=150, seed=0)
MIN_NOW = 80.0            # % of the test quadrants counted right ("now") by a probe trained on the learner's counts


def _counts_variant(videos, frame_index, rows, cols, *, swap=False, flip=False, on="visible", negative="zeros",
                    cell="floor"):
    """area_counts written out, with switches for the usual mistakes."""
    x, y = videos.positions()                                          # (B, N, F)
    if swap:
        x, y = y, x
    if flip:
        y = 1 - y
    shown = {"visible": videos.visible, "present": videos.present[..., None].expand_as(videos.visible),
             "all": torch.ones_like(videos.visible)}[on]
    frames = x.shape[-1]
    if negative == "wrap":                                              # x[..., -1] is the last frame
        f, keep = frame_index % frames, torch.ones_like(frame_index, dtype=torch.bool)
    elif negative == "clamp":
        f, keep = frame_index.clamp(min=0), torch.ones_like(frame_index, dtype=torch.bool)
    else:
        f, keep = frame_index.clamp(min=0), frame_index >= 0
    x, y, shown = x[:, :, f], y[:, :, f], shown[:, :, f] & keep                              # (B, N, T)
    to_cell = torch.floor if cell == "floor" else torch.round
    row = to_cell(y * rows).long().clamp(0, rows - 1)
    col = to_cell(x * cols).long().clamp(0, cols - 1)
    counts = torch.zeros(len(videos), len(frame_index), rows * cols)
    counts.scatter_add_(2, (row * cols + col).transpose(1, 2), shown.transpose(1, 2).float())
    return counts.reshape(len(videos), len(frame_index), rows, cols)


COUNT_MISTAKES = [
    (dict(swap=True), "x runs left to right (columns), y top to bottom (rows): the row is floor(y · rows), the "
                      "column floor(x · cols)."),
    (dict(flip=True), "y grows downwards (image units): row 0 is the top of the image, floor(y · rows)."),
    (dict(on="present"), "count only the objects on screen on that frame (videos.visible), not every object of "
                         "the video."),
    (dict(on="all"), "count only the objects on screen on that frame (videos.visible): empty slots and objects "
                     "that have left are not there."),
    (dict(negative="wrap"), "a frame index < 0 is before the video starts: nothing is on screen, all zeros (a "
                            "negative index must not wrap around to the last frames)."),
    (dict(negative="clamp"), "a frame index < 0 is before the video starts: all zeros, not frame 0's counts."),
    (dict(cell="round"), "an object at y lies in row floor(y · rows) (cell k covers [k/rows, (k+1)/rows)): floor, "
                         "not round."),
]


def _copy_videos(videos):
    """The VideoBatch with every tensor cloned, for the learner (call_learner copies only tensors)."""
    return dataclasses.replace(videos, **{f.name: getattr(videos, f.name).clone()
                                          for f in dataclasses.fields(videos) if f.name != "config"})


def _count_cases(rng, g):
    cases = []
    for rows, cols in [(rng.randint(2, 3), rng.randint(4, 5)), (2, 2), (rng.randint(3, 5), rng.randint(1, 2))]:
        frames = rng.randint(8, 16)
        config = VideoConfig(frames=frames, image_size=32, max_objects=rng.randint(2, 4), min_speed=0.02,
                             max_speed=0.045)
        videos = sample_videos(rng.randint(4, 6), config, generator=g)
        hidden = (videos.present[..., None] & ~videos.visible).any(0).any(0).nonzero().flatten().tolist()
        index = [rng.randint(-4, -1), rng.randrange(frames), rng.randrange(frames)]
        if hidden:                                      # a frame where an object of the video is off screen
            index.append(rng.choice(hidden))
        index += [rng.randrange(frames) for _ in range(rng.randint(0, 2))]
        rng.shuffle(index)
        cases.append((videos, torch.tensor(index), rows, cols))
    return cases


def _probe_counts(area_counts_fn, rng):
    """The learner's counts against the reference on random videos, frames (some < 0) and grids."""
    g = torch_generator(rng)
    for videos, frame_index, rows, cols in _count_cases(rng, g):
        B, T = len(videos), len(frame_index)
        what = (f"area_counts(videos ({B} videos of {videos.config.frames} frames), frame_index "
                f"{frame_index.tolist()}, rows={rows}, cols={cols})")
        expected = area_counts(videos, frame_index, rows, cols)
        out = call_learner(area_counts_fn, _copy_videos(videos), frame_index, rows, cols, what="area_counts")
        if isinstance(out, torch.Tensor) and rows != cols and tuple(out.shape) == (B, T, cols, rows):
            raise Hint(f"{what} has shape {tuple(out.shape)}, expected {tuple(expected.shape)}. Hint: (B, T, rows, "
                       "cols): rows down the image, columns across.")
        expect_shape(out, expected.shape, what,
                     hint="(B, T, rows, cols): a count per cell, per frame asked, per video.")
        if out.dtype != expected.dtype:
            raise Hint(f"{what} has dtype {out.dtype}, expected {expected.dtype}: the probe regresses the counts, "
                       "so return them as floats (.float()).")
        mistakes = [(_counts_variant(videos, frame_index, rows, cols, **switches), hint)
                    for switches, hint in COUNT_MISTAKES]
        expect_known_mistakes(out, expected, mistakes, what, exact=True,
                              hint="on frame f, each object with videos.visible[b, n, f] adds 1 to cell "
                                   "(floor(y · rows), floor(x · cols)) of its (x, y) = videos.positions() there; "
                                   "frames < 0 count nothing.")


def _measure(area_counts_fn, setup):
    """probe_accuracy ({"now", "then", ...}: % right) of a probe trained on the learner's counts."""
    size, seed = setup["size"], setup["seed"]
    arm = Arm(sizes=(size,))
    config = source_config(size)
    train = sample_videos(setup["train_videos"], config, generator=torch.Generator().manual_seed(seed), split="train")
    test = sample_videos(setup["test_videos"], config, generator=torch.Generator().manual_seed(seed + 1), split="test")

    def counts(videos, frame_index, rows, cols):
        return call_learner(area_counts_fn, _copy_videos(videos), frame_index, rows, cols, what="area_counts")

    model = train_probe(arm, seed, {size: encode_videos(train, arm, counts=counts)}, steps=setup["steps"])
    return probe_accuracy(model, encode_videos(test, arm))           # scored against the reference's counts


@check("area_counts", points=3)
def check_area_counts(area_counts_fn):
    rng = check_rng()
    setup = PROBE_EXPERIMENT
    with torch.random.fork_rng(devices=[]), one_thread():
        for _ in range(2):                              # 1. the function itself (fast: no training)
            _probe_counts(area_counts_fn, rng)
        accuracy = _measure(area_counts_fn, setup)      # 2. measured: a probe trained on these targets
    if not accuracy["now"] >= MIN_NOW:
        size = setup["size"]
        then = "" if accuracy.get("then") is None else f" (and {accuracy['then']:.0f}% half a second back)"
        raise Hint(f"after {setup['steps']} steps on targets counted by your area_counts, the probe counted the "
                   f"shapes in a quadrant right on {accuracy['now']:.0f}% of the {size}x{size} test frames{then}; "
                   f"expected at least {MIN_NOW:.0f}% (answering 0 everywhere gets about 68%). Hint: the targets "
                   "are area_counts(videos, first frame of each pair, 2, 2).")


# -----------------------------------------------------------------------------
# concept questions


VIDEO_QUESTION = dict(seconds=4, fps=2, image_size=448, patch_size=14, temporal_patch_size=2, merge_size=2)


@check("video_tokens_4s", points=1)
def check_video_tokens_4s(video_tokens_4s):
    q = VIDEO_QUESTION
    answer = answer_number(call_learner(video_tokens_4s, what="video_tokens_4s"), "video_tokens_4s()", integer=True)
    frames = torch.zeros(q["seconds"] * q["fps"], 3, q["image_size"], q["image_size"])
    patches, grid = patchify_qwen2vl(frames, q["patch_size"], q["temporal_patch_size"], q["merge_size"])
    expected = len(patches) // q["merge_size"] ** 2                   # what the PatchMerger gives the LM
    if answer == expected:
        return
    t, h, w = grid.tolist()
    per_pair = h * w // q["merge_size"] ** 2
    for wrong, hint in [
        (len(patches), "that is the ViT's patch count: the PatchMerger turns each 2×2 window of patches into one "
                       "token before the LM."),
        (len(frames) * per_pair, "two consecutive frames share every 3D patch (temporal_patch_size = 2): 8 frames "
                                 "make t = 4 tubelets, not 8."),
        (len(frames) * h * w, "frames come in pairs (t = 4 tubelets), and each 2×2 window of patches is one token."),
        (per_pair, "that is one frame pair's tokens: the video has 4 s × 2 fps = 8 frames, 4 pairs."),
        (q["seconds"] * per_pair // 2, "at 2 fps a 4-second video has 8 frames, so 4 pairs of them."),
        (h // 2, "that is the merged grid's side: count tokens, 16 × 16 per frame pair."),
    ]:
        if answer == wrong:
            raise Hint(f"video_tokens_4s() is {answer}. Hint: {hint}")
    raise Hint(f"video_tokens_4s() is {answer}. Hint: 4 s × 2 fps frames, two per tubelet; 448/14 patches a side, "
               "each 2×2 window of them one token.")


TIME_QUESTION = dict(fps=1.0, t_index=3, tokens_per_second=2)


def _absolute_time_offset(fps, t_index, tokens_per_second):
    """The temporal id of tubelet t_index minus the video's first, from mrope_position_ids with absolute time."""
    t = t_index + 1
    ids = _reference_positions(0, (t, 2, 2), 0, 2, seconds_per_grid(fps), tokens_per_second)
    return int(ids[0, -1] - ids[0, 0])


@check("absolute_time_id", points=1)
def check_absolute_time_id(absolute_time_id):
    q = TIME_QUESTION
    answer = answer_number(call_learner(absolute_time_id, what="absolute_time_id"), "absolute_time_id()",
                           integer=True)
    expected = _absolute_time_offset(q["fps"], q["t_index"], q["tokens_per_second"])
    if answer == expected:
        return
    seconds = seconds_per_grid(q["fps"])
    for wrong, hint in [
        (q["t_index"], "that is Qwen2-VL's temporal id, the tubelet's index: Qwen2.5-VL's is "
                       "floor(t_index · seconds_per_grid · tokens_per_second)."),
        (int(q["t_index"] * seconds), "that is the pair's time in seconds: multiply by tokens_per_second too."),
        (int((q["t_index"] + 1) * seconds * q["tokens_per_second"]), "the 4th frame pair is t_index 3 (the first "
                                                                     "is 0)."),
        (int(2 * q["t_index"] * seconds * q["tokens_per_second"]), "t_index counts tubelets (frame pairs): the "
                                                                   "4th pair is t_index 3, not its first frame's "
                                                                   "index 6."),
    ]:
        if answer == wrong:
            raise Hint(f"absolute_time_id() is {answer}. Hint: {hint}")
    raise Hint(f"absolute_time_id() is {answer}. Hint: seconds_per_grid = 2 / fps; the temporal id is "
               "floor(t_index · seconds_per_grid · tokens_per_second).")


RASTER_QUESTION = dict(merged_rows=4, merged_cols=6)


def _raster_offset(merged_rows, merged_cols):
    """1D RoPE on a video's tokens in patchify order: index of a token minus that of the same place one pair back."""
    p, m = 2, 2
    frames = torch.zeros(4, 1, merged_rows * m * p, merged_cols * m * p)
    patches, grid = patchify_qwen2vl(frames, p, 2, m)
    return len(patches) // m ** 2 // int(grid[0])                    # tokens per tubelet, one index each


@check("raster_offset", points=1)
def check_raster_offset(raster_offset):
    q = RASTER_QUESTION
    answer = answer_number(call_learner(raster_offset, what="raster_offset"), "raster_offset()", integer=True)
    expected = _raster_offset(q["merged_rows"], q["merged_cols"])
    if answer == expected:
        return
    rows, cols = q["merged_rows"], q["merged_cols"]
    for wrong, hint in [
        (1, "that is M-RoPE's offset in the temporal stream (Δt = 1, Δrow = Δcol = 0): in raster order every token "
            "has one index, and a whole frame pair's tokens lie in between."),
        (-rows * cols, "the offset between the token and the one a pair earlier, as a distance: positive."),
        (2 * rows * cols, "a frame pair (one tubelet) is one step back: h' · w' tokens, not two frames' worth."),
        (4 * rows * cols, "count merged tokens: the LM reads h' × w' = 4 × 6 of them per frame pair."),
        (cols, "that is one row of tokens: one frame pair back is all h' rows of w' tokens."),
        (rows, "that is one column of tokens: one frame pair back is all h' rows of w' tokens."),
    ]:
        if answer == wrong:
            raise Hint(f"raster_offset() is {answer}. Hint: {hint}")
    raise Hint(f"raster_offset() is {answer}. Hint: in raster order the tokens go frame pair after frame pair, "
               "each pair's h' × w' map row by row.")
