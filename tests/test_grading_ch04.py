"""minivlm.course.grading.ch04: right answers pass (also written differently), typical mistakes get a specific
hint, stubs say 'not implemented'; the randomised checks hold under several seeds."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm import attention, generation
from minivlm.course.grading import ch04


def stub(*args, **kwargs):
    raise NotImplementedError()


# --- references, with switches for the usual mistakes -------------------------------------

def ones(L, S):
    return torch.ones(L, S, dtype=torch.bool)


def causal_mask_by_comparison(L, S):
    return torch.arange(S)[None, :] <= torch.arange(L)[:, None] + (S - L)


def causal_mask_loop(L, S):
    mask = torch.zeros(L, S, dtype=torch.bool)
    for i in range(L):
        for j in range(S):
            mask[i, j] = j <= i + S - L
    return mask


OLD_MASKS = {(L, S): ones(L, S).tril(S - L) for L, S in [(4, 4), (2, 5), (1, 3)]}


def rms_norm(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_norm_rsqrt(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) / x.shape[-1] + eps) * weight


def rms_norm_in_place(x, weight, eps=1e-6):
    return x.div_(torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul_(weight)


def attend_with_cache(q, k, v, cache, *, scale=True, softmax_dim=-1, prepend=False, store=True, divisor=None):
    if "k" in cache:
        k = torch.cat([k, cache["k"]] if prepend else [cache["k"], k], dim=2)
        v = torch.cat([v, cache["v"]] if prepend else [cache["v"], v], dim=2)
    if store:
        cache["k"], cache["v"] = k, v
    divisor = divisor or (math.sqrt(q.shape[-1]) if scale else 1.0)
    scores = q @ k.transpose(-2, -1) / divisor
    return scores.softmax(dim=softmax_dim) @ v


def attend_with_cache_sdpa(q, k, v, cache):
    if cache:
        k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
    cache.update(k=k, v=v)
    return F.scaled_dot_product_attention(q, k, v)


def attend_with_cache_top_left_mask(q, k, v, cache):
    attend_with_cache(q, k, v, cache)
    keys, values = cache["k"], cache["v"]
    mask = torch.ones(1, keys.shape[2], dtype=torch.bool).tril()
    return attention.attention_math(q, keys, values, mask)[0]


def attend_with_cache_einsum(q, k, v, cache):
    keys = torch.cat([cache.get("k", k[:, :, :0]), k], dim=2)
    values = torch.cat([cache.get("v", v[:, :, :0]), v], dim=2)
    cache.update(k=keys, v=values)
    weights = torch.einsum("bhqd,bhkd->bhqk", q, keys).div(q.shape[-1] ** 0.5).softmax(-1)
    return torch.einsum("bhqk,bhkd->bhqd", weights, values)


def sample_top_k(logits, k, temperature=1.0, generator=None, *, divide=True, fill=float("-inf"), keep=0):
    logits = logits / temperature if divide else logits * temperature
    kth_best = logits.topk(min(k + keep, logits.shape[-1]), dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < kth_best, fill)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_among_top_k(logits, k, temperature=1.0, generator=None):
    """Correct, written differently: sample a position among the k best, then map it back to its token id."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1)
    choice = torch.multinomial((top.values / temperature).softmax(-1), 1, generator=generator)
    return top.indices.gather(-1, choice).squeeze(-1)


def sample_top_k_position(logits, k, temperature=1.0, generator=None):
    top = logits.topk(min(k, logits.shape[-1]), dim=-1)
    return torch.multinomial((top.values / temperature).softmax(-1), 1, generator=generator).squeeze(-1)


def sample_top_k_global_rng(logits, k, temperature=1.0, generator=None):
    return sample_top_k(logits, k, temperature, None)


def sample_top_k_own_generator(logits, k, temperature=1.0, generator=None):
    return sample_top_k(logits, k, temperature, torch.Generator().manual_seed(0))


def sample_top_k_crashes_for_big_k(logits, k, temperature=1.0, generator=None):
    kth_best = (logits / temperature).topk(k, dim=-1).values[:, -1:]
    scaled = (logits / temperature).masked_fill(logits / temperature < kth_best, float("-inf"))
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_top_k_first_row_threshold(logits, k, temperature=1.0, generator=None):
    scaled = logits / temperature
    kth_best = scaled.topk(min(k, scaled.shape[-1]), dim=-1).values[0, -1]
    scaled = scaled.masked_fill(scaled < kth_best, float("-inf"))
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_top_k_in_place(logits, k, temperature=1.0, generator=None):
    logits.div_(temperature)
    return sample_top_k(logits, k, 1.0, generator)


def next_token_loss(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def next_token_loss_transposed(logits, labels):
    """Correct, written differently: cross_entropy over (B, V, L) logits."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:])


def next_token_loss_by_hand(logits, labels):
    """Correct, written differently: log-softmax, gather the label, average where the label is real."""
    targets = labels[:, 1:]
    real = targets != -100
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return -(log_probs * real).sum() / real.sum()


def loss_with_shift(logits, labels, shift):
    V = logits.shape[-1]
    if shift == 0:
        return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    if shift < 0:
        return F.cross_entropy(logits[:, 1:].reshape(-1, V), labels[:, :-1].reshape(-1))
    return F.cross_entropy(logits[:, :-shift].reshape(-1, V), labels[:, shift:].reshape(-1))


def next_token_loss_in_place(logits, labels):
    labels[labels == -100] = 0
    return next_token_loss(logits, labels)


REFERENCES = [
    (ch04.check_causal_mask, attention.causal_mask),
    (ch04.check_causal_mask, causal_mask_by_comparison),
    (ch04.check_causal_mask, causal_mask_loop),
    (ch04.check_rms_norm, rms_norm),
    (ch04.check_rms_norm, rms_norm_rsqrt),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: F.rms_norm(x, x.shape[-1:], w, eps=eps)),
    (ch04.check_attend_with_cache, attend_with_cache),
    (ch04.check_attend_with_cache, attend_with_cache_sdpa),
    (ch04.check_attend_with_cache, attend_with_cache_einsum),
    (ch04.check_sample_top_k, sample_top_k),
    (ch04.check_sample_top_k, sample_among_top_k),
    (ch04.check_sample_top_k, lambda logits, k, temperature=1.0, generator=None:
        generation.sample_next_token(logits, temperature, k, generator)),
    (ch04.check_kv_cache_numbers, lambda: 2 * 4 * 3 * 100 * 128),
    (ch04.check_kv_cache_numbers, lambda: torch.tensor(2 * 4 * 3 * 100 * 128)),
    (ch04.check_why_cache_is_exact, lambda: "b"),
    (ch04.check_why_cache_is_exact, lambda: " B "),
    (ch04.check_top_k_probability, lambda: 1 / (1 + math.exp(2))),
]
SEEDED = [(check, reference) for check, reference in REFERENCES
          if check in (ch04.check_causal_mask, ch04.check_rms_norm, ch04.check_attend_with_cache,
                       ch04.check_sample_top_k)]


@pytest.mark.parametrize("check, reference", REFERENCES)
def test_reference_passes(check, reference, grade):
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("check, reference", SEEDED[::2] + [SEEDED[-2]])
def test_reference_passes_under_other_seeds(check, reference, seed, grade, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check", [ch04.check_causal_mask, ch04.check_rms_norm, ch04.check_attend_with_cache,
                                   ch04.check_sample_top_k, ch04.check_next_token_loss,
                                   ch04.check_kv_cache_numbers, ch04.check_why_cache_is_exact,
                                   ch04.check_top_k_probability])
def test_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


# --- typical mistakes get a hint --------------------------------------------------------

WRONG = [
    (ch04.check_causal_mask, lambda L, S: ones(L, S).triu(S - L), "upside down"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(), "shift the diagonal"),
    (ch04.check_causal_mask, lambda L, S: ones(S, S).tril()[:L], "LAST L positions"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(L - S), "not down"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(S - L - 1), "attend to itself"),
    (ch04.check_causal_mask, lambda L, S: ~ones(L, S).tril(S - L), "invert"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(S - L).float(), "torch.bool"),
    (ch04.check_causal_mask, lambda L, S: OLD_MASKS[(L, S)], "KeyError"),
    (ch04.check_causal_mask, lambda L, S: ones(4, 4).tril()[:L, :S], "has shape"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: F.layer_norm(x, x.shape[-1:], w, eps=eps), "LayerNorm"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps),
     "learned weight"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
     "MEAN"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w, "ROOT"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * w, "eps"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
     "INSIDE the square root"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: rms_norm(x, w), "use the `eps` argument"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-5: rms_norm(x, w, eps), "not 1e-5"),
    (ch04.check_rms_norm, lambda x, w, eps=None: F.rms_norm(x, x.shape[-1:], w, eps=eps), "machine epsilon"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * w,
     "not the batch"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: rms_norm(x.float(), w.float(), eps), "dtype torch.float32"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) / 8 + eps) * w,
     "wrong values"),
    (ch04.check_rms_norm, rms_norm_in_place, "in place"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, scale=False), "1/√d"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, divisor=2.0), "not a fixed"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(
        q, k, v, c, divisor=math.sqrt(1 + (c["k"].shape[2] if c else 0))), "not the number of keys"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, softmax_dim=-2),
     "over the keys"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, prepend=True), "at the END"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, store=False), "no 'k'"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, {}) if c.update(k=k, v=v) is None
     else None, "don't overwrite"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c).float(),
     "dtype torch.float32"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q.div_(1.0 + q.shape[-1] ** 0.5), k, v, c),
     "in place"),
    (ch04.check_attend_with_cache, attend_with_cache_top_left_mask, "top-left causal mask"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, k, t, g, divide=False), "DIVIDE"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, k, 1.0, g), "divide the logits"),
    (ch04.check_sample_top_k, lambda *a: sample_top_k(*a, fill=0.0), "-inf"),
    (ch04.check_sample_top_k, lambda *a: sample_top_k(*a, keep=1), "keep the k best"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, max(k - 1, 1), t, g), "not k - 1"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, k, t, g)[:, None], "squeeze"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, k, t, g).int(), "torch.int64"),
    (ch04.check_sample_top_k, sample_top_k_position, "not token ids"),
    (ch04.check_sample_top_k, sample_top_k_global_rng, "global random generator"),
    (ch04.check_sample_top_k, sample_top_k_own_generator, "seeded differently"),
    (ch04.check_sample_top_k, sample_top_k_crashes_for_big_k, "k >= V"),
    (ch04.check_sample_top_k, sample_top_k_first_row_threshold, "its own k-th largest"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, 3, t, g), ""),   # the old check's k
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: lg.argmax(-1), "never draws some"),
    (ch04.check_sample_top_k, lambda lg, k, t=1.0, g=None: sample_top_k(lg, k, t / 2, g), "frequency"),
    (ch04.check_sample_top_k, lambda lg, k, t=0.5, g=None: sample_top_k(lg, k, t, g), "default temperature"),
    (ch04.check_sample_top_k, sample_top_k_in_place, "in place"),
]


@pytest.mark.parametrize("check, wrong, hint", WRONG)
def test_wrong_implementation_gets_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌"), out
    assert hint in out, out
    assert "Traceback" not in out


KEY_HINTS = ["shift the diagonal", "not down", "INSIDE the square root", "use the `eps` argument", "not 1e-5",
             "not a fixed", "not the number of keys", "at the END", "DIVIDE", "not token ids", "seeded differently"]
KEY_WRONG = [case for case in WRONG if case[2] in KEY_HINTS]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("check, wrong, hint", KEY_WRONG)
def test_wrong_implementation_fails_under_other_seeds(check, wrong, hint, seed, grade, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, wrong)
    assert not passed and hint in out, out


# --- the experiment: a tiny LM trained with the learner's loss ----------------------------

def test_correct_loss_trains_the_model(grade):
    passed, out = grade(ch04.check_next_token_loss, next_token_loss_transposed)
    assert passed and out.startswith("✅"), out


SHORT_TRAINING = 20   # wrong losses fail long before the check's full budget


def test_loss_written_by_hand_passes_a_shorter_training(grade, monkeypatch):
    monkeypatch.setitem(ch04.LOSS_EXPERIMENT, "steps", 60)     # reaches ~0.72, below the threshold of 1.0
    passed, out = grade(ch04.check_next_token_loss, next_token_loss_by_hand)
    assert passed and out.startswith("✅"), out


WRONG_LOSSES = [
    (lambda lo, la: loss_with_shift(lo, la, 0), "without the shift"),
    (lambda lo, la: loss_with_shift(lo, la, -1), "another token than the next"),
    (lambda lo, la: loss_with_shift(lo, la, 2), "another token than the next"),
    (lambda lo, la: next_token_loss(lo, la) * (la[:, 1:] != -100).sum(), "don't sum"),
    (lambda lo, la: next_token_loss(lo, la) / math.log(2), "not bits"),
    (lambda lo, la: next_token_loss(lo, la.clamp(min=0)), "-100"),
    (lambda lo, la: torch.tensor(next_token_loss(lo, la).item(), requires_grad=True), "not connected"),
    (lambda lo, la: next_token_loss(lo, la).item(), "no .item()"),
    (lambda lo, la: F.cross_entropy(lo[:, :-1].reshape(-1, lo.shape[-1]), la[:, 1:].reshape(-1),
                                    reduction="none"), "should be a scalar"),
    (next_token_loss_in_place, "in place"),
]


@pytest.mark.parametrize("wrong, hint", WRONG_LOSSES)
def test_wrong_loss_gets_a_hint(wrong, hint, grade, monkeypatch):
    monkeypatch.setitem(ch04.LOSS_EXPERIMENT, "steps", SHORT_TRAINING)
    passed, out = grade(ch04.check_next_token_loss, wrong)
    assert not passed and out.startswith("❌"), out
    assert hint in out, out


@pytest.mark.parametrize("seed", [1, 2])
def test_copying_loss_fails_under_other_seeds(seed, grade, monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setitem(ch04.LOSS_EXPERIMENT, "steps", SHORT_TRAINING)
    passed, out = grade(ch04.check_next_token_loss, lambda lo, la: loss_with_shift(lo, la, -1))
    assert not passed and "another token than the next" in out, out


# --- concept questions ------------------------------------------------------------------

KV = 2 * 4 * 3 * 100 * 128

WRONG_ANSWERS = [
    (ch04.check_kv_cache_numbers, lambda: KV // 2, "key AND a value"),
    (ch04.check_kv_cache_numbers, lambda: KV // 4, "its own cache"),
    (ch04.check_kv_cache_numbers, lambda: KV // 3, "every sequence"),
    (ch04.check_kv_cache_numbers, lambda: KV * 8, "split the width"),
    (ch04.check_kv_cache_numbers, lambda: KV // 8, "not head_dim"),
    (ch04.check_kv_cache_numbers, lambda: KV + 1, "model's width D"),
    (ch04.check_kv_cache_numbers, lambda: "307200", "an int"),
    (ch04.check_kv_cache_numbers, lambda: 307200.0, "an int"),
    (ch04.check_why_cache_is_exact, lambda: "a", "RoPE rotates the keys"),
    (ch04.check_why_cache_is_exact, lambda: "c", "normaliser"),
    (ch04.check_why_cache_is_exact, lambda: "d", 'one of "a", "b", "c"'),
    (ch04.check_why_cache_is_exact, lambda: 2, 'one of "a", "b", "c"'),
    (ch04.check_top_k_probability, lambda: 1 / (1 + math.e), "temperature first"),
    (ch04.check_top_k_probability, lambda: 1 / (1 + math.exp(0.5)), "don't multiply"),
    (ch04.check_top_k_probability, lambda: math.exp(2) / sum(math.exp(z / 0.5) for z in (2.0, 1.0, 0.5, -1.0)),
     "k kept ones"),
    (ch04.check_top_k_probability, lambda: 0.5, "keep the k largest"),
    (ch04.check_top_k_probability, lambda: "0.12", "a number"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_gets_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌"), out
    assert hint in out, out


def test_hints_do_not_reveal_the_answers(grade):
    for check, answer, _ in WRONG_ANSWERS:
        _, out = grade(check, answer)
        if str(KV) in repr(answer()):
            continue   # the message may quote the learner's own answer
        assert str(KV) not in out and "0.119" not in out and "'b' is" not in out, out
