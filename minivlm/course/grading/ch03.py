"""Checks for chapter 03 (contrastive alignment: CLIP and SigLIP).

    from minivlm.course.grading import ch03
    ch03.check_similarity_matrix(similarity_matrix)
    ch03.check_clip_loss(clip_loss)
    ch03.check_siglip_loss(siglip_loss)
    ch03.check_recall_at_k(recall_at_k)

Each check compares with the reference in `minivlm.contrastive` and, when the values are
wrong, recognises the usual mistakes (a missing normalisation, a transpose, a forgotten
scale or bias, one direction only, a mean where a sum belongs) to give a specific hint.
"""

import torch
import torch.nn.functional as F

from minivlm import contrastive
from minivlm.course.grading import Hint, check, expect_close, expect_known_mistakes, expect_shape


def _features(B=6, E=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    # not unit length on purpose: the functions must normalise
    return 3 * torch.randn(B, E, generator=g), 0.5 * torch.randn(B, E, generator=g)


def _scalar(value, what):
    if not isinstance(value, torch.Tensor):
        raise Hint(f"{what} should be a torch.Tensor, got {type(value).__name__}.")
    if value.numel() != 1:
        raise Hint(f"{what} should be a scalar (one number), got shape {tuple(value.shape)}. "
                   "Hint: average (or sum) the per-pair losses into a single number.")
    return value.reshape(())


def _reference_logits(images, texts, scale):
    return scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T


@check("similarity_matrix")
def check_similarity_matrix(similarity_matrix):
    images, texts = _features(B=4)
    texts = texts[:3]                     # 4 images, 3 texts: a transpose shows in the shape
    logits = similarity_matrix(images, texts, 2.0)
    expected = _reference_logits(images, texts, 2.0)
    if isinstance(logits, torch.Tensor) and tuple(logits.shape) == (3, 4):
        raise Hint("similarity_matrix has shape (3, 4) for 4 images and 3 texts, expected (4, 3). "
                   "Hint: rows are images, columns texts: image_features @ text_features.T.")
    expect_shape(logits, (4, 3), "similarity_matrix(images (4, E), texts (3, E), 2.0)")
    raw = images @ texts.T
    expect_known_mistakes(logits, expected, [
        (2 * raw, "normalise both feature sets to unit length (F.normalize(x, dim=-1)) so entries are cosines."),
        (_reference_logits(images, texts, 1.0), "multiply the cosine similarities by logit_scale."),
        (_reference_logits(images, texts, 0.5), "logit_scale is the multiplier itself: multiply, don't divide."),
        (2 * F.normalize(images, dim=0) @ F.normalize(texts, dim=0).T,
         "normalise each feature vector (dim=-1), not each feature across the batch (dim=0)."),
    ], "similarity_matrix(images, texts, 2.0)")
    # normalising twice changes nothing
    again = similarity_matrix(F.normalize(images, dim=-1), F.normalize(texts, dim=-1), 2.0)
    expect_close(again, expected, "similarity_matrix on unit-length features")


@check("clip_loss")
def check_clip_loss(clip_loss):
    images, texts = _features()
    scale = torch.tensor(5.0)
    loss = _scalar(clip_loss(images, texts, scale), "clip_loss(...)")
    expected = contrastive.clip_loss(images, texts, scale)
    logits = _reference_logits(images, texts, scale)
    targets = torch.arange(6)
    image_to_text = F.cross_entropy(logits, targets)
    text_to_image = F.cross_entropy(logits.T, targets)
    raw_logits = scale * images @ texts.T
    expect_known_mistakes(loss, expected, [
        (image_to_text, "that is only the image->text direction; average it with the text->image one "
                        "(cross-entropy of logits.T)."),
        (text_to_image, "that is only the text->image direction; average it with the image->text one."),
        (image_to_text + text_to_image, "average the two directions ((a + b) / 2) instead of adding them."),
        (contrastive.clip_loss(images, texts, 1.0), "multiply the similarities by logit_scale before the softmax."),
        ((F.cross_entropy(raw_logits, targets) + F.cross_entropy(raw_logits.T, targets)) / 2,
         "normalise the features to unit length before the dot products."),
        ((F.cross_entropy(logits, targets, reduction="sum") + F.cross_entropy(logits.T, targets, reduction="sum")) / 2,
         "take the mean of the cross-entropy over the B pairs, not the sum."),
    ], "clip_loss(images, texts, 5.0)")
    expect_close(_scalar(clip_loss(texts, images, scale), "clip_loss(...)"), expected,
                 "clip_loss with the modalities swapped", hint="the loss should be symmetric in images and texts.")


@check("siglip_loss")
def check_siglip_loss(siglip_loss):
    images, texts = _features()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    loss = _scalar(siglip_loss(images, texts, scale, bias), "siglip_loss(...)")
    expected = contrastive.siglip_loss(images, texts, scale, bias)
    logits = _reference_logits(images, texts, scale) + bias
    eye = torch.eye(6)
    labels = 2 * eye - 1
    per_pair = -F.logsigmoid(labels * logits)
    raw_logits = scale * images @ texts.T + bias
    expect_known_mistakes(loss, expected, [
        (per_pair.mean(), "sum over all B² pairs and divide by B (not by B²: that is .mean())."),
        (per_pair.sum(), "divide the sum over all B² pairs by B."),
        (-F.logsigmoid(logits).diagonal().sum() / 6, "the negatives count too: every off-diagonal pair has label -1."),
        (-F.logsigmoid(logits).sum() / 6, "the labels are +1 on the diagonal and -1 elsewhere: use -logsigmoid(labels * logits)."),
        (contrastive.siglip_loss(images, texts, scale, 0.0), "add logit_bias to the scaled similarities."),
        (contrastive.siglip_loss(images, texts, 1.0, bias), "multiply the cosine similarities by logit_scale."),
        (-F.logsigmoid(labels * raw_logits).sum() / 6, "normalise the features to unit length before the dot products."),
    ], "siglip_loss(images, texts, 10.0, -10.0)")


@check("recall_at_k")
def check_recall_at_k(recall_at_k):
    # 5 queries; the true match of query i is column i. Ranks of the true match: 1, 2, 3, 1, 5
    similarity = torch.tensor([[0.9, 0.1, 0.2, 0.3, 0.0],
                               [0.8, 0.7, 0.1, 0.0, 0.2],
                               [0.5, 0.6, 0.4, 0.1, 0.0],
                               [0.1, 0.2, 0.3, 0.9, 0.4],
                               [0.5, 0.6, 0.7, 0.8, 0.1]])
    expected = {1: 0.4, 2: 0.6, 3: 0.8, 5: 1.0}
    wrong = {"columns": {1: 0.6, 2: 0.8, 3: 1.0, 5: 1.0}, "ascending": {1: 0.2, 2: 0.2, 3: 0.4, 5: 1.0},
             "rank k+1": {1: 0.6, 2: 0.8, 3: 0.8, 5: 1.0}}
    got = {}
    for k in expected:
        value = recall_at_k(similarity, k)
        if isinstance(value, torch.Tensor):
            value = _scalar(value, f"recall_at_k(similarity, {k})").item()
        if not isinstance(value, (int, float)):
            raise Hint(f"recall_at_k should return a number, got {type(value).__name__}.")
        got[k] = value
    if all(abs(got[k] - want) < 1e-6 for k, want in expected.items()):
        return
    if all(abs(got[k] - want) < 1e-6 for k, want in wrong["ascending"].items()):
        raise Hint("recall_at_k picks the least similar items. Hint: the best matches have the largest "
                   "similarity: topk (largest=True) or argsort(descending=True).")
    if all(abs(got[k] - want) < 1e-6 for k, want in wrong["columns"].items()):
        raise Hint("recall_at_k ranks down the columns. Hint: row i holds query i's scores: rank along dim=1.")
    if all(abs(got[k] - want) < 1e-6 for k, want in wrong["rank k+1"].items()):
        raise Hint("recall_at_k looks at k+1 items. Hint: R@k counts a hit in the top k, k included.")
    k = next(k for k in expected if abs(got[k] - expected[k]) >= 1e-6)
    raise Hint(f"recall_at_k(similarity, {k}) is {got[k]:.3g}, expected {expected[k]:.3g}. "
               "Hint: the fraction of rows i whose column i is among the k largest entries of row i.")
