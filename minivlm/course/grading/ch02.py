"""Checks for chapter 02 (positions: RoPE, 2D RoPE, M-RoPE).

    from minivlm.course.grading import ch02
    ch02.check_rope_cos_sin(rope_cos_sin)
    ch02.check_apply_rope(apply_rope)
    ch02.check_rope_2d_cos_sin(rope_2d_cos_sin)
    ch02.check_mrope_ids(mrope_ids)

Each check compares with the reference in `minivlm.rope` and, when the values are wrong,
recognises the usual mistakes (interleaved instead of half-split pairs, a wrong frequency
exponent, the rotation's sign flipped, rows and columns swapped, text after an image
counted from the number of placeholders) to give a specific hint.
"""

import torch

from minivlm import rope
from minivlm.course.grading import Hint, check, expect_close, expect_equal, expect_known_mistakes, expect_shape


def _pair(result, what):
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise Hint(f"{what} should return two tensors (cos, sin), got {type(result).__name__}.")
    return result


@check("rope_cos_sin")
def check_rope_cos_sin(rope_cos_sin):
    positions, D = torch.tensor([0, 1, 2, 5, 9]), 8
    what = "rope_cos_sin(positions (5,), head_dim=8)"
    cos, sin = _pair(rope_cos_sin(positions, D), what)
    expected_cos, expected_sin = rope.rope_cos_sin(positions, D)
    if isinstance(cos, torch.Tensor) and tuple(cos.shape) == (5, D // 2):
        raise Hint(f"{what} gives cos of shape (5, 4), expected (5, 8). Hint: both halves of the head "
                   "use the same angles: torch.cat([angles, angles], dim=-1).")
    expect_shape(cos, (5, D), what)
    angles = positions.float()[:, None] * rope.rope_frequencies(D)
    wrong_exponent = positions.float()[:, None] / 10000.0 ** (torch.arange(D // 2) / D)
    expect_known_mistakes(cos, expected_cos, [
        (angles.repeat_interleave(2, dim=-1).cos(),
         "this course pairs channel j with channel j + D/2 (halves), not neighbours: "
         "concatenate the angles, don't repeat_interleave them."),
        (torch.cat([wrong_exponent, wrong_exponent], -1).cos(),
         "the frequency of pair i is theta ** (-2i / D): use torch.arange(0, D, 2) / D as the exponent."),
        (torch.cat([angles, angles], -1).sin(), "cos and sin are swapped."),
    ], f"cos from {what}")
    expect_close(sin, expected_sin, f"sin from {what}")
    cos, _ = rope_cos_sin(positions, D, theta=100.0)
    expect_close(cos, rope.rope_cos_sin(positions, D, 100.0)[0], "cos with theta=100",
                 hint="use the theta argument in the frequencies, not a hard-coded 10000.")


@check("apply_rope")
def check_apply_rope(apply_rope):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 6, 8, generator=g), torch.randn(2, 3, 6, 8, generator=g)
    cos, sin = rope.rope_cos_sin(torch.arange(6) * 2, 8)
    what = "apply_rope(q, k, cos, sin)"
    result = apply_rope(q, k, cos, sin)
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise Hint(f"{what} should return the rotated (q, k), got {type(result).__name__}.")
    q_rot, k_rot = result
    expected_q, expected_k = rope.apply_rope(q, k, cos, sin)
    x1, x2 = q.chunk(2, dim=-1)
    expect_known_mistakes(q_rot, expected_q, [
        (q * cos - rope.rotate_half(q) * sin, "the rotation goes the wrong way: rotate_half([x1, x2]) is [-x2, x1] "
                                              "and the rotated vector is x * cos + rotate_half(x) * sin."),
        (q * cos + torch.cat([x2, x1], -1) * sin, "rotate_half must negate the second half: [-x2, x1], not [x2, x1]."),
        (q * sin + rope.rotate_half(q) * cos, "cos multiplies x itself, sin multiplies rotate_half(x)."),
        (q * cos + rope.rotate_half(q) * cos, "the rotate_half term is multiplied by sin, not cos."),
    ], f"q from {what}")
    expect_close(k_rot, expected_k, f"k from {what}", hint="rotate the keys exactly like the queries.")
    expect_close(q_rot.norm(dim=-1), q.norm(dim=-1), "the norms of the rotated queries",
                 hint="a rotation never changes a vector's length.")


@check("rope_2d_cos_sin")
def check_rope_2d_cos_sin(rope_2d_cos_sin):
    H, W, D = 2, 3, 8
    what = f"rope_2d_cos_sin(grid_h={H}, grid_w={W}, head_dim={D})"
    cos, sin = _pair(rope_2d_cos_sin(H, W, D), what)
    expected_cos, expected_sin = rope.rope_2d_cos_sin(H, W, D)
    expect_shape(cos, (H * W, D), what, hint="one row per patch (N = grid_h * grid_w), one column per channel.")
    inv_freq = rope.rope_frequencies(D // 2)

    def build(rows, cols, freqs):
        angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], -1)
        return torch.cat([angles, angles], -1).cos()
    rows, cols = torch.arange(H).repeat_interleave(W).float(), torch.arange(W).repeat(H).float()
    wrong_freqs = rope.rope_frequencies(D)[: D // 4]
    expect_known_mistakes(cos, expected_cos, [
        (build(cols, rows, inv_freq), "rows and columns are swapped: the first D/4 channels of each half turn with the row."),
        (build(torch.arange(H).repeat(W).float(), torch.arange(W).repeat_interleave(H).float(), inv_freq),
         "patches are in raster order: patch n sits at row n // grid_w and column n % grid_w."),
        (build(rows, cols, wrong_freqs), "each axis has D/4 pairs of its own: use the frequencies of a head of "
                                         "size D/2, rope_frequencies(head_dim // 2, theta)."),
    ], f"cos from {what}")
    expect_close(sin, expected_sin, f"sin from {what}")


def _mrope_reference(input_ids, image_grids, image_token_id, spatial_merge_size):
    position_ids, _ = rope.mrope_position_ids(torch.tensor([input_ids]), image_grids, None,
                                              image_token_id=image_token_id, video_token_id=-1,
                                              spatial_merge_size=spatial_merge_size)
    return position_ids[:, 0]


def _build_ids(input_ids, grids, image_token_id, merge, *, continue_at_max=True, start_at_s=True,
               column_fastest=True):
    """(3, L) ids for one sequence of text and images; the flags switch on typical mistakes."""
    columns, next_id, n, runs = [], 0, 0, iter(grids)
    while n < len(input_ids):
        if input_ids[n] != image_token_id:
            columns.append([next_id] * 3)
            next_id, n = next_id + 1, n + 1
            continue
        t, h, w = next(runs)
        h, w = h // merge, w // merge
        base = next_id if start_at_s else 0
        cells = [(i, r, c) for i in range(t) for r in range(h) for c in range(w)] if column_fastest else \
                [(i, r, c) for i in range(t) for c in range(w) for r in range(h)]
        columns += [[base + i, base + r, base + c] for i, r, c in cells]
        next_id = max(map(max, columns[-len(cells):])) + 1 if continue_at_max else next_id + len(cells)
        n += len(cells)
    return torch.tensor(columns).T


@check("mrope_ids")
def check_mrope_ids(mrope_ids):
    I, T = 3, 20
    input_ids = [T, T] + [I] * 6 + [T] + [I] * 2 + [T, T]     # text, image 2 x 3, text, image 1 x 2, text
    grids = [(1, 4, 6), (1, 2, 4)]
    what = "mrope_ids(input_ids, grids, image_token_id=3, spatial_merge_size=2)"
    result = mrope_ids(input_ids, grids, image_token_id=I, spatial_merge_size=2)
    expected = _mrope_reference(input_ids, grids, I, 2)
    if isinstance(result, torch.Tensor) and result.dim() == 2 and result.shape[1] == 3:
        raise Hint(f"{what} has shape {tuple(result.shape)}, expected (3, {len(input_ids)}). "
                   "Hint: one row per stream (temporal, height, width), one column per token.")
    expect_shape(result, (3, len(input_ids)), what)
    if result.is_floating_point():
        raise Hint(f"{what} should hold integer ids (torch.long), got {result.dtype}.")
    wrong = lambda **mistake: _build_ids(input_ids, grids, I, 2, **mistake)
    expect_known_mistakes(result, expected.to(result.dtype), [
        (wrong(continue_at_max=False),
         "text after an image continues at the image block's largest id + 1, not after the number of its tokens."),
        (wrong(column_fastest=False), "within an image, tokens are in raster order: the column changes fastest."),
        (wrong(start_at_s=False), "an image's ids start at s, the next free position: (s + t, s + row, s + col)."),
        (expected[[0, 2, 1]], "the streams are (temporal, height, width) in that order."),
    ], what)
    text_only = mrope_ids([T] * 5, [], image_token_id=I, spatial_merge_size=2)
    expect_equal(torch.as_tensor(text_only).tolist(), [list(range(5))] * 3, "ids for 5 text tokens",
                 hint="text tokens take the same id in all three streams, counting up by one.")
