"""The chapter 02 checks pass the reference, and give a specific hint (not a pass) to typical mistakes."""

import pytest
import torch

from minivlm import rope
from minivlm.course.grading import ch02


def stub(*args, **kwargs):
    raise NotImplementedError()


def mrope_ids(input_ids, grids, image_token_id, spatial_merge_size=2):
    position_ids, _ = rope.mrope_position_ids(torch.tensor([input_ids]), grids or None, None,
                                              image_token_id=image_token_id, video_token_id=-1,
                                              spatial_merge_size=spatial_merge_size)
    return position_ids[:, 0]


@pytest.mark.parametrize("check, reference", [
    (ch02.check_rope_cos_sin, rope.rope_cos_sin),
    (ch02.check_apply_rope, rope.apply_rope),
    (ch02.check_rope_2d_cos_sin, rope.rope_2d_cos_sin),
    (ch02.check_mrope_ids, mrope_ids),
])
def test_reference_passes_and_stub_is_not_implemented(check, reference, grade):
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


# ----------------------------------------------------------------------------- typical mistakes

def cos_sin_interleaved(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] * rope.rope_frequencies(head_dim, theta)
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def cos_sin_wrong_exponent(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] / theta ** (torch.arange(head_dim // 2) / head_dim)
    angles = torch.cat([angles, angles], -1)
    return angles.cos(), angles.sin()


def cos_sin_half_width(positions, head_dim, theta=10000.0):
    angles = positions.float()[:, None] * rope.rope_frequencies(head_dim, theta)
    return angles.cos(), angles.sin()


def cos_sin_fixed_theta(positions, head_dim, theta=10000.0):
    return rope.rope_cos_sin(positions, head_dim, 10000.0)


def apply_rope_wrong_sign(q, k, cos, sin):
    return q * cos - rope.rotate_half(q) * sin, k * cos - rope.rotate_half(k) * sin


def apply_rope_no_negation(q, k, cos, sin):
    swap = lambda x: torch.cat(x.chunk(2, dim=-1)[::-1], dim=-1)
    return q * cos + swap(q) * sin, k * cos + swap(k) * sin


def apply_rope_query_only(q, k, cos, sin):
    return rope.apply_rope(q, k, cos, sin)[0], k


def rope_2d_swapped(grid_h, grid_w, head_dim, theta=10000.0):
    cos, sin = rope.rope_2d_cos_sin(grid_h, grid_w, head_dim, theta)
    quarter = head_dim // 4
    order = torch.cat([torch.arange(quarter, 2 * quarter), torch.arange(quarter)])
    order = torch.cat([order, order + 2 * quarter])
    return cos[:, order], sin[:, order]


def rope_2d_column_major(grid_h, grid_w, head_dim, theta=10000.0):
    cos, sin = rope.rope_2d_cos_sin(grid_w, grid_h, head_dim, theta)       # grid transposed ...
    quarter = head_dim // 4
    order = torch.cat([torch.arange(quarter, 2 * quarter), torch.arange(quarter)])
    order = torch.cat([order, order + 2 * quarter])                         # ... and axes swapped back
    return cos[:, order], sin[:, order]


def mrope_ids_count_tokens(input_ids, grids, image_token_id, spatial_merge_size=2):
    return ch02._build_ids(input_ids, grids, image_token_id, spatial_merge_size, continue_at_max=False)


def mrope_ids_row_fastest(input_ids, grids, image_token_id, spatial_merge_size=2):
    return ch02._build_ids(input_ids, grids, image_token_id, spatial_merge_size, column_fastest=False)


def mrope_ids_transposed(input_ids, grids, image_token_id, spatial_merge_size=2):
    return mrope_ids(input_ids, grids, image_token_id, spatial_merge_size).T


@pytest.mark.parametrize("check, wrong, hint", [
    (ch02.check_rope_cos_sin, cos_sin_interleaved, "repeat_interleave"),
    (ch02.check_rope_cos_sin, cos_sin_wrong_exponent, "theta ** (-2i / D)"),
    (ch02.check_rope_cos_sin, cos_sin_half_width, "both halves"),
    (ch02.check_rope_cos_sin, cos_sin_fixed_theta, "theta argument"),
    (ch02.check_apply_rope, apply_rope_wrong_sign, "wrong way"),
    (ch02.check_apply_rope, apply_rope_no_negation, "negate the second half"),
    (ch02.check_apply_rope, apply_rope_query_only, "rotate the keys"),
    (ch02.check_rope_2d_cos_sin, rope_2d_swapped, "rows and columns are swapped"),
    (ch02.check_rope_2d_cos_sin, rope_2d_column_major, "raster order"),
    (ch02.check_mrope_ids, mrope_ids_count_tokens, "largest id + 1"),
    (ch02.check_mrope_ids, mrope_ids_row_fastest, "column changes fastest"),
    (ch02.check_mrope_ids, mrope_ids_transposed, "one row per stream"),
])
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed
    assert out.startswith("❌") and hint in out, out
    assert "Traceback" not in out
