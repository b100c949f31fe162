"""Rotary position embedding: RoPE (Su et al. 2021, "RoFormer"), 2D RoPE for a patch grid,
and M-RoPE, the multimodal RoPE of Qwen2-VL (Wang et al. 2024).

RoPE encodes the position m of a token by rotating each pair of channels of its query
and key by the angle m·θ_i, with one frequency θ_i = theta^(-2i/D) per pair. Because a
rotation by m·θ followed by the transpose of one by n·θ is a rotation by (m-n)·θ, the
score q_m·k_n depends on the positions only through the offset m - n.

Layout (as in GPT-NeoX, LLaMA and Qwen2-VL, not interleaved): channel j of the first
half is paired with channel j + D/2 of the second half, so

    rotate_half([x1, x2]) = [-x2, x1]
    rope(x) = x * cos + rotate_half(x) * sin,   cos/sin of shape (L, D) = cat(angles, angles)

Every variant below only changes which position drives which pair:
    1D RoPE   pair i turns with the token index m
    2D RoPE   the first half of the pairs turns with the patch row, the second with the column
    M-RoPE    three id streams (time, height, width); `mrope_section` gives each stream a
              contiguous band of pairs, time first (highest frequencies), then height, width

Shapes: q, k are (B, H, L, D); cos and sin are (L, D) or (B, L, D); M-RoPE position ids
are (3, B, L).
"""

import torch

from .checks import integer, tensor


def rope_frequencies(head_dim, theta=10000.0, device=None):
    """(D/2,) inverse frequencies θ_i = theta^(-2i/D), highest frequency first."""
    integer("head_dim", head_dim, low=1)
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number for RoPE, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / (theta ** exponents)


def rope_cos_sin(positions, head_dim, theta=10000.0):
    """cos and sin for integer positions (..., L) -> two (..., L, D) tensors in float32."""
    positions = torch.as_tensor(positions)
    inv_freq = rope_frequencies(head_dim, theta, device=positions.device)
    angles = positions.float()[..., None] * inv_freq          # (..., L, D/2)
    angles = torch.cat([angles, angles], dim=-1)              # (..., L, D): both halves share angles
    return angles.cos(), angles.sin()


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] over the last dimension (non-interleaved halves)."""
    tensor("x", x)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(q, k, cos, sin):
    """Rotate queries and keys (B, H, L, D) by their positions' angles; cos/sin (L, D) or (B, L, D)."""
    if q.shape[-1] != cos.shape[-1]:
        raise ValueError(f"cos/sin last dim {cos.shape[-1]} must equal the head dim {q.shape[-1]}")
    if cos.dim() == 3:                                        # (B, L, D) -> (B, 1, L, D): same for every head
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    cos, sin = cos.to(q.dtype), sin.to(q.dtype)
    q_rotated = q * cos + rotate_half(q) * sin
    k_rotated = k * cos + rotate_half(k) * sin
    return q_rotated, k_rotated


def rope_complex(x, positions, theta=10000.0):
    """The same rotation written with complex numbers: pair (x_j, x_{j+D/2}) is z_j, and
    RoPE is z_j · e^{i m θ_j}. x (..., L, D), positions (L,) -> (..., L, D)."""
    tensor("x", x, kind="float", shape="(..., L, D)")
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].float(), x[..., half:].float())
    angles = torch.as_tensor(positions, device=x.device).float()[:, None] * rope_frequencies(2 * half, theta, x.device)
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def rope_2d_cos_sin(grid_h, grid_w, head_dim, theta=10000.0, device=None):
    """2D (axial) RoPE for a grid_h × grid_w patch grid in raster order -> cos, sin (N, D).

    As in Qwen2-VL's vision encoder: each axis gets D/4 pairs with frequencies
    theta^(-4i/D); in each half of the head the first D/4 channels turn with the row and
    the next D/4 with the column. A patch's score with another then depends only on (Δrow, Δcol).
    """
    if head_dim <= 0 or head_dim % 4:
        raise ValueError(f"head_dim must be a positive multiple of 4 for 2D RoPE, got {head_dim}")
    inv_freq = rope_frequencies(head_dim // 2, theta, device)                      # (D/4,)
    rows = torch.arange(grid_h, device=device)[:, None].expand(grid_h, grid_w).reshape(-1)
    cols = torch.arange(grid_w, device=device)[None, :].expand(grid_h, grid_w).reshape(-1)
    angles = torch.cat([rows[:, None] * inv_freq, cols[:, None] * inv_freq], dim=-1)  # (N, D/2)
    angles = torch.cat([angles, angles], dim=-1)                                   # (N, D)
    return angles.cos(), angles.sin()


def check_mrope_section(mrope_section, head_dim):
    """[t, h, w] pair counts, checked to sum to head_dim/2 (used by mrope_cos_sin and LMConfig)."""
    section = [int(s) for s in mrope_section]
    if len(section) != 3 or any(s < 0 for s in section) or sum(section) * 2 != head_dim:
        raise ValueError(f"mrope_section must be 3 non-negative counts of frequency pairs summing to "
                         f"head_dim/2 = {head_dim // 2}, got {list(mrope_section)}")
    return section


def mrope_cos_sin(position_ids, head_dim, mrope_section, theta=1e6):
    """M-RoPE cos/sin (Qwen2-VL): position_ids (3, B, L) = (temporal, height, width) -> two (B, L, D).

    Pair i is driven by one stream: the first mrope_section[0] pairs (highest frequencies) by
    time, the next mrope_section[1] by height, the last mrope_section[2] by width. Each half
    of the head holds every pair once, so the same split is used in both halves.
    """
    position_ids = torch.as_tensor(position_ids)
    if position_ids.dim() != 3 or position_ids.shape[0] != 3:
        raise ValueError(f"position_ids must be (3, B, L), got {tuple(position_ids.shape)}")
    section = check_mrope_section(mrope_section, head_dim)
    cos, sin = rope_cos_sin(position_ids, head_dim, theta)       # (3, B, L, D): one per stream
    stream = torch.repeat_interleave(torch.arange(3), torch.tensor(section))  # (D/2,) stream of pair i
    stream = torch.cat([stream, stream]).to(position_ids.device)              # (D,)  stream of channel j
    pick = stream.view(1, 1, 1, -1).expand(1, *cos.shape[1:])                 # take channel j from its stream
    return cos.gather(0, pick)[0], sin.gather(0, pick)[0]


def apply_mrope(q, k, position_ids, mrope_section, theta=1e6):
    """Rotate q, k (B, H, L, D) with M-RoPE for position_ids (3, B, L)."""
    return apply_rope(q, k, *mrope_cos_sin(position_ids, q.shape[-1], mrope_section, theta))


def _grid_list(grid_thw, name, merge):
    if grid_thw is None:
        return []
    grid = torch.as_tensor(grid_thw)
    if grid.dim() != 2 or grid.shape[1] != 3 or grid.is_floating_point() or (grid < 1).any():
        raise ValueError(f"{name} must be (num, 3) positive integers (t, h, w), got {grid.tolist()}")
    if (grid[:, 1:] % merge).any():
        raise ValueError(f"{name}: h and w must be divisible by spatial_merge_size={merge}, got {grid.tolist()}")
    return [(t, h // merge, w // merge) for t, h, w in grid.tolist()]


def mrope_position_ids(input_ids, image_grid_thw=None, video_grid_thw=None, *, image_token_id,
                       video_token_id, spatial_merge_size=2, attention_mask=None,
                       video_seconds_per_grid=None, tokens_per_second=2):
    """Qwen2-VL's 3D position ids -> (position_ids (3, B, L) long, rope_deltas (B, 1) long).

    input_ids (B, L): text tokens and runs of placeholder tokens; a run of image_token_id
    (or video_token_id) is one image (video) and takes the next row of image_grid_thw
    (video_grid_thw), in reading order over the whole batch. A grid (t, h, w) counts
    patches before the spatial merge, so its run holds t·(h/m)·(w/m) tokens. Two images
    need a token between them (Qwen2-VL wraps each in <|vision_start|> ... <|vision_end|>).
    Text tokens get the same id in all three streams, counting up by one. A vision block
    that starts at the next free id s gets (s + t_index, s + row, s + col) over the merged
    grid in raster order; text after it continues at the block's largest id + 1.
    attention_mask (B, L), True/1 at real tokens: padding is skipped and gets id 1.
    rope_deltas = largest id + 1 - L: a token appended at index n gets id n + rope_deltas.
    video_seconds_per_grid (one number per video, or one for all): Qwen2.5-VL's absolute
    time, the temporal id of frame group t_index becomes floor(t_index·seconds·tokens_per_second).
    """
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError(f"input_ids must be (B, L) integer token ids, got shape {tuple(input_ids.shape)}")
    B, L = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(B, L, dtype=torch.bool, device=input_ids.device)
    attention_mask = torch.as_tensor(attention_mask)
    if attention_mask.shape != (B, L):
        raise ValueError(f"attention_mask must be (B, L) = ({B}, {L}), got {tuple(attention_mask.shape)}")
    grids = {image_token_id: _grid_list(image_grid_thw, "image_grid_thw", spatial_merge_size),
             video_token_id: _grid_list(video_grid_thw, "video_grid_thw", spatial_merge_size)}
    names = {image_token_id: "image", video_token_id: "video"}
    used = {image_token_id: 0, video_token_id: 0}
    num_videos = len(grids[video_token_id])
    seconds = video_seconds_per_grid
    if seconds is not None:
        seconds = torch.as_tensor(seconds, dtype=torch.float64).flatten().tolist()
        seconds = seconds * num_videos if len(seconds) == 1 else seconds
        if len(seconds) != num_videos:
            raise ValueError(f"video_seconds_per_grid needs one value per video ({num_videos}), got {len(seconds)}")

    position_ids = torch.ones(3, B, L, dtype=torch.long)
    rope_deltas = torch.zeros(B, 1, dtype=torch.long)
    for b in range(B):
        real = attention_mask[b].bool().cpu()
        tokens, run_lengths = torch.unique_consecutive(input_ids[b].cpu()[real], return_counts=True)
        blocks, next_id = [], 0
        for token, length in zip(tokens.tolist(), run_lengths.tolist()):
            if token in names:                               # a run of placeholders: one image or video
                kind, index = names[token], used[token]
                if index >= len(grids[token]):
                    raise ValueError(f"input_ids has more {kind} placeholder runs than {kind}_grid_thw "
                                     f"has grids ({len(grids[token])})")
                t, h, w = grids[token][index]
                if t * h * w != length:
                    raise ValueError(f"{kind} {index}: grid (t, h, w) = {(t, h * spatial_merge_size, w * spatial_merge_size)} "
                                     f"gives {t * h * w} tokens after a {spatial_merge_size}x{spatial_merge_size} merge, "
                                     f"but its placeholder run has {length}")
                used[token] += 1
                time_ids = torch.arange(t)
                if kind == "video" and seconds is not None:
                    time_ids = (time_ids * seconds[index] * tokens_per_second).floor().long()
                block = torch.stack([time_ids[:, None, None].expand(t, h, w),
                                     torch.arange(h)[None, :, None].expand(t, h, w),
                                     torch.arange(w)[None, None, :].expand(t, h, w)]).reshape(3, -1)
            else:                                            # text: one id, shared by the three streams
                block = torch.arange(length).expand(3, length)
            blocks.append(block + next_id)
            next_id = int(blocks[-1].max()) + 1
        if blocks:
            position_ids[:, b, real] = torch.cat(blocks, dim=1)
        rope_deltas[b] = next_id - L
    for token, name in names.items():
        if used[token] != len(grids[token]):
            raise ValueError(f"{name}_grid_thw has {len(grids[token])} grids but input_ids has only "
                             f"{used[token]} {name} placeholder runs")
    return position_ids.to(input_ids.device), rope_deltas.to(input_ids.device)
