"""minivlm.course.grading.ch04: the reference passes, typical mistakes get a specific hint, stubs say 'not implemented'."""

import math

import pytest
import torch

from minivlm import attention, generation
from minivlm.course.grading import ch04


def stub(*args, **kwargs):
    raise NotImplementedError()


# --- references -----------------------------------------------------------------------

def rms_norm(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def attend_with_cache(q, k, v, cache, *, scale=True, softmax_dim=-1, prepend=False, store=True):
    if "k" in cache:
        k = torch.cat([k, cache["k"]] if prepend else [cache["k"], k], dim=2)
        v = torch.cat([v, cache["v"]] if prepend else [cache["v"], v], dim=2)
    if store:
        cache["k"], cache["v"] = k, v
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    return scores.softmax(dim=softmax_dim) @ v


def sample_top_k(logits, k, temperature=1.0, generator=None, *, divide=True, fill=float("-inf"), keep=0):
    logits = logits / temperature if divide else logits * temperature
    kth_best = logits.topk(k + keep, dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < kth_best, fill)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


REFERENCES = [
    (ch04.check_causal_mask, attention.causal_mask),
    (ch04.check_rms_norm, rms_norm),
    (ch04.check_attend_with_cache, attend_with_cache),
    (ch04.check_sample_top_k, sample_top_k),
    (ch04.check_sample_top_k, lambda logits, k, temperature, generator:
        generation.sample_next_token(logits, temperature, k, generator)),
]


@pytest.mark.parametrize("check, reference", REFERENCES)
def test_reference_passes(check, reference, grade):
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check", [ch04.check_causal_mask, ch04.check_rms_norm,
                                   ch04.check_attend_with_cache, ch04.check_sample_top_k])
def test_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


# --- typical mistakes get a hint --------------------------------------------------------

def ones(L, S):
    return torch.ones(L, S, dtype=torch.bool)


WRONG = [
    (ch04.check_causal_mask, lambda L, S: ones(L, S).triu(S - L), "upside down"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(), "shift the diagonal"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(S - L - 1), "attend to itself"),
    (ch04.check_causal_mask, lambda L, S: ~ones(L, S).tril(S - L), "invert"),
    (ch04.check_causal_mask, lambda L, S: ones(L, S).tril(S - L).float(), "torch.bool"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: torch.nn.functional.layer_norm(x, x.shape[-1:], w, eps=eps),
     "LayerNorm"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps),
     "learned weight"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
     "MEAN"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w, "ROOT"),
    (ch04.check_rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * w, "eps"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, scale=False), "1/√d"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, softmax_dim=-2),
     "over the keys"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, prepend=True), "at the END"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, c, store=False), "no 'k'"),
    (ch04.check_attend_with_cache, lambda q, k, v, c: attend_with_cache(q, k, v, {}) if c.update(k=k, v=v) is None
     else None, "don't overwrite"),
    (ch04.check_sample_top_k, lambda *a: sample_top_k(*a, divide=False), "DIVIDE"),
    (ch04.check_sample_top_k, lambda lg, k, t, g: sample_top_k(lg, k, 1.0, g), "divide the logits"),
    (ch04.check_sample_top_k, lambda *a: sample_top_k(*a, fill=0.0), "-inf"),
    (ch04.check_sample_top_k, lambda *a: sample_top_k(*a, keep=1), "keep the k best"),
    (ch04.check_sample_top_k, lambda lg, k, t, g: sample_top_k(lg, max(k - 1, 1), t, g), "not k - 1"),
    (ch04.check_sample_top_k, lambda lg, k, t, g: sample_top_k(lg, k, t, g)[:, None], "squeeze"),
]


@pytest.mark.parametrize("check, wrong, hint", WRONG)
def test_wrong_implementation_gets_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌"), out
    assert hint in out, out
    assert "Traceback" not in out
