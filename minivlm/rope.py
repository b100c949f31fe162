"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer").

RoPE encodes the position m of a token by rotating each pair of channels of its query
and key by the angle m·θ_i, with one frequency θ_i = theta^(-2i/D) per pair. Because a
rotation by m·θ followed by the transpose of one by n·θ is a rotation by (m-n)·θ, the
score q_m·k_n depends on the positions only through the offset m - n.

Layout (as in GPT-NeoX, LLaMA and Qwen2-VL, not interleaved): channel j of the first
half is paired with channel j + D/2 of the second half, so

    rotate_half([x1, x2]) = [-x2, x1]
    rope(x) = x * cos + rotate_half(x) * sin,   cos/sin of shape (L, D) = cat(angles, angles)

Shapes: q, k are (B, H, L, D); cos and sin are (L, D) or (B, L, D).
"""

import torch


def rope_frequencies(head_dim, theta=10000.0, device=None):
    """(D/2,) inverse frequencies θ_i = theta^(-2i/D), highest frequency first."""
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


def _check_mrope_section(mrope_section, head_dim):
    section = [int(s) for s in mrope_section]
    if len(section) != 3 or any(s < 0 for s in section) or sum(section) * 2 != head_dim:
        raise ValueError(f"mrope_section must be 3 non-negative counts of frequency pairs summing to "
                         f"head_dim/2 = {head_dim // 2}, got {list(mrope_section)}")
    return section


def mrope_cos_sin(position_ids, head_dim, mrope_section, theta=1e6):
    """M-RoPE cos/sin (Qwen2-VL): position_ids (3, B, L) = (temporal, height, width) -> two (B, L, D).

    Frequency pair i is driven by one stream: the first mrope_section[0] pairs (the highest
    frequencies) by time, the next mrope_section[1] by height, the last mrope_section[2] by
    width; the same split is used in both halves of the head, since each half holds every pair once.
    """
    position_ids = torch.as_tensor(position_ids)
    if position_ids.dim() != 3 or position_ids.shape[0] != 3:
        raise ValueError(f"position_ids must be (3, B, L), got {tuple(position_ids.shape)}")
    section = _check_mrope_section(mrope_section, head_dim)
    cos, sin = rope_cos_sin(position_ids, head_dim, theta)     # (3, B, L, D), one per stream
    stream = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(section)])
    stream = torch.cat([stream, stream]).to(position_ids.device)  # (D,) which stream drives channel j
    channel = torch.arange(head_dim, device=position_ids.device)
    return cos[stream, :, :, channel].permute(1, 2, 0), sin[stream, :, :, channel].permute(1, 2, 0)


def apply_mrope(q, k, position_ids, mrope_section, theta=1e6):
    """Rotate q, k (B, H, L, D) with M-RoPE for position_ids (3, B, L)."""
    return apply_rope(q, k, *mrope_cos_sin(position_ids, q.shape[-1], mrope_section, theta))
