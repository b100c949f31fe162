"""RoPE, 2D RoPE and M-RoPE: the relative-position property, the reference layouts, and
Qwen2-VL's position ids on hand-worked examples."""

import pytest
import torch

from minivlm import rope
from minivlm.attention import MultiHeadAttention
from minivlm.vit import ViT, ViTConfig

IMG, VID, T, PAD = 3, 4, 20, 0   # image / video placeholder ids, a text token, padding


def ids(*streams):
    """Expected (3, L) position ids from the temporal, height and width rows."""
    return torch.tensor(streams)


def position_ids(input_ids, image_grid_thw=None, video_grid_thw=None, **kwargs):
    return rope.mrope_position_ids(torch.tensor(input_ids), image_grid_thw, video_grid_thw,
                                   image_token_id=IMG, video_token_id=VID, **kwargs)


# ----------------------------------------------------------------------------- 1D RoPE

def test_rotation_preserves_norms():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 10, 16), torch.randn(2, 3, 10, 16)
    q_rot, k_rot = rope.apply_rope(q, k, *rope.rope_cos_sin(torch.arange(10) * 7, 16))
    assert torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    assert torch.allclose(k_rot.norm(dim=-1), k.norm(dim=-1), atol=1e-5)


def test_position_zero_is_identity_and_rotate_half_layout():
    x = torch.arange(8.0).view(1, 1, 1, 8)
    assert rope.rotate_half(x).flatten().tolist() == [-4, -5, -6, -7, 0, 1, 2, 3]
    q_rot, _ = rope.apply_rope(x, x, *rope.rope_cos_sin(torch.tensor([0]), 8))
    assert torch.equal(q_rot, x)


def test_score_depends_only_on_offset():
    """q_m · k_n after RoPE is the same for every (m, n) with the same m - n."""
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        m, n, shift = torch.randint(0, 200, (3,), generator=g).tolist()
        positions = torch.tensor([m, n, m + shift, n + shift])
        cos, sin = rope.rope_cos_sin(positions, 16)
        qs, ks = rope.apply_rope(q.expand(1, 1, 4, 16), k.expand(1, 1, 4, 16), cos, sin)
        score = qs[0, 0, 0] @ ks[0, 0, 1]
        shifted = qs[0, 0, 2] @ ks[0, 0, 3]
        assert torch.allclose(score, shifted, atol=1e-3 * (1 + score.abs()))


def test_complex_view_agrees():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 12, 32)
    positions = torch.arange(12) * 3
    rotated, _ = rope.apply_rope(x, x, *rope.rope_cos_sin(positions, 32))
    assert torch.allclose(rope.rope_complex(x, positions), rotated, atol=1e-5)


def test_frequencies_highest_first():
    inv_freq = rope.rope_frequencies(8, theta=10000.0)
    assert torch.allclose(inv_freq, torch.tensor([1.0, 0.1, 0.01, 0.001]))


def test_batched_cos_sin_and_attention_switch():
    """Per-sample positions (B, L, D) broadcast over heads; attention takes rope=(cos, sin)."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4)
    x = torch.randn(2, 5, 32)
    cos, sin = rope.rope_cos_sin(torch.arange(5).expand(2, 5), 8)
    cos1, sin1 = rope.rope_cos_sin(torch.arange(5), 8)
    assert cos.shape == (2, 5, 8)
    assert torch.allclose(attn(x, rope=(cos, sin)), attn(x, rope=(cos1, sin1)), atol=1e-6)
    assert not torch.allclose(attn(x, rope=(cos1, sin1)), attn(x), atol=1e-3)


def test_bad_head_dims():
    with pytest.raises(ValueError, match="head_dim"):
        rope.rope_frequencies(7)
    with pytest.raises(ValueError, match="head_dim"):
        rope.rope_2d_cos_sin(2, 2, 6)
    with pytest.raises(ValueError, match="head dim"):
        rope.apply_rope(torch.randn(1, 1, 3, 8), torch.randn(1, 1, 3, 8), *rope.rope_cos_sin(torch.arange(3), 4))


# ----------------------------------------------------------------------------- 2D RoPE

def test_2d_layout_rows_then_columns():
    cos, sin = rope.rope_2d_cos_sin(2, 3, 8)                     # D/4 = 2 pairs per axis
    assert cos.shape == sin.shape == (6, 8)
    inv_freq = rope.rope_frequencies(4)                          # (1, 0.01)
    patch = 4                                                    # raster order: row 1, col 1
    angles = torch.cat([1 * inv_freq, 1 * inv_freq])
    assert torch.allclose(cos[patch], torch.cat([angles, angles]).cos())
    patch = 2                                                    # row 0, col 2
    angles = torch.cat([0 * inv_freq, 2 * inv_freq])
    assert torch.allclose(sin[patch], torch.cat([angles, angles]).sin())


def test_2d_scores_depend_only_on_row_and_column_offsets():
    torch.manual_seed(0)
    H, W, D = 4, 5, 16
    q, k = torch.randn(D), torch.randn(D)
    cos, sin = rope.rope_2d_cos_sin(H, W, D)
    qs, ks = rope.apply_rope(q.expand(1, 1, H * W, D), k.expand(1, 1, H * W, D), cos, sin)
    scores = qs[0, 0] @ ks[0, 0].T                                # (N, N)
    rows, cols = torch.arange(H * W) // W, torch.arange(H * W) % W
    d_row = rows[:, None] - rows[None, :]
    d_col = cols[:, None] - cols[None, :]
    for dr in range(-H + 1, H):
        for dc in range(-W + 1, W):
            same = scores[(d_row == dr) & (d_col == dc)]
            assert torch.allclose(same, same[0].expand_as(same), atol=1e-4)
    # and it really uses both axes: a row step and a column step score differently
    assert not torch.isclose(scores[(d_row == 1) & (d_col == 0)][0], scores[(d_row == 0) & (d_col == 1)][0])


def test_vit_rope2d_switch():
    """ViT(positions="rope2d") rotates q/k by (row, col); no learned table; runs at other sizes."""
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, heads=2, depth=1, positions="rope2d", pool="cls"))
    assert not hasattr(vit, "pos_embed")
    cos, sin = vit.rotary(4, 4, "cpu")
    assert cos.shape == (17, 16) and torch.equal(cos[0], torch.ones(16)) and torch.equal(sin[0], torch.zeros(16))
    tokens, pooled = vit(torch.rand(2, 3, 24, 32))
    assert tokens.shape == (2, 48, 32) and pooled.shape == (2, 32)


# ----------------------------------------------------------------------------- M-RoPE

def test_mrope_layout_matches_sections_in_both_halves():
    """Pair i uses the temporal id if i < s0, the height id if i < s0 + s1, else the width id."""
    D, section = 16, [2, 3, 3]
    t, h, w = 5, 11, 23
    position_ids = torch.tensor([t, h, w]).view(3, 1, 1)
    cos, sin = rope.mrope_cos_sin(position_ids, D, section, theta=100.0)
    inv_freq = rope.rope_frequencies(D, theta=100.0)
    expected = [(t if i < 2 else h if i < 5 else w) * inv_freq[i] for i in range(D // 2)]
    expected = torch.stack(expected * 2)
    assert cos.shape == (1, 1, D)
    assert torch.allclose(cos[0, 0], expected.cos()) and torch.allclose(sin[0, 0], expected.sin())


def test_mrope_equals_1d_rope_on_text():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 9, 32), torch.randn(2, 4, 9, 32)
    input_ids = [[T] * 9, [T] * 9]
    pos, _ = position_ids(input_ids)
    mq, mk = rope.apply_mrope(q, k, pos, [4, 6, 6])
    rq, rk = rope.apply_rope(q, k, *rope.rope_cos_sin(torch.arange(9), 32, theta=1e6))
    assert torch.allclose(mq, rq) and torch.allclose(mk, rk)


def test_mrope_bad_input():
    with pytest.raises(ValueError, match="mrope_section"):
        rope.mrope_cos_sin(torch.zeros(3, 1, 4, dtype=torch.long), 16, [2, 2, 2])
    with pytest.raises(ValueError, match="position_ids"):
        rope.mrope_cos_sin(torch.zeros(1, 4, dtype=torch.long), 16, [2, 3, 3])


# ----------------------------------------------------------------------------- Qwen2-VL position ids

def test_ids_text_only():
    pos, deltas = position_ids([[T, T, T, T, T]])
    assert torch.equal(pos[:, 0], ids([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]))
    assert deltas.tolist() == [[0]] and pos.dtype == torch.long


def test_ids_text_only_left_padded():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos, deltas = position_ids([[PAD, PAD, T, T, T], [T, T, T, T, T]], attention_mask=mask)
    assert torch.equal(pos[:, 0], ids([1, 1, 0, 1, 2], [1, 1, 0, 1, 2], [1, 1, 0, 1, 2]))   # padding gets 1
    assert torch.equal(pos[:, 1], ids([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]))
    assert deltas.tolist() == [[-2], [0]]


def test_ids_image_first():
    # grid (1, 4, 6) -> 2 x 3 merged tokens, then three text tokens
    pos, deltas = position_ids([[IMG] * 6 + [T] * 3], [[1, 4, 6]])
    assert torch.equal(pos[:, 0], ids([0, 0, 0, 0, 0, 0, 3, 4, 5],
                                      [0, 0, 0, 1, 1, 1, 3, 4, 5],
                                      [0, 1, 2, 0, 1, 2, 3, 4, 5]))
    assert deltas.tolist() == [[-3]]                      # 6 - 9


def test_ids_image_mid_text():
    pos, deltas = position_ids([[T, T, IMG, IMG, IMG, IMG, T, T]], [[1, 4, 4]])
    assert torch.equal(pos[:, 0], ids([0, 1, 2, 2, 2, 2, 4, 5],
                                      [0, 1, 2, 2, 3, 3, 4, 5],
                                      [0, 1, 2, 3, 2, 3, 4, 5]))
    assert deltas.tolist() == [[-2]]


def test_ids_several_images():
    # image 1: grid (1, 2, 4) -> 1 x 2; image 2: grid (1, 4, 2) -> 2 x 1
    pos, deltas = position_ids([[T, IMG, IMG, T, IMG, IMG, T]], [[1, 2, 4], [1, 4, 2]])
    assert torch.equal(pos[:, 0], ids([0, 1, 1, 3, 4, 4, 6],
                                      [0, 1, 1, 3, 4, 5, 6],
                                      [0, 1, 2, 3, 4, 4, 6]))
    assert deltas.tolist() == [[0]]


def test_ids_video_as_in_qwen2_vl_docstring():
    # 3 frame groups of 2 x 2 merged tokens, then five text tokens
    pos, deltas = position_ids([[VID] * 12 + [T] * 5], None, [[3, 4, 4]])
    assert torch.equal(pos[:, 0], ids([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4, 5, 6, 7],
                                      [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 3, 4, 5, 6, 7],
                                      [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 3, 4, 5, 6, 7]))
    assert deltas.tolist() == [[-9]]


def test_ids_qwen25_absolute_time():
    # 3 frame groups of 1 x 1 tokens; temporal id = floor(t_index * seconds_per_grid * tokens_per_second)
    for seconds, time_ids in ((1.0, [1, 3, 5]), (0.5, [1, 2, 3]), (0.75, [1, 2, 4])):
        pos, _ = position_ids([[T, VID, VID, VID, T]], None, [[3, 2, 2]],
                              video_seconds_per_grid=[seconds], tokens_per_second=2)
        assert pos[0, 0].tolist() == [0, *time_ids, time_ids[-1] + 1]
        assert pos[1, 0].tolist() == [0, 1, 1, 1, time_ids[-1] + 1]


def test_ids_interleaved_batch_left_padded():
    """text <image> text <video> text, batched with left padding; grids are used in reading order."""
    row0 = [PAD, PAD, T, IMG, IMG, IMG, IMG, T, VID, VID, T]
    row1 = [T, T, T, IMG, IMG, IMG, IMG, T, T, T, T]
    mask = torch.tensor([row0, row1]) != PAD
    pos, deltas = position_ids([row0, row1], [[1, 4, 4], [1, 4, 4]], [[2, 2, 2]], attention_mask=mask)
    assert torch.equal(pos[:, 0], ids([1, 1, 0, 1, 1, 1, 1, 3, 4, 5, 6],
                                      [1, 1, 0, 1, 1, 2, 2, 3, 4, 4, 6],
                                      [1, 1, 0, 1, 2, 1, 2, 3, 4, 4, 6]))
    assert torch.equal(pos[:, 1], ids([0, 1, 2, 3, 3, 3, 3, 5, 6, 7, 8],
                                      [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8],
                                      [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 8]))
    assert deltas.tolist() == [[-4], [-2]]


def test_rope_deltas_continue_generation():
    """A token appended at index n gets id n + rope_deltas in all three streams."""
    prompt = [T, IMG, IMG, IMG, IMG, T]
    _, deltas = position_ids([prompt], [[1, 4, 4]])
    longer, _ = position_ids([prompt + [T, T]], [[1, 4, 4]])
    for n in (6, 7):
        assert longer[:, 0, n].tolist() == [n + deltas.item()] * 3


@pytest.mark.parametrize("input_ids, image_grid, video_grid, match", [
    ([[T, IMG, IMG, IMG, T]], [[1, 4, 4]], None, "placeholder run has 3"),          # count mismatch
    ([[IMG] * 4 + [T] + [IMG] * 4], [[1, 4, 4]], None, "more image placeholder runs"),
    ([[T, VID, T]], None, None, "more video placeholder runs"),
    ([[T, IMG, IMG, IMG, IMG]], [[1, 4, 4], [1, 2, 2]], None, "only 1 image"),      # unused grid
    ([[T, IMG, IMG, IMG]], [[1, 3, 4]], None, "divisible by spatial_merge_size"),
    ([T, T], None, None, "input_ids must be"),
])
def test_position_id_errors(input_ids, image_grid, video_grid, match):
    with pytest.raises(ValueError, match=match):
        position_ids(input_ids, image_grid, video_grid)


def test_attention_mask_shape_error():
    with pytest.raises(ValueError, match="attention_mask"):
        position_ids([[T, T]], attention_mask=torch.ones(1, 3))
