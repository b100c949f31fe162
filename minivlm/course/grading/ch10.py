"""Checks for chapter 10 (preference tuning: sequence log-probabilities, DPO, BCO's running mean, MPO, β).

    from minivlm.course.grading import ch10
    ch10.check_sequence_logps(sequence_logps)
    ch10.check_dpo_loss(dpo_loss)
    ch10.check_bco_pair_losses(bco_pair_losses)
    ch10.check_mpo_loss(mpo_loss)
    ch10.check_train_table(train_table)            # an experiment: DPO on a table policy at three β, ~1 s
    ch10.check_first_step_loss(first_step_loss)    # concept questions
    ch10.check_frozen_reference(frozen_reference)
    ch10.check_generation_term(generation_term)

Each check draws its batch sizes, lengths, vocabularies, β, ε, MPO weights and dtypes at random
(`check_rng`), compares with the reference (`minivlm.preference`: `sequence_logps`, `dpo_loss` with loss_type
"sigmoid" and "bco_pair", `RunningMean`, `mpo_loss`) and recognises the usual mistakes (no causal shift or the
wrong one, the -100 positions scored as a real token, raw logits, an average over every position; β missing
or outside the sigmoid, the sign flipped, the label-smoothing weights swapped, rewards without β or the
reference, rewards not detached; δ read before this batch updates it, δ pooled over every reward or only this
batch's, δ not detached; MPO's weights swapped or ignored, a sum over the batch, a term without its
gradient) to give a specific hint.
"""

import functools
import math

import torch
import torch.nn.functional as F

from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng,
                                    expect_close, expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.lm import IGNORE_INDEX
from minivlm.preference import MPO_WEIGHTS, RunningMean, dpo_loss, mpo_loss, sequence_logps


def _on_one_thread(check_body):
    """Run a check on one CPU thread: on a busy 2-core machine F.logsigmoid of a handful of numbers waited ~6 ms a
    call for its second thread, and a check makes hundreds of calls."""
    @functools.wraps(check_body)
    def run(*args, **kwargs):
        with one_thread():
            return check_body(*args, **kwargs)
    return run


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0][:120]


def _logps(g, B, dtype):
    """Four (B,) sequence log-probabilities, as a completion of a few tokens gets them: −10 to 0."""
    return [-torch.rand(B, generator=g, dtype=torch.float64).mul(10).to(dtype) for _ in range(4)]


# -----------------------------------------------------------------------------
# the log-probability of a completion


def _logps_variant(logits, labels, average, *, shift="next", ignore="mask", divide="scored", table="log_softmax"):
    """sequence_logps written out, with switches for the usual mistakes."""
    V = logits.shape[-1]
    if shift == "next":                               # position t's logits score token t + 1
        scores, targets = logits[:, :-1], labels[:, 1:]
    elif shift == "none":
        scores, targets = logits, labels
    else:                                             # "previous": the shift the other way round
        scores, targets = logits[:, 1:], labels[:, :-1]
    scored = targets != IGNORE_INDEX
    table = {"log_softmax": scores.float().log_softmax(-1), "raw": scores.float(),
             "positions": scores.float().log_softmax(1)}[table]
    index = {"mask": targets.masked_fill(~scored, 0), "clamp": targets.clamp(min=0), "wrap": targets % V}[ignore]
    counted = scored if ignore == "mask" else torch.ones_like(scored)      # clamp / wrap: -100 scored as a token
    total = (table.gather(2, index.unsqueeze(-1)).squeeze(-1) * counted).sum(-1)
    if not average:
        return total
    count = {"scored": scored.sum(-1), "positions": targets.shape[1], "length": labels.shape[1]}[divide]
    return total / count


LOGPS_MISTAKES = [
    (dict(shift="none"), "no shift: a causal LM's logits at position t score the *next* token, so compare "
                         "logits[:, :-1] with labels[:, 1:] (the last position scores nothing)."),
    (dict(shift="previous"), "the shift goes the other way: logits[:, :-1] score labels[:, 1:] (position t "
                             "predicts token t + 1), not logits[:, 1:] against labels[:, :-1]."),
    (dict(ignore="clamp"), "the -100 positions (prompt, padding) are scored as token 0: gather at any valid index "
                           "there (masked_fill(..., 0)), then multiply by the mask labels != -100 before summing."),
    (dict(ignore="wrap"), "the -100 positions are scored: an index of -100 wraps around to a real token "
                          "(-100 mod V). Gather at a valid index there, then zero them with the mask labels != -100."),
    (dict(ignore="clamp", divide="positions"), "the -100 positions are scored (as token 0) and counted: mask them "
                                               "out of the sum, and divide by the number of scored tokens."),
    (dict(table="raw"), "the scores are log-probabilities: log_softmax over the vocabulary before gathering, not "
                        "the raw logits."),
    (dict(table="positions"), "log_softmax over the vocabulary (the last dim), not over the positions."),
    (dict(divide="positions"), "average over the scored tokens only (labels != -100), not over every position: "
                               "each row divides by its own count."),
    (dict(divide="length"), "average over the scored tokens only (labels != -100), not over the sequence length: "
                            "each row divides by its own count."),
]


def _labels(rng, g, B, L, V):
    """(B, L) long: -100 over a prompt of 1..L-2 tokens, a completion of >= 1 token, -100 padding after it."""
    rows, scored = [], set()
    for _ in range(B):
        for _attempt in range(20):          # rows with different numbers of scored tokens, where possible
            prompt = rng.randint(1, L - 2)
            answer = rng.randint(1, L - prompt)
            if answer not in scored:
                break
        scored.add(answer)
        row = torch.full((L,), IGNORE_INDEX)
        row[prompt:prompt + answer] = torch.randint(0, V, (answer,), generator=g)
        rows.append(row)
    return torch.stack(rows)


def _logps_cases(rng):
    # (B, L, V, average: None = not passed)
    return [(rng.randint(2, 4), rng.randint(5, 9), rng.randint(5, 12), None),
            (rng.randint(3, 5), rng.randint(6, 10), rng.randint(4, 9), True),
            (rng.randint(2, 3), rng.randint(4, 7), rng.randint(6, 12), False),
            (rng.randint(3, 4), rng.randint(7, 11), rng.randint(5, 10), True)]


INDEX_ERRORS = ("out of bounds", "-100", "non-negative")


@check("sequence_logps", points=2)
@_on_one_thread
def check_sequence_logps(sequence_logps_fn):
    rng = check_rng()
    g = torch_generator(rng)
    for B, L, V, average in _logps_cases(rng):
        logits = torch.randn(B, L, V, generator=g).mul(2)
        labels = _labels(rng, g, B, L, V)
        kwargs = {} if average is None else {"average": average}
        what = f"sequence_logps(logits ({B}, {L}, {V}), labels ({B}, {L})" + (
            "" if average is None else f", average={average}") + ")"
        expected = sequence_logps(logits, labels, average=bool(average))
        try:
            out = call_learner(sequence_logps_fn, logits, labels, what="sequence_logps", **kwargs)
        except (IndexError, RuntimeError) as error:
            if not any(text in str(error) for text in INDEX_ERRORS):
                raise
            raise Hint(f"{what} raised {type(error).__name__}: {_first_line(error)}. Hint: labels hold -100 where "
                       "nothing is scored: gather at a valid index there (masked_fill(..., 0)), then zero those "
                       "positions with the mask labels != -100.") from None
        if isinstance(out, torch.Tensor) and out.dim() == 0:
            raise Hint(f"{what} is one number; expected one log-probability per sequence, shape ({B},). Hint: sum "
                       "over the positions only (dim=-1), not over the batch.")
        mistakes = [(_logps_variant(logits, labels, bool(average), **switches), hint)
                    for switches, hint in LOGPS_MISTAKES]
        mistakes += [(_logps_variant(logits, labels, not average), "with average=True divide each row's sum by its "
                      "number of scored tokens; average=False (the default) returns the sum." if average else
                      "average=False (the default) returns the sum of the scored tokens' log-probabilities; "
                      "divide by their count only with average=True.")]
        expect_known_mistakes(out, expected, mistakes, what,
                              hint="log_softmax over the vocabulary, gather the next token's log-probability at "
                                   "each position (logits[:, :-1] against labels[:, 1:]), zero the -100 positions, "
                                   "sum per row (and divide by the row's scored tokens with average=True).")
    logits = torch.randn(2, 5, 6, generator=g).requires_grad_(True)       # the policy is trained through it
    labels = _labels(rng, g, 2, 5, 6)
    out = sequence_logps_fn(logits, labels)
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        raise Hint("sequence_logps(logits, labels) lost the gradient (the output does not require grad). Hint: the "
                   "policy is trained through these log-probabilities: no .item(), .detach() or torch.no_grad().")


# -----------------------------------------------------------------------------
# DPO's sigmoid loss, with conservative DPO's label smoothing


def _dpo_variant(pc, pr, rc, rr, beta, eps, *, beta_at="inside", sign=1, smoothing="right", reference="subtract"):
    """The sigmoid loss written out, with switches for the usual mistakes."""
    logits = {"subtract": (pc - pr) - (rc - rr), "ignored": pc - pr, "added": (pc - pr) + (rc - rr)}[reference]
    z = sign * (beta * logits if beta_at == "inside" else logits)
    up, down = -F.logsigmoid(z), -F.logsigmoid(-z)
    losses = {"right": (1 - eps) * up + eps * down, "swapped": eps * up + (1 - eps) * down,
              "dropped": (1 - eps) * up, "plus": (1 - eps) * up - eps * down, "ignored": up}[smoothing]
    return beta * losses if beta_at == "outside" else losses


DPO_MISTAKES = [
    (dict(sign=-1), "the sign is flipped (or, the same loss, the smoothing weights swapped): descent must raise the "
                    "chosen answer over the rejected, −(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits)."),
    (dict(beta_at="missing"), "β is missing: the loss is −log σ(β·logits); β scales the log-ratios inside the "
                              "sigmoid."),
    (dict(beta_at="outside"), "β belongs inside the sigmoid, −log σ(β·logits), not outside it as β·(−log "
                              "σ(logits)): β sets how large a margin over the reference counts as won."),
    (dict(reference="ignored"), "the reference is missing: logits = (π_c − π_r) − (ref_c − ref_r), the policy's "
                                "margin minus the reference's."),
    (dict(reference="added"), "subtract the reference's margin: logits = (π_c − π_r) − (ref_c − ref_r)."),
    (dict(smoothing="dropped"), "with label smoothing both terms are there: −(1 − ε)·log σ(β·logits) − ε·log "
                                "σ(−β·logits)."),
    (dict(smoothing="plus"), "the ε term is a loss too: −(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits), both "
                             "subtracted."),
    (dict(smoothing="ignored"), "label_smoothing is ignored: with ε the loss is −(1 − ε)·log σ(β·logits) − ε·log "
                                "σ(−β·logits)."),
]


def _reward_mistakes(policy, reference, other_policy, other_reference, beta):
    """The usual wrong values of one answer's rewards (the other answer's log-probabilities for a swap)."""
    return [
        (policy - reference, "the rewards are β·(policy − reference): multiply by β."),
        (beta * policy, "the reward is measured against the reference: β·(π − ref)."),
        (beta * (other_policy - other_reference), "chosen_rewards are the chosen answers' β·(π_c − ref_c); "
                                                  "rejected_rewards the rejected answers'."),
        (beta * ((policy - reference) - (other_policy - other_reference)),
         "each answer has its own reward, β·(π − ref): the chosen one's and the rejected one's, not the margin "
         "between them."),
    ]


def _dpo_cases(rng):
    # (B, dtype, beta or None = not passed, label_smoothing or None)
    # ε > 0 first: at ε = 0 swapped smoothing weights are a flipped sign
    return [(rng.randint(3, 7), torch.float32, rng.choice([0.2, 0.5, 1.5]), rng.choice([0.05, 0.1, 0.3])),
            (rng.randint(3, 6), torch.float32, None, None),
            (rng.randint(4, 8), torch.float64, rng.choice([0.05, 0.3, 2.0]), None),
            (rng.randint(2, 5), torch.float64, None, rng.choice([0.1, 0.25])),
            (rng.randint(2, 4), torch.float32, rng.choice([0.1, 0.4]), 0.5)]           # ε = ½: no preference left


def _three(out, what, names):
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise Hint(f"{what} should return three things, ({', '.join(names)}), got "
                   f"{type(out).__name__}{f' of {len(out)}' if isinstance(out, (tuple, list)) else ''}.")
    return out


@check("dpo_loss", points=2)
@_on_one_thread
def check_dpo_loss(dpo_loss_fn):
    rng = check_rng()
    g = torch_generator(rng)
    names = ("losses", "chosen_rewards", "rejected_rewards")
    for B, dtype, beta, eps in _dpo_cases(rng):
        pc, pr, rc, rr = _logps(g, B, dtype)
        kwargs = {key: value for key, value in (("beta", beta), ("label_smoothing", eps)) if value is not None}
        what = "dpo_loss(" + ", ".join([f"{B} {str(dtype)[6:]} pairs"]
                                       + [f"{key}={value}" for key, value in kwargs.items()]) + ")"
        b, e = 0.1 if beta is None else beta, 0.0 if eps is None else eps
        expected = dpo_loss(pc, pr, rc, rr, beta=b, label_smoothing=e)
        out = _three(call_learner(dpo_loss_fn, pc, pr, rc, rr, what="dpo_loss", **kwargs), what, names)
        if isinstance(out[0], torch.Tensor) and out[0].dim() == 0:
            raise Hint(f"{what}'s losses are one number; expected one per pair, shape ({B},). Hint: return the "
                       "per-pair losses: the trainer takes their mean.")
        mistakes = [(_dpo_variant(pc, pr, rc, rr, b, e, **switches), hint) for switches, hint in DPO_MISTAKES]
        expect_known_mistakes(out[0], expected[0], mistakes, f"{what}'s losses",
                              hint="−(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits), logits = (π_c − π_r) − "
                                   "(ref_c − ref_r).")
        for name, value, reference, (own, other) in [
            ("chosen_rewards", out[1], expected[1], ((pc, rc), (pr, rr))),
            ("rejected_rewards", out[2], expected[2], ((pr, rr), (pc, rc))),
        ]:
            expect_known_mistakes(value, reference, _reward_mistakes(*own, *other, b), f"{what}'s {name}",
                                  hint="β·(policy − reference), for that answer.")
    # the gradients: the losses train the policy, the rewards are logged
    B = rng.randint(3, 5)
    pc, pr, rc, rr = _logps(g, B, torch.float32)
    policy = [pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)]
    what = "dpo_loss(policy log-probabilities that require grad, ...)"
    losses, chosen_rewards, rejected_rewards = _three(dpo_loss_fn(*policy, rc, rr, beta=0.5), what, names)
    if not (isinstance(losses, torch.Tensor) and losses.requires_grad):
        raise Hint(f"{what}: the losses do not require grad, so they cannot train the policy. Hint: compute them "
                   "from the log-ratios, not from the detached rewards (and no .item() or torch.no_grad()).")
    for name, value in (("chosen_rewards", chosen_rewards), ("rejected_rewards", rejected_rewards)):
        if isinstance(value, torch.Tensor) and value.requires_grad:
            raise Hint(f"{what}: {name} require grad. Hint: the rewards are for logging (margins, accuracy), not "
                       "for training: return β·(policy − reference).detach().")
    grads = torch.autograd.grad(losses.sum(), policy, allow_unused=True)
    reference = [tensor.clone().requires_grad_(True) for tensor in (pc, pr)]
    want = torch.autograd.grad(dpo_loss(*reference, rc, rr, beta=0.5)[0].sum(), reference)
    for name, got, expected_grad in zip(("policy_chosen_logps", "policy_rejected_logps"), grads, want):
        if got is None:
            raise Hint(f"{what}: the losses do not depend on {name}. Hint: logits = (π_c − π_r) − (ref_c − ref_r).")
        expect_close(got, expected_grad, f"the gradient of the summed losses with respect to {name}",
                     hint="don't detach any part of the policy's log-ratios.")


# -----------------------------------------------------------------------------
# BCO's running mean δ


def _bco_reference(rewards):
    """[(losses, δ)] per step from minivlm.preference (β = 1 and zero reference: the log-ratios are the rewards)."""
    running, out = RunningMean(), []
    for chosen, rejected in rewards:
        zeros = torch.zeros_like(chosen)
        losses, _, _ = dpo_loss(chosen, rejected, zeros, zeros, beta=1.0, loss_type="bco_pair", running_mean=running)
        out.append((losses, running.mean))
    return out


def _bco_variant(rewards, *, delta="running", loss="right"):
    """[(losses, δ)] per step, written out, with switches for the usual mistakes."""
    out, means, seen = [], [], []
    for chosen, rejected in rewards:
        batch = torch.cat([chosen, rejected]).detach().float()
        previous = sum(means) / len(means) if means else torch.tensor(0.0)
        means.append(batch.mean())
        seen.append(batch)
        d = {"running": sum(means) / len(means), "read_first": previous, "this_batch": batch.mean(),
             "pooled": torch.cat(seen).mean(), "sum": sum(means),
             "chosen": sum(c.detach().float().mean() for c, _ in rewards[:len(means)]) / len(means)}[delta]
        losses = {"right": -F.logsigmoid(chosen - d) - F.logsigmoid(-(rejected - d)),
                  "rejected_sign": -F.logsigmoid(chosen - d) - F.logsigmoid(rejected - d),
                  "delta_sign": -F.logsigmoid(chosen + d) - F.logsigmoid(-(rejected + d))}[loss]
        out.append((losses, d))
    return out


BCO_DELTA_MISTAKES = [
    (dict(delta="read_first"), "δ is read before this batch updates it: update the running mean with this batch's "
                               "mean reward first, then read δ (on the first step δ is that batch's mean, not 0)."),
    (dict(delta="this_batch"), "δ is a running mean over the steps so far (this one included), not this batch's "
                               "mean alone."),
    (dict(delta="pooled"), "δ is the mean of the batches' mean rewards, each batch weighted once, not the mean of "
                           "every reward seen (batches of different sizes would weigh differently)."),
    (dict(delta="sum"), "δ is the running *mean* of the batch means: divide their sum by the number of steps."),
    (dict(delta="chosen"), "each batch's mean reward is over the chosen and the rejected rewards together, "
                           "torch.cat([chosen, rejected]).mean()."),
]
BCO_LOSS_MISTAKES = [
    (dict(loss="rejected_sign"), "a rejected answer should score below δ: −log σ(r_c − δ) − log σ(−(r_r − δ)), "
                                 "the second term with a minus inside."),
    (dict(loss="delta_sign"), "the rewards are compared with δ by subtracting it: −log σ(r_c − δ) − log σ(−(r_r − "
                              "δ))."),
]


def _bco_cases(rng, g):
    cases = []
    for steps in (rng.randint(3, 5), 1, rng.randint(2, 4)):
        sizes = rng.sample(range(2, 8), steps)         # batches of different sizes: pooled ≠ mean of batch means
        offset = rng.uniform(-1.5, 1.5) or 0.5
        cases.append([tuple(torch.randn(B, generator=g).mul(1.5).add(offset + shift) for shift in (0.5, -0.5))
                      for B in sizes])
    return cases


def _as_numbers(deltas, what):
    values = []
    for k, delta in enumerate(deltas):
        if isinstance(delta, torch.Tensor) and delta.numel() == 1:
            delta = delta.detach().cpu().double().item()
        if isinstance(delta, bool) or not isinstance(delta, (int, float)):
            raise Hint(f"{what}: δ at step {k} should be a number (a 0-dim tensor or a float), got "
                       f"{type(delta).__name__}.")
        values.append(delta)
    return torch.tensor(values, dtype=torch.float64)


def _bco_steps(out, steps, what):
    if not isinstance(out, (list, tuple)) or len(out) != steps or not all(
            isinstance(step, (list, tuple)) and len(step) == 2 for step in out):
        raise Hint(f"{what} should return a list of {steps} pairs (losses, delta), one per step, got "
                   f"{type(out).__name__}{f' of {len(out)}' if isinstance(out, (list, tuple)) else ''}.")
    return [step[0] for step in out], [step[1] for step in out]


@check("bco_pair_losses", points=1)
@_on_one_thread
def check_bco_pair_losses(bco_pair_losses_fn):
    rng = check_rng()
    g = torch_generator(rng)
    for rewards in _bco_cases(rng, g):
        what = f"bco_pair_losses({len(rewards)} steps of {[len(c) for c, _ in rewards]} pairs)"
        expected = _bco_reference(rewards)
        losses, deltas = _bco_steps(call_learner(bco_pair_losses_fn, rewards, what="bco_pair_losses"),
                                    len(rewards), what)
        for k, (step_losses, (want, _)) in enumerate(zip(losses, expected)):
            expect_shape(step_losses, want.shape, f"{what}'s losses at step {k}", hint="one loss per pair.")
        deltas = _as_numbers(deltas, what)
        want_deltas = torch.stack([d for _, d in expected]).double()
        variants = [(_bco_variant(rewards, **switches), hint) for switches, hint in BCO_DELTA_MISTAKES]
        expect_known_mistakes(deltas, want_deltas, [(torch.stack([torch.as_tensor(d) for _, d in v]).double(), hint)
                                                    for v, hint in variants], f"{what}'s δ per step",
                              hint="after each step's update δ is the mean of the batch means so far, this one "
                                   "included.")
        variants += [(_bco_variant(rewards, **switches), hint) for switches, hint in BCO_LOSS_MISTAKES]
        expect_known_mistakes(torch.cat(losses), torch.cat([losses for losses, _ in expected]),
                              [(torch.cat([losses for losses, _ in v]), hint) for v, hint in variants],
                              f"{what}'s losses (all steps)",
                              hint="−log σ(r_c − δ) − log σ(−(r_r − δ)) with this step's δ.")
    # δ is a statistic, not a path for the gradient
    rewards = [tuple(torch.randn(B, generator=g).add(0.7).requires_grad_(True) for _ in range(2)) for B in (3, 5)]
    what = "bco_pair_losses(rewards that require grad)"
    losses, deltas = _bco_steps(bco_pair_losses_fn(rewards), 2, what)
    if any(isinstance(d, torch.Tensor) and d.requires_grad for d in deltas):
        raise Hint(f"{what}: δ requires grad. Hint: δ is a running statistic of the rewards, not part of the loss to "
                   "differentiate: detach each batch's mean reward before it enters the running mean.")
    if not all(isinstance(step, torch.Tensor) and step.requires_grad for step in losses):
        raise Hint(f"{what}: the losses do not require grad. Hint: only δ is detached; the rewards r_c and r_r "
                   "keep their gradient.")
    leaves = [tensor for pair in rewards for tensor in pair]
    got = torch.autograd.grad(sum(step.sum() for step in losses), leaves, allow_unused=True)
    copies = [tuple(tensor.detach().clone().requires_grad_(True) for tensor in pair) for pair in rewards]
    want = torch.autograd.grad(sum(step.sum() for step, _ in _bco_reference(copies)),
                               [tensor for pair in copies for tensor in pair])
    for k, (got_grad, want_grad) in enumerate(zip(got, want)):
        if got_grad is None:
            raise Hint(f"{what}: the losses do not depend on every reward. Hint: each step's losses read its own "
                       "chosen and rejected rewards.")
        expect_close(got_grad, want_grad, f"the gradient of the summed losses with respect to reward tensor {k}",
                     hint="δ must carry no gradient: detach the batch means before averaging them.")


# -----------------------------------------------------------------------------
# MPO: the weighted sum of DPO, BCO and SFT


def _mpo_parts(pc, pr, rc, rr, beta):
    preference, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    quality, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="bco_pair")
    return preference, quality


def _mpo_mistakes(pc, pr, rc, rr, nll, beta, weights):
    w_p, w_q, w_g = weights
    sig, bco = _mpo_parts(pc, pr, rc, rr, beta)
    sig_default, bco_default = _mpo_parts(pc, pr, rc, rr, 0.1)
    d_p, d_q, d_g = MPO_WEIGHTS
    return [
        ((w_q * sig + w_p * bco).mean() + w_g * nll, "the weights are swapped: w_p (0.8 by default) weighs the DPO "
                                                     "(sigmoid) loss, w_q (0.2) BCO's."),
        ((w_p * sig + w_q * bco).mean() + w_p * nll, "the generation (SFT) loss has its own weight, w_g (1.0 by "
                                                     "default), not w_p."),
        ((w_p * sig + w_q * bco).mean() + nll, "multiply the generation (SFT) loss by its weight w_g."),
        ((w_p * sig + w_q * bco).mean(), "the generation term is missing: + w_g·nll_loss, the chosen answers' "
                                         "next-token loss."),
        ((w_p * sig).mean() + w_g * nll, "the BCO term is missing: mean(w_p·sigmoid + w_q·bco_pair) + w_g·nll."),
        ((w_q * bco).mean() + w_g * nll, "the DPO (sigmoid) term is missing: mean(w_p·sigmoid + w_q·bco_pair) + "
                                         "w_g·nll."),
        ((w_p * sig + w_q * bco).sum() + w_g * nll, "take the mean of the per-pair losses over the batch, not the "
                                                    "sum: mean(w_p·sigmoid + w_q·bco_pair) + w_g·nll."),
        ((w_p * sig + w_q * bco + w_g * nll).sum(), "nll_loss is already the batch's mean next-token loss: add "
                                                    "w_g·nll_loss once, to the mean of the pair losses, not once "
                                                    "per pair."),
        (((w_p * sig + w_q * bco).mean() + w_g * nll) / (w_p + w_q + w_g), "MPO is a weighted sum, not a weighted "
                                                                           "average: don't divide by the weights' "
                                                                           "sum."),
        ((d_p * sig + d_q * bco).mean() + d_g * nll, "use the weights argument, not the default (0.8, 0.2, 1.0)."),
        ((w_p * sig_default + w_q * bco_default).mean() + w_g * nll, "pass beta on to both the DPO and the BCO "
                                                                     "term."),
    ]


def _mpo_cases(rng):
    # (B, dtype, beta or None, weights or None)
    weights = (round(rng.uniform(0.3, 0.9), 2), round(rng.uniform(0.1, 0.5), 2), round(rng.uniform(0.4, 2.0), 2))
    return [(rng.randint(3, 6), torch.float32, None, None),
            (rng.randint(4, 7), torch.float64, rng.choice([0.3, 0.5, 2.0]), None),
            (rng.randint(3, 6), torch.float32, None, weights),
            (rng.randint(2, 5), torch.float64, rng.choice([0.2, 1.0]), (weights[1], weights[0], weights[2]))]


@check("mpo_loss", points=1)
@_on_one_thread
def check_mpo_loss(mpo_loss_fn):
    rng = check_rng()
    g = torch_generator(rng)
    for B, dtype, beta, weights in _mpo_cases(rng):
        pc, pr, rc, rr = _logps(g, B, dtype)
        nll = torch.rand((), generator=g, dtype=torch.float64).add(0.5).to(dtype)
        kwargs = {key: value for key, value in (("beta", beta), ("weights", weights)) if value is not None}
        what = "mpo_loss(" + ", ".join([f"{B} {str(dtype)[6:]} pairs, nll_loss={nll.item():.3f}"]
                                       + [f"{key}={value}" for key, value in kwargs.items()]) + ")"
        b, w = 0.1 if beta is None else beta, MPO_WEIGHTS if weights is None else weights
        expected = mpo_loss(pc, pr, rc, rr, nll, beta=b, weights=w)
        out = call_learner(mpo_loss_fn, pc, pr, rc, rr, nll, what="mpo_loss", **kwargs)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (B,):
            raise Hint(f"{what} has shape ({B},), expected one number (). Hint: MPO's loss is mean(w_p·sigmoid + "
                       "w_q·bco_pair) over the pairs, plus w_g·nll_loss.")
        expect_known_mistakes(out, expected, _mpo_mistakes(pc, pr, rc, rr, nll, b, w), what,
                              hint="mean(w_p·sigmoid + w_q·bco_pair) + w_g·nll_loss, both pair losses from the "
                                   "same log-probabilities and β (BCO's δ: this batch's mean reward).")
    # every term trains: gradients reach the policy's log-probabilities and the SFT loss
    pc, pr, rc, rr = _logps(g, rng.randint(3, 5), torch.float32)
    nll = torch.tensor(1.3)
    leaves = [pc.clone().requires_grad_(True), pr.clone().requires_grad_(True), nll.clone().requires_grad_(True)]
    what = "mpo_loss(log-probabilities and nll_loss that require grad, ...)"
    out = mpo_loss_fn(leaves[0], leaves[1], rc, rr, leaves[2])
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        raise Hint(f"{what} does not require grad. Hint: the loss trains the policy: no .item(), .detach() or "
                   "torch.no_grad().")
    got = torch.autograd.grad(out, leaves, allow_unused=True)
    copies = [tensor.detach().clone().requires_grad_(True) for tensor in leaves]
    want = torch.autograd.grad(mpo_loss(copies[0], copies[1], rc, rr, copies[2]), copies)
    for name, got_grad, want_grad in zip(("policy_chosen_logps", "policy_rejected_logps"), got[:2], want[:2]):
        if got_grad is None or not torch.allclose(got_grad, want_grad, atol=1e-5, rtol=1e-4):
            raise Hint(f"mpo_loss has the right value but the wrong gradient for {name}. Hint: a term carries no "
                       "gradient: the rewards dpo_loss returns are detached, so compute BCO's rewards from the "
                       "log-probabilities, β·(π − ref).")
    if got[2] is None or not torch.allclose(got[2], want[2]):
        raise Hint(f"{what}: the gradient with respect to nll_loss is wrong. Hint: add w_g·nll_loss as it is, "
                   "without detaching it.")


# -----------------------------------------------------------------------------
# the experiment: DPO on a table policy at several β

# The policy is a table of logits over K answers for each of P prompts, starting as a copy of a frozen reference
# table (N(0, 1) logits); each prompt has one preferred answer and two dispreferred ones (two pairs). The learner's
# train_table runs `steps` full-batch Adam steps of their DPO loss (conservative DPO, ε = 0.1: its minimum is at a
# finite margin over the reference, β·margin = log((1 − ε)/ε) = log 9, so the larger β, the nearer the optimum to
# the reference) at β = 0.1, 0.5 and 2.5; the check measures KL(π‖π_ref) (mean over prompts) and how much more
# likely each preferred answer became, log π(c) − log π_ref(c). Deterministic (no sampling, one thread), 0.2 s (1 s the
# first time torch.optim runs in a process).
# Reference runs (minivlm.preference.dpo_loss), table seeds 0-7:
#   KL at β = 0.1 / 0.5 / 2.5:  1.74-2.60 / 0.68-1.00 / 0.031-0.046 nats (seed 0: 2.345 / 0.707 / 0.031)
#   KL(β) / KL(next β):  2.35-3.32 (0.1 -> 0.5), 17.0-24.9 (0.5 -> 2.5)
#   mean log π(c)/π_ref(c):  1.74-2.60 / 1.36-1.95 / 0.40-0.56; every preferred answer more likely, every seed
# Wrong losses, seeds 0-2: a flipped sign (or swapped smoothing weights) makes the preferred answers less likely at
# every β (mean log-ratio -0.5 to -19); a reference that moves with the policy, or β missing or outside the sigmoid,
# leaves the KL the same at every β (ratios 1.00-1.01); ε ignored (plain DPO) gives ratios 1.10-1.16 (0.1 -> 0.5);
# SGD in place of Adam makes the KL grow with β in 200 steps (ratios 0.04-0.65). The sum of the pair losses in place
# of their mean passes (Adam ignores the scale). The check asks for a ratio of at least 1.5 between neighbouring β
# (1.5x under the smallest reference ratio, 1.3x over the nearest wrong one) and a mean log-ratio of at least 0.2
# at each β (half the smallest reference one).
TABLE_EXPERIMENT = dict(prompts=8, answers=6, dispreferred=2, betas=(0.1, 0.5, 2.5), label_smoothing=0.1, steps=200,
                        lr=0.1, seed=0)
MIN_KL_RATIO = 1.5        # KL(π‖π_ref) at one β over that at the next larger β
MIN_PREFERRED = 0.2       # mean log π(c) − log π_ref(c) over the pairs, at every β


def preference_table(seed=0, prompts=8, answers=6, dispreferred=2):
    """(reference_logits (P, K), prompt, chosen, rejected (N,) long): a frozen table and its preference pairs.

    Each prompt has one preferred answer and `dispreferred` others it is preferred to, drawn without replacement."""
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(prompts, answers, generator=g)
    prompt, chosen, rejected = [], [], []
    for p in range(prompts):
        order = torch.randperm(answers, generator=g).tolist()
        for r in order[1:dispreferred + 1]:
            prompt.append(p), chosen.append(order[0]), rejected.append(r)
    return reference, torch.tensor(prompt), torch.tensor(chosen), torch.tensor(rejected)


def train_table_reference(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1,
                          loss=dpo_loss):
    """The experiment's training, with the reference loss (or `loss`): Adam on a copy of the reference table."""
    policy = reference_logits.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([policy], lr=lr)
    ref = reference_logits.log_softmax(-1)
    for _ in range(steps):
        logps = policy.log_softmax(-1)
        losses, _, _ = loss(logps[prompt, chosen], logps[prompt, rejected], ref[prompt, chosen],
                            ref[prompt, rejected], beta=beta, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
    return policy.detach()


def table_metrics(policy_logits, reference_logits, prompt, chosen):
    """(KL(π‖π_ref) averaged over prompts, mean log π(c)/π_ref(c) over the pairs), as Python floats."""
    logp, ref = policy_logits.double().log_softmax(-1), reference_logits.double().log_softmax(-1)
    kl = (logp.exp() * (logp - ref)).sum(-1).mean()
    return kl.item(), (logp - ref)[prompt, chosen].mean().item()


def _call_train(train_table_fn, table, beta, setup, steps):
    reference, prompt, chosen, rejected = table
    out = call_learner(train_table_fn, reference, prompt, chosen, rejected, beta,
                       label_smoothing=setup["label_smoothing"], steps=steps, lr=setup["lr"], what="train_table")
    what = f"train_table(a {tuple(reference.shape)} reference table, β={beta}, steps={steps})"
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise Hint(f"{what} should return the trained policy's logits, a float tensor {tuple(reference.shape)}, got "
                   f"{type(out).__name__}.")
    expect_shape(out, reference.shape, what, hint="the policy's logits, one row per prompt, one column per answer.")
    if not bool(torch.isfinite(out).all()):
        raise Hint(f"{what} holds non-finite logits. Hint: Adam at the lr given, on the mean of the pair losses.")
    return out.detach()


def measure_table(train_table_fn, setup=None):
    """[(β, KL, mean preferred log-ratio)] of a policy trained by `train_table_fn` at each β of the setup."""
    setup = setup or TABLE_EXPERIMENT
    table = preference_table(setup["seed"], setup["prompts"], setup["answers"], setup["dispreferred"])
    rows = []
    for beta in setup["betas"]:
        policy = _call_train(train_table_fn, table, beta, setup, setup["steps"])
        rows.append((beta, *table_metrics(policy, table[0], table[1], table[2])))
    return rows


@check("train_table", points=3)
def check_train_table(train_table_fn):
    rng = check_rng()
    setup = TABLE_EXPERIMENT
    with torch.random.fork_rng(devices=[]), one_thread():
        table = preference_table(rng.randrange(1000), rng.randint(3, 6), rng.randint(4, 7), rng.randint(1, 2))
        start = _call_train(train_table_fn, table, 0.1, setup, steps=0)          # 1. the start: the reference
        if not torch.allclose(start, table[0], atol=1e-6):
            raise Hint("train_table(..., steps=0) should return the reference table itself. Hint: the policy starts "
                       "as a copy of the reference (reference_logits.clone().requires_grad_(True)), takes `steps` "
                       "steps from there, and you return its logits.")
        rows = measure_table(train_table_fn, setup)                               # 2. measured: three β
    for beta, kl, up in rows:
        if not up >= MIN_PREFERRED:
            fix = ("descent must raise the chosen answers over the rejected: check your loss's sign" if up < 0 else
                   "train with torch.optim.Adam at the lr given, all `steps` steps, on the mean of the pair losses")
            raise Hint(f"after {setup['steps']} steps at β = {beta} the preferred answers are "
                       f"{'less' if up < 0 else 'hardly more'} likely than under the reference (mean log π/π_ref "
                       f"{up:+.2f}, expected at least {MIN_PREFERRED}). Hint: {fix}.")
    for (beta, kl, _), (next_beta, next_kl, _) in zip(rows, rows[1:]):
        if not kl >= MIN_KL_RATIO * next_kl:
            kls = ", ".join(f"{kl:.3f}" for _, kl, _ in rows)
            raise Hint(f"KL(policy‖reference) was {kls} at β = {', '.join(str(b) for b in setup['betas'])}: expected "
                       f"it to shrink at least {MIN_KL_RATIO}× from one β to the next. Hint: β inside the sigmoid, "
                       "label_smoothing used, the reference frozen (never the policy), Adam at the lr given.")


# -----------------------------------------------------------------------------
# concept questions


def _first_step_loss(beta, label_smoothing):
    """DPO's loss when the policy is the reference (the first step), from minivlm.preference.dpo_loss."""
    same = torch.tensor([-3.2, -0.7, -11.0], dtype=torch.float64)
    other = torch.tensor([-1.5, -4.0, -2.5], dtype=torch.float64)
    losses, _, _ = dpo_loss(same, other, same.clone(), other.clone(), beta=beta, label_smoothing=label_smoothing)
    return losses.mean().item()


@check("first_step_loss", points=1)
def check_first_step_loss(first_step_loss):
    rng = check_rng()
    for beta, eps in [(0.1, 0.0), (rng.choice([0.3, 0.5, 2.0]), rng.choice([0.1, 0.2])),
                      (rng.choice([0.05, 1.0]), rng.choice([0.0, 0.3]))]:
        what = f"first_step_loss(beta={beta}, label_smoothing={eps})"
        answer = answer_number(call_learner(first_step_loss, beta, eps, what="first_step_loss"), what)
        expected = _first_step_loss(beta, eps)
        if math.isclose(answer, expected, rel_tol=1e-3, abs_tol=1e-4):
            continue
        for wrong, hint in [
            (0.0, "the policy equals the reference, so every logit is 0; but the loss is −log σ(0), not 0."),
            (0.5, "σ(0) = ½ is the probability; the loss is −log σ(0)."),
            (-math.log(2), "the loss is −log σ(0), a positive number."),
            (beta * math.log(2), "β multiplies the logit inside the sigmoid, and the logit is 0: β drops out."),
            ((1 - eps) * math.log(2), "with label smoothing both terms are −log σ(0): (1 − ε)·log 2 + ε·log 2."),
            ((1 - 2 * eps) * math.log(2), "both smoothing terms are losses, each −log σ(0): (1 − ε)·log 2 + ε·log 2."),
        ]:
            if math.isclose(answer, wrong, rel_tol=1e-3, abs_tol=1e-4) and not math.isclose(wrong, expected):
                raise Hint(f"{what} is {answer:.4g}. Hint: {hint}")
        raise Hint(f"{what} is {answer:.4g}. Hint: at the first step π = π_ref, so logits = (π_c − π_r) − (ref_c − "
                   "ref_r) = 0 for every pair; put that into −(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits).")


FROZEN_OPTIONS = {
    "a": "to save memory and time: a frozen model needs no gradients, and its log-probabilities can be computed once",
    "b": "it is the reward model: DPO trains the policy to raise the score the reference gives its answers",
    "c": "the implicit reward β·log(π/π_ref) is measured against it: the loss falls as the policy's margin over the "
         "reference's grows and flattens once that margin is large, which keeps the policy near the reference (the "
         "KL term of the objective DPO solves); a reference that followed the policy would hold every loss at log 2, "
         "pushing without end",
    "d": "it writes the rejected answers of the preference pairs as training goes",
}


def _moving_reference_stays_at_log_two():
    """dpo_loss with the policy as its own reference: log 2 for every pair, whatever the policy, at every β."""
    g = torch.Generator().manual_seed(0)
    chosen, rejected = (-torch.rand(5, generator=g, dtype=torch.float64) * 10 for _ in range(2))
    return all(torch.allclose(dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=beta)[0],
                              torch.full((5,), math.log(2), dtype=torch.float64)) for beta in (0.1, 1.0, 10.0))


@check("frozen_reference", points=1)
def check_frozen_reference(frozen_reference):
    answer = answer_choice(call_learner(frozen_reference, what="frozen_reference"), FROZEN_OPTIONS,
                           "frozen_reference()")
    if answer == ("c" if _moving_reference_stays_at_log_two() else None):
        return
    raise Hint({
        "a": f'"{answer}" is a bonus, not the reason (chapter 10 computes the reference\'s log-probabilities once). '
             'Hint: what would the loss be if the reference were the policy itself, updated every step?',
        "b": f'"{answer}" is not it. Hint: DPO has no reward model; the reward is implicit, β·log(π/π_ref), read '
             'off the policy against the reference.',
        "d": f'"{answer}" is not it. Hint: the pairs are fixed data (chapter 10 makes them with '
             'minivlm/data/hallucination.py); the reference only scores them.',
    }.get(answer, f'"{answer}" is not it.'))


GENERATION_OPTIONS = {
    "a": "it replaces the frozen reference, so MPO can do without one",
    "b": "DPO sees only the margin between the chosen and the rejected answer, so it can lower both, and the "
         "probability they lose goes to other, possibly ill-formed answers (likelihood displacement); the SFT loss "
         "on the chosen answers keeps them likely and well formed",
    "c": "it makes the loss independent of β, so that β needs no tuning",
    "d": "it keeps BCO's running mean δ from drifting as the rewards grow",
}


def _dpo_blind_to_falling_together(shift=5.0):
    """dpo_loss is unchanged when the chosen and the rejected log-probabilities fall by the same amount."""
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (-torch.rand(5, generator=g, dtype=torch.float64) * 10 for _ in range(4))
    return torch.allclose(dpo_loss(pc - shift, pr - shift, rc, rr)[0], dpo_loss(pc, pr, rc, rr)[0])


@check("generation_term", points=1)
def check_generation_term(generation_term):
    answer = answer_choice(call_learner(generation_term, what="generation_term"), GENERATION_OPTIONS,
                           "generation_term()")
    if answer == ("b" if _dpo_blind_to_falling_together() else None):
        return
    raise Hint({
        "a": f'"{answer}" is not it. Hint: MPO\'s DPO and BCO terms still read the reference (mpo_loss takes '
             'ref_chosen_logps and ref_rejected_logps).',
        "c": f'"{answer}" is not it. Hint: β still scales the DPO and BCO terms; the generation term is the chosen '
             'answers\' next-token loss, weighted by w_g.',
        "d": f'"{answer}" is not it. Hint: δ is BCO\'s own running mean of the rewards; the generation term is a '
             'next-token loss on the chosen answers. What does the DPO loss do if log π(chosen) and log '
             'π(rejected) both fall by the same amount?',
    }.get(answer, f'"{answer}" is not it.'))
