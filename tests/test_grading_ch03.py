"""The chapter 03 checks pass the reference, and give a specific hint (not a pass) to typical mistakes."""

import pytest
import torch
import torch.nn.functional as F

from minivlm import contrastive
from minivlm.course.grading import ch03


def similarity(images, texts, scale):
    return scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T


def recall_at_k(similarity, k):
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return (top == torch.arange(len(similarity))[:, None]).any(1).float().mean().item()


def stub(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, reference", [
    (ch03.check_similarity_matrix, similarity),
    (ch03.check_clip_loss, contrastive.clip_loss),
    (ch03.check_siglip_loss, contrastive.siglip_loss),
    (ch03.check_recall_at_k, recall_at_k),
])
def test_reference_passes_and_stub_is_not_implemented(check, reference, grade):
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def targets(logits):
    return torch.arange(len(logits))


WRONG = [
    (ch03.check_similarity_matrix, lambda i, t, s: s * i @ t.T, "normalise both"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(t, i, s), "rows are images"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, 1.0), "multiply the cosine"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, 1 / s), "don't divide"),
    (ch03.check_clip_loss, lambda i, t, s: F.cross_entropy(similarity(i, t, s), targets(i)), "only the image->text"),
    (ch03.check_clip_loss,
     lambda i, t, s: F.cross_entropy(similarity(i, t, s), targets(i)) + F.cross_entropy(similarity(t, i, s), targets(i)),
     "instead of adding"),
    (ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, 1.0), "multiply the similarities by logit_scale"),
    (ch03.check_clip_loss, lambda i, t, s: (F.cross_entropy(s * i @ t.T, targets(i))
                                            + F.cross_entropy(s * t @ i.T, targets(i))) / 2, "normalise the features"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid((2 * torch.eye(len(i)) - 1) * (similarity(i, t, s) + b)).mean(),
     "not by B²"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(similarity(i, t, s) + b).diagonal().sum() / len(i),
     "the negatives count too"),
    (ch03.check_siglip_loss, lambda i, t, s, b: contrastive.siglip_loss(i, t, s, 0.0), "add logit_bias"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(-sim, k), "least similar"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim.T, k), "ranks down the columns"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim, k + 1), "k included"),
]


@pytest.mark.parametrize("check, wrong, hint", WRONG, ids=[hint for _, _, hint in WRONG])
def test_typical_mistakes_get_a_specific_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed
    assert out.startswith("❌") and hint in out and "Traceback" not in out, out


def test_unknown_mistake_gets_the_values_and_a_scalar_check(grade):
    passed, out = grade(ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, s) + 0.1)
    assert not passed and "wrong values: max abs difference" in out
    passed, out = grade(ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(similarity(i, t, s) + b))
    assert not passed and "should be a scalar" in out
