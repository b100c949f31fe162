"""Contrastive image-text losses: CLIP (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision") and SigLIP (Zhai et al. 2023, "Sigmoid Loss for
Language Image Pre-Training").

A batch holds B matching pairs: image_features (B, E) and text_features (B, E), row i of one
describing row i of the other. Both are L2-normalised, so their dot products are cosine
similarities, and a (B, B) matrix of logits compares every image with every text:

    logits = logit_scale · image_features @ text_featuresᵀ  [+ logit_bias]        (B, B)

CLIP (InfoNCE): each row is a B-way classification "which text is mine?" and each column
"which image is mine?"; the loss is the mean of the two cross-entropies with the diagonal
as the target. A row's softmax needs every other entry of the row: the whole batch.

SigLIP: every entry is its own binary question "is this a pair?", label +1 on the diagonal
and -1 elsewhere; the loss is Σ_ij -log σ(label_ij · logit_ij) over all B² entries, / B.
No normalisation across the row, so any block of the matrix can be computed on its own.

`logit_scale` is the multiplier itself (CLIP learns log(1/0.07) and exponentiates it; the
model clamps it to at most 100). Under `torchrun`, the `distributed_*` losses gather the
features of every rank so each rank's rows are compared with the global batch.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checks import tensor
from .distributed import world


def check_features(image_features, text_features):
    """Raise a clear ValueError unless both are (B, E) tensors with B >= 2 on one device and dtype."""
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (B, E) tensor, got {shape}")
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features and text_features must both be (B, E), got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if image_features.shape[0] < 2:
        raise ValueError(f"a contrastive loss needs B >= 2 pairs (each pair's negatives are the others), "
                         f"got B = {image_features.shape[0]}")
    if image_features.dtype != text_features.dtype:
        raise ValueError(f"image_features is {image_features.dtype} but text_features is {text_features.dtype}")
    if image_features.device != text_features.device:
        raise ValueError(f"image_features is on {image_features.device} but text_features on {text_features.device}")


def _check_scalar(value, name, features):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar (one number), got shape {tuple(value.shape)}")
        if value.device != features.device:
            raise ValueError(f"{name} is on {value.device} but the features on {features.device}")
        return value.reshape(())
    if not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a scalar tensor, got {type(value).__name__}")
    return value


def similarity_logits(image_features, text_features, logit_scale, logit_bias=0.0):
    """(B, E), (B, E) -> (B, B) logits; entry (i, j) compares image i with text j."""
    check_features(image_features, text_features)
    logit_scale = _check_scalar(logit_scale, "logit_scale", image_features)
    logit_bias = _check_scalar(logit_bias, "logit_bias", image_features)
    image_features = F.normalize(image_features, dim=-1)   # idempotent: normalising twice is harmless
    text_features = F.normalize(text_features, dim=-1)
    return logit_scale * image_features @ text_features.T + logit_bias


def clip_loss(image_features, text_features, logit_scale):
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropy; a scalar."""
    return symmetric_cross_entropy(similarity_logits(image_features, text_features, logit_scale))


def symmetric_cross_entropy(logits):
    """(B, B) logits with the pairs on the diagonal -> mean of the row-wise and column-wise cross-entropy."""
    tensor("logits", logits, dims=2, kind="float", shape="(B, B)")
    if logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be square (B, B), pairs on the diagonal, got {tuple(logits.shape)}")
    targets = torch.arange(logits.shape[0], device=logits.device)
    image_to_text = F.cross_entropy(logits, targets)       # row i: which text belongs to image i?
    text_to_image = F.cross_entropy(logits.T, targets)     # column j: which image belongs to text j?
    return (image_to_text + text_to_image) / 2


def siglip_loss(image_features, text_features, logit_scale, logit_bias):
    """Pairwise sigmoid loss: Σ over all B² pairs of -log σ(±logit), divided by B; a scalar."""
    logits = similarity_logits(image_features, text_features, logit_scale, logit_bias)
    B = logits.shape[0]
    labels = 2 * torch.eye(B, device=logits.device, dtype=logits.dtype) - 1    # +1 pairs, -1 the rest
    return -F.logsigmoid(labels * logits).sum() / B


# ----------------------------------------------------------------------------- distributed

class GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 that lets gradients flow back to every rank's own rows.

    dist.all_gather is not differentiable: the gathered copies are plain tensors. Here the
    forward concatenates the (b, E) shards of all ranks into (W·b, E); in the backward each
    rank holds the gradient of *its own* loss w.r.t. all W·b rows, and rank r's rows were used
    by the losses of every rank, so the gradients are summed over ranks (all_reduce) and each
    rank keeps the slice of its own rows. (torch.distributed.nn.functional.all_gather does the
    same; this is the ten-line version.) Every rank must pass the same shape.
    """

    @staticmethod
    def forward(ctx, x):
        rank, world_size = world()
        ctx.rank, ctx.world_size = rank, world_size
        shards = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(shards, x.contiguous())
        return torch.cat(shards)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)                                # sum the gradients of all ranks' losses
        return grad.chunk(ctx.world_size)[ctx.rank]


def gather_with_grad(x):
    """(b, E) on each of W ranks -> (W·b, E), rank order; the identity without a process group."""
    _, world_size = world()
    return GatherWithGrad.apply(x) if world_size > 1 else x


def distributed_clip_loss(image_features, text_features, logit_scale):
    """CLIP loss over the global batch, each rank computing its own b rows and b columns.

    Gradient scaling (read this with train.py's DDP): rank r returns the mean loss of its
    rows, ℓ_r, and the global loss is L = mean_r ℓ_r (what `fit` reports after its all-reduce).
    Exactly as in ordinary data-parallel training, the gradient reaching rank r's features
    is W·∂L/∂f_r (∂ℓ_r plus, through GatherWithGrad, the other ranks' ∂ℓ_r'), and DDP's
    average over W ranks turns it back into ∂L/∂θ: the same update as one process on the
    whole batch. Memory per rank is (b, W·b) logits, not (W·b, W·b).
    """
    check_features(image_features, text_features)
    rank, world_size = world()
    if world_size == 1:
        return clip_loss(image_features, text_features, logit_scale)
    logit_scale = _check_scalar(logit_scale, "logit_scale", image_features)
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    all_images, all_texts = gather_with_grad(image_features), gather_with_grad(text_features)
    b = image_features.shape[0]
    targets = rank * b + torch.arange(b, device=image_features.device)   # my pairs in the global batch
    image_to_text = F.cross_entropy(logit_scale * image_features @ all_texts.T, targets)
    text_to_image = F.cross_entropy(logit_scale * text_features @ all_images.T, targets)
    return (image_to_text + text_to_image) / 2


def distributed_siglip_loss(image_features, text_features, logit_scale, logit_bias):
    """SigLIP loss over the global batch: my b images against all W·b texts, scaled as above.

    With L = Σ_all pairs / (W·b), rank r's share is ℓ_r = Σ_(my images, all texts) / b, so
    that L = mean_r ℓ_r. The paper avoids even this all-gather: texts travel round a ring
    of devices, one (b, E) chunk at a time, and each device adds the loss of its (b, b)
    block; that works because the sigmoid loss is a plain sum over blocks.
    """
    check_features(image_features, text_features)
    rank, world_size = world()
    if world_size == 1:
        return siglip_loss(image_features, text_features, logit_scale, logit_bias)
    logit_scale = _check_scalar(logit_scale, "logit_scale", image_features)
    logit_bias = _check_scalar(logit_bias, "logit_bias", image_features)
    image_features = F.normalize(image_features, dim=-1)
    all_texts = gather_with_grad(F.normalize(text_features, dim=-1))
    b = image_features.shape[0]
    logits = logit_scale * image_features @ all_texts.T + logit_bias      # (b, W·b)
    labels = -torch.ones_like(logits)
    labels[:, rank * b:(rank + 1) * b] += 2 * torch.eye(b, device=logits.device, dtype=logits.dtype)
    return -F.logsigmoid(labels * logits).sum() / b


def contrastive_loss(image_features, text_features, logit_scale, logit_bias=None):
    """The loss a dual encoder's outputs call for: SigLIP when there is a bias, else CLIP.

    Uses the distributed forms, which are the plain losses without a process group, so
    `loss_fn = lambda model, batch: contrastive_loss(*model(*batch))` works under torchrun.
    """
    if logit_bias is None:
        return distributed_clip_loss(image_features, text_features, logit_scale)
    return distributed_siglip_loss(image_features, text_features, logit_scale, logit_bias)
