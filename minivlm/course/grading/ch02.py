"""Checks for chapter 02 (positions: RoPE, 2D RoPE, M-RoPE), its experiment and three concept questions.

    from minivlm.course.grading import ch02
    ch02.check_rope_cos_sin(rope_cos_sin)
    ch02.check_apply_rope(apply_rope)
    ch02.check_rope_2d_cos_sin(rope_2d_cos_sin)
    ch02.check_mrope_ids(mrope_ids)
    ch02.check_grid_positions_experiment(image_position_ids)
    ch02.check_full_turn_position(full_turn_position)
    ch02.check_text_id_after_video(text_id_after_video)
    ch02.check_unseen_offsets(unseen_offsets)

Each check draws random sizes, positions and bases (`check_rng`), computes the expected value with the
reference in `minivlm.rope` on the original inputs, calls the learner's function on copies (`call_learner`)
and compares shapes, dtypes and values. When the values are wrong it recognises the usual mistakes
(interleaved instead of half-split pairs, a wrong frequency exponent, a hard-coded base, the rotation's
sign flipped, rows and columns swapped, video frames ignored, text after an image counted from the number
of placeholders) to give a specific hint.
"""

import math

import torch
import torch.nn.functional as F

from minivlm import rope
from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng, expect_close,
                                    expect_equal, expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.lm import LanguageModel, LMConfig
from minivlm.train import TrainConfig, fit
from minivlm.vit import ViT, ViTConfig

# Float tables are compared to 1e-4: positions up to ~200 times a frequency rounded differently (theta ** -e
# or 1 / theta ** e, float32 or float64) move an angle by a few 1e-5; every known mistake moves it by far more.
ATOL = 1e-4


def _pair(result, what, names="(cos, sin)"):
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise Hint(f"{what} should return two tensors {names}, got {type(result).__name__}.")
    return result


def _base(rng):
    """A RoPE base other than the default 10000, far enough from it that a hard-coded 10000 shows."""
    return round(rng.choice([rng.uniform(20.0, 1000.0), rng.uniform(1e5, 1e6)]), 1)


def _theta_kwargs(theta):
    return {} if theta is None else {"theta": theta}


def _describe_theta(theta):
    return "" if theta is None else f", theta={theta:g}"


# ----------------------------------------------------------------------------- 1D RoPE tables

def _angles_1d(positions, head_dim, theta, mistake=None):
    """(L, D/2) angles of 1D RoPE, or those of a usual mistake."""
    theta = 10000.0 if theta is None else theta
    m = torch.arange(len(positions)) if mistake == "positions ignored" else positions
    if mistake == "exponent i/D":
        return m.float()[:, None] / theta ** (torch.arange(head_dim // 2) / head_dim)
    if mistake == "growing":
        return m.float()[:, None] * theta ** (torch.arange(0, head_dim, 2) / head_dim)
    return m.float()[:, None] * rope.rope_frequencies(head_dim, theta)


COS_SIN_MISTAKES = {
    "interleaved": "this course pairs channel j with channel j + D/2 (halves), not neighbours: "
                   "concatenate the angles, don't repeat_interleave them.",
    "exponent i/D": "the frequency of pair i is theta ** (-2i / D): use torch.arange(0, D, 2) / D as the exponent.",
    "growing": "the frequencies fall with i: theta ** (-2i / D), with a minus sign (1 / theta ** (2i / D)).",
    "positions ignored": "use the positions you are given (any integers), not 0, 1, ..., L - 1.",
    "swapped": "cos and sin are swapped.",
}


def _cos_mistakes(positions, head_dim, theta):
    angles = _angles_1d(positions, head_dim, theta)
    wrong = {"interleaved": angles.repeat_interleave(2, dim=-1).cos(),
             "swapped": torch.cat([angles, angles], -1).sin()}
    for mistake in ("exponent i/D", "growing", "positions ignored"):
        other = _angles_1d(positions, head_dim, theta, mistake)
        wrong[mistake] = torch.cat([other, other], -1).cos()
    mistakes = [(wrong[name], COS_SIN_MISTAKES[name]) for name in COS_SIN_MISTAKES]
    if theta is not None:
        mistakes.append((rope.rope_cos_sin(positions, head_dim)[0],
                         "use the theta argument in the frequencies, not a hard-coded 10000."))
    return mistakes


@check("rope_cos_sin", points=1)
def check_rope_cos_sin(rope_cos_sin):
    rng = check_rng()
    generator = torch_generator(rng)
    cases = [(rng.randint(6, 24), 2 * rng.randint(3, 24), None),              # the default base
             (rng.randint(6, 24), 2 * rng.randint(2, 24), _base(rng)),
             (1, 2, _base(rng))]                                              # one position, one pair
    for L, D, theta in cases:
        positions = torch.randint(0, 200, (L,), generator=generator)        # any integers, in any order
        expected_cos, expected_sin = rope.rope_cos_sin(positions, D, **_theta_kwargs(theta))
        what = f"rope_cos_sin(positions ({L},), head_dim={D}{_describe_theta(theta)})"
        cos, sin = _pair(call_learner(rope_cos_sin, positions, D, what=what, **_theta_kwargs(theta)), what)
        if isinstance(cos, torch.Tensor) and tuple(cos.shape) == (L, D // 2) and D > 2:
            raise Hint(f"{what} gives cos of shape {(L, D // 2)}, expected {(L, D)}. Hint: both halves of the "
                       "head use the same angles: torch.cat([angles, angles], dim=-1).")
        expect_shape(cos, (L, D), what, hint="one row per position, one column per channel.")
        expect_known_mistakes(cos, expected_cos, _cos_mistakes(positions, D, theta), f"cos from {what}",
                              hint="float32 cos of the angles position · theta ** (-2i / D), both halves alike.",
                              atol=ATOL)
        expect_close(sin, expected_sin, f"sin from {what}", hint="sin of the same angles as cos.", atol=ATOL)


# ----------------------------------------------------------------------------- rotating q and k

def _rotate_pairs_of_neighbours(x):
    """[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]: RoFormer's interleaved pairs, not this course's halves."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([-odd, even], dim=-1).flatten(-2)


def _rope_mistakes(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return [
        (x * cos - rope.rotate_half(x) * sin, "the rotation goes the wrong way: rotate_half([x1, x2]) is [-x2, x1] "
                                              "and the rotated vector is x * cos + rotate_half(x) * sin."),
        (x * cos + torch.cat([x2, x1], -1) * sin, "rotate_half must negate the second half: [-x2, x1], not [x2, x1]."),
        (x * sin + rope.rotate_half(x) * cos, "cos multiplies x itself, sin multiplies rotate_half(x)."),
        (x * cos + rope.rotate_half(x) * cos, "the rotate_half term is multiplied by sin, not cos."),
        (x * cos + _rotate_pairs_of_neighbours(x) * sin,
         "rotate_half splits the last dimension into two halves, [x1, x2] -> [-x2, x1]; it does not pair "
         "neighbouring channels."),
    ]


@check("apply_rope", points=1)
def check_apply_rope(apply_rope):
    rng = check_rng()
    generator = torch_generator(rng)
    cases = [((rng.randint(1, 3), rng.randint(1, 4), rng.randint(2, 12), 2 * rng.randint(2, 16)), torch.float32),
             ((1, 1, 1, 2), torch.float32),                                   # one token, one pair
             ((rng.randint(1, 3), rng.randint(1, 4), rng.randint(2, 12), 2 * rng.randint(2, 16)), torch.float64)]
    for (B, H, L, D), dtype in cases:
        q = torch.randn(B, H, L, D, generator=generator, dtype=dtype)
        k = torch.randn(B, H, L, D, generator=generator, dtype=dtype)
        cos, sin = rope.rope_cos_sin(torch.randint(1, 100, (L,), generator=generator), D, _base(rng))
        expected_q, expected_k = rope.apply_rope(q, k, cos, sin)
        what = f"apply_rope(q, k, cos, sin) for {dtype} q, k {(B, H, L, D)} and cos, sin {(L, D)}"
        result = call_learner(apply_rope, q, k, cos, sin, what=what)
        q_rot, k_rot = _pair(result, what, "(q_rotated, k_rotated)")
        expect_shape(q_rot, (B, H, L, D), f"q from {what}", hint="cos and sin (L, D) broadcast over batch and heads.")
        if isinstance(q_rot, torch.Tensor) and q_rot.dtype != dtype:
            raise Hint(f"q from {what} has dtype {q_rot.dtype}, expected {dtype}: the rotated queries keep q's "
                       "dtype (don't cast them with .float()).")
        expect_known_mistakes(q_rot, expected_q, _rope_mistakes(q, cos, sin), f"q from {what}",
                              hint="q * cos + rotate_half(q) * sin.", atol=ATOL)
        expect_known_mistakes(k_rot, expected_k, [(k, "rotate the keys exactly like the queries."),
                                                  (expected_q, "rotate the keys k, not the queries, a second time.")],
                              f"k from {what}", hint="rotate the keys exactly like the queries.", atol=ATOL)


# ----------------------------------------------------------------------------- 2D RoPE tables

def _angles_2d(grid_h, grid_w, head_dim, theta, mistake=None):
    """(N, D) angles of axial 2D RoPE in raster order, or those of a usual mistake."""
    theta = 10000.0 if theta is None else theta
    if mistake == "one quarter of the D/2 frequencies":
        freqs = rope.rope_frequencies(head_dim, theta)[: head_dim // 4]
    else:
        freqs = rope.rope_frequencies(head_dim // 2, theta)
    rows, cols = torch.arange(grid_h).repeat_interleave(grid_w), torch.arange(grid_w).repeat(grid_h)
    if mistake == "swapped":
        rows, cols = cols, rows
    if mistake == "column major":
        rows, cols = torch.arange(grid_h).repeat(grid_w), torch.arange(grid_w).repeat_interleave(grid_h)
    row_angles, col_angles = rows[:, None] * freqs, cols[:, None] * freqs
    if mistake == "row half, column half":
        return torch.cat([row_angles, row_angles, col_angles, col_angles], dim=-1)
    angles = torch.cat([row_angles, col_angles], dim=-1)
    if mistake == "interleaved":
        return angles.repeat_interleave(2, dim=-1)
    return torch.cat([angles, angles], dim=-1)


ROPE_2D_MISTAKES = {
    "swapped": "rows and columns are swapped: the first D/4 channels of each half turn with the row.",
    "column major": "patches are in raster order: patch n sits at row n // grid_w and column n % grid_w.",
    "one quarter of the D/2 frequencies": "each axis has D/4 pairs of its own: use the frequencies of a head of "
                                          "size D/2, rope_frequencies(head_dim // 2, theta).",
    "row half, column half": "each half of the head holds [row angles (D/4), column angles (D/4)]: build "
                             "angles = cat([row · freqs, col · freqs]), then cat([angles, angles]).",
    "interleaved": "both halves of the head hold the same D/2 angles: cat([angles, angles]), not repeat_interleave.",
}


@check("rope_2d_cos_sin", points=2)
def check_rope_2d_cos_sin(rope_2d_cos_sin):
    rng = check_rng()
    H, W = rng.sample(range(2, 10), 2)                                        # never square
    line = (1, rng.randint(2, 9)) if rng.random() < 0.5 else (rng.randint(2, 9), 1)
    cases = [(H, W, 4 * rng.randint(2, 12), None),                            # the default base
             (W, H, 4 * rng.randint(2, 12), _base(rng)),
             (*line, 4, _base(rng))]                                          # one row (or column), one pair per axis
    for grid_h, grid_w, D, theta in cases:
        expected_cos, expected_sin = rope.rope_2d_cos_sin(grid_h, grid_w, D, **_theta_kwargs(theta))
        what = f"rope_2d_cos_sin(grid_h={grid_h}, grid_w={grid_w}, head_dim={D}{_describe_theta(theta)})"
        cos, sin = _pair(call_learner(rope_2d_cos_sin, grid_h, grid_w, D, what=what, **_theta_kwargs(theta)), what)
        expect_shape(cos, (grid_h * grid_w, D), what,
                     hint="one row per patch (N = grid_h * grid_w), one column per channel.")
        mistakes = [(_angles_2d(grid_h, grid_w, D, theta, name).cos(), hint) for name, hint in ROPE_2D_MISTAKES.items()]
        if theta is not None:
            mistakes.append((rope.rope_2d_cos_sin(grid_h, grid_w, D)[0],
                             "use the theta argument in the frequencies, not a hard-coded 10000."))
        expect_known_mistakes(cos, expected_cos, mistakes, f"cos from {what}",
                              hint="float32; in each half of the head, D/4 row angles then D/4 column angles.",
                              atol=ATOL)
        expect_close(sin, expected_sin, f"sin from {what}", hint="sin of the same angles as cos.", atol=ATOL)


# ----------------------------------------------------------------------------- M-RoPE position ids

def _mrope_reference(segments, image_token_id, merge):
    """(3, L) ids of one sequence of ("text", ids) and ("image", (t, h, w)) segments, from rope.mrope_position_ids.

    The reference reads each run of placeholders as one image (Qwen2-VL always puts a token between two
    images), so every other image is passed as a video (the same ids when no seconds are given) with a
    placeholder of its own: then back-to-back images are two runs.
    """
    other_token_id = max([image_token_id, *(i for kind, ids in segments if kind == "text" for i in ids)]) + 1
    input_ids, grids = [], {image_token_id: [], other_token_id: []}
    for kind, value in segments:
        if kind == "text":
            input_ids += value
            continue
        placeholder = image_token_id if len(grids[image_token_id]) == len(grids[other_token_id]) else other_token_id
        grids[placeholder].append(value)
        input_ids += [placeholder] * (value[0] * (value[1] // merge) * (value[2] // merge))
    position_ids, _ = rope.mrope_position_ids(torch.tensor([input_ids]), grids[image_token_id] or None,
                                              grids[other_token_id] or None, image_token_id=image_token_id,
                                              video_token_id=other_token_id, spatial_merge_size=merge)
    return position_ids[:, 0]


def _build_ids(input_ids, grids, image_token_id, merge, mistake=None):
    """(3, L) ids for one sequence of text and images, written out; `mistake` switches on a usual one."""
    columns, next_id, n, runs = [], 0, 0, iter(grids)
    while n < len(input_ids):
        if input_ids[n] != image_token_id:
            columns.append([next_id] * 3)
            next_id, n = next_id + 1, n + 1
            continue
        t, h, w = next(runs)
        h, w = h // merge, w // merge
        base = 0 if mistake == "start at 0" else next_id
        if mistake == "row fastest":
            cells = [(i, r, c) for i in range(t) for c in range(w) for r in range(h)]
        elif mistake == "frames fastest":
            cells = [(i, r, c) for r in range(h) for c in range(w) for i in range(t)]
        else:
            cells = [(i, r, c) for i in range(t) for r in range(h) for c in range(w)]
        block = [[base + (0 if mistake == "frames ignored" else i), base + r, base + c] for i, r, c in cells]
        columns += block
        largest = max(map(max, block))
        next_id = {"count tokens": next_id + len(block), "no + 1": largest,
                   "frames not counted": base + max(h, w)}.get(mistake, largest + 1)
        n += len(block)
    return torch.tensor(columns, dtype=torch.long).T


MROPE_MISTAKES = {
    "count tokens": "text after an image continues at the image block's largest id + 1, not after the number "
                    "of its tokens.",
    "no + 1": "the next free id after an image is the block's largest id + 1, not its largest id.",
    "frames not counted": "the next free id is the block's largest id + 1 over all three streams, the temporal "
                          "one (s + t - 1) included.",
    "row fastest": "within a frame, tokens are in raster order: the column changes fastest.",
    "frames fastest": "an image's frames come one after another: all tokens of frame 0 in raster order, then frame 1.",
    "frames ignored": "frame i of an image adds i to the temporal stream: (s + i, s + row, s + col).",
    "start at 0": "an image's ids start at s, the next free id: (s + i, s + row, s + col).",
}


def _image(rng, merge, frames, distinct_sides=False):
    h, w = rng.sample(range(1, 5), 2) if distinct_sides else (rng.randint(1, 4), rng.randint(1, 4))
    return "image", (frames, merge * h, merge * w)


def _mrope_cases(rng):
    """(segments, spatial_merge_size or None for the default, what the case is about) for the check."""
    text = lambda low, high: ("text", rng.randint(low, high))
    other_merge = rng.choice([1, 3])
    return [
        ([text(1, 4), _image(rng, 2, 1, distinct_sides=True), text(1, 3), _image(rng, 2, rng.randint(2, 3)), text(1, 2),
          ("image", (3, 2 * rng.randint(1, 2), 2 * rng.randint(1, 2))), text(1, 2)],    # more frames than rows, columns
         None, "an image is t · (h/m) · (w/m) placeholders with ids (s + i, s + row, s + col)."),
        ([text(1, 3), _image(rng, other_merge, rng.randint(1, 2), distinct_sides=True), text(1, 2),
          _image(rng, other_merge, 1), text(1, 2)],
         other_merge, "use spatial_merge_size: an image of (t, h, w) patches is t · (h/m) · (w/m) tokens."),
        ([_image(rng, 2, rng.randint(1, 2)), _image(rng, 2, 1, distinct_sides=True), text(1, 2), _image(rng, 2, 1)],
         None, "two images may follow each other with no text between: an image is exactly t · (h/m) · (w/m) "
               "placeholders."),
        ([text(1, 12)], None, "text tokens take the same id in all three streams, counting up by one."),
    ]


def _with_text_ids(segments, image_token_id, rng):
    """The segments with each ("text", length) given random token ids (never the placeholder)."""
    text_ids = [i for i in range(100) if i != image_token_id]
    return [("text", [rng.choice(text_ids) for _ in range(value)]) if kind == "text" else (kind, value)
            for kind, value in segments]


@check("mrope_ids", points=2)
def check_mrope_ids(mrope_ids):
    rng = check_rng()
    for index, (segments, merge, focus) in enumerate(_mrope_cases(rng)):
        image_token_id = rng.randint(0, 99)
        segments = _with_text_ids(segments, image_token_id, rng)
        m = 2 if merge is None else merge
        grids = [value for kind, value in segments if kind == "image"]
        input_ids = []
        for kind, value in segments:
            input_ids += value if kind == "text" else [image_token_id] * (value[0] * (value[1] // m) * (value[2] // m))
        expected = _mrope_reference(segments, image_token_id, m)
        kwargs = {} if merge is None else {"spatial_merge_size": merge}
        what = (f"mrope_ids(input_ids of length {len(input_ids)}, grids={grids}, image_token_id={image_token_id}"
                + ("" if merge is None else f", spatial_merge_size={merge}") + ")")
        try:
            result = call_learner(mrope_ids, input_ids, grids, image_token_id=image_token_id, what=what, **kwargs)
        except (NotImplementedError, AssertionError):
            raise
        except Exception as error:
            if index == 0:            # the first case has no twist: show the learner's traceback as it is
                raise
            message = (str(error).splitlines() or [""])[0][:80]
            raise Hint(f"{what} raised {type(error).__name__}: {message}. Hint: {focus}") from error
        L = len(input_ids)
        if isinstance(result, torch.Tensor) and result.dim() == 2 and result.shape == (L, 3) and L != 3:
            raise Hint(f"{what} has shape {tuple(result.shape)}, expected (3, {L}). "
                       "Hint: one row per stream (temporal, height, width), one column per token.")
        expect_shape(result, (3, L), what, hint=focus)
        if result.dtype != torch.long:
            raise Hint(f"{what} should hold integer ids of dtype torch.long, got {result.dtype}.")
        mistakes = [(_build_ids(input_ids, grids, image_token_id, m, name), hint) for name, hint in MROPE_MISTAKES.items()]
        mistakes.append((expected[[0, 2, 1]], "the streams are (temporal, height, width) in that order."))
        expect_known_mistakes(result, expected, mistakes, what, hint=focus, exact=True)


# ----------------------------------------------------------------------------- the experiment: a grid in the LM

# A two-block LM learns "which token is directly above this one?" on grids 8 tokens wide, then is tested on
# grids 3 to 7 wide. M-RoPE's bands (temporal, height, width): the image's temporal id is always 0, so its
# pairs go to height and width; base 10 turns the slowest (width) pair by 0.13 rad per column, enough for 8.
EXPERIMENT = dict(vocab=8, train_width=8, heights=(2, 6), test_widths=(3, 7), test_batch=128,
                  dim=64, depth=2, heads=4, mrope_section=(0, 4, 4), theta=10.0,
                  steps=150, batch_size=64, lr=1e-2, warmup_steps=20)
# Measured over 32 seeds, M-RoPE ids find the token above 99.8% of the time on the new widths on average, 99.0%
# at worst (one seed of an earlier run reached only 80%: training sometimes stalls); 1D ids, or ids that assume a
# width of 8, 100% on the training width and 12% (chance, 1/8) on the new ones.
MIN_ACCURACY = 0.5


def _reference_image_ids(grid_h, grid_w):
    """(3, N) M-RoPE ids of one image of grid_h x grid_w tokens that starts the sequence: (0, row, col)."""
    image = torch.zeros(1, grid_h * grid_w, dtype=torch.long)
    position_ids, _ = rope.mrope_position_ids(image, [[1, grid_h, grid_w]], image_token_id=0, video_token_id=-1,
                                              spatial_merge_size=1)
    return position_ids[:, 0]


def _learner_ids(image_position_ids, grid_h, grid_w):
    """The learner's ids for one grid, checked to be (3, N) torch.long: what the LM's M-RoPE takes."""
    what = f"image_position_ids({grid_h}, {grid_w})"
    ids = call_learner(image_position_ids, grid_h, grid_w, what=what)
    N = grid_h * grid_w
    if isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape == (N, 3) and N != 3:
        raise Hint(f"{what} has shape {tuple(ids.shape)}, expected (3, {N}). Hint: one row per stream "
                   "(temporal, height, width), one column per token.")
    expect_shape(ids, (3, N), what, hint="three streams (temporal, height, width), one column per token.")
    if ids.dtype != torch.long:
        raise Hint(f"{what} should hold integer ids of dtype torch.long, got {ids.dtype}.")
    return ids


def _above_loss(model, batch):
    """Cross-entropy of each token's prediction of the token one row above it (rows after the first)."""
    tokens, position_ids, width = batch
    logits = model(tokens, position_ids=position_ids, validate=False).logits
    return F.cross_entropy(logits[:, width:].flatten(0, 1), tokens[:, :-width].flatten())


@torch.no_grad()
def _above_accuracy(model, tokens, position_ids, width):
    predictions = model(tokens, position_ids=position_ids, validate=False).logits[:, width:].argmax(-1)
    return (predictions == tokens[:, :-width]).double().mean().item()


def grid_experiment(image_position_ids, seed, steps=None):
    """Train the LM with `image_position_ids` on grids EXPERIMENT["train_width"] wide; return
    (accuracy on new grids of that width, accuracy on grids of new widths) at finding the token above."""
    e = EXPERIMENT
    steps = steps or e["steps"]
    rng = torch.Generator().manual_seed(seed)
    draw = lambda low, high: int(torch.randint(low, high + 1, (), generator=rng))
    heights = range(e["heights"][0], e["heights"][1] + 1)
    train_ids = {h: _learner_ids(image_position_ids, h, e["train_width"]) for h in heights}
    test_grids = [(draw(*e["heights"]), w) for w in range(e["test_widths"][0], e["test_widths"][1] + 1)]
    test_ids = {grid: _learner_ids(image_position_ids, *grid) for grid in test_grids}
    data_seed, model_seed = draw(0, 2**40), draw(0, 2**40)

    def batch(step, grid=None, size=e["batch_size"]):
        g = torch.Generator().manual_seed(data_seed + step)
        grid_h, grid_w = grid or (heights[int(torch.randint(len(heights), (), generator=g))], e["train_width"])
        ids = train_ids[grid_h] if grid is None else test_ids[grid]
        tokens = torch.randint(e["vocab"], (size, grid_h * grid_w), generator=g)
        return tokens, ids[:, None, :].expand(3, size, grid_h * grid_w), grid_w

    with one_thread():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model_seed)
            model = LanguageModel(LMConfig(vocab_size=e["vocab"], dim=e["dim"], depth=e["depth"], heads=e["heads"],
                                           rope="mrope", mrope_section=e["mrope_section"], rope_theta=e["theta"],
                                           max_seq_len=64))
        fit(model, batch, _above_loss, TrainConfig(steps=steps, lr=e["lr"], warmup_steps=e["warmup_steps"],
                                                   device="cpu", progress=False))
        model.eval()
        seen = _above_accuracy(model, *batch(-1, grid=None, size=e["test_batch"]))
        new = min(_above_accuracy(model, *batch(-2 - i, grid=grid, size=e["test_batch"]))
                  for i, grid in enumerate(test_grids))
    return seen, new


@check("grid_positions_experiment", points=3)
def check_grid_positions_experiment(image_position_ids):
    rng = check_rng()
    seen, new = grid_experiment(image_position_ids, seed=rng.getrandbits(31))
    e = EXPERIMENT
    if seen < MIN_ACCURACY:
        raise Hint(f"trained on grids {e['train_width']} wide, the LM found the token above only {seen:.0%} of the "
                   f"time (expected ≥ {MIN_ACCURACY:.0%}, chance {1 / e['vocab']:.0%}). Hint: give every token of a "
                   "row the same height id and every token of a column the same width id.")
    if new < MIN_ACCURACY:
        raise Hint(f"the LM found the token above {seen:.0%} of the time on the training width but only {new:.0%} "
                   f"on grids {e['test_widths'][0]}–{e['test_widths'][1]} wide. Hint: with your ids the offset to the "
                   "token above depends on the grid's width (1D ids put it w tokens back): number rows and "
                   "columns in streams of their own.")
    grid_h, grid_w = rng.randint(1, 6), rng.randint(1, 9)
    expect_equal(_learner_ids(image_position_ids, grid_h, grid_w), _reference_image_ids(grid_h, grid_w),
                 f"image_position_ids({grid_h}, {grid_w})",
                 hint="the LM reads your grid well, but M-RoPE numbers an image's tokens (temporal 0, height = row, "
                      "width = column), from 0.")


# ----------------------------------------------------------------------------- concept questions

@check("full_turn_position", points=1)
def check_full_turn_position(full_turn_position):
    answer = call_learner(full_turn_position, what="full_turn_position()")
    answer = answer_number(answer, "full_turn_position()", integer=True)
    frequencies = rope.rope_frequencies(64)                                  # D = 64, base 10000
    first_full_turn = math.ceil(2 * math.pi / frequencies[16].item())
    mistakes = {
        first_full_turn - 1: "at that position the angle is still just short of 2π: take the first integer m "
                             "with m · θ_16 ≥ 2π (round up).",
        math.ceil(2 * math.pi / frequencies[8].item()): "that is pair 8's full turn: θ_i = 10000 ** (-2i / D) has "
                                                         "the exponent 2 · 16 / 64 for pair 16.",
        math.ceil(math.pi / frequencies[16].item()): "that is half a turn (π): a full circle is 2π radians.",
    }
    if answer != first_full_turn:
        raise Hint(f"full_turn_position() returned {answer}, which is not it. Hint: "
                   + mistakes.get(answer, "pair i turns by θ_i = base ** (-2i / D) radians per position; find the "
                                          "first integer position where m · θ_16 reaches 2π."))


QUESTION_PROMPT = dict(text_before=5, video_grid=(3, 8, 12), spatial_merge_size=2)


@check("text_id_after_video", points=1)
def check_text_id_after_video(text_id_after_video):
    answer = call_learner(text_id_after_video, what="text_id_after_video()")
    answer = answer_number(answer, "text_id_after_video()", integer=True)
    p, (t, h, w) = QUESTION_PROMPT, QUESTION_PROMPT["video_grid"]
    m = p["spatial_merge_size"]
    text, video = 0, 1
    input_ids = torch.tensor([[text] * p["text_before"] + [video] * (t * (h // m) * (w // m)) + [text]])
    position_ids, _ = rope.mrope_position_ids(input_ids, None, [list(p["video_grid"])], image_token_id=-1,
                                              video_token_id=video, spatial_merge_size=m)
    expected = int(position_ids[0, 0, -1])
    s = p["text_before"]
    mistakes = {
        s + t * (h // m) * (w // m): "that counts the video's tokens; M-RoPE ids grow with the largest of t, h/m "
                                     "and w/m, not with the number of tokens.",
        expected - 1: "that is the video block's largest id; the next text token takes the largest id + 1.",
        s + t: "the block's largest id is in the stream that counts furthest, not necessarily the temporal one.",
        s + max(t, h, w): "count rows and columns of the merged grid: h/m and w/m, after the m x m merge.",
    }
    if answer != expected:
        raise Hint(f"text_id_after_video() returned {answer}, which is not it. Hint: "
                   + mistakes.get(answer, "the video starts at s = the number of text tokens before it and gives "
                                          "(s + frame, s + row, s + col) over the merged grid; text continues at "
                                          "the block's largest id + 1."))


UNSEEN_OPTIONS = {"a": "it cannot run on the bigger image", "b": "it runs and meets only offsets seen in training",
                  "c": "it runs and meets offsets never seen in training"}
UNSEEN_HINTS = {
    "a": "a 2D-RoPE ViT has no position table: rope_2d_cos_sin builds the rotations for any grid.",
    "b": "the scores depend only on offsets, but a bigger grid has bigger offsets: in a 4 x 4 grid no two "
         "patches are more than 3 rows or columns apart.",
}


def _offsets(grid):
    return {(r1 - r2, c1 - c2) for r1 in range(grid) for r2 in range(grid) for c1 in range(grid) for c2 in range(grid)}


@check("unseen_offsets", points=1)
def check_unseen_offsets(unseen_offsets):
    answer = call_learner(unseen_offsets, what="unseen_offsets()")
    letter = answer_choice(answer, UNSEEN_OPTIONS, "unseen_offsets()")
    config = ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, heads=2, positions="rope2d")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            ViT(config)(torch.zeros(1, 3, 64, 64))
            runs = True
        except (ValueError, RuntimeError):
            runs = False
    train_grid, test_grid = config.grid_size, 64 // config.patch_size
    new_offsets = _offsets(test_grid) - _offsets(train_grid)
    right = "a" if not runs else "c" if new_offsets else "b"
    if letter != right:
        raise Hint(f"unseen_offsets() returned {letter!r} ({UNSEEN_OPTIONS[letter]}), which is not it. "
                   f"Hint: {UNSEEN_HINTS.get(letter, 'which (Δrow, Δcol) does an 8 x 8 grid have that a 4 x 4 has not?')}")
