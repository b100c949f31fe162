"""The chapter 08 checks pass the reference and other correct implementations, say "not implemented yet"
to a stub, and give a specific hint (not a pass) to typical mistakes, whatever sizes they draw."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from minivlm.anyres import select_best_resolution
from minivlm.course.grading import ch08
from minivlm.data.canvas import canvas_configs, sample_canvas_scenes
from minivlm.detail_probe import ARMS, encode_canvases
from minivlm.dynamic_resolution import block_diagonal_mask, patchify_qwen2vl, vision_position_ids
from minivlm.window_attention import window_index
from test_window_attention import reference_window_index

SEEDS = [1, 2, 3, 4]


def stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- correct implementations

def patchify_reference(frames, patch_size, temporal_patch_size, merge_size):
    if frames.shape[0] == 1:
        frames = frames.repeat(temporal_patch_size, 1, 1, 1)
    T, C, H, W = frames.shape
    p, tps, m = patch_size, temporal_patch_size, merge_size
    t, h, w = T // tps, H // p, W // p
    x = frames.reshape(t, tps, C, h // m, m, p, w // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, -1), torch.tensor([t, h, w])


def patchify_by_loops(frames, patch_size, temporal_patch_size, merge_size):
    """Merge window by merge window, patch by patch: each patch vector a (C, tps, p, p) volume flattened."""
    if frames.shape[0] == 1:
        frames = torch.cat([frames] * temporal_patch_size)
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


def positions_by_loops(grid_thw, merge_size):
    ids = []
    for t, h, w in grid_thw.tolist():
        one = [(wr * merge_size + r, wc * merge_size + c) for wr in range(h // merge_size)
               for wc in range(w // merge_size) for r in range(merge_size) for c in range(merge_size)]
        ids += one * t
    return torch.tensor(ids)


def positions_by_patchify(grid_thw, merge_size):
    """The (row, col) of each patch is what patchify_qwen2vl puts there when patch (r, c) holds the value r, c."""
    ids = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h).repeat_interleave(2)[None, None, :, None].expand(1, 1, 2 * h, 2 * w)
        cols = torch.arange(w).repeat_interleave(2)[None, None, None, :].expand(1, 1, 2 * h, 2 * w)
        frames = torch.cat([rows, cols], dim=1).float()                        # (1, 2, 2h, 2w), patches of 2 px
        patches, _ = patchify_qwen2vl(frames, 2, 1, merge_size)
        ids.append(patches.reshape(-1, 2, 4)[:, :, 0].long().repeat(t, 1))
    return torch.cat(ids)


def mask_by_repeat_interleave(cu_seqlens):
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    block = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    return block[:, None] == block[None, :]


def mask_by_block_diag(cu_seqlens):
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    return torch.block_diag(*[torch.ones(n, n) for n in lengths]).bool()


def window_index_by_loops(grid_thw, window_size, patch_size, merge_size):
    side = window_size // (patch_size * merge_size)
    index, cu, offset = [], [0], 0
    for t, h, w in grid_thw.tolist():
        uh, uw = h // merge_size, w // merge_size
        for f in range(t):
            for r0 in range(0, uh, side):
                for c0 in range(0, uw, side):
                    window = [offset + f * uh * uw + r * uw + c for r in range(r0, min(r0 + side, uh))
                              for c in range(c0, min(c0 + side, uw))]
                    index += window
                    cu.append(cu[-1] + len(window) * merge_size ** 2)
        offset += t * uh * uw
    return torch.tensor(index), torch.tensor(cu)


window_index_transformers = reference_window_index      # transformers' get_window_index, written out


def select_by_sorting(image_size, grid_pinpoints):
    H, W = image_size

    def key(item):
        i, (h, w) = item
        scale = min(w / W, h / H)
        effective = min(int(W * scale) * int(H * scale), W * H)
        return (-effective, h * w - effective, i)
    return min(enumerate(grid_pinpoints), key=key)[1]


def resize_reference(images, size):
    return ch08._reference_resize(images, size)


def resize_by_adaptive_pool(images, size):
    """Area averaging is adaptive average pooling; bilinear up by hand with the half-pixel grid."""
    if size is None:
        return images.clone()
    H, W = images.shape[-2:]
    if size[0] * size[1] < H * W:
        return F.adaptive_avg_pool2d(images, size)
    return F.interpolate(images, scale_factor=None, size=tuple(size), mode="bilinear")


CORRECT = [
    (ch08.check_patchify_qwen2vl, patchify_qwen2vl),
    (ch08.check_patchify_qwen2vl, patchify_reference),
    (ch08.check_patchify_qwen2vl, patchify_by_loops),
    (ch08.check_vision_position_ids, vision_position_ids),
    (ch08.check_vision_position_ids, positions_by_loops),
    (ch08.check_vision_position_ids, positions_by_patchify),
    (ch08.check_block_diagonal_mask, block_diagonal_mask),
    (ch08.check_block_diagonal_mask, mask_by_repeat_interleave),
    (ch08.check_block_diagonal_mask, mask_by_block_diag),
    (ch08.check_window_index, window_index),
    (ch08.check_window_index, window_index_by_loops),
    (ch08.check_window_index, window_index_transformers),
    (ch08.check_select_best_resolution, select_best_resolution),
    (ch08.check_select_best_resolution, select_by_sorting),
]


@pytest.mark.parametrize("check, fn", CORRECT)
def test_correct_implementations_pass(check, fn, grade):
    passed, out = grade(check, fn)
    assert passed and out.startswith("✅"), out


ALL_CHECKS = [ch08.check_patchify_qwen2vl, ch08.check_vision_position_ids, ch08.check_block_diagonal_mask,
              ch08.check_window_index, ch08.check_select_best_resolution, ch08.check_resize_for_arm,
              ch08.check_qwen2vl_tokens_448, ch08.check_anyres_tokens, ch08.check_rope_at_unseen_sizes]


@pytest.mark.parametrize("check", ALL_CHECKS)
def test_a_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_the_written_out_variants_are_the_references():
    torch.manual_seed(0)
    frames = torch.randn(4, 3, 12, 16)
    for got, want in zip(ch08._patchify_variant(frames, 2, 2, 2), patchify_qwen2vl(frames, 2, 2, 2)):
        assert torch.equal(got, want)
    grid = torch.tensor([[2, 6, 10], [1, 4, 2], [1, 8, 8]])
    assert torch.equal(ch08._position_variant(grid, 2), vision_position_ids(grid, 2))
    for got, want in zip(ch08._window_variant(grid, 28, 7, 2), window_index(grid, 28, 7, 2)):
        assert torch.equal(got, want)
    for got, want in zip(window_index_transformers(grid, 28, 7, 2), window_index(grid, 28, 7, 2)):
        assert torch.equal(got, want)
    for size, points in ch08._select_cases(random.Random(0)):
        assert ch08._select_variant(size, points) == select_best_resolution(size, points)


def test_the_experiment_encodes_with_the_learners_resize():
    """encode_canvases resizes with the function it is given: the check's experiment trains on the learner's."""
    config = canvas_configs(((64, 128),), max_objects=4)[0]
    scenes = sample_canvas_scenes(5, config, generator=torch.Generator().manual_seed(0))
    arm = ARMS["fixed 32x32"]
    mine = encode_canvases(scenes, arm, lambda images, size: torch.zeros(len(images), 3, *size))
    reference = encode_canvases(scenes, arm)
    assert all(torch.equal(m.patches, mine[0].patches) for m in mine)            # every image the same: zeros
    assert not torch.equal(mine[0].patches, reference[0].patches)
    assert all(torch.equal(m.token_counts, r.token_counts) for m, r in zip(mine, reference))


# ----------------------------------------------------------------------------- typical mistakes

def _patchify_wrong(**switches):
    def wrong(frames, patch_size, temporal_patch_size, merge_size):
        return ch08._patchify_variant(frames, patch_size, temporal_patch_size, merge_size, **switches)
    return wrong


def patchify_raster_order(frames, patch_size, temporal_patch_size, merge_size):
    """Plain raster order, written as a learner would: no merge windows at all."""
    if frames.shape[0] == 1:
        frames = frames.expand(temporal_patch_size, -1, -1, -1)
    T, C, H, W = frames.shape
    p, tps = patch_size, temporal_patch_size
    x = frames.reshape(T // tps, tps, C, H // p, p, W // p, p).permute(0, 3, 5, 2, 1, 4, 6)
    return x.reshape(-1, C * tps * p * p), torch.tensor([T // tps, H // p, W // p])


def patchify_no_repeat(frames, patch_size, temporal_patch_size, merge_size):
    T, C, H, W = frames.shape
    p, tps, m = patch_size, temporal_patch_size, merge_size
    t, h, w = T // tps, H // p, W // p
    x = frames.reshape(t, tps, C, h // m, m, p, w // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, C * tps * p * p), torch.tensor([t, h, w])


def patchify_float_grid(frames, patch_size, temporal_patch_size, merge_size):
    patches, grid = patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)
    return patches, grid.float()


def patchify_as_float32(frames, patch_size, temporal_patch_size, merge_size):
    patches, grid = patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)
    return patches.float(), grid


def patchify_in_place(frames, patch_size, temporal_patch_size, merge_size):
    frames.mul_(1.0).add_(0.0)
    frames[0, 0, 0, 0] = 7.0
    return patchify_qwen2vl(frames, patch_size, temporal_patch_size, merge_size)


def _positions_wrong(**switches):
    return lambda grid_thw, merge_size: ch08._position_variant(grid_thw, merge_size, **switches)


def positions_transposed(grid_thw, merge_size):
    return vision_position_ids(grid_thw, merge_size).T


def mask_causal(cu_seqlens):
    return block_diagonal_mask(cu_seqlens).tril()


def mask_all_true(cu_seqlens):
    n = int(cu_seqlens[-1])
    return torch.ones(n, n, dtype=torch.bool)


def mask_searchsorted_left(cu_seqlens):
    block = torch.searchsorted(cu_seqlens, torch.arange(int(cu_seqlens[-1])))
    return block[:, None] == block[None, :]


def mask_float(cu_seqlens):
    return block_diagonal_mask(cu_seqlens).float()


def mask_additive(cu_seqlens):
    allowed = block_diagonal_mask(cu_seqlens)
    return torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)


def mask_inverted(cu_seqlens):
    return ~block_diagonal_mask(cu_seqlens)


def _windows_wrong(**switches):
    def wrong(grid_thw, window_size, patch_size, merge_size):
        return ch08._window_variant(grid_thw, window_size, patch_size, merge_size, **switches)
    return wrong


def windows_int32(grid_thw, window_size, patch_size, merge_size):
    index, cu = window_index(grid_thw, window_size, patch_size, merge_size)
    return index.int(), cu.int()


def windows_cu_without_zero(grid_thw, window_size, patch_size, merge_size):
    index, cu = window_index(grid_thw, window_size, patch_size, merge_size)
    return index, cu[1:]


def _select_wrong(**switches):
    return lambda image_size, grid_pinpoints: ch08._select_variant(image_size, grid_pinpoints, **switches)


def select_largest(image_size, grid_pinpoints):
    return max(grid_pinpoints, key=lambda p: p[0] * p[1])


def select_as_list(image_size, grid_pinpoints):
    return select_best_resolution(image_size, grid_pinpoints), 0


MISTAKES = [
    (ch08.check_patchify_qwen2vl, patchify_raster_order, "plain raster order"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(order="raster"), "plain raster order"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(order="merge_transposed"), "(m_row, m_col), not"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(order="columns_first"), "the window to the right comes next"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(vector="tcyx"), "the channel first, then the frame"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(vector="yxct"), "channels first"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(vector="ctxy"), "(py, px), not (px, py)"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(single="zeros"), "repeated to temporal_patch_size frames, not"),
    (ch08.check_patchify_qwen2vl, patchify_no_repeat, "repeated to temporal_patch_size frames"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(grid="merged"), "not merge windows"),
    (ch08.check_patchify_qwen2vl, _patchify_wrong(grid="frames"), "t counts temporal patches"),
    (ch08.check_patchify_qwen2vl, patchify_float_grid, "grid_thw has dtype torch.float32"),
    (ch08.check_patchify_qwen2vl, patchify_as_float32, "expected torch.float64"),
    (ch08.check_patchify_qwen2vl, patchify_in_place, "modified its input `frames` in place"),
    (ch08.check_vision_position_ids, _positions_wrong(order="raster"), "that is raster order"),
    (ch08.check_vision_position_ids, _positions_wrong(order="transposed"), "(m_row, m_col)"),
    (ch08.check_vision_position_ids, _positions_wrong(swap=True), "the row first"),
    (ch08.check_vision_position_ids, _positions_wrong(repeat=False), "repeats its h·w (row, col) ids"),
    (ch08.check_vision_position_ids, _positions_wrong(continue_rows=True), "every image starts again at row 0"),
    (ch08.check_vision_position_ids, positions_transposed, "one (row, col) row per patch"),
    (ch08.check_block_diagonal_mask, mask_causal, "within its frame a patch attends to every patch"),
    (ch08.check_block_diagonal_mask, mask_all_true, "keep each frame to itself"),
    (ch08.check_block_diagonal_mask, mask_searchsorted_left, "it starts at cu[k]"),
    (ch08.check_block_diagonal_mask, mask_float, "expected torch.bool"),
    (ch08.check_block_diagonal_mask, mask_additive, "expected torch.bool"),
    (ch08.check_block_diagonal_mask, mask_inverted, "not a different one"),
    (ch08.check_window_index, _windows_wrong(order="raster"), "regroup them window by window"),
    (ch08.check_window_index, _windows_wrong(transposed=True), "windows go row by row"),
    (ch08.check_window_index, _windows_wrong(offsets=False), "add their count"),
    (ch08.check_window_index, _windows_wrong(pad=True), "drop the padding"),
    (ch08.check_window_index, _windows_wrong(units=True), "counts patches"),
    (ch08.check_window_index, _windows_wrong(frames_together=True), "never spans two temporal patches"),
    (ch08.check_window_index, windows_int32, "expected torch.int64"),
    (ch08.check_window_index, windows_cu_without_zero, "cu_window_seqlens has shape"),
    (ch08.check_select_best_resolution, _select_wrong(cap=False), "upscaling adds no information"),
    (ch08.check_select_best_resolution, select_largest, "is "),
    (ch08.check_select_best_resolution, _select_wrong(truncate=False), "truncates each side first"),
    (ch08.check_select_best_resolution, _select_wrong(waste=False), "wastes fewer pixels"),
    (ch08.check_select_best_resolution, _select_wrong(first=False), "listed first"),
    (ch08.check_select_best_resolution, _select_wrong(swap=True), "image_size is (height, width)"),
    (ch08.check_select_best_resolution, select_as_list, "a (height, width) pair of ints"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


KEY_CASES = [
    (ch08.check_patchify_qwen2vl, patchify_by_loops, True),
    (ch08.check_patchify_qwen2vl, patchify_raster_order, False),
    (ch08.check_patchify_qwen2vl, patchify_no_repeat, False),
    (ch08.check_vision_position_ids, positions_by_loops, True),
    (ch08.check_vision_position_ids, _positions_wrong(order="raster"), False),
    (ch08.check_block_diagonal_mask, mask_by_repeat_interleave, True),
    (ch08.check_block_diagonal_mask, mask_causal, False),
    (ch08.check_block_diagonal_mask, mask_all_true, False),
    (ch08.check_window_index, window_index_transformers, True),
    (ch08.check_window_index, _windows_wrong(order="raster"), False),
    (ch08.check_window_index, _windows_wrong(pad=True), False),
    (ch08.check_select_best_resolution, select_by_sorting, True),
    (ch08.check_select_best_resolution, _select_wrong(waste=False), False),
    (ch08.check_select_best_resolution, _select_wrong(waste=False, first=False), False),
    (ch08.check_select_best_resolution, _select_wrong(first=False), False),
    (ch08.check_select_best_resolution, _select_wrong(truncate=False), False),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", KEY_CASES)
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and out.startswith("✅" if passes else "❌"), out


# ----------------------------------------------------------------------------- the experiment: resize_for_arm

def resize_bilinear_always(images, size):
    if size is None:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def resize_nearest(images, size):
    return images if size is None else F.interpolate(images, size=size, mode="nearest")


def resize_area_always(images, size):
    return images if size is None else F.interpolate(images, size=size, mode="area")


def resize_align_corners(images, size):
    if size is None:
        return images
    if size[0] * size[1] < images.shape[2] * images.shape[3]:
        return F.interpolate(images, size=size, mode="area")
    return F.interpolate(images, size=size, mode="bilinear", align_corners=True)


def resize_width_height(images, size):
    return images if size is None else ch08._reference_resize(images, (size[1], size[0]))


def resize_always_32(images, size):
    return ch08._reference_resize(images, (32, 32))


def resize_in_place(images, size):
    images.clamp_(0.0, 1.0).mul_(0.5)
    return ch08._reference_resize(images, size)


def resize_as_float32(images, size):
    return ch08._reference_resize(images, size).float()


RESIZE_MISTAKES = [
    (resize_bilinear_always, "a bilinear shrink reads only the pixels next to each sample point"),
    (resize_nearest, "nearest-neighbour keeps one pixel"),
    (resize_area_always, "grow bilinearly"),
    (resize_align_corners, "align_corners=False"),
    (resize_width_height, "size is (height, width)"),
    (resize_always_32, "size=None is dynamic resolution"),
    (resize_in_place, "modified its input `images` in place"),
    (resize_as_float32, "expected torch.float64"),
]


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("wrong, hint", RESIZE_MISTAKES)
def test_resize_mistakes_get_a_hint_before_any_training(wrong, hint, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch08, "_measure", stub)                  # they must fail on the probe, before training
    passed, out = grade(ch08.check_resize_for_arm, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("fn", [resize_reference, resize_by_adaptive_pool])
def test_a_correct_resize_passes_the_probe(fn, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch08, "_measure", stub)                  # reaching the experiment is passing the probe
    passed, out = grade(ch08.check_resize_for_arm, fn)
    assert not passed and "not implemented yet" in out, out


def test_a_correct_resize_passes_the_measured_experiment(grade):
    """The full experiment, once: trains two counting probes (about 7 s)."""
    passed, out = grade(ch08.check_resize_for_arm, resize_reference)
    assert passed and out == "✅ resize_for_arm: passed\n", out      # one line, the same every run (nbval compares it)


def test_too_little_training_fails_the_measured_margin(monkeypatch, grade):
    monkeypatch.setattr(ch08, "RESIZE_EXPERIMENT", {**ch08.RESIZE_EXPERIMENT, "train_per_size": 20,
                                                     "test_per_size": 20, "steps": 1})
    passed, out = grade(ch08.check_resize_for_arm, resize_reference)
    assert not passed and "after 1 steps: small shapes counted right on " in out, out
    assert "expected dynamic resolution to win by 30 points" in out, out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch08.check_qwen2vl_tokens_448, lambda: 256),
    (ch08.check_qwen2vl_tokens_448, lambda: torch.tensor(256)),
    (ch08.check_anyres_tokens, lambda: 3699),
    (ch08.check_rope_at_unseen_sizes, lambda: "a"),
    (ch08.check_rope_at_unseen_sizes, lambda: " (A) "),
])
def test_right_answers_pass(check, answer, grade):
    passed, out = grade(check, answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch08.check_qwen2vl_tokens_448, lambda: 1024, "the ViT's patch count"),
    (ch08.check_qwen2vl_tokens_448, lambda: 2048, "one temporal patch"),
    (ch08.check_qwen2vl_tokens_448, lambda: 512, "one temporal patch"),
    (ch08.check_qwen2vl_tokens_448, lambda: 32, "the patch grid's side"),
    (ch08.check_qwen2vl_tokens_448, lambda: 16, "the merged grid's side"),
    (ch08.check_qwen2vl_tokens_448, lambda: 576, "LLaVA-1.5's count"),
    (ch08.check_qwen2vl_tokens_448, lambda: 100, "each 2×2 window"),
    (ch08.check_qwen2vl_tokens_448, lambda: 256.0, "should return an int"),
    (ch08.check_anyres_tokens, lambda: 3645, "add one per row"),
    (ch08.check_anyres_tokens, lambda: 2970, "the base image"),
    (ch08.check_anyres_tokens, lambda: 2916, "the base image comes first"),
    (ch08.check_anyres_tokens, lambda: 3726, "the base image gets no newlines"),
    (ch08.check_anyres_tokens, lambda: 3780, "the base image gets no newlines"),
    (ch08.check_anyres_tokens, lambda: 729, "one crop's tokens"),
    (ch08.check_anyres_tokens, lambda: 6561, "AnyRes-Max budget"),
    (ch08.check_anyres_tokens, lambda: 1, "select_best_resolution picks the grid"),
    (ch08.check_rope_at_unseen_sizes, lambda: "b", "no run trained on"),
    (ch08.check_rope_at_unseen_sizes, lambda: "c", "rotates the queries and keys"),
    (ch08.check_rope_at_unseen_sizes, lambda: "d", "before the merger"),
    (ch08.check_rope_at_unseen_sizes, lambda: "e", 'one of "a", "b", "c", "d"'),
])
def test_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌") and hint in out, out


def test_the_answers_are_computed_from_the_package():
    assert ch08._rope_scores_are_relative()
    assert select_best_resolution((768, 768), [(384 * a, 384 * b) for a in range(1, 7) for b in range(1, 7)]) == (768, 768)
