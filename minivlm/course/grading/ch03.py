"""Checks for chapter 03 (contrastive alignment: CLIP and SigLIP).

    from minivlm.course.grading import ch03
    ch03.check_similarity_matrix(similarity_matrix)
    ch03.check_clip_loss(clip_loss)
    ch03.check_siglip_loss(siglip_loss)
    ch03.check_recall_at_k(recall_at_k)
    ch03.check_siglip_bias_init(siglip_bias_init)          # an experiment: trains for a few seconds
    ch03.check_clip_loss_at_chance(clip_loss_at_chance)    # concept questions
    ch03.check_clip_loss_aligned(clip_loss_aligned)
    ch03.check_loss_without_all_gather(loss_without_all_gather)

Each check draws its batch sizes, feature widths, scales, biases and dtypes at random
(`check_rng`), compares with the reference in `minivlm.contrastive` (and `models.clip`) and,
when the values are wrong, recognises the usual mistakes (a missing normalisation, a
transpose, a forgotten scale or bias, one direction only, a mean where a sum belongs, k > B)
to give a specific hint.
"""

import math
import numbers

import torch
import torch.nn.functional as F

from minivlm import contrastive
from minivlm.course.grading import (Hint, answer_choice, call_learner, check, check_rng, expect_close,
                                    expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.data import Tokenizer, WorldConfig, caption, render, sample_scenes
from minivlm.models.clip import CLIP, CLIPConfig, retrieval_recall
from minivlm.train import TrainConfig, fit
from minivlm.vit import ViTConfig


def _features(g, B, E, dtype):
    """(B, E) features, each row with its own length far from 1: the functions must normalise."""
    x = torch.randn(B, E, generator=g, dtype=torch.float64)
    lengths = 3 * torch.exp(torch.randn(B, 1, generator=g, dtype=torch.float64))
    return (x * lengths).to(dtype)


def _number(rng, low, high, as_tensor):
    """A random value in [low, high], rounded so the check's message shows it exactly; a float or a 0-dim tensor."""
    value = round(rng.uniform(low, high), 2)
    return torch.tensor(value) if as_tensor else value


def _scalar(value, what):
    if not isinstance(value, torch.Tensor):
        raise Hint(f"{what} should be a torch.Tensor, got {type(value).__name__}. "
                   "Hint: keep the loss a tensor (no .item()), so that it can be backpropagated.")
    if value.numel() != 1:
        raise Hint(f"{what} should be a scalar (one number), got shape {tuple(value.shape)}. "
                   "Hint: reduce the per-pair losses to a single number, as in the formula.")
    return value.reshape(())


def _python_float(value, what, hint, allow_tensor=True):
    """The learner's number (an int, a float or, if allowed, a one-element tensor) as a float, else a Hint."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and allow_tensor:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise Hint(f"{what} returned a {type(value).__name__}, expected a Python number. Hint: {hint}")
    if not math.isfinite(value):
        raise Hint(f"{what} is {value}, expected a finite number. Hint: {hint}")
    return float(value)


# ----------------------------------------------------------------------------- the similarity matrix


def _expected_similarity(images, texts, scale):
    """contrastive.similarity_logits for B_img != B_txt: it takes two (B, E) batches, so pad both to one B and cut."""
    B = max(len(images), len(texts), 2)
    pad = lambda x: torch.cat([x, x.new_ones(B - len(x), x.shape[1])])   # rows are normalised one by one
    return contrastive.similarity_logits(pad(images), pad(texts), scale)[:len(images), :len(texts)]


def _similarity_mistakes(images, texts, scale):
    s = float(scale)
    unit_images, unit_texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    expected = _expected_similarity(images, texts, scale)
    return [
        (s * images @ texts.T,
         "normalise both feature sets to unit length (F.normalize(x, dim=-1)) so entries are cosines."),
        (s * unit_images @ texts.T, "normalise the text features too, not only the image features."),
        (s * images @ unit_texts.T, "normalise the image features too, not only the text features."),
        (_expected_similarity(images, texts, 1.0), "multiply the cosine similarities by logit_scale."),
        (_expected_similarity(images, texts, 1 / s), "logit_scale is the multiplier itself: multiply, don't divide."),
        (_expected_similarity(images, texts, math.exp(s)),
         "logit_scale is already exponentiated: multiply by it as it is, without exp."),
        (s * F.normalize(images, dim=0) @ F.normalize(texts, dim=0).T,
         "normalise each feature vector (dim=-1), not each feature across the batch (dim=0)."),
        (expected.T, "rows are images, columns texts: image_features @ text_features.T."),
    ]


@check("similarity_matrix", points=1)
def check_similarity_matrix(similarity_matrix):
    rng = check_rng()
    g = torch_generator(rng)
    many_images, many_texts, square, other = (rng.randint(4, 24) for _ in range(4))
    cases = [   # (B_img, B_txt, dtype, logit_scale as a 0-dim tensor?, unit-length inputs?)
        (many_images, rng.randint(2, many_images - 1), torch.float32, False, False),
        (rng.randint(2, many_texts - 1), many_texts, torch.float64, True, False),
        (1, other, torch.float32, False, False) if rng.random() < 0.5 else (other, 1, torch.float32, False, False),
        (square, square, torch.float32, True, True),     # normalising twice must change nothing
    ]
    for B_img, B_txt, dtype, scale_is_tensor, unit in cases:
        E = rng.randint(2, 48)
        images, texts = _features(g, B_img, E, dtype), _features(g, B_txt, E, dtype)
        if unit:
            images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
        scale = _number(rng, 0.5, 30.0, scale_is_tensor)
        expected = _expected_similarity(images, texts, scale)
        what = f"similarity_matrix(images ({B_img}, {E}), texts ({B_txt}, {E}), {float(scale):g})"
        logits = call_learner(similarity_matrix, images, texts, scale, what="similarity_matrix")
        if B_img != B_txt and isinstance(logits, torch.Tensor) and tuple(logits.shape) == (B_txt, B_img):
            raise Hint(f"{what} has shape {(B_txt, B_img)}, expected {(B_img, B_txt)}. "
                       "Hint: rows are images, columns texts: image_features @ text_features.T.")
        expect_shape(logits, (B_img, B_txt), what, hint="one row per image, one column per text.")
        expect_known_mistakes(logits, expected, _similarity_mistakes(images, texts, scale), what)


# ----------------------------------------------------------------------------- CLIP's loss


def _clip_mistakes(images, texts, scale):
    s = float(scale)
    logits = contrastive.similarity_logits(images, texts, scale)
    raw_logits = s * images @ texts.T
    targets = torch.arange(len(images))
    image_to_text, text_to_image = F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)
    return [
        (image_to_text, "that is only the image->text direction; average it with the text->image one "
                        "(cross-entropy of logits.T)."),
        (text_to_image, "that is only the text->image direction; average it with the image->text one."),
        (image_to_text + text_to_image, "average the two directions ((a + b) / 2) instead of adding them."),
        (contrastive.clip_loss(images, texts, 1.0), "multiply the similarities by logit_scale before the softmax."),
        (contrastive.clip_loss(images, texts, 1 / s), "logit_scale is the multiplier itself: multiply, don't divide."),
        ((F.cross_entropy(raw_logits, targets) + F.cross_entropy(raw_logits.T, targets)) / 2,
         "normalise the features to unit length before the dot products."),
        ((F.cross_entropy(logits, targets, reduction="sum") + F.cross_entropy(logits.T, targets, reduction="sum")) / 2,
         "take the mean of the cross-entropy over the B pairs, not the sum."),
    ]


@check("clip_loss", points=1)
def check_clip_loss(clip_loss):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [(rng.randint(3, 40), torch.float64, True), (rng.randint(3, 40), torch.float32, True),
             (2, torch.float32, False)]
    for B, dtype, scale_is_tensor in cases:       # (B, dtype, logit_scale as a 0-dim tensor?)
        E = rng.randint(2, 48)
        images, texts = _features(g, B, E, dtype), _features(g, B, E, dtype)
        scale = _number(rng, 1.0, 30.0, scale_is_tensor)
        expected = contrastive.clip_loss(images, texts, scale)
        what = f"clip_loss(images ({B}, {E}), texts ({B}, {E}), {float(scale):g})"
        loss = _scalar(call_learner(clip_loss, images, texts, scale, what="clip_loss"), what)
        expect_known_mistakes(loss, expected, _clip_mistakes(images, texts, scale), what)
    swapped = _scalar(call_learner(clip_loss, texts, images, scale, what="clip_loss"), "clip_loss(texts, images, ...)")
    expect_close(swapped, expected, "clip_loss with the modalities swapped",
                 hint="the loss should be symmetric in images and texts.")


# ----------------------------------------------------------------------------- SigLIP's loss


def _siglip_mistakes(images, texts, scale, bias):
    s, b = float(scale), float(bias)
    B = len(images)
    cosines = contrastive.similarity_logits(images, texts, 1.0)
    logits = s * cosines + b
    labels = 2 * torch.eye(B, dtype=logits.dtype) - 1
    per_pair = -F.logsigmoid(labels * logits)
    return [
        (per_pair.mean(), "sum over all B² pairs and divide by B (not by B²: that is .mean())."),
        (per_pair.sum(), "divide the sum over all B² pairs by B."),
        (-F.logsigmoid(logits).diagonal().sum() / B, "the negatives count too: every off-diagonal pair has label -1."),
        (-F.logsigmoid(logits).sum() / B,
         "the labels are +1 on the diagonal and -1 elsewhere: use -logsigmoid(labels * logits)."),
        (-F.logsigmoid(-labels * logits).sum() / B,
         "the label is +1 for the true pairs (the diagonal), -1 for the others."),
        (contrastive.siglip_loss(images, texts, scale, 0.0), "add logit_bias to the scaled similarities."),
        (contrastive.siglip_loss(images, texts, scale, -b), "add logit_bias (s·cos + b), don't subtract it."),
        (-F.logsigmoid(labels * s * (cosines + b)).sum() / B,
         "add the bias after scaling: s·cos + b, not s·(cos + b)."),
        (contrastive.siglip_loss(images, texts, 1.0, bias), "multiply the cosine similarities by logit_scale."),
        (contrastive.siglip_loss(images, texts, 1 / s, bias),
         "logit_scale is the multiplier itself: multiply, don't divide."),
        (-F.logsigmoid(labels * (s * images @ texts.T + b)).sum() / B,
         "normalise the features to unit length before the dot products."),
    ]


@check("siglip_loss", points=2)
def check_siglip_loss(siglip_loss):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [(rng.randint(3, 40), torch.float64, True), (rng.randint(3, 40), torch.float32, True),
             (2, torch.float32, False)]
    for B, dtype, as_tensors in cases:            # (B, dtype, logit_scale and logit_bias as 0-dim tensors?)
        E = rng.randint(2, 48)
        images, texts = _features(g, B, E, dtype), _features(g, B, E, dtype)
        scale, bias = _number(rng, 1.0, 20.0, as_tensors), _number(rng, -12.0, 4.0, as_tensors)
        expected = contrastive.siglip_loss(images, texts, scale, bias)
        what = f"siglip_loss(images ({B}, {E}), texts ({B}, {E}), {float(scale):g}, {float(bias):g})"
        loss = _scalar(call_learner(siglip_loss, images, texts, scale, bias, what="siglip_loss"), what)
        expect_known_mistakes(loss, expected, _siglip_mistakes(images, texts, scale, bias), what)


# ----------------------------------------------------------------------------- Recall@k


def _retrieval_features(g, B, dtype):
    """Queries and candidates where candidate i is a noisy copy of query i, so the true match lands at every rank,
    and some candidates are hubs, close to every query, so that ranking rows and ranking columns differ."""
    E = int(torch.randint(4, 17, (), generator=g))
    common = torch.randn(E, generator=g, dtype=torch.float64)
    queries = torch.randn(B, E, generator=g, dtype=torch.float64) + common
    noise = torch.exp(3 * torch.rand(B, 1, generator=g, dtype=torch.float64) - 1.5)
    hubness = 2 * torch.rand(B, 1, generator=g, dtype=torch.float64)
    candidates = queries + noise * torch.randn(B, E, generator=g, dtype=torch.float64) + hubness * common
    return queries.to(dtype), candidates.to(dtype)


def _recall(queries, candidates, k, direction="i2t"):
    return retrieval_recall(queries, candidates, ks=(k,))[f"{direction}@{k}"]


def _recall_mistakes(queries, candidates, ks):
    """(R@k for each k in ks, as a typical mistake computes it, hint) for each mistake."""
    B = len(queries)
    return [
        ({k: _recall(-queries, candidates, k) for k in ks},
         "recall_at_k picks the least similar items. Hint: the best matches have the largest similarity: "
         "topk (largest=True) or argsort(descending=True)."),
        ({k: _recall(queries, candidates, k, "t2i") for k in ks},
         "recall_at_k ranks down the columns. Hint: row i holds query i's scores: rank along dim=1."),
        ({k: _recall(queries, candidates, k + 1) for k in ks},
         "recall_at_k looks at the top k+1 candidates. Hint: R@k counts a hit among the k best, no more."),
        ({k: _recall(queries, candidates, k - 1) if k > 1 else 0.0 for k in ks},
         "recall_at_k looks at only k-1 candidates. Hint: R@k counts a hit in the top k, the k-th included."),
        ({k: B * _recall(queries, candidates, k) for k in ks},
         "recall_at_k returns a count. Hint: divide the number of hits by the number of queries B."),
    ]


def _call_recall(recall_at_k, similarity, k):
    B = similarity.shape[0]
    what = f"recall_at_k(similarity ({B}, {B}), {k})"
    try:
        value = call_learner(recall_at_k, similarity, k, what="recall_at_k")
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError) as error:
        if k <= B:
            raise
        raise Hint(f"{what} raised {type(error).__name__} for k > B. Hint: when k is at least the number of "
                   "candidates, every true match is in the top k: clamp k to B.") from None
    return _python_float(value, what, "return the fraction as a Python float, e.g. hits.float().mean().item().",
                         allow_tensor=False)


@check("recall_at_k", points=2)
def check_recall_at_k(recall_at_k):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [(rng.randint(6, 40), torch.float32), (rng.randint(6, 40), torch.float64),
             (rng.randint(2, 5), torch.float32), (1, torch.float32)]
    # R@k of every case and k, keyed (case, k): a mistake is named only if it explains all of them
    got, expected, mistakes = {}, {}, None
    for case, (B, dtype) in enumerate(cases):
        queries, candidates = _retrieval_features(g, B, dtype)
        # the similarity retrieval_recall computes from the features: row i is query i against every candidate
        similarity = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T
        ks = sorted({1, rng.randint(2, max(2, B - 1)), rng.randint(2, max(2, B - 1)), B, rng.randint(B + 1, 2 * B + 8)})
        for k in ks:
            expected[case, k] = _recall(queries, candidates, k)
            got[case, k] = _call_recall(recall_at_k, similarity, k)
        case_mistakes = [({(case, k): v for k, v in wrong.items()}, hint)
                         for wrong, hint in _recall_mistakes(queries, candidates, ks)]
        mistakes = case_mistakes if mistakes is None else [
            ({**wrong, **more}, hint) for (wrong, hint), (more, _) in zip(mistakes, case_mistakes)]
    differs = lambda a, b, keys: [key for key in keys if abs(a[key] - b[key]) >= 1e-6]
    wrong_keys = differs(got, expected, expected)
    if not wrong_keys:
        return
    for wrong, hint in mistakes:
        if not differs(got, wrong, expected) and differs(wrong, expected, expected):
            raise Hint(hint)
    case, k = wrong_keys[0]
    B = cases[case][0]
    raise Hint(f"recall_at_k(similarity ({B}, {B}), {k}) is {got[case, k]:.3g}, expected {expected[case, k]:.3g}. "
               "Hint: the fraction of rows i whose column i is among the k largest entries of row i.")


# ----------------------------------------------------------------------------- experiment: SigLIP's bias at init

BIAS_STEPS = 30            # training steps per batch size
BIAS_SCALE = 10.0          # SigLIP's initial logit scale, t' = log 10
BIAS_TOLERANCE = 0.05      # |mean cosine of held-out false pairs| a well-started run stays within
BIAS_HELD_OUT = 128        # held-out pairs the cosine is measured on


def _pairs(batch_size, seed, split):
    """(images, input_ids, attention_mask) of `batch_size` Shapes scenes and their captions."""
    scenes = sample_scenes(batch_size, WorldConfig(max_objects=2), generator=torch.Generator().manual_seed(seed),
                           split=split)
    ids, mask = Tokenizer().batch_encode([caption(scenes, i) for i in range(batch_size)], add_eos=True)
    return render(scenes, 32), ids, mask


def _siglip_encoder(bias):
    vision = ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=4)
    return CLIP(CLIPConfig(vision=vision, vocab_size=Tokenizer().vocab_size, text_dim=32, text_depth=1, text_heads=4,
                           text_causal=False, text_pool="mean", embed_dim=32, loss="siglip",
                           init_logit_scale=BIAS_SCALE, init_logit_bias=bias))


def _contrastive_loss(model, batch):
    return contrastive.contrastive_loss(*model(*batch))


def false_pair_cosine_after_training(bias, batch_size, seed=0, steps=BIAS_STEPS):
    """Train a small SigLIP dual encoder from logit bias `bias` (scale 10) on batches of `batch_size`, on the CPU;
    return the mean cosine of its held-out false pairs (image i, caption j != i)."""
    with one_thread():
        with torch.random.fork_rng(devices=[]):      # the learner's global RNG stays as it was
            torch.manual_seed(seed)
            model = _siglip_encoder(bias)
            fit(model, lambda step: _pairs(batch_size, seed * 100_003 + step, "train"), _contrastive_loss,
                TrainConfig(steps=steps, lr=3e-3, warmup_steps=max(1, steps // 10), device="cpu", progress=False))
        model.eval()
        with torch.no_grad():
            output = model(*_pairs(BIAS_HELD_OUT, seed, "test"))
    cosines = output.image_features @ output.text_features.T
    n = len(cosines)
    return ((cosines.sum() - cosines.trace()) / (n * n - n)).item()


@check("siglip_bias_init", points=3)
def check_siglip_bias_init(siglip_bias_init):
    rng = check_rng()
    seed = rng.randrange(2**31)
    # a small batch and a large one: no single number is right for both
    for batch_size in (rng.randint(12, 20), rng.randint(96, 128)):
        what = f"siglip_bias_init({batch_size})"
        bias = _python_float(call_learner(siglip_bias_init, batch_size, what="siglip_bias_init"), what,
                             "return the initial logit bias b for a batch of batch_size pairs, as a float.")
        cosine = false_pair_cosine_after_training(bias, batch_size, seed, BIAS_STEPS)
        if not abs(cosine) <= BIAS_TOLERANCE:
            moved = "pulled every image towards" if cosine > 0 else "pushed every image away from"
            raise Hint(f"b = {bias:.3g} at B = {batch_size}: after {BIAS_STEPS} steps the held-out false pairs have a "
                       f"mean cosine of {cosine:+.2f}, not about 0: training {moved} every caption to make up for "
                       "the bias. Hint: make σ(b) the share of true pairs in a batch of B.")


# ----------------------------------------------------------------------------- concept questions


@check("clip_loss_at_chance", points=1)
def check_clip_loss_at_chance(clip_loss_at_chance):
    rng = check_rng()
    for B in (2, rng.randint(3, 30), rng.randint(100, 1000)):
        same = torch.ones(B, 4)                  # every image equally similar to every caption
        expected = contrastive.clip_loss(same, same, 10.0).item()
        what = f"clip_loss_at_chance({B})"
        answer = _python_float(call_learner(clip_loss_at_chance, B, what="clip_loss_at_chance"), what,
                               "return the loss as a float.")
        if not math.isclose(answer, expected, rel_tol=1e-4, abs_tol=1e-5):
            raise Hint(f"{what} is {answer:.4g}, which is not CLIP's loss when every logit is equal. Hint: then each "
                       "row's softmax is uniform over the B captions; the loss is -log of what it gives the true one "
                       "(and the two directions are alike).")


@check("clip_loss_aligned", points=1)
def check_clip_loss_aligned(clip_loss_aligned):
    rng = check_rng()
    for B, scale in ((rng.randint(100, 400), 1.0), (rng.randint(2, 20), round(1 / 0.07, 2)),
                     (rng.randint(2, 200), round(rng.uniform(0.5, 30.0), 2))):
        orthogonal = torch.eye(B, dtype=torch.float64)      # cos = 1 for the true pairs, 0 for all the others
        expected = contrastive.clip_loss(orthogonal, orthogonal, scale).item()
        what = f"clip_loss_aligned({B}, {scale:g})"
        answer = _python_float(call_learner(clip_loss_aligned, B, scale, what="clip_loss_aligned"), what,
                               "return the loss as a float.")
        if not math.isclose(answer, expected, rel_tol=1e-4, abs_tol=1e-6):
            raise Hint(f"{what} is {answer:.4g}, which is not CLIP's loss for this perfectly aligned batch. "
                       "Hint: in each row the true caption has logit s and each of the B - 1 others logit 0; the loss "
                       "is -log of the softmax of the true one (and the two directions are alike).")


LOSS_WITHOUT_ALL_GATHER_OPTIONS = {
    "a": "a row's softmax divides by a sum over all B texts of the batch, not only the device's own ones.",
    "b": None,                                    # the true statement (chapter 03, section 4)
    "c": "every device's features are negatives in every other device's loss, so their gradients must flow back "
         "through the gather to their owners (contrastive.GatherWithGrad).",
}


@check("loss_without_all_gather", points=1)
def check_loss_without_all_gather(loss_without_all_gather):
    answer = call_learner(loss_without_all_gather, what="loss_without_all_gather")
    letter = answer_choice(answer, LOSS_WITHOUT_ALL_GATHER_OPTIONS, "loss_without_all_gather()")
    rebuttal = LOSS_WITHOUT_ALL_GATHER_OPTIONS[letter]
    if rebuttal is not None:
        raise Hint(f"({letter}) is not true. Hint: {rebuttal}")
