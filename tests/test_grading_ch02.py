"""The chapter 02 checks pass correct answers (the reference and differently written ones, under several
seeds) and give a specific hint, not a pass, to typical mistakes."""

import itertools
import math

import pytest
import torch

from minivlm import rope
from minivlm.course.grading import ch02

SEEDS = ("0", "1", "2", "3")


def stub(*args, **kwargs):
    raise NotImplementedError()


def mrope_ids(input_ids, grids, image_token_id, spatial_merge_size=2):
    """The reference through the alternating-placeholder trick of the check (see ch02._mrope_reference)."""
    segments, n, images = [], 0, iter(grids)
    while n < len(input_ids):
        if input_ids[n] == image_token_id:
            t, h, w = next(images)
            segments.append(("image", (t, h, w)))
            n += t * (h // spatial_merge_size) * (w // spatial_merge_size)
        else:
            segments.append(("text", [input_ids[n]]))
            n += 1
    return ch02._mrope_reference(segments, image_token_id, spatial_merge_size)


def run_under_seeds(grade, monkeypatch, check, learner, seeds=SEEDS):
    """[(passed, out)] of `check(learner)` under each check seed."""
    results = []
    for seed in seeds:
        monkeypatch.setenv("MINIVLM_CHECK_SEED", seed)
        results.append(grade(check, learner))
    return results


# ----------------------------------------------------------------------------- correct answers

def cos_sin_complex(positions, head_dim, theta=10000.0):
    """e^{i m θ_j} with torch.polar, computed in float64 and returned in float32."""
    inv_freq = torch.exp(-math.log(theta) * torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.double()[:, None] * inv_freq
    z = torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.real], -1).float(), torch.cat([z.imag, z.imag], -1).float()


def cos_sin_loop(positions, head_dim, theta=10000.0):
    cos = torch.empty(len(positions), head_dim)
    sin = torch.empty(len(positions), head_dim)
    for n, m in enumerate(positions.tolist()):
        for i in range(head_dim // 2):
            angle = m * theta ** (-2 * i / head_dim)
            cos[n, i] = cos[n, i + head_dim // 2] = math.cos(angle)
            sin[n, i] = sin[n, i + head_dim // 2] = math.sin(angle)
    return cos, sin


def apply_rope_rotation_matrices(q, k, cos, sin):
    """Each pair (x_j, x_{j+D/2}) times its 2 x 2 rotation matrix, with einsum."""
    half = q.shape[-1] // 2
    c, s = cos[:, :half], sin[:, :half]
    rotation = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2).to(q.dtype)  # (L, D/2, 2, 2)

    def rotate(x):
        pairs = torch.stack([x[..., :half], x[..., half:]], -1)                                   # (B, H, L, D/2, 2)
        turned = torch.einsum("lpij,bhlpj->bhlpi", rotation, pairs)
        return torch.cat([turned[..., 0], turned[..., 1]], -1)
    return rotate(q), rotate(k)


def rope_2d_from_1d_tables(grid_h, grid_w, head_dim, theta=10000.0):
    """Row and column tables of 1D RoPE for a head of D/2, each half taking their first D/4 channels."""
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    row_cos, row_sin = rope.rope_cos_sin(rows.flatten(), head_dim // 2, theta)
    col_cos, col_sin = rope.rope_cos_sin(cols.flatten(), head_dim // 2, theta)
    q = head_dim // 4
    cos = torch.cat([row_cos[:, :q], col_cos[:, :q]], -1)
    sin = torch.cat([row_sin[:, :q], col_sin[:, :q]], -1)
    return torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)


def rope_2d_every_other_frequency(grid_h, grid_w, head_dim, theta=10000.0):
    """theta ** (-4i/D) is every other frequency of a head of size D."""
    freqs = rope.rope_frequencies(head_dim, theta)[::2]
    n = torch.arange(grid_h * grid_w)
    angles = torch.cat([(n // grid_w)[:, None] * freqs, (n % grid_w)[:, None] * freqs], -1)
    return torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()


def mrope_ids_meshgrid(input_ids, grids, image_token_id, spatial_merge_size=2):
    """One block of ids per text token or image, with torch.meshgrid."""
    blocks, next_id, n, images = [], 0, 0, iter(grids)
    while n < len(input_ids):
        if input_ids[n] != image_token_id:
            blocks.append(torch.full((3, 1), next_id))
            n += 1
        else:
            t, h, w = next(images)
            grid = torch.meshgrid(torch.arange(t), torch.arange(h // spatial_merge_size),
                                  torch.arange(w // spatial_merge_size), indexing="ij")
            blocks.append(torch.stack([axis.flatten() for axis in grid]) + next_id)
            n += blocks[-1].shape[1]
        next_id = int(blocks[-1].max()) + 1
    return torch.cat(blocks, dim=1)


CORRECT = [
    (ch02.check_rope_cos_sin, rope.rope_cos_sin),
    (ch02.check_rope_cos_sin, cos_sin_complex),
    (ch02.check_rope_cos_sin, cos_sin_loop),
    (ch02.check_apply_rope, rope.apply_rope),
    (ch02.check_apply_rope, apply_rope_rotation_matrices),
    (ch02.check_rope_2d_cos_sin, rope.rope_2d_cos_sin),
    (ch02.check_rope_2d_cos_sin, rope_2d_from_1d_tables),
    (ch02.check_rope_2d_cos_sin, rope_2d_every_other_frequency),
    (ch02.check_mrope_ids, mrope_ids),
    (ch02.check_mrope_ids, mrope_ids_meshgrid),
]


@pytest.mark.parametrize("check, learner", CORRECT)
def test_correct_answers_pass_under_every_seed(check, learner, grade, monkeypatch):
    for passed, out in run_under_seeds(grade, monkeypatch, check, learner):
        assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check", [ch02.check_rope_cos_sin, ch02.check_apply_rope, ch02.check_rope_2d_cos_sin,
                                   ch02.check_mrope_ids, ch02.check_grid_positions_experiment,
                                   ch02.check_full_turn_position, ch02.check_text_id_after_video,
                                   ch02.check_unseen_offsets])
def test_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


# ----------------------------------------------------------------------------- typical mistakes: 1D tables

def cos_sin_interleaved(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] * rope.rope_frequencies(head_dim, theta)
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def cos_sin_wrong_exponent(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] / theta ** (torch.arange(head_dim // 2) / head_dim)
    angles = torch.cat([angles, angles], -1)
    return angles.cos(), angles.sin()


def cos_sin_growing_frequencies(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] * theta ** (torch.arange(0, head_dim, 2) / head_dim)
    angles = torch.cat([angles, angles], -1)
    return angles.cos(), angles.sin()


def cos_sin_half_width(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] * rope.rope_frequencies(head_dim, theta)
    return angles.cos(), angles.sin()


def cos_sin_fixed_theta(positions, head_dim, theta=10000.0):
    return rope.rope_cos_sin(positions, head_dim, 10000.0)


def cos_sin_token_index(positions, head_dim, theta=10000.0):
    return rope.rope_cos_sin(torch.arange(len(positions)), head_dim, theta)


def cos_sin_swapped(positions, head_dim, theta=10000.0):
    return rope.rope_cos_sin(positions, head_dim, theta)[::-1]


def cos_sin_float64(positions, head_dim, theta=10000.0):
    return tuple(table.double() for table in rope.rope_cos_sin(positions, head_dim, theta))


def cos_sin_old_check_size(positions, head_dim, theta=10000.0):
    return rope.rope_cos_sin(positions, 8, theta)          # the old check always used head_dim = 8


# ----------------------------------------------------------------------------- typical mistakes: rotation

def apply_rope_wrong_sign(q, k, cos, sin):
    return q * cos - rope.rotate_half(q) * sin, k * cos - rope.rotate_half(k) * sin


def apply_rope_no_negation(q, k, cos, sin):
    swap = lambda x: torch.cat(x.chunk(2, dim=-1)[::-1], dim=-1)
    return q * cos + swap(q) * sin, k * cos + swap(k) * sin


def apply_rope_neighbours(q, k, cos, sin):
    return (q * cos + ch02._rotate_pairs_of_neighbours(q) * sin, k * cos + ch02._rotate_pairs_of_neighbours(k) * sin)


def apply_rope_query_only(q, k, cos, sin):
    return rope.apply_rope(q, k, cos, sin)[0], k


def apply_rope_in_place(q, k, cos, sin):
    q_rot, k_rot = rope.apply_rope(q, k, cos, sin)
    q.copy_(q_rot)
    k.copy_(k_rot)
    return q, k


def apply_rope_float32(q, k, cos, sin):
    return tuple(x.float() for x in rope.apply_rope(q, k, cos, sin))


def apply_rope_fixed_half(q, k, cos, sin):
    def rotate_half(x):                                     # the old check's head_dim = 8
        return torch.cat([-x[..., 4:], x[..., :4]], dim=-1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


# ----------------------------------------------------------------------------- typical mistakes: 2D tables

def _axis_swap(head_dim):
    quarter = head_dim // 4
    order = torch.cat([torch.arange(quarter, 2 * quarter), torch.arange(quarter)])
    return torch.cat([order, order + 2 * quarter])


def rope_2d_swapped(grid_h, grid_w, head_dim, theta=10000.0):
    cos, sin = rope.rope_2d_cos_sin(grid_h, grid_w, head_dim, theta)
    return cos[:, _axis_swap(head_dim)], sin[:, _axis_swap(head_dim)]


def rope_2d_column_major(grid_h, grid_w, head_dim, theta=10000.0):
    cos, sin = rope.rope_2d_cos_sin(grid_w, grid_h, head_dim, theta)       # grid transposed ...
    return cos[:, _axis_swap(head_dim)], sin[:, _axis_swap(head_dim)]      # ... and axes swapped back


def rope_2d_wrong_frequencies(grid_h, grid_w, head_dim, theta=10000.0):
    freqs = rope.rope_frequencies(head_dim, theta)[: head_dim // 4]
    n = torch.arange(grid_h * grid_w)
    angles = torch.cat([(n // grid_w)[:, None] * freqs, (n % grid_w)[:, None] * freqs], -1)
    return torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()


def rope_2d_fixed_theta(grid_h, grid_w, head_dim, theta=10000.0):
    return rope.rope_2d_cos_sin(grid_h, grid_w, head_dim)


def rope_2d_square_only(grid_h, grid_w, head_dim, theta=10000.0):
    return rope.rope_2d_cos_sin(grid_h, grid_h, head_dim, theta)


def rope_2d_row_half_column_half(grid_h, grid_w, head_dim, theta=10000.0):
    angles = ch02._angles_2d(grid_h, grid_w, head_dim, theta, "row half, column half")
    return angles.cos(), angles.sin()


def rope_2d_old_check_grid(grid_h, grid_w, head_dim, theta=10000.0):
    return rope.rope_2d_cos_sin(2, 3, head_dim, theta)     # the old check's 2 x 3 grid


# ----------------------------------------------------------------------------- typical mistakes: M-RoPE ids

def mrope_ids_count_tokens(input_ids, grids, image_token_id, spatial_merge_size=2):
    return ch02._build_ids(input_ids, grids, image_token_id, spatial_merge_size, "count tokens")


def mrope_ids_row_fastest(input_ids, grids, image_token_id, spatial_merge_size=2):
    return ch02._build_ids(input_ids, grids, image_token_id, spatial_merge_size, "row fastest")


def mrope_ids_frames_ignored(input_ids, grids, image_token_id, spatial_merge_size=2):
    return ch02._build_ids(input_ids, grids, image_token_id, spatial_merge_size, "frames ignored")


def mrope_ids_no_plus_one(input_ids, grids, image_token_id, spatial_merge_size=2):
    return ch02._build_ids(input_ids, grids, image_token_id, spatial_merge_size, "no + 1")


def mrope_ids_transposed(input_ids, grids, image_token_id, spatial_merge_size=2):
    return mrope_ids(input_ids, grids, image_token_id, spatial_merge_size).T


def mrope_ids_streams_swapped(input_ids, grids, image_token_id, spatial_merge_size=2):
    return mrope_ids(input_ids, grids, image_token_id, spatial_merge_size)[[0, 2, 1]]


def mrope_ids_merge_fixed(input_ids, grids, image_token_id, spatial_merge_size=2):
    return mrope_ids_meshgrid(input_ids, grids, image_token_id, 2)


def mrope_ids_int32(input_ids, grids, image_token_id, spatial_merge_size=2):
    return mrope_ids(input_ids, grids, image_token_id, spatial_merge_size).int()


def mrope_ids_one_run_per_image(input_ids, grids, image_token_id, spatial_merge_size=2):
    """Finds images as runs of placeholders, like the reference: back-to-back images become one run."""
    columns, next_id, images = [], 0, iter(grids)
    for token, run in itertools.groupby(input_ids):
        if token != image_token_id:
            for _ in run:
                columns.append([next_id] * 3)
                next_id += 1
            continue
        t, h, w = next(images)
        block = [[next_id + i, next_id + r, next_id + c] for i in range(t)
                 for r in range(h // spatial_merge_size) for c in range(w // spatial_merge_size)]
        columns += block
        next_id = max(map(max, block)) + 1
    return torch.tensor(columns).T


def mrope_ids_old_check_answer(input_ids, grids, image_token_id, spatial_merge_size=2):
    old_input = [20, 20] + [3] * 6 + [20] + [3] * 2 + [20, 20]
    return mrope_ids(old_input, [(1, 4, 6), (1, 2, 4)], 3, 2)


MISTAKES = [
    (ch02.check_rope_cos_sin, cos_sin_interleaved, "repeat_interleave"),
    (ch02.check_rope_cos_sin, cos_sin_wrong_exponent, "theta ** (-2i / D)"),
    (ch02.check_rope_cos_sin, cos_sin_growing_frequencies, "minus sign"),
    (ch02.check_rope_cos_sin, cos_sin_half_width, "both halves"),
    (ch02.check_rope_cos_sin, cos_sin_fixed_theta, "theta argument"),
    (ch02.check_rope_cos_sin, cos_sin_token_index, "positions you are given"),
    (ch02.check_rope_cos_sin, cos_sin_swapped, "cos and sin are swapped"),
    (ch02.check_rope_cos_sin, cos_sin_float64, "dtype torch.float64, expected torch.float32"),
    (ch02.check_rope_cos_sin, cos_sin_old_check_size, "expected ("),
    (ch02.check_apply_rope, apply_rope_wrong_sign, "wrong way"),
    (ch02.check_apply_rope, apply_rope_no_negation, "negate the second half"),
    (ch02.check_apply_rope, apply_rope_neighbours, "two halves"),
    (ch02.check_apply_rope, apply_rope_query_only, "rotate the keys"),
    (ch02.check_apply_rope, apply_rope_in_place, "in place"),
    (ch02.check_apply_rope, apply_rope_float32, "keep q's dtype"),
    (ch02.check_apply_rope, apply_rope_fixed_half, "wrong values"),
    (ch02.check_rope_2d_cos_sin, rope_2d_swapped, "rows and columns are swapped"),
    (ch02.check_rope_2d_cos_sin, rope_2d_column_major, "raster order"),
    (ch02.check_rope_2d_cos_sin, rope_2d_wrong_frequencies, "rope_frequencies(head_dim // 2, theta)"),
    (ch02.check_rope_2d_cos_sin, rope_2d_fixed_theta, "theta argument"),
    (ch02.check_rope_2d_cos_sin, rope_2d_square_only, "N = grid_h * grid_w"),
    (ch02.check_rope_2d_cos_sin, rope_2d_row_half_column_half, "[row angles (D/4), column angles (D/4)]"),
    (ch02.check_rope_2d_cos_sin, rope_2d_old_check_grid, "N = grid_h * grid_w"),
    (ch02.check_mrope_ids, mrope_ids_count_tokens, "largest id + 1"),
    (ch02.check_mrope_ids, mrope_ids_row_fastest, "column changes fastest"),
    (ch02.check_mrope_ids, mrope_ids_frames_ignored, "adds i to the temporal stream"),
    (ch02.check_mrope_ids, mrope_ids_no_plus_one, "not its largest id"),
    (ch02.check_mrope_ids, mrope_ids_transposed, "one row per stream"),
    (ch02.check_mrope_ids, mrope_ids_streams_swapped, "(temporal, height, width) in that order"),
    (ch02.check_mrope_ids, mrope_ids_merge_fixed, "use spatial_merge_size"),
    (ch02.check_mrope_ids, mrope_ids_int32, "torch.long"),
    (ch02.check_mrope_ids, mrope_ids_one_run_per_image, "may follow each other"),
    (ch02.check_mrope_ids, mrope_ids_old_check_answer, "expected (3, "),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint_under_every_seed(check, wrong, hint, grade, monkeypatch):
    for passed, out in run_under_seeds(grade, monkeypatch, check, wrong):
        assert not passed
        assert out.startswith("❌") and hint in out, out
        assert "Traceback" not in out


# ----------------------------------------------------------------------------- the experiment

def image_ids_meshgrid(grid_h, grid_w):
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.stack([torch.zeros(grid_h * grid_w, dtype=torch.long), rows.flatten(), cols.flatten()])


def image_ids_1d(grid_h, grid_w):
    n = torch.arange(grid_h * grid_w)
    return torch.stack([n, n, n])


def image_ids_width_8(grid_h, grid_w):
    n = torch.arange(grid_h * grid_w)                         # rows and columns of a grid 8 wide, whatever grid_w
    return torch.stack([torch.zeros_like(n), n // 8, n % 8])


def image_ids_column_major(grid_h, grid_w):
    n = torch.arange(grid_h * grid_w)
    return torch.stack([torch.zeros_like(n), n % grid_h, n // grid_h])


def image_ids_all_zero(grid_h, grid_w):
    return torch.zeros(3, grid_h * grid_w, dtype=torch.long)


def image_ids_transposed(grid_h, grid_w):
    return image_ids_meshgrid(grid_h, grid_w).T


def image_ids_float(grid_h, grid_w):
    return image_ids_meshgrid(grid_h, grid_w).float()


def image_ids_start_at_5(grid_h, grid_w):
    return image_ids_meshgrid(grid_h, grid_w) + 5


def image_ids_streams_swapped(grid_h, grid_w):
    return image_ids_meshgrid(grid_h, grid_w)[[0, 2, 1]]


def test_experiment_correct_ids_pass(grade):
    passed, out = grade(ch02.check_grid_positions_experiment, image_ids_meshgrid)
    assert passed and out.startswith("✅"), out


def test_experiment_1d_ids_learn_the_training_width_only(grade, monkeypatch):
    monkeypatch.setitem(ch02.EXPERIMENT, "steps", 60)        # "8 back" is learned sooner than the full budget
    passed, out = grade(ch02.check_grid_positions_experiment, image_ids_1d)
    assert not passed and "on the training width but only 1" in out and "depends on the grid's width" in out, out


@pytest.mark.parametrize("wrong, hint", [
    (image_ids_all_zero, "same height id"),
    (image_ids_width_8, "❌ grid_positions_experiment: "),
    (image_ids_column_major, "❌ grid_positions_experiment: "),
    (image_ids_1d, "❌ grid_positions_experiment: "),
    (image_ids_transposed, "one row per stream"),
    (image_ids_float, "torch.long"),
])
def test_experiment_wrong_ids_fail_on_a_short_budget(wrong, hint, grade, monkeypatch):
    monkeypatch.setitem(ch02.EXPERIMENT, "steps", 10)
    for passed, out in run_under_seeds(grade, monkeypatch, ch02.check_grid_positions_experiment, wrong, SEEDS[:2]):
        assert not passed and hint in out, out


@pytest.mark.parametrize("wrong", [image_ids_start_at_5, image_ids_streams_swapped])
def test_experiment_ids_that_transfer_must_still_be_m_ropes(wrong, grade, monkeypatch):
    monkeypatch.setattr(ch02, "grid_experiment", lambda ids, seed: (1.0, 1.0))   # as if it had trained well
    passed, out = grade(ch02.check_grid_positions_experiment, wrong)
    assert not passed and "M-RoPE numbers an image's tokens" in out, out
    passed, out = grade(ch02.check_grid_positions_experiment, image_ids_meshgrid)
    assert passed, out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch02.check_full_turn_position, 629),
    (ch02.check_full_turn_position, next(m for m in range(1, 10**4) if m * 10000 ** (-32 / 64) >= 2 * math.pi)),
    (ch02.check_text_id_after_video, 11),
    (ch02.check_text_id_after_video, int(rope.mrope_position_ids(torch.tensor([[0] * 5 + [1] * 72 + [0]]), None,
                                                                 [[3, 8, 12]], image_token_id=-1,
                                                                 video_token_id=1)[0][0, 0, -1])),
    (ch02.check_unseen_offsets, "c"),
    (ch02.check_unseen_offsets, " (C) "),
])
def test_questions_right_answers_pass(check, answer, grade):
    passed, out = grade(check, lambda: answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch02.check_full_turn_position, 628, "round up"),
    (ch02.check_full_turn_position, 63, "pair 8"),
    (ch02.check_full_turn_position, 315, "half a turn"),
    (ch02.check_full_turn_position, 700, "m · θ_16 reaches 2π"),
    (ch02.check_full_turn_position, 628.3, "should return an int"),
    (ch02.check_full_turn_position, True, "should return an int"),
    (ch02.check_text_id_after_video, 77, "counts the video's tokens"),
    (ch02.check_text_id_after_video, 10, "largest id + 1"),
    (ch02.check_text_id_after_video, 8, "counts furthest"),
    (ch02.check_text_id_after_video, 17, "merged grid"),
    (ch02.check_text_id_after_video, 12, "(s + frame, s + row, s + col)"),
    (ch02.check_text_id_after_video, "11", "should return an int"),
    (ch02.check_unseen_offsets, "a", "no position table"),
    (ch02.check_unseen_offsets, "b", "bigger offsets"),
    (ch02.check_unseen_offsets, "d", 'one of "a", "b", "c"'),
    (ch02.check_unseen_offsets, 3, 'one of "a", "b", "c"'),
])
def test_questions_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, lambda: answer)
    assert not passed and out.startswith("❌") and hint in out, out


@pytest.mark.parametrize("answer", [0, 8, 10, 12, 17, 77])
def test_question_hints_do_not_give_the_answer_away(answer, grade):
    passed, out = grade(ch02.check_text_id_after_video, lambda: answer)
    assert not passed and "11" not in out, out


def mrope_ids_next_id_from_rows_and_columns(input_ids, grids, image_token_id, spatial_merge_size=2):
    """Text after an image at s + max(h/m, w/m): right unless the image has more frames than rows and columns."""
    columns, next_id, n, images = [], 0, 0, iter(grids)
    while n < len(input_ids):
        if input_ids[n] != image_token_id:
            columns.append([next_id] * 3)
            next_id, n = next_id + 1, n + 1
            continue
        t, h, w = next(images)
        h, w = h // spatial_merge_size, w // spatial_merge_size
        columns += [[next_id + i, next_id + r, next_id + c] for i in range(t) for r in range(h) for c in range(w)]
        next_id, n = next_id + max(h, w), n + t * h * w
    return torch.tensor(columns).T


def test_mrope_ids_checks_an_image_with_more_frames_than_rows_and_columns(grade, monkeypatch):
    for passed, out in run_under_seeds(grade, monkeypatch, ch02.check_mrope_ids, mrope_ids_next_id_from_rows_and_columns):
        assert not passed and "the temporal one (s + t - 1) included" in out, out
