"""Checks for chapter 04 (a tiny language model).

    from minivlm.course.grading import ch04
    ch04.check_causal_mask(causal_mask)
    ch04.check_rms_norm(rms_norm)
    ch04.check_attend_with_cache(attend_with_cache)
    ch04.check_sample_top_k(sample_top_k)

Each check compares with the reference in `minivlm` (attention.causal_mask, blocks.RMSNorm,
attention over the full sequence, generation.sample_next_token) and, when the values are wrong,
recognises the usual mistakes (the mask upside down or not aligned to the newest key,
LayerNorm's mean subtracted, the 1/√d scale forgotten, the cache not updated, logits
masked with 0 instead of -inf, the temperature multiplied instead of divided) to give a
specific hint.
"""

import math

import torch

from minivlm import attention, blocks
from minivlm.course.grading import Hint, check, expect_close, expect_equal, expect_known_mistakes, expect_shape


@check("causal_mask")
def check_causal_mask(causal_mask):
    for L, S in [(4, 4), (2, 5), (1, 3)]:
        what = f"causal_mask(query_len={L}, key_len={S})"
        mask = causal_mask(L, S)
        expected = attention.causal_mask(L, S)
        expect_shape(mask, (L, S), what, hint="one row per query, one column per key.")
        if mask.dtype != torch.bool:
            raise Hint(f"{what} has dtype {mask.dtype}, expected torch.bool. Hint: True means 'may attend'; "
                       "build it with torch.ones(..., dtype=torch.bool).")
        ones = torch.ones(L, S, dtype=torch.bool)
        offset = S - L
        expect_known_mistakes(mask, expected, [
            (ones.triu(offset), "the mask is upside down: query i may see keys j <= i (the past), "
                                "never j > i. Use tril, not triu."),
            (~ones.tril(offset), "True means 'may attend', False means 'masked': invert your mask."),
            (ones.tril(offset - 1), "a token may attend to itself: keep the diagonal (j <= i, not j < i)."),
            (ones.tril(0), "with S > L the queries are the LAST L positions: query i sits at position "
                           "i + (S - L), so shift the diagonal by S - L (tril(diagonal=S - L))."),
        ], what, exact=True)


@check("rms_norm")
def check_rms_norm(rms_norm):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, generator=g) * 3 + 1
    weight = torch.linspace(0.5, 2.0, 8)
    what = "rms_norm(x (2, 3, 8), weight (8,))"
    result = rms_norm(x, weight)
    reference = blocks.RMSNorm(8)
    with torch.no_grad():
        reference.weight.copy_(weight)
        expected = reference(x)
    expect_shape(result, (2, 3, 8), what, hint="normalise each vector over the last dimension; the shape stays.")
    eps = 1e-6
    mean_sq = x.pow(2).mean(-1, keepdim=True)
    centred = x - x.mean(-1, keepdim=True)
    expect_known_mistakes(result, expected, [
        (centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight,
         "that is LayerNorm: RMSNorm does not subtract the mean, it only divides by sqrt(mean(x²) + eps)."),
        (x / torch.sqrt(mean_sq + eps), "multiply by the learned weight at the end."),
        (x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight,
         "use the MEAN of the squares over the last dimension, not their sum."),
        (x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * weight,
         "average over the last dimension (dim=-1, the channels), not the batch."),
        (x / (mean_sq + eps) * weight, "divide by the square ROOT of the mean square."),
        (x * torch.sqrt(mean_sq + eps) * weight, "divide by the root mean square, don't multiply."),
        (x / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight,
         "the root mean square is sqrt(mean(x²)), not the standard deviation."),
    ], what, atol=1e-4)
    tiny = torch.zeros(1, 8)
    expect_close(rms_norm(tiny, weight), torch.zeros(1, 8), "rms_norm of an all-zero vector",
                 hint="add eps inside the square root so a zero vector gives 0, not NaN.")


def _attention_reference(q, k, v):
    """Causal attention over whole sequences (B, H, T, d): row t is what step t must return."""
    return attention.attention_math(q, k, v, attention.causal_mask(q.shape[2], k.shape[2]))[0]


@check("attend_with_cache")
def check_attend_with_cache(attend_with_cache):
    g = torch.Generator().manual_seed(0)
    B, H, T, d = 2, 3, 5, 4
    q, k, v = (torch.randn(B, H, T, d, generator=g) for _ in range(3))
    full = _attention_reference(q, k, v)
    cache = {}
    for t in range(T):
        what = f"attend_with_cache at step {t} (cache of {t} positions)"
        out = attend_with_cache(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache)
        expect_shape(out, (B, H, 1, d), what, hint="one query in, one output vector per head: (B, H, 1, d).")
        if not isinstance(cache, dict) or "k" not in cache or "v" not in cache:
            raise Hint(f"after {what} the cache has no 'k' and 'v'. Hint: store the keys and values "
                       "(old ones + the new one) in cache['k'] and cache['v'].")
        if cache["k"].shape[2] != t + 1:
            if t and cache["k"].shape[2] == 1:
                raise Hint(f"after {what} the cache holds 1 position, expected {t + 1}. Hint: concatenate "
                           "the new key to the cached ones (torch.cat along dim=2), don't overwrite them.")
            raise Hint(f"after {what} cache['k'] has shape {tuple(cache['k'].shape)}, expected "
                       f"{(B, H, t + 1, d)}. Hint: the positions are dim 2 of (B, H, t, d).")
        keys, values = k[:, :, :t + 1], v[:, :, :t + 1]
        expect_known_mistakes(cache["k"], keys, [
            (keys.flip(2), "the cache is in the wrong order: append the new key at the END "
                           "(torch.cat([cache['k'], k], dim=2)), so position t stays at index t."),
        ], f"cache['k'] after step {t}", hint="store the keys exactly as given.")
        expect_close(cache["v"], values, f"cache['v'] after step {t}", hint="store the values exactly as given.")
        scores = q[:, :, t:t + 1] @ keys.transpose(-2, -1)
        expect_known_mistakes(out, full[:, :, t:t + 1], [
            (scores.softmax(-1) @ values, "scale the scores by 1/√d before the softmax."),
            (v[:, :, t:t + 1], "attend to every cached key, not only the new one: compute the scores "
                               "with the concatenated keys and values."),
            ((scores / math.sqrt(d)).softmax(-2) @ values, "the softmax goes over the keys (dim=-1), "
                                                           "not over the single query."),
            (values[:, :, :1], "the newest query sees every cached key: don't apply a top-left causal mask "
                               "to one query (causal_mask(1, S) must be all True)."),
        ], f"output of {what}")


@check("sample_top_k")
def check_sample_top_k(sample_top_k):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    n = 20000
    batch = logits.repeat(n, 1)
    what = "sample_top_k(logits (20000, 6), k=3, temperature=0.5)"
    draws = sample_top_k(batch, 3, 0.5, torch.Generator().manual_seed(0))
    expect_shape(draws, (n,), what, hint="one token id per row: squeeze the sample dimension of torch.multinomial.")
    if draws.dtype != torch.long:
        raise Hint(f"{what} has dtype {draws.dtype}, expected torch.int64 (token ids).")
    if draws.min() < 0 or draws.max() >= 6:
        raise Hint(f"{what} returned ids outside [0, 6). Hint: sample indices into the vocabulary.")
    frequencies = torch.bincount(draws, minlength=6).double() / n

    def top3(scaled):
        probs = torch.zeros(6, dtype=torch.double)
        top = torch.tensor([5, 0, 1])
        probs[top] = scaled[top].double().softmax(0)
        return probs

    expected = top3(logits / 0.5)
    if frequencies[[2, 3, 4]].sum() > 0.005:
        if (frequencies > 0).sum() == 4 and frequencies[2] > 0:
            raise Hint(f"{what} draws 4 different tokens, expected 3. Hint: keep the k best, "
                       "e.g. logits < logits.topk(k).values[..., -1:] are removed.")
        raise Hint(f"{what} draws tokens outside the top 3. Hint: set the other logits to -inf "
                   "(not 0) before the softmax, so their probability is exactly 0.")
    if frequencies[1] == 0:
        raise Hint(f"{what} never draws the 3rd best token. Hint: keep k tokens, not k - 1.")
    tolerance = 0.02
    for wrong, hint in [(top3(logits), "divide the logits by the temperature before the softmax."),
                        (top3(logits * 0.5), "DIVIDE the logits by the temperature, don't multiply.")]:
        if (frequencies - wrong).abs().max() < tolerance:
            raise Hint(f"{what} samples with the wrong probabilities. Hint: {hint}")
    if (frequencies - expected).abs().max() > tolerance:
        raise Hint(f"{what} samples with frequencies {[round(f, 3) for f in frequencies.tolist()]}, expected about "
                   f"{[round(p, 3) for p in expected.tolist()]}. Hint: softmax(top-k logits / temperature), "
                   "then torch.multinomial(probs, 1).")
    greedy = sample_top_k(torch.randn(8, 10, generator=torch.Generator().manual_seed(1)), 1, 1.0, None)
    expect_equal(greedy, torch.randn(8, 10, generator=torch.Generator().manual_seed(1)).argmax(-1),
                 "sample_top_k with k=1", hint="with k = 1 only the best token is left: sampling is argmax.")
