"""Rendering the Shapes world: a SceneBatch of (B, N) tensors -> images (B, 3, H, W) float32 in [0, 1].

Vectorised over scenes, slots and pixels, on the device the scenes are on (or `device`).
"""

import torch

from .world import BACKGROUND, COLORS, SHAPES, SIZE_RADIUS


def render(scenes, image_size=32, *, device=None):
    """Paint scenes into (B, 3, H, W) float32 images in [0, 1], H = W = image_size."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if device is not None:
        scenes = scenes.to(device)
    device = scenes.x.device
    S = image_size
    pixels = (torch.arange(S, device=device, dtype=torch.float32) + 0.5) / S  # pixel centres in [0, 1]
    dx = pixels - scenes.x[..., None]  # (B, N, W)
    dy = pixels - scenes.y[..., None]  # (B, N, H)
    r = torch.tensor(SIZE_RADIUS, device=device)[scenes.size][..., None] / scenes.config.grid  # (B, N, 1)
    return paint(scenes, dx, dy, r, far=8.0)


def paint(scenes, dx, dy, r, far):
    """Images (B, 3, H, W) from each slot's offsets to the pixel centres, dx (B, N, W) and dy (B, N, H),
    and its radius r (B, N, 1), in one unit; `far` exceeds any |term| below in that unit."""
    B, N = scenes.shape.shape
    H, W = dy.shape[-1], dx.shape[-1]
    # Every shape is "x_term(dx) + y_term(dy) <= 0": per-shape maths runs on these small
    # (B, N, W) and (B, N, H) tensors, and each slot's (B, H, W) mask is a single broadcast
    # compare x_term <= -y_term. Adding `far` rules a pixel out.
    shape = scenes.shape[..., None]
    circle, square = SHAPES.index("circle"), SHAPES.index("square")
    x_term = torch.where(shape == circle, dx * dx,                    # dx² + dy² <= r²
             torch.where(shape == square, far * (dx.abs() > r),       # |dx| <= r and |dy| <= r
                         2 * dx.abs()))                               # upward triangle: 2|dx| <= dy + r, dy <= r
    y_term = torch.where(shape == circle, dy * dy - r * r,
             torch.where(shape == square, far * (dy.abs() > r),
                         far * (dy > r) - dy - r))
    y_term = y_term + far * ~scenes.present[..., None]
    # Paint slot after slot, so a later slot covers an earlier one if objects ever overlap.
    owner = torch.zeros(B, H, W, dtype=torch.uint8, device=dx.device)  # 0 = background, n + 1 = slot n
    for n in range(N):
        owner.masked_fill_(x_term[:, n, None, :] <= -y_term[:, n, :, None], n + 1)  # (B, H, W) mask
    colors = torch.tensor([BACKGROUND, *COLORS.values()], device=dx.device)  # (1 + num colors, 3)
    palette = colors[torch.cat([torch.full_like(scenes.color[:, :1], -1), scenes.color], 1) + 1]  # (B, 1+N, 3)
    images = palette.transpose(1, 2).gather(2, owner.view(B, 1, H * W).long().expand(B, 3, H * W))  # (B, 3, H*W)
    return images.view(B, 3, H, W)
