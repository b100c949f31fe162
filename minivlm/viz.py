"""Plotting helpers the chapters share: image grids, training curves, attention overlays. No model imports.
(Architecture figures drawn from a model's config are in figures.py.)"""

import textwrap

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from .checks import integer, tensor


def _to_numpy_image(image):
    """(3, H, W) tensor in [0, 1] -> (H, W, 3) array for imshow."""
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def show_images(images, titles=None, ncols=8, size=2.0, colors=None):
    """A grid of (B, 3, H, W) images in [0, 1], each with an optional title (and title colour)."""
    tensor("images", images, dims=4, kind="float", shape="(B, 3, H, W)")
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = (count + ncols - 1) // ncols
    figure, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.4 * bool(titles)) * nrows),
                                squeeze=False)
    for k, axis in enumerate(axes.flat):
        axis.axis("off")
        if k < count:
            axis.imshow(_to_numpy_image(images[k]), interpolation="nearest")
            if titles is not None:
                axis.set_title(titles[k], fontsize=8, color="black" if colors is None else colors[k])
    figure.tight_layout()
    return figure


def plot_history(history, metric=None, smooth=10):
    """Training loss (raw, light; moving average, dark; log scale) and an eval metric on a second axis."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps, losses = history["step"], torch.tensor(history["loss"], dtype=torch.float64)
    axis.plot(steps, losses.tolist(), color="tab:blue", alpha=0.3)
    if len(losses) >= smooth:
        kernel = torch.ones(1, 1, smooth, dtype=torch.float64) / smooth
        average = F.conv1d(losses[None, None], kernel)[0, 0]
        axis.plot(steps[smooth - 1:], average.tolist(), color="tab:blue")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    evals = [e for e in history.get("eval", []) if metric is not None and metric in e]
    if evals:
        second = axis.twinx()
        second.plot([e["step"] for e in evals], [e[metric] for e in evals], "o-", color="tab:orange")
        second.set_ylabel(metric, color="tab:orange")
        second.set_ylim(0, 1.05)
    figure.tight_layout()
    return figure


def overlay_attention(axis, image, weights, cmap="plasma"):
    """Draw image (3, H, W) with each patch tinted by its attention weight, weights (grid_h, grid_w).

    Each map is scaled to its own range; weakly attended patches stay see-through.
    """
    strength = ((weights - weights.min()) / (weights.max() - weights.min() + 1e-12)).detach().float().cpu()
    tint = plt.get_cmap(cmap)(strength.numpy())             # (grid_h, grid_w, RGBA)
    tint[..., 3] = 0.8 * strength.numpy()
    H, W = image.shape[-2:]
    axis.imshow(_to_numpy_image(image), interpolation="nearest")
    axis.imshow(tint, interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    axis.set_xticks([])
    axis.set_yticks([])
    return axis


def draw_patch_grid(image, patch_size, axis=None, color="white"):
    """Show image (3, H, W) with lines between its patch_size × patch_size patches."""
    tensor("image", image, dims=3, kind="float", shape="(3, H, W)")
    integer("patch_size", patch_size, low=1)
    if axis is None:
        _, axis = plt.subplots(figsize=(3, 3))
    H, W = image.shape[-2:]
    axis.imshow(_to_numpy_image(image), interpolation="nearest")
    for x in range(patch_size, W, patch_size):
        axis.axvline(x - 0.5, color=color, linewidth=0.8)
    for y in range(patch_size, H, patch_size):
        axis.axhline(y - 0.5, color=color, linewidth=0.8)
    axis.axis("off")
    return axis


def answer_figure(images, questions, answers, truths=None, ncols=4, size=2.6):
    """(B, 3, H, W) images titled "question → answer"; green when right, red (with the truth) when wrong."""
    titles, colors = [], []
    for k, (question, answer) in enumerate(zip(questions, answers)):
        wrong = truths is not None and answer != truths[k]
        titles.append(textwrap.fill(question.replace(" ?", "?"), 34) + f"\n→ {answer}"
                      + (f" (true: {truths[k]})" if wrong else ""))
        colors.append("black" if truths is None else "tab:red" if wrong else "tab:green")
    return show_images(images, titles, ncols=ncols, size=size, colors=colors)
