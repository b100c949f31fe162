"""Checks for chapter 04 (a tiny language model).

    from minivlm.course.grading import ch04
    ch04.check_causal_mask(causal_mask)
    ch04.check_rms_norm(rms_norm)
    ch04.check_attend_with_cache(attend_with_cache)
    ch04.check_sample_top_k(sample_top_k)
    ch04.check_next_token_loss(next_token_loss)          # an experiment: trains a tiny LM for a few seconds
    ch04.check_kv_cache_numbers(kv_cache_numbers)        # concept questions
    ch04.check_why_cache_is_exact(why_cache_is_exact)
    ch04.check_top_k_probability(top_k_probability)

Each check draws its sizes, eps, temperatures, k and seeds at random (`check_rng`), compares with
the reference in `minivlm` (attention.causal_mask, blocks.RMSNorm, attention over the full sequence,
the distribution generation.sample_next_token draws from, lm.next_token_loss) and, when the values
are wrong, recognises the usual mistakes (the mask upside down or not aligned to the newest key,
LayerNorm's mean subtracted, eps outside the root, the 1/√d scale forgotten, the cache not updated,
a top-k position returned instead of a token id, the generator ignored, the labels not shifted) to
give a specific hint.
"""

import math
import random

import torch
import torch.nn.functional as F

from minivlm import attention, blocks, generation, lm
from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng, expect_close,
                                    expect_equal, expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.data import Tokenizer, caption, sample_scenes
from minivlm.train import TrainConfig, fit


# -----------------------------------------------------------------------------
# the causal mask


@check("causal_mask", points=1)
def check_causal_mask(causal_mask):
    rng = check_rng()
    n, L = rng.randint(2, 16), rng.randint(2, 10)
    cases = [(n, n), (L, L + rng.randint(2, 12)), (1, rng.randint(2, 20)), (1, 1)]   # S - L ≥ 2: mistakes differ
    for L, S in cases:
        what = f"causal_mask(query_len={L}, key_len={S})"
        expected = attention.causal_mask(L, S)
        mask = call_learner(causal_mask, L, S, what="causal_mask")
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
            (ones.tril(0), "with S > L the queries are the LAST L positions: query i sits at position "
                           "i + (S - L), so shift the diagonal by S - L (tril(diagonal=S - L))."),
            (ones.tril(offset - 1), "a token may attend to itself: keep the diagonal (j <= i, not j < i)."),
            (ones.tril(-offset), "shift the diagonal up by S - L (the cached keys come first), not down: "
                                 "tril(diagonal=S - L)."),
        ], what, exact=True, hint="query i may attend key j exactly when j <= i + (S - L).")


# -----------------------------------------------------------------------------
# RMSNorm


def _rms_norm_reference(x, weight, eps):
    norm = blocks.RMSNorm(x.shape[-1], eps).to(x.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def _rms_norm_mistakes(x, weight, eps):
    """(wrong value, what to change) for the usual RMSNorm mistakes on this input."""
    mean_sq = x.pow(2).mean(-1, keepdim=True)
    centred = x - x.mean(-1, keepdim=True)
    mistakes = [
        (centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight,
         "that is LayerNorm: RMSNorm does not subtract the mean, it only divides by sqrt(mean(x²) + eps)."),
        (x / torch.sqrt(mean_sq + eps), "multiply by the learned weight at the end."),
        (x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight,
         "use the MEAN of the squares over the last dimension, not their sum."),
        (x / (mean_sq + eps) * weight, "divide by the square ROOT of the mean square."),
        (x * torch.sqrt(mean_sq + eps) * weight, "divide by the root mean square, don't multiply."),
        (x / (torch.sqrt(mean_sq) + eps) * weight,
         "add eps to the mean square INSIDE the square root: sqrt(mean(x²) + eps), as Llama does."),
        (x / torch.sqrt(mean_sq + 1e-6) * weight, "use the `eps` argument: sqrt(mean(x²) + eps), not a fixed value."),
        (x / torch.sqrt(mean_sq) * weight, "add eps inside the square root: sqrt(mean(x²) + eps)."),
        (x / torch.sqrt(mean_sq + eps ** 2) * weight, "add eps itself to the mean square, not eps²."),
        (x / torch.sqrt(mean_sq + 1e-5) * weight, "the default eps is 1e-6 (as in blocks.RMSNorm), not 1e-5."),
        (x / torch.sqrt(mean_sq + torch.finfo(x.dtype).eps) * weight,
         "the default eps is 1e-6 (as in blocks.RMSNorm), not the dtype's machine epsilon."),
    ]
    if x.shape[-1] > 1:
        mistakes.append((x / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight,
                         "the root mean square is sqrt(mean(x²)), not the standard deviation."))
    if x.dim() > 1 and x.shape[0] > 1:
        mistakes.append((x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * weight,
                         "average over the last dimension (dim=-1, the channels), not the batch."))
    return mistakes


@check("rms_norm", points=1)
def check_rms_norm(rms_norm):
    rng = check_rng()
    g = torch_generator(rng)
    D = rng.randint(5, 48)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    eps = round(rng.uniform(0.2, 2.0), 2)
    B, T, N, D1, D2 = rng.randint(2, 4), rng.randint(1, 7), rng.randint(2, 9), rng.randint(3, 40), rng.randint(3, 40)
    cases = [  # (x, weight, eps or None to rely on the default, description)
        (randn(B, T, D) * 3 + 1, randn(D), None, f"x ({B}, {T}, {D}), weight ({D},)"),
        (randn(N, D1) * 0.6, randn(D1), eps, f"x ({N}, {D1}), weight ({D1},), eps={eps}"),
        (randn(N, D2) * 1e-3, randn(D2), None, f"x ({N}, {D2}) of size ~1e-3 (so the default eps matters), weight"),
        (randn(D1, dtype=torch.float64) * 2, randn(D1, dtype=torch.float64), None,
         f"x ({D1},) float64, weight float64"),
        (randn(B, 1) * 2, randn(1), None, f"x ({B}, 1): a single channel, weight (1,)"),
    ]
    for x, weight, case_eps, description in cases:
        what = f"rms_norm({description})"
        expected = _rms_norm_reference(x, weight, 1e-6 if case_eps is None else case_eps)
        args = (x, weight) if case_eps is None else (x, weight, case_eps)
        result = call_learner(rms_norm, *args, what="rms_norm")
        expect_shape(result, expected.shape, what,
                     hint="normalise each vector over the last dimension; the shape stays.")
        expect_known_mistakes(result, expected, _rms_norm_mistakes(x, weight, 1e-6 if case_eps is None else case_eps),
                              what, hint="x / sqrt(mean(x², last dim) + eps) * weight, in x's dtype.", atol=1e-4)
    zeros, weight = torch.zeros(N, D1), randn(D1)
    expect_close(call_learner(rms_norm, zeros, weight, what="rms_norm"), torch.zeros(N, D1),
                 "rms_norm of all-zero vectors", hint="add eps inside the square root: a zero vector gives 0, not NaN.")


# -----------------------------------------------------------------------------
# one attention step with a KV cache


def _attention_reference(q, k, v):
    """Causal attention over whole sequences (B, H, T, d): row t is what step t must return."""
    return attention.attention_math(q, k, v, attention.causal_mask(q.shape[2], k.shape[2]))[0]


def _check_cache_steps(attend_with_cache, q, k, v, prefix):
    """Feed tokens prefix, prefix+1, ... one at a time, starting from a cache that holds the first `prefix`."""
    B, H, T, d = q.shape
    full = _attention_reference(q, k, v)
    cache = {} if prefix == 0 else {"k": k[:, :, :prefix].clone(), "v": v[:, :, :prefix].clone()}
    for t in range(prefix, T):
        what = f"attend_with_cache at step {t} (cache of {t} positions, d={d}, {str(q.dtype)[6:]})"
        # the learner's function gets copies of q, k, v; the cache is the real dict: filling it is the job
        out = call_learner(lambda q, k, v: attend_with_cache(q, k, v, cache),
                           q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], what="attend_with_cache")
        expect_shape(out, (B, H, 1, d), what, hint="one query in, one output vector per head: (B, H, 1, d).")
        if not isinstance(cache, dict) or "k" not in cache or "v" not in cache:
            raise Hint(f"after {what} the cache has no 'k' and 'v'. Hint: store the keys and values "
                       "(old ones + the new one) in cache['k'] and cache['v'] of the dict you were given.")
        if not isinstance(cache["k"], torch.Tensor) or cache["k"].dim() != 4:
            raise Hint(f"after {what} cache['k'] should be a (B, H, t, d) tensor. Hint: torch.cat the new key "
                       "to the cached ones along dim=2.")
        if cache["k"].shape[2] != t + 1:
            if t and cache["k"].shape[2] == 1:
                raise Hint(f"after {what} the cache holds 1 position, expected {t + 1}. Hint: concatenate "
                           "the new key to the cached ones (torch.cat along dim=2), don't overwrite them.")
            raise Hint(f"after {what} cache['k'] has shape {tuple(cache['k'].shape)}, expected "
                       f"{(B, H, t + 1, d)}. Hint: the positions are dim 2 of (B, H, t, d).")
        keys, values = k[:, :, :t + 1], v[:, :, :t + 1]
        expect_known_mistakes(cache["k"], keys, [
            (torch.cat([k[:, :, t:t + 1], keys[:, :, :t]], dim=2),
             "the cache is in the wrong order: append the new key at the END "
             "(torch.cat([cache['k'], k], dim=2)), so position t stays at index t."),
        ], f"cache['k'] after step {t}", hint="store the keys exactly as given.", exact=True)
        expect_equal(cache["v"], values, f"cache['v'] after step {t}", hint="store the values exactly as given.")
        scores = q[:, :, t:t + 1] @ keys.transpose(-2, -1)
        expect_known_mistakes(out, full[:, :, t:t + 1], [
            (scores.softmax(-1) @ values, "scale the scores by 1/√d before the softmax."),
            ((scores / math.sqrt(t + 1)).softmax(-1) @ values,
             "scale by 1/√d with d the head size (q.shape[-1]), not the number of keys."),
            ((scores / 2).softmax(-1) @ values, "scale by 1/√d with d = q.shape[-1], not a fixed number."),
            (v[:, :, t:t + 1], "attend to every cached key, not only the new one: compute the scores "
                               "with the concatenated keys and values."),
            ((scores / math.sqrt(d)).softmax(-2) @ values, "the softmax goes over the keys (dim=-1), "
                                                           "not over the single query."),
            (values[:, :, :1], "the newest query sees every cached key: don't apply a top-left causal mask "
                               "to one query (causal_mask(1, S) must be all True)."),
        ], f"output of {what}", hint="softmax(q Kᵀ / √d) V over all cached keys, in the inputs' dtype.")


@check("attend_with_cache", points=2)
def check_attend_with_cache(attend_with_cache):
    rng = check_rng()
    g = torch_generator(rng)
    d_first, d_second = rng.sample(range(2, 17), 2)
    cases = [  # (B, H, d, cached positions at the start, steps, dtype)
        (rng.randint(1, 3), rng.randint(1, 4), d_first, 0, rng.randint(3, 7), torch.float32),
        (rng.randint(1, 3), rng.randint(1, 4), d_second, rng.randint(2, 9), rng.randint(2, 4), torch.float64),
    ]
    for B, H, d, prefix, steps, dtype in cases:
        q, k, v = (torch.randn(B, H, prefix + steps, d, generator=g, dtype=dtype) for _ in range(3))
        _check_cache_steps(attend_with_cache, q, k, v, prefix)


# -----------------------------------------------------------------------------
# top-k sampling with a temperature

DRAWS_PER_ROW = 10_000
FREQUENCY_TOLERANCE = 0.03   # ≥ 5 standard deviations of a frequency estimated from DRAWS_PER_ROW draws


def _top_k_probabilities(logits, k, temperature):
    """The distribution generation.sample_next_token draws from: softmax(logits / T) over the k best, (B, V) float64."""
    scaled = logits.double() / temperature
    if k < scaled.shape[-1]:
        kth_best = scaled.topk(k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth_best, float("-inf"))
    return scaled.softmax(dim=-1)


def _sampling_logits(g, rows, V, k, temperature):
    """(rows, V) logits, each row a random permutation of its values, whose k + 1 best tokens all
    have a fair chance at `temperature`: logits / temperature lies in [0, 3] for them, below for the rest."""
    kept = min(k + 1, V)
    top = 3 * torch.rand(rows, kept, generator=g, dtype=torch.float64).sort(dim=-1, descending=True).values
    rest = -4 + (top[:, -1:] - 0.5 + 4) * torch.rand(rows, V - kept, generator=g, dtype=torch.float64)
    values = torch.cat([top, rest], dim=-1)
    order = torch.rand(rows, V, generator=g).argsort(dim=-1)
    scaled = torch.empty_like(values).scatter_(-1, order, values)
    offset = 4 * torch.rand(rows, 1, generator=g, dtype=torch.float64) - 2
    return (temperature * scaled + offset).float()


def _frequencies(draws, rows, V):
    """(rows, V) frequency of each token among the DRAWS_PER_ROW draws of each row."""
    per_row = draws.reshape(rows, -1)
    counts = torch.zeros(rows, V, dtype=torch.float64).scatter_add_(
        -1, per_row, torch.ones(per_row.shape, dtype=torch.float64))
    return counts / per_row.shape[1]


def _close(frequencies, probabilities):
    return (frequencies - probabilities).abs().max().item() < FREQUENCY_TOLERANCE


def _draw(sample_top_k, what, logits, *args):
    """The learner's draws for each row of `logits` repeated DRAWS_PER_ROW times, a (rows · draws,) tensor
    checked to be token ids, and whether they used the global RNG (which is restored afterwards)."""
    batch = logits.repeat_interleave(DRAWS_PER_ROW, dim=0)
    with torch.random.fork_rng(devices=[]):
        state = torch.get_rng_state()
        draws = call_learner(sample_top_k, batch, *args, what="sample_top_k")
        used_global_rng = not torch.equal(torch.get_rng_state(), state)
    expect_shape(draws, (len(batch),), what,
                 hint="one token id per row: squeeze the sample dimension of torch.multinomial.")
    if draws.dtype != torch.long:
        raise Hint(f"{what} has dtype {draws.dtype}, expected torch.int64 (token ids).")
    if draws.min() < 0 or draws.max() >= logits.shape[-1]:
        raise Hint(f"{what} returned ids outside [0, {logits.shape[-1]}). Hint: sample indices into the vocabulary.")
    return draws, used_global_rng


def _check_distribution(draws, logits, k, temperature, what):
    """The draws follow softmax(logits / temperature) over the k best tokens of each row, else a Hint."""
    rows, V = logits.shape
    frequencies = _frequencies(draws, rows, V)
    expected = _top_k_probabilities(logits, k, temperature)
    kept = expected > 0
    k = min(k, V)
    top_positions = logits.topk(k, dim=-1).indices                       # best first
    if k < V and draws.max() < k and not _close(frequencies, expected):
        as_ids = top_positions.gather(-1, draws.reshape(rows, -1))
        if _close(_frequencies(as_ids, rows, V), expected):
            raise Hint(f"{what} returns positions within the top {k} (0..{k - 1}), not token ids. Hint: map the "
                       "drawn position back to its token id with the indices topk returns "
                       "(indices.gather(-1, choice)).")
    outside = (frequencies > 0) & ~kept
    if outside.any():
        next_best = logits.topk(k + 1, dim=-1).indices[:, -1:] if k < V else None
        only_next_best = next_best is not None and torch.equal(
            outside, torch.zeros_like(outside).scatter_(-1, next_best, True))
        if only_next_best:
            raise Hint(f"{what} draws {k + 1} different tokens per row, expected {k}. Hint: keep the k best, "
                       "e.g. remove the logits < logits.topk(k).values[..., -1:].")
        raise Hint(f"{what} draws tokens outside the {k} most likely of their row. Hint: compare each row with its "
                   "own k-th largest logit and set the others to -inf (not 0), so their probability is exactly 0.")
    for wrong_temperature, hint in [(1.0, "divide the logits by the temperature before the softmax."),
                                    (1 / temperature, "DIVIDE the logits by the temperature, don't multiply.")]:
        wrong = _top_k_probabilities(logits, k, wrong_temperature)
        explained = _close(frequencies, wrong) and not ((frequencies == 0) & (wrong > 0.005)).any()
        if explained and not _close(expected, wrong):
            raise Hint(f"{what} samples with the wrong probabilities. Hint: {hint}")
    missing = (frequencies == 0) & kept
    if missing.any():
        kth_best = logits.topk(k, dim=-1).indices[:, -1:]
        if k > 1 and torch.equal(missing, torch.zeros_like(kept).scatter_(-1, kth_best, True)):
            raise Hint(f"{what} never draws the k-th most likely token (k={k}) of a row. Hint: keep k tokens "
                       "(not k - 1): remove only the logits below the k-th largest.")
        raise Hint(f"{what} never draws some of the {k} most likely tokens of a row. Hint: keep exactly the k "
                   "largest logits of each row (k is an argument) and sample among them.")
    if not _close(frequencies, expected):
        row, token = divmod(int((frequencies - expected).abs().argmax()), V)
        raise Hint(f"{what} draws token {token} of row {row} with frequency {frequencies[row, token]:.3f}, expected "
                   f"{expected[row, token]:.3f}. Hint: softmax(top-k logits / temperature), then "
                   "torch.multinomial(probs, 1, generator=generator).")


def _telling_logits(g, rows, V, k, temperature):
    """_sampling_logits whose distribution differs clearly from the ones the two wrong temperatures give
    (and, where some draw allows it, those two from each other: at T < 1 both are nearly flat)."""
    def apart(a, b):
        return (a - b).abs().max() > 4 * FREQUENCY_TOLERANCE

    fallback = None
    for _ in range(100):
        logits = _sampling_logits(g, rows, V, k, temperature)
        right, ignored, multiplied = (_top_k_probabilities(logits, k, t) for t in (temperature, 1.0, 1 / temperature))
        if apart(right, ignored) and apart(right, multiplied):
            if apart(ignored, multiplied):
                return logits
            fallback = logits if fallback is None else fallback
    return logits if fallback is None else fallback


@check("sample_top_k", points=2)
def check_sample_top_k(sample_top_k):
    rng = check_rng()
    g = torch_generator(rng)
    k = rng.randint(2, 10)
    V, rows = rng.randint(k + 2, 40), rng.randint(2, 3)
    temperature = round(rng.choice([rng.uniform(0.25, 0.6), rng.uniform(1.7, 3.0)]), 2)
    logits = _telling_logits(g, rows, V, k, temperature)
    seed = rng.getrandbits(32)
    what = f"sample_top_k(logits ({rows * DRAWS_PER_ROW}, {V}), k={k}, temperature={temperature}, generator)"
    draws, used_global_rng = _draw(sample_top_k, what, logits, k, temperature, torch.Generator().manual_seed(seed))
    _check_distribution(draws, logits, k, temperature, what)
    if used_global_rng:
        raise Hint(f"{what} drew from PyTorch's global random generator. Hint: pass generator=generator to "
                   "torch.multinomial, so that a seeded generator makes the draw reproducible.")
    again, _ = _draw(sample_top_k, what, logits, k, temperature, torch.Generator().manual_seed(seed))
    if not torch.equal(again, draws):
        raise Hint(f"{what} gives different tokens for two generators seeded alike. Hint: draw only with "
                   "torch.multinomial(probs, 1, generator=generator).")
    other, _ = _draw(sample_top_k, what, logits, k, temperature, torch.Generator().manual_seed(seed + 1))
    if torch.equal(other, draws):
        raise Hint(f"{what} gives the same tokens for generators seeded differently. Hint: sample with the "
                   "generator you were given (generator=generator), don't make or seed your own.")

    greedy_logits = torch.randn(rng.randint(5, 20), rng.randint(2, 30), generator=g)
    greedy_temperature = round(rng.uniform(1.5, 5.0), 2)
    expected = generation.sample_next_token(greedy_logits, greedy_temperature, 1, torch.Generator().manual_seed(seed))
    greedy = call_learner(sample_top_k, greedy_logits, 1, greedy_temperature, torch.Generator().manual_seed(seed),
                          what="sample_top_k")
    expect_equal(greedy, expected, f"sample_top_k with k=1, temperature={greedy_temperature}",
                 hint="with k = 1 only the best token is left: the draw is the argmax, whatever the temperature.")

    small_V = rng.randint(3, 8)
    all_kept = _sampling_logits(g, 2, small_V, small_V, temperature)
    for big_k in (small_V, small_V + rng.randint(1, 5)):
        what = f"sample_top_k(logits (2 · {DRAWS_PER_ROW}, {small_V}), k={big_k}, temperature={temperature})"
        try:
            draws, _ = _draw(sample_top_k, what, all_kept, big_k, temperature, torch.Generator().manual_seed(seed))
        except (RuntimeError, IndexError) as error:
            raise Hint(f"{what} raised {type(error).__name__}. Hint: with k >= V every token is kept "
                       "(use min(k, V) or skip the top-k step).") from None
        _check_distribution(draws, all_kept, big_k, temperature, what)

    default_logits = _sampling_logits(g, rows, V, k, 1.0)
    what = f"sample_top_k(logits ({rows * DRAWS_PER_ROW}, {V}), k={k}) with the default temperature and generator"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)    # inside fork_rng: the learner's global RNG is restored afterwards
        draws, _ = _draw(sample_top_k, what, default_logits, k)
    _check_distribution(draws, default_logits, k, 1.0, what)


# -----------------------------------------------------------------------------
# the experiment: train a tiny LM with the learner's next-token loss

# A 2-layer LM on Shapes captions: ~3 s of training on one CPU core. With the right loss, the untrained
# model starts a little above ln V (tied embeddings favour the token a position reads: ln V - 0.03 to
# ln V + 0.12 over 150 seeds) and ends at a held-out loss of 0.63 ± 0.01, far below the threshold.
LOSS_EXPERIMENT = dict(steps=100, batch_size=32, lr=3e-3, warmup_steps=20, train_captions=2000, val_captions=256,
                       dim=64, depth=2, heads=4)
START_WINDOW = (-0.12, 0.25)   # loss of the untrained model - ln V
HELD_OUT_THRESHOLD = 1.0       # the next-token loss on held-out captions after training, from ln V ≈ 4.06
AGREEMENT_TOLERANCE = 0.02     # the learner's loss vs lm.next_token_loss on the held-out captions


def _captions(tokenizer, count, split, seed):
    """input_ids, labels (-100 at the padding) and lengths of `count` shuffled captions, as in chapter 04."""
    scenes = sample_scenes(count, generator=torch.Generator().manual_seed(seed), split=split)
    rng = random.Random(seed)
    ids, mask = tokenizer.batch_encode([caption(scenes, i, rng=rng) for i in range(count)],
                                       add_bos=True, add_eos=True)
    return ids, ids.masked_fill(~mask, lm.IGNORE_INDEX), mask.sum(1)


def _loss_value(loss, what):
    if not isinstance(loss, torch.Tensor):
        raise Hint(f"{what} should be a torch.Tensor, got {type(loss).__name__}. "
                   "Hint: keep the loss a tensor (no .item()), so that it can be backpropagated.")
    if loss.numel() != 1:
        raise Hint(f"{what} should be a scalar, got shape {tuple(loss.shape)}. Hint: average the "
                   "cross-entropy over every predicted token (reduction='mean').")
    return loss.item()


def _start_mistakes(logits, labels):
    """(wrong loss at initialisation, what to change) for the usual next-token-loss mistakes."""
    V = logits.shape[-1]

    def ce(lo, la, **kwargs):
        return F.cross_entropy(lo.reshape(-1, V), la.reshape(-1), **kwargs).item()

    shifted = dict(lo=logits[:, :-1], la=labels[:, 1:])
    return [
        (ce(logits, labels), "compare position t's logits with the label at t + 1 (logits[:, :-1] against "
                             "labels[:, 1:]): without the shift the model is asked for the token it reads."),
        (ce(**shifted, reduction="sum"), "average over the predicted tokens (reduction='mean'), don't sum."),
        (ce(**shifted) / math.log(2), "measure in nats (the natural log, as F.cross_entropy does), not bits."),
        (ce(shifted["lo"], shifted["la"].clamp(min=0)),
         "skip the labels -100 (padding): ignore_index=-100, don't count them as a token."),
    ]


def _experiment_setup(seed):
    """The experiment's data and untrained model: (train (ids, labels, lengths), val (ids, labels), model)."""
    setup, tokenizer = LOSS_EXPERIMENT, Tokenizer()
    train = _captions(tokenizer, setup["train_captions"], "train", seed)
    val = _captions(tokenizer, setup["val_captions"], "val", seed + 1)[:2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)    # the model's initialisation; the learner's global RNG is restored afterwards
        model = lm.LanguageModel(lm.LMConfig(vocab_size=tokenizer.vocab_size, dim=setup["dim"],
                                             depth=setup["depth"], heads=setup["heads"], max_seq_len=64))
    return train, val, model


def _train_with(loss_fn, model, train, seed):
    """Train `model` in place for LOSS_EXPERIMENT["steps"] steps of train.fit with loss_fn(logits, labels)."""
    setup = LOSS_EXPERIMENT
    ids, labels, lengths = train

    def get_batch(step):
        rows = torch.randint(len(ids), (setup["batch_size"],), generator=torch.Generator().manual_seed(seed + step))
        length = int(lengths[rows].max())
        return ids[rows, :length], labels[rows, :length]

    # the learner's function is called on the model's own logits here: copies would cut the gradient
    fit(model, get_batch, lambda m, batch: loss_fn(m(batch[0], validate=False).logits, batch[1]),
        TrainConfig(steps=setup["steps"], lr=setup["lr"], warmup_steps=setup["warmup_steps"], device="cpu",
                    seed=seed, progress=False))
    return model.eval()


@check("next_token_loss", points=3)
@one_thread()
def check_next_token_loss(next_token_loss):
    seed = check_rng().getrandbits(31)
    train, (val_ids, val_labels), model = _experiment_setup(seed)

    # 1. measured before training: an untrained model is about uniform over the vocabulary
    uniform = math.log(model.config.vocab_size)
    with torch.no_grad():
        logits = model(val_ids).logits
    what = "next_token_loss(logits of an untrained LM, labels)"
    start = _loss_value(call_learner(next_token_loss, logits, val_labels, what="next_token_loss"), what)
    if not START_WINDOW[0] < start - uniform < START_WINDOW[1]:
        for wrong, hint in _start_mistakes(logits, val_labels):
            if abs(start - wrong) < 1e-3 * max(1.0, abs(wrong)):
                raise Hint(f"{what} is {start:.3f}, expected about ln V = {uniform:.2f}. Hint: {hint}")
        raise Hint(f"{what} is {start:.3f}, expected about ln V = {uniform:.2f} (a nearly uniform guess over "
                   f"the {model.config.vocab_size} tokens). Hint: the mean cross-entropy, in nats, of "
                   "logits[:, :-1] against labels[:, 1:], skipping labels -100.")
    connected = next_token_loss(logits.clone().requires_grad_(), val_labels.clone())
    if not connected.requires_grad or connected.grad_fn is None:
        raise Hint("next_token_loss is not connected to the logits, so training cannot change the model. "
                   "Hint: compute it with torch operations on the logits (no .item(), no torch.tensor(...)).")

    # 2. train a fresh LM with the learner's loss; 3. measure on held-out captions, honestly and with the learner's loss
    _train_with(next_token_loss, model, train, seed)
    with torch.no_grad():
        logits = model(val_ids).logits
    honest = lm.next_token_loss(logits, val_labels).item()
    own = _loss_value(call_learner(next_token_loss, logits, val_labels, what="next_token_loss"),
                      "next_token_loss(logits, labels)")
    steps = LOSS_EXPERIMENT["steps"]
    if not honest < HELD_OUT_THRESHOLD:
        if own < honest - 1.0:
            raise Hint(f"after {steps} steps your loss on held-out captions is {own:.2f}, but their next-token loss "
                       f"is {honest:.2f}: your loss taught the model to predict another token than the next one. "
                       "Hint: shift by exactly one, position t predicts token t + 1: logits[:, :-1] against "
                       "labels[:, 1:].")
        raise Hint(f"after {steps} steps the held-out next-token loss is {honest:.2f}, expected below "
                   f"{HELD_OUT_THRESHOLD} (it starts at ln V = {uniform:.2f}). Hint: the mean cross-entropy of "
                   "logits[:, :-1] against labels[:, 1:], skipping labels -100.")
    if not abs(own - honest) < AGREEMENT_TOLERANCE:
        raise Hint(f"on held-out captions your loss is {own:.3f}, but the next-token loss over their real tokens is "
                   f"{honest:.3f}. Hint: average over every position whose next label is not -100, and nothing else.")


# -----------------------------------------------------------------------------
# concept questions


KV_QUESTION = dict(dim=128, depth=4, heads=8, batch=3, tokens=100)


def _kv_cache_numbers(dim, depth, heads, batch, tokens):
    """How many numbers the KV caches of a LanguageModel with this config hold after reading batch × tokens."""
    config = lm.LMConfig(vocab_size=Tokenizer().vocab_size, dim=dim, depth=depth, heads=heads)
    with torch.random.fork_rng(devices=[]), torch.no_grad(), one_thread():
        model = lm.LanguageModel(config)
        cache = model.new_cache()
        model(torch.zeros(batch, tokens, dtype=torch.long), kv_cache=cache)
    return sum(tensor.numel() for layer in cache for tensor in layer.values())


@check("kv_cache_numbers", points=1)
def check_kv_cache_numbers(kv_cache_numbers):
    answer = answer_number(call_learner(kv_cache_numbers, what="kv_cache_numbers"), "kv_cache_numbers()",
                           integer=True)
    q = KV_QUESTION
    expected = _kv_cache_numbers(**q)
    if answer == expected:
        return
    head_dim = q["dim"] // q["heads"]
    for wrong, hint in [
        (expected // 2, "each layer caches a key AND a value for every token."),
        (expected // q["depth"], "every layer keeps its own cache."),
        (expected // q["batch"], "count every sequence of the batch."),
        (expected * q["heads"], "the heads split the width D among them (D = heads × head_dim); they don't "
                                "multiply it."),
        (expected // q["dim"] * head_dim, "a token's key has a head_dim-sized piece for every head: D numbers "
                                          "in all, not head_dim."),
    ]:
        if answer == wrong:
            raise Hint(f"kv_cache_numbers() is {answer}, which is not it. Hint: {hint}")
    raise Hint(f"kv_cache_numbers() is {answer}, which is not it. Hint: each of the layers stores, for every token "
               "of every sequence, a key and a value vector of the model's width D (= heads × head_dim).")


WHY_CACHE_OPTIONS = ("a", "b", "c")
WHY_CACHE_WRONG = {
    "a": "RoPE rotates the keys as well as the queries (chapter 02); the cache stores keys already rotated at their "
         "own positions. Think about what an earlier token's key depends on.",
    "c": "adding a key DOES change the softmax's normaliser: that is why the new query must see every key. Think "
         "about what an earlier token's key and value depend on.",
}


@check("why_cache_is_exact", points=1)
def check_why_cache_is_exact(why_cache_is_exact):
    answer = call_learner(why_cache_is_exact, what="why_cache_is_exact")
    answer = answer_choice(answer, WHY_CACHE_OPTIONS, "why_cache_is_exact()")
    # b: with the causal mask no earlier token attends to a later one, so appending a token changes no earlier
    # hidden state, hence no earlier key or value. (Without the mask the cache would be stale.)
    if answer != "b":
        raise Hint(f"'{answer}' is not it. Hint: {WHY_CACHE_WRONG[answer]}")


TOP_K_QUESTION = dict(logits=(2.0, 1.0, 0.5, -1.0), k=2, temperature=0.5, token=1)


@check("top_k_probability", points=1)
def check_top_k_probability(top_k_probability):
    answer = answer_number(call_learner(top_k_probability, what="top_k_probability"), "top_k_probability()")
    q = TOP_K_QUESTION
    logits = torch.tensor([q["logits"]])

    def probability(k, temperature):
        return _top_k_probabilities(logits, k, temperature)[0, q["token"]].item()

    expected = probability(q["k"], q["temperature"])
    if abs(answer - expected) < 1e-3:
        return
    for wrong, hint in [
        (probability(q["k"], 1.0), "divide the logits by the temperature first."),
        (probability(q["k"], 1 / q["temperature"]), "DIVIDE the logits by the temperature, don't multiply."),
        (probability(len(q["logits"]), q["temperature"]),
         "the tokens outside the top k are removed before the softmax: normalise over the k kept ones only."),
    ]:
        if abs(answer - wrong) < 1e-3:
            raise Hint(f"top_k_probability() is {answer:.4g}, which is not it. Hint: {hint}")
    raise Hint(f"top_k_probability() is {answer:.4g}, which is not it. Hint: divide the logits by the temperature, "
               "keep the k largest, and take the softmax over those k.")
