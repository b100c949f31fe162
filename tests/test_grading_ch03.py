"""The chapter 03 checks pass the reference and other correct forms, and give a specific hint (not a pass) to
typical mistakes, whatever sizes the check draws."""

import math

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


def siglip_bias_init(batch_size):
    return -math.log(batch_size)


def stub(*args):
    raise NotImplementedError()


CHECKS = [
    (ch03.check_similarity_matrix, similarity),
    (ch03.check_clip_loss, contrastive.clip_loss),
    (ch03.check_siglip_loss, contrastive.siglip_loss),
    (ch03.check_recall_at_k, recall_at_k),
    (ch03.check_siglip_bias_init, siglip_bias_init),
    (ch03.check_clip_loss_at_chance, lambda B: math.log(B)),
    (ch03.check_clip_loss_aligned, lambda B, s: math.log(math.exp(s) + B - 1) - s),
    (ch03.check_loss_without_all_gather, lambda: "b"),
]


@pytest.mark.parametrize("check, reference", CHECKS, ids=[check.exercise_id for check, _ in CHECKS])
def test_reference_passes_and_stub_is_not_implemented(check, reference, grade):
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_points():
    assert {check.exercise_id: check.points for check, _ in CHECKS} == {
        "similarity_matrix": 1, "clip_loss": 1, "siglip_loss": 2, "recall_at_k": 2, "siglip_bias_init": 3,
        "clip_loss_at_chance": 1, "clip_loss_aligned": 1, "loss_without_all_gather": 1}


# ----------------------------------------------------------------------------- correct, written differently


def similarity_einsum(images, texts, scale):
    unit_images = images / images.norm(dim=-1, keepdim=True)
    unit_texts = texts / texts.norm(dim=-1, keepdim=True)
    return torch.einsum("ie,je->ij", unit_images, unit_texts) * scale


def similarity_loop(images, texts, scale):
    rows = [torch.stack([scale * F.cosine_similarity(u, v, dim=0) for v in texts]) for u in images]
    return torch.stack(rows)


def clip_loss_one_cross_entropy(images, texts, scale):
    logits = similarity(images, texts, scale)
    targets = torch.arange(len(logits))
    return F.cross_entropy(torch.cat([logits, logits.T]), torch.cat([targets, targets]))


def clip_loss_log_softmax(images, texts, scale):
    logits = similarity(images, texts, scale)
    return -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2


def siglip_loss_bce(images, texts, scale, bias):
    logits = similarity(images, texts, scale) + bias
    targets = torch.eye(len(logits), dtype=logits.dtype)             # 1 for a pair, 0 for the rest
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(logits)


def siglip_loss_loops(images, texts, scale, bias):
    logits = similarity(images, texts, scale) + bias
    B = len(logits)
    total = 0
    for i in range(B):
        for j in range(B):
            total = total - F.logsigmoid(logits[i, j] if i == j else -logits[i, j])
    return total / B


def recall_by_rank(similarity, k):
    # the rank of the true match: how many candidates score higher than it
    rank = (similarity > similarity.diagonal()[:, None]).sum(1)
    return (rank < k).double().mean().item()


def recall_argsort(similarity, k):
    order = similarity.argsort(dim=1, descending=True)[:, :k]
    hits = sum(int(i in order[i].tolist()) for i in range(len(similarity)))
    return hits / len(similarity)


CORRECT = [
    (ch03.check_similarity_matrix, similarity_einsum),
    (ch03.check_similarity_matrix, similarity_loop),
    (ch03.check_clip_loss, clip_loss_one_cross_entropy),
    (ch03.check_clip_loss, clip_loss_log_softmax),
    (ch03.check_siglip_loss, siglip_loss_bce),
    (ch03.check_siglip_loss, siglip_loss_loops),
    (ch03.check_recall_at_k, recall_by_rank),
    (ch03.check_recall_at_k, recall_argsort),
    (ch03.check_clip_loss_at_chance, lambda B: -math.log(1 / B)),
    (ch03.check_clip_loss_at_chance, lambda B: torch.tensor(float(B)).log()),          # a tensor is a number too
    (ch03.check_clip_loss_aligned, lambda B, s: math.log1p((B - 1) * math.exp(-s))),
    (ch03.check_loss_without_all_gather, lambda: " B "),
]


@pytest.mark.parametrize("check, correct", CORRECT, ids=[f"{c.exercise_id}-{i}" for i, (c, _) in enumerate(CORRECT)])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_correct_alternatives_pass_for_any_draw(check, correct, seed, grade, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, correct)
    assert passed, out


def test_the_log_odds_bias_passes_too(grade, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", "1")
    passed, out = grade(ch03.check_siglip_bias_init, lambda B: -math.log(B - 1))
    assert passed, out


# ----------------------------------------------------------------------------- typical mistakes


def targets(logits):
    return torch.arange(len(logits))


def labels(logits):
    return 2 * torch.eye(len(logits), dtype=logits.dtype) - 1


def similarity_in_place(images, texts, scale):
    images /= images.norm(dim=-1, keepdim=True)
    texts /= texts.norm(dim=-1, keepdim=True)
    return scale * images @ texts.T


def similarity_old_sizes(images, texts, scale):
    # the old check's 4 images and 3 texts of width 5
    return scale * F.normalize(images.reshape(4, 5), dim=-1) @ F.normalize(texts.reshape(3, 5), dim=-1).T


def clip_loss_in_place(images, texts, scale):
    images.div_(images.norm(dim=-1, keepdim=True))
    return contrastive.clip_loss(images, texts, scale)


def siglip_in_place(images, texts, scale, bias):
    texts /= texts.norm(dim=-1, keepdim=True)
    return contrastive.siglip_loss(images, texts, scale, bias)


def recall_in_place(similarity, k):
    similarity -= similarity.diagonal()[:, None]                     # 0 for the true match
    return (similarity > 0).sum(1).lt(k).float().mean().item()


def recall_no_clamp(similarity, k):
    top = similarity.topk(k, dim=1).indices
    return (top == torch.arange(len(similarity))[:, None]).any(1).float().mean().item()


WRONG = [
    (ch03.check_similarity_matrix, lambda i, t, s: s * i @ t.T, "normalise both"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(t, i, s), "rows are images"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, 1.0), "multiply the cosine"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, 1 / s), "don't divide"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, math.exp(float(s))), "without exp"),
    (ch03.check_similarity_matrix, lambda i, t, s: s * F.normalize(i, dim=0) @ F.normalize(t, dim=0).T, "(dim=0)"),
    (ch03.check_similarity_matrix, lambda i, t, s: s * F.normalize(i, dim=-1) @ t.T, "normalise the text features too"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, s).float(), "expected torch.float64"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, s).squeeze(), "has shape"),
    (ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, 2.0), "right shape but wrong values"),
    (ch03.check_similarity_matrix, similarity_in_place, "modified its input `images` in place"),
    (ch03.check_similarity_matrix, similarity_old_sizes, "your code raised RuntimeError"),
    (ch03.check_clip_loss, lambda i, t, s: F.cross_entropy(similarity(i, t, s), targets(i)), "only the image->text"),
    (ch03.check_clip_loss, lambda i, t, s: F.cross_entropy(similarity(i, t, s).T, targets(i)), "only the text->image"),
    (ch03.check_clip_loss,
     lambda i, t, s: (F.cross_entropy(similarity(i, t, s), targets(i))
                      + F.cross_entropy(similarity(t, i, s), targets(i))),
     "instead of adding"),
    (ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, 1.0), "multiply the similarities by"),
    (ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, 1 / s), "don't divide"),
    (ch03.check_clip_loss, lambda i, t, s: (F.cross_entropy(s * i @ t.T, targets(i))
                                            + F.cross_entropy(s * t @ i.T, targets(i))) / 2, "normalise the features"),
    (ch03.check_clip_loss, lambda i, t, s: (F.cross_entropy(similarity(i, t, s), targets(i), reduction="sum")
                                            + F.cross_entropy(similarity(t, i, s), targets(i), reduction="sum")) / 2,
     "not the sum"),
    (ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, s).float(), "expected torch.float64"),
    (ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, s).item(), "should be a torch.Tensor"),
    (ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, 1 / 0.07), "right shape but wrong values"),
    (ch03.check_clip_loss, lambda i, t, s: F.cross_entropy(similarity(i, t, s), torch.arange(6)), "your code raised"),
    (ch03.check_clip_loss, clip_loss_in_place, "modified its input `images` in place"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(labels(i) * (similarity(i, t, s) + b)).mean(),
     "not by B²"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(labels(i) * (similarity(i, t, s) + b)).sum(),
     "divide the sum"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(similarity(i, t, s) + b).diagonal().sum() / len(i),
     "the negatives count too"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(similarity(i, t, s) + b).sum() / len(i),
     "-logsigmoid(labels * logits)"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(-labels(i) * (similarity(i, t, s) + b)).sum() / len(i),
     "+1 for the true pairs"),
    (ch03.check_siglip_loss, lambda i, t, s, b: contrastive.siglip_loss(i, t, s, 0.0), "add logit_bias to"),
    (ch03.check_siglip_loss, lambda i, t, s, b: contrastive.siglip_loss(i, t, s, -b), "don't subtract"),
    (ch03.check_siglip_loss,
     lambda i, t, s, b: -F.logsigmoid(labels(i) * s * (similarity(i, t, 1.0) + b)).sum() / len(i), "after scaling"),
    (ch03.check_siglip_loss, lambda i, t, s, b: contrastive.siglip_loss(i, t, 1.0, b), "multiply the cosine"),
    (ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(labels(i) * (s * i @ t.T + b)).sum() / len(i),
     "normalise the features"),
    (ch03.check_siglip_loss, lambda i, t, s, b: contrastive.siglip_loss(i, t, s, -10.0), "right shape but wrong"),
    (ch03.check_siglip_loss, lambda i, t, s, b: contrastive.siglip_loss(i, t, s, b).float(), "expected torch.float64"),
    (ch03.check_siglip_loss,       # the old check's B = 6
     lambda i, t, s, b: -F.logsigmoid((2 * torch.eye(6) - 1) * (similarity(i, t, s) + b)).sum() / 6,
     "your code raised"),
    (ch03.check_siglip_loss, siglip_in_place, "modified its input `texts` in place"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(-sim, k), "least similar"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim.T, k), "ranks down the columns"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim, k + 1), "top k+1"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim, k - 1) if k > 1 else 0.0, "only k-1"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim, k) * len(sim), "returns a count"),
    (ch03.check_recall_at_k, recall_no_clamp, "for k > B"),
    (ch03.check_recall_at_k, lambda sim, k: torch.tensor(recall_at_k(sim, k)), "expected a Python number"),
    (ch03.check_recall_at_k, lambda sim, k: recall_at_k(sim, k) * len(sim) / 5, "Hint: the fraction of rows"),
    (ch03.check_recall_at_k, recall_in_place, "modified its input `similarity` in place"),
    (ch03.check_siglip_bias_init, lambda B: 0.0, "pushed every image away"),
    (ch03.check_siglip_bias_init, lambda B: -10.0, "pulled every image towards"),
    (ch03.check_siglip_bias_init, lambda B: -math.log10(B), "not about 0"),
    (ch03.check_siglip_bias_init, lambda B: -math.log(16), "not about 0"),       # right only for the chapter's B = 16
    (ch03.check_siglip_bias_init, lambda B: -math.log(64), "not about 0"),
    (ch03.check_siglip_bias_init, lambda B: None, "expected a Python number"),
    (ch03.check_clip_loss_at_chance, lambda B: math.log(B - 1), "not CLIP's loss"),
    (ch03.check_clip_loss_at_chance, lambda B: 2 * math.log(B), "not CLIP's loss"),
    (ch03.check_clip_loss_at_chance, lambda B: B * math.log(2), "not CLIP's loss"),
    (ch03.check_clip_loss_at_chance, lambda B: math.log(256), "not CLIP's loss"),
    (ch03.check_clip_loss_at_chance, lambda B: math.log2(B), "not CLIP's loss"),
    (ch03.check_clip_loss_aligned, lambda B, s: math.log(math.exp(s) + B - 1), "not CLIP's loss"),
    (ch03.check_clip_loss_aligned, lambda B, s: math.log(math.exp(s) + B) - s, "not CLIP's loss"),
    (ch03.check_clip_loss_aligned, lambda B, s: math.log(B), "not CLIP's loss"),
    (ch03.check_clip_loss_aligned, lambda B, s: math.log(math.exp(1 / 0.07) + B - 1) - 1 / 0.07, "not CLIP's loss"),
    (ch03.check_loss_without_all_gather, lambda: "a", "(a) is not true"),
    (ch03.check_loss_without_all_gather, lambda: "c", "(c) is not true"),
    (ch03.check_loss_without_all_gather, lambda: "d", 'one of "a", "b", "c"'),
    (ch03.check_loss_without_all_gather, lambda: 2, "should return one of"),
    (ch03.check_loss_without_all_gather, lambda: ["b"], "should return one of"),
]


@pytest.mark.parametrize("check, wrong, hint", WRONG, ids=[f"{c.exercise_id}-{h}" for c, _, h in WRONG])
def test_typical_mistakes_get_a_specific_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed
    assert out.startswith("❌") and hint in out and "Traceback" not in out, out


FAST_WRONG = [(check, wrong, hint) for check, wrong, hint in WRONG if check is not ch03.check_siglip_bias_init]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mistakes_fail_for_any_draw(seed, capsys, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    for check, wrong, hint in FAST_WRONG:
        assert not check(wrong), f"{check.exercise_id}: {hint}"
        out = capsys.readouterr().out
        assert out.startswith("❌"), out


def test_a_bias_right_for_one_batch_size_fails_for_another_draw(grade, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", "1")
    passed, out = grade(ch03.check_siglip_bias_init, lambda B: -math.log(16))
    assert not passed and "not about 0" in out, out


def test_the_experiment_leaves_the_global_rng_and_threads_alone(grade):
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    passed, _ = grade(ch03.check_siglip_bias_init, lambda B: 0.0)
    assert not passed
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_the_measured_cosine_follows_the_prior():
    # nothing is learned yet: s·cos + b settles at the log odds of a true pair, -ln(B - 1)
    for bias in (0.0, -10.0):
        predicted = (-math.log(15) - bias) / ch03.BIAS_SCALE
        assert abs(ch03.false_pair_cosine_after_training(bias, 16) - predicted) < 0.05


def test_unknown_mistake_gets_the_values_and_a_scalar_check(grade):
    passed, out = grade(ch03.check_clip_loss, lambda i, t, s: contrastive.clip_loss(i, t, s) + 0.1)
    assert not passed and "wrong values: max abs difference" in out
    passed, out = grade(ch03.check_siglip_loss, lambda i, t, s, b: -F.logsigmoid(similarity(i, t, s) + b))
    assert not passed and "should be a scalar" in out


def test_messages_name_the_drawn_sizes(grade):
    passed, out = grade(ch03.check_similarity_matrix, lambda i, t, s: similarity(i, t, 1.0))
    assert not passed and "similarity_matrix(images (" in out and "texts (" in out
