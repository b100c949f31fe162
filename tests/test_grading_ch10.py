"""The chapter 10 checks pass the reference and other correct implementations, say "not implemented yet"
to a stub, and give a specific hint (not a pass) to typical mistakes, whatever sizes they draw."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.course.grading import ch10, one_thread
from minivlm.preference import MPO_WEIGHTS, RunningMean, dpo_loss, mpo_loss, sequence_logps

SEEDS = [1, 2, 3, 4]


def stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- correct implementations

def logps_reference(logits, labels, average=False):
    return sequence_logps(logits, labels, average=average)


def logps_by_loops(logits, labels, average=False):
    """Row by row, position by position: log_softmax at t scores the token at t + 1."""
    out = []
    for row_logits, row_labels in zip(logits, labels):
        total, count = torch.zeros(()), 0
        for t in range(len(row_labels) - 1):
            token = int(row_labels[t + 1])
            if token != -100:
                total = total + row_logits[t].log_softmax(-1)[token]
                count += 1
        out.append(total / count if average else total)
    return torch.stack(out)


def logps_by_cross_entropy(logits, labels, average=False):
    """F.cross_entropy with ignore_index=-100 gives 0 at the ignored positions."""
    B, L, V = logits.shape
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100,
                          reduction="none").reshape(B, L - 1)
    total = -nll.sum(-1)
    return total / (labels[:, 1:] != -100).sum(-1) if average else total


def dpo_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
                  label_smoothing=0.0):
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta,
                    label_smoothing=label_smoothing)


def dpo_by_softplus(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    """−log σ(x) = softplus(−x); the rewards first, the logits from them."""
    chosen_rewards, rejected_rewards = beta * (pc - rc), beta * (pr - rr)
    margin = chosen_rewards - rejected_rewards
    losses = (1 - label_smoothing) * F.softplus(-margin) + label_smoothing * F.softplus(margin)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def bco_reference(rewards):
    return ch10._bco_reference(rewards)


def bco_by_hand(rewards):
    """A Python float for the running mean, updated with each batch's mean before it is read."""
    out, mean = [], 0.0
    for k, (chosen, rejected) in enumerate(rewards, start=1):
        mean += (torch.cat([chosen, rejected]).mean().item() - mean) / k
        delta = torch.tensor(mean)
        out.append((-F.logsigmoid(chosen - delta) - F.logsigmoid(delta - rejected), delta))
    return out


def bco_with_running_mean(rewards):
    running = RunningMean()
    out = []
    for chosen, rejected in rewards:
        delta = running.update(torch.cat([chosen, rejected]).mean())
        out.append((F.softplus(delta - chosen) + F.softplus(rejected - delta), delta))
    return out


def mpo_reference(pc, pr, rc, rr, nll_loss, beta=0.1, weights=MPO_WEIGHTS):
    return mpo_loss(pc, pr, rc, rr, nll_loss, beta=beta, weights=weights)


def mpo_composed(pc, pr, rc, rr, nll_loss, beta=0.1, weights=(0.8, 0.2, 1.0)):
    """As the solution writes it: the learner's DPO and BCO, BCO on rewards that keep their gradient."""
    w_p, w_q, w_g = weights
    preference, _, _ = dpo_by_softplus(pc, pr, rc, rr, beta)
    [(quality, _)] = bco_by_hand([(beta * (pc - rc), beta * (pr - rr))])
    return (w_p * preference + w_q * quality).mean() + w_g * nll_loss


def mpo_nll_inside_the_mean(pc, pr, rc, rr, nll_loss, beta=0.1, weights=(0.8, 0.2, 1.0)):
    """mean(a + c) = mean(a) + c for a scalar c: the same loss, written the other way."""
    w_p, w_q, w_g = weights
    preference, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
    quality, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="bco_pair")
    return (w_p * preference + w_q * quality + w_g * nll_loss).mean()


def train_table_summed(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1):
    """The reference log-probabilities gathered once, the loss the sum (Adam does not care), a softplus DPO."""
    policy = reference_logits.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([policy], lr=lr)
    ref = reference_logits.log_softmax(-1)
    ref_chosen, ref_rejected = ref[prompt, chosen], ref[prompt, rejected]
    for _ in range(steps):
        logps = policy.log_softmax(-1)
        losses, _, _ = dpo_by_softplus(logps[prompt, chosen], logps[prompt, rejected], ref_chosen, ref_rejected,
                                       beta, label_smoothing)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
    return policy.detach()


CORRECT = [
    (ch10.check_sequence_logps, sequence_logps),
    (ch10.check_sequence_logps, logps_reference),
    (ch10.check_sequence_logps, logps_by_loops),
    (ch10.check_sequence_logps, logps_by_cross_entropy),
    (ch10.check_dpo_loss, dpo_reference),
    (ch10.check_dpo_loss, dpo_by_softplus),
    (ch10.check_bco_pair_losses, bco_reference),
    (ch10.check_bco_pair_losses, bco_by_hand),
    (ch10.check_bco_pair_losses, bco_with_running_mean),
    (ch10.check_mpo_loss, mpo_loss),
    (ch10.check_mpo_loss, mpo_reference),
    (ch10.check_mpo_loss, mpo_composed),
    (ch10.check_mpo_loss, mpo_nll_inside_the_mean),
]


@pytest.mark.parametrize("check, fn", CORRECT)
def test_correct_implementations_pass(check, fn, grade):
    passed, out = grade(check, fn)
    assert passed and out.startswith("✅"), out


ALL_CHECKS = [ch10.check_sequence_logps, ch10.check_dpo_loss, ch10.check_bco_pair_losses, ch10.check_mpo_loss,
              ch10.check_train_table, ch10.check_first_step_loss, ch10.check_frozen_reference,
              ch10.check_generation_term]


@pytest.mark.parametrize("check", ALL_CHECKS)
def test_a_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_the_written_out_variants_are_the_references():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 5)
    labels = torch.tensor([[-100, -100, 3, 4, 1, -100, -100], [-100, 2, 0, 0, 1, 4, 2], [-100] * 5 + [3, 3]])
    for average in (False, True):
        torch.testing.assert_close(ch10._logps_variant(logits, labels, average),
                                   sequence_logps(logits, labels, average))
    pc, pr, rc, rr = (-torch.rand(6, dtype=torch.float64) * 10 for _ in range(4))
    for beta, eps in [(0.1, 0.0), (0.5, 0.2), (2.0, 0.5)]:
        torch.testing.assert_close(ch10._dpo_variant(pc, pr, rc, rr, beta, eps),
                                   dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)[0])
    rewards = [(torch.randn(n), torch.randn(n)) for n in (2, 5, 3)]
    for (got, got_delta), (want, want_delta) in zip(ch10._bco_variant(rewards), ch10._bco_reference(rewards)):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_delta, want_delta)


# ----------------------------------------------------------------------------- typical mistakes: the functions

def _logps_wrong(**switches):
    return lambda logits, labels, average=False: ch10._logps_variant(logits, labels, average, **switches)


def logps_no_shift(logits, labels, average=False):
    """Written as a learner would: each position scores its own label."""
    scored = labels != -100
    token = logits.log_softmax(-1).gather(2, labels.clamp(min=0)[..., None]).squeeze(-1) * scored
    return token.sum(-1) / scored.sum(-1) if average else token.sum(-1)


def logps_gather_at_minus_100(logits, labels, average=False):
    """The -100 labels handed to gather as they are: an index out of bounds."""
    token = logits[:, :-1].log_softmax(-1).gather(2, labels[:, 1:, None]).squeeze(-1)
    return token.sum(-1)


def logps_take_along_dim(logits, labels, average=False):
    """take_along_dim wraps -100 around to a real token; nothing masked."""
    token = torch.take_along_dim(logits[:, :-1].log_softmax(-1), labels[:, 1:, None], -1).squeeze(-1)
    return token.mean(-1) if average else token.sum(-1)


def logps_over_the_length(logits, labels, average=False):
    total = sequence_logps(logits, labels)
    return total / labels.shape[1] if average else total


def logps_mean_over_batch(logits, labels, average=False):
    return sequence_logps(logits, labels, average).mean()


def logps_average_ignored(logits, labels, average=False):
    return sequence_logps(logits, labels)


def logps_without_gradient(logits, labels, average=False):
    with torch.no_grad():
        return sequence_logps(logits, labels, average)


def _dpo_wrong(**switches):
    def wrong(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
        losses = ch10._dpo_variant(pc, pr, rc, rr, beta, label_smoothing, **switches)
        return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()
    return wrong


def dpo_sign_flipped(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    """Written as a learner would: the rejected margin first."""
    logits = (pr - rr) - (pc - rc)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_rewards_not_detached(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)
    return losses, beta * (pc - rc), beta * (pr - rr)


def dpo_from_detached_rewards(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    _, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=beta)
    margin = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return losses, chosen_rewards, rejected_rewards


def dpo_rewards_without_beta(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)
    return losses, (pc - rc).detach(), (pr - rr).detach()


def dpo_rewards_swapped(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)
    return losses, rejected, chosen


def dpo_mean(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)
    return losses.mean(), chosen, rejected


def dpo_two_things(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
    return dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)[:2]


def _bco_wrong(**switches):
    return lambda rewards: ch10._bco_variant(rewards, **switches)


def bco_read_before_update(rewards):
    """Written as a learner would: δ read, then the running mean updated."""
    running, out = RunningMean(), []
    for chosen, rejected in rewards:
        delta = torch.as_tensor(running.mean)
        running.update(torch.cat([chosen, rejected]).mean())
        out.append((-F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta)), delta))
    return out


def bco_pooled(rewards):
    seen, out = [], []
    for chosen, rejected in rewards:
        seen += [chosen, rejected]
        delta = torch.cat(seen).mean().detach()
        out.append((-F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta)), delta))
    return out


def bco_delta_not_detached(rewards):
    out, mean = [], 0.0
    for k, (chosen, rejected) in enumerate(rewards, start=1):
        mean = mean + (torch.cat([chosen, rejected]).mean() - mean) / k
        out.append((-F.logsigmoid(chosen - mean) - F.logsigmoid(-(rejected - mean)), mean))
    return out


def bco_one_tuple(rewards):
    return [losses for losses, _ in ch10._bco_reference(rewards)]


def _mpo_from(combine):
    def wrong(pc, pr, rc, rr, nll_loss, beta=0.1, weights=MPO_WEIGHTS):
        sig, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta)
        bco, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="bco_pair")
        return combine(sig, bco, nll_loss, *weights)
    return wrong


mpo_weights_swapped = _mpo_from(lambda s, b, n, wp, wq, wg: (wq * s + wp * b).mean() + wg * n)
mpo_nll_times_wp = _mpo_from(lambda s, b, n, wp, wq, wg: (wp * s + wq * b).mean() + wp * n)
mpo_no_nll = _mpo_from(lambda s, b, n, wp, wq, wg: (wp * s + wq * b).mean())
mpo_no_bco = _mpo_from(lambda s, b, n, wp, wq, wg: (wp * s).mean() + wg * n)
mpo_batch_sum = _mpo_from(lambda s, b, n, wp, wq, wg: (wp * s + wq * b).sum() + wg * n)
mpo_nll_per_pair = _mpo_from(lambda s, b, n, wp, wq, wg: (wp * s + wq * b + wg * n).sum())
mpo_weighted_average = _mpo_from(lambda s, b, n, wp, wq, wg: ((wp * s + wq * b).mean() + wg * n) / (wp + wq + wg))
mpo_per_pair = _mpo_from(lambda s, b, n, wp, wq, wg: wp * s + wq * b + wg * n)
mpo_weights_ignored = _mpo_from(lambda s, b, n, wp, wq, wg: (0.8 * s + 0.2 * b).mean() + 1.0 * n)


def mpo_beta_ignored(pc, pr, rc, rr, nll_loss, beta=0.1, weights=MPO_WEIGHTS):
    return mpo_loss(pc, pr, rc, rr, nll_loss, weights=weights)


def mpo_bco_on_detached_rewards(pc, pr, rc, rr, nll_loss, beta=0.1, weights=(0.8, 0.2, 1.0)):
    """BCO fed the rewards dpo_loss returns: the value is right, the BCO term trains nothing."""
    w_p, w_q, w_g = weights
    preference, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=beta)
    [(quality, _)] = bco_by_hand([(chosen_rewards, rejected_rewards)])
    return (w_p * preference + w_q * quality).mean() + w_g * nll_loss


def mpo_nll_detached(pc, pr, rc, rr, nll_loss, beta=0.1, weights=MPO_WEIGHTS):
    return mpo_loss(pc, pr, rc, rr, nll_loss.detach(), beta=beta, weights=weights)


MISTAKES = [
    (ch10.check_sequence_logps, logps_no_shift, "no shift"),
    (ch10.check_sequence_logps, _logps_wrong(shift="none"), "no shift"),
    (ch10.check_sequence_logps, _logps_wrong(shift="previous"), "the shift goes the other way"),
    (ch10.check_sequence_logps, logps_gather_at_minus_100, "labels hold -100 where nothing is scored"),
    (ch10.check_sequence_logps, _logps_wrong(ignore="clamp"), "scored as token 0"),
    (ch10.check_sequence_logps, _logps_wrong(ignore="wrap"), "wraps around to a real token"),
    (ch10.check_sequence_logps, logps_take_along_dim, "wraps around to a real token"),
    (ch10.check_sequence_logps, _logps_wrong(table="raw"), "not the raw logits"),
    (ch10.check_sequence_logps, _logps_wrong(table="positions"), "not over the positions"),
    (ch10.check_sequence_logps, _logps_wrong(divide="positions"), "not over every position"),
    (ch10.check_sequence_logps, _logps_wrong(divide="length"), "not over the sequence length"),
    (ch10.check_sequence_logps, logps_over_the_length, "not over the sequence length"),
    (ch10.check_sequence_logps, logps_average_ignored, "with average=True divide"),
    (ch10.check_sequence_logps, logps_mean_over_batch, "not over the batch"),
    (ch10.check_sequence_logps, logps_without_gradient, "lost the gradient"),
    (ch10.check_dpo_loss, dpo_sign_flipped, "the sign is flipped"),
    (ch10.check_dpo_loss, _dpo_wrong(sign=-1), "the sign is flipped"),
    (ch10.check_dpo_loss, _dpo_wrong(beta_at="missing"), "β is missing"),
    (ch10.check_dpo_loss, _dpo_wrong(beta_at="outside"), "β belongs inside the sigmoid"),
    (ch10.check_dpo_loss, _dpo_wrong(reference="ignored"), "the reference is missing"),
    (ch10.check_dpo_loss, _dpo_wrong(reference="added"), "subtract the reference's margin"),
    (ch10.check_dpo_loss, _dpo_wrong(smoothing="swapped"), "the smoothing weights swapped"),
    (ch10.check_dpo_loss, _dpo_wrong(smoothing="dropped"), "both terms are there"),
    (ch10.check_dpo_loss, _dpo_wrong(smoothing="plus"), "both subtracted"),
    (ch10.check_dpo_loss, _dpo_wrong(smoothing="ignored"), "label_smoothing is ignored"),
    (ch10.check_dpo_loss, dpo_rewards_not_detached, "return β·(policy − reference).detach()"),
    (ch10.check_dpo_loss, dpo_from_detached_rewards, "not from the detached rewards"),
    (ch10.check_dpo_loss, dpo_rewards_without_beta, "multiply by β"),
    (ch10.check_dpo_loss, dpo_rewards_swapped, "rejected_rewards the rejected answers'"),
    (ch10.check_dpo_loss, dpo_mean, "return the per-pair losses"),
    (ch10.check_dpo_loss, dpo_two_things, "should return three things"),
    (ch10.check_bco_pair_losses, bco_read_before_update, "δ is read before this batch updates it"),
    (ch10.check_bco_pair_losses, _bco_wrong(delta="read_first"), "δ is read before this batch updates it"),
    (ch10.check_bco_pair_losses, _bco_wrong(delta="this_batch"), "not this batch's mean alone"),
    (ch10.check_bco_pair_losses, bco_pooled, "each batch weighted once"),
    (ch10.check_bco_pair_losses, _bco_wrong(delta="pooled"), "each batch weighted once"),
    (ch10.check_bco_pair_losses, _bco_wrong(delta="sum"), "divide their sum by the number of steps"),
    (ch10.check_bco_pair_losses, _bco_wrong(delta="chosen"), "the chosen and the rejected rewards together"),
    (ch10.check_bco_pair_losses, _bco_wrong(loss="rejected_sign"), "the second term with a minus inside"),
    (ch10.check_bco_pair_losses, _bco_wrong(loss="delta_sign"), "by subtracting it"),
    (ch10.check_bco_pair_losses, bco_delta_not_detached, "δ requires grad"),
    (ch10.check_bco_pair_losses, bco_one_tuple, "a list of"),
    (ch10.check_mpo_loss, mpo_weights_swapped, "the weights are swapped"),
    (ch10.check_mpo_loss, mpo_nll_times_wp, "not w_p"),
    (ch10.check_mpo_loss, mpo_no_nll, "the generation term is missing"),
    (ch10.check_mpo_loss, mpo_no_bco, "the BCO term is missing"),
    (ch10.check_mpo_loss, mpo_batch_sum, "not the sum"),
    (ch10.check_mpo_loss, mpo_nll_per_pair, "not once per pair"),
    (ch10.check_mpo_loss, mpo_weighted_average, "not a weighted average"),
    (ch10.check_mpo_loss, mpo_per_pair, "expected one number"),
    (ch10.check_mpo_loss, mpo_weights_ignored, "use the weights argument"),
    (ch10.check_mpo_loss, mpo_beta_ignored, "pass beta on"),
    (ch10.check_mpo_loss, mpo_bco_on_detached_rewards, "compute BCO's rewards from the log-probabilities"),
    (ch10.check_mpo_loss, mpo_nll_detached, "without detaching it"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


KEY_CASES = [
    (ch10.check_sequence_logps, logps_by_loops, True),
    (ch10.check_sequence_logps, logps_no_shift, False),
    (ch10.check_sequence_logps, logps_take_along_dim, False),
    (ch10.check_sequence_logps, logps_over_the_length, False),
    (ch10.check_dpo_loss, dpo_by_softplus, True),
    (ch10.check_dpo_loss, dpo_sign_flipped, False),
    (ch10.check_dpo_loss, _dpo_wrong(beta_at="outside"), False),
    (ch10.check_dpo_loss, _dpo_wrong(smoothing="swapped"), False),
    (ch10.check_bco_pair_losses, bco_by_hand, True),
    (ch10.check_bco_pair_losses, bco_read_before_update, False),
    (ch10.check_bco_pair_losses, bco_pooled, False),
    (ch10.check_mpo_loss, mpo_composed, True),
    (ch10.check_mpo_loss, mpo_weights_swapped, False),
    (ch10.check_mpo_loss, mpo_bco_on_detached_rewards, False),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", KEY_CASES)
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and out.startswith("✅" if passes else "❌"), out


# ----------------------------------------------------------------------------- the experiment: train_table

def _trained_with(loss):
    """train_table_reference with another loss in place of the reference's dpo_loss."""
    def train(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1):
        return ch10.train_table_reference(reference_logits, prompt, chosen, rejected, beta, label_smoothing, steps,
                                          lr, loss=loss)
    return train


def _loss_variant(**switches):
    def loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0):
        return ch10._dpo_variant(pc, pr, rc, rr, beta, label_smoothing, **switches), None, None
    return loss


def train_moving_reference(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1):
    """The reference re-read from the policy every step: the loss stays at log 2 and never lets go."""
    policy = reference_logits.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([policy], lr=lr)
    for _ in range(steps):
        logps = policy.log_softmax(-1)
        ref = logps.detach()
        losses, _, _ = dpo_loss(logps[prompt, chosen], logps[prompt, rejected], ref[prompt, chosen],
                                ref[prompt, rejected], beta=beta, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
    return policy.detach()


def train_with_sgd(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1):
    policy = reference_logits.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([policy], lr=lr)
    ref = reference_logits.log_softmax(-1)
    for _ in range(steps):
        logps = policy.log_softmax(-1)
        losses, _, _ = dpo_loss(logps[prompt, chosen], logps[prompt, rejected], ref[prompt, chosen],
                                ref[prompt, rejected], beta=beta, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
    return policy.detach()


def train_from_scratch(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1):
    """The policy a fresh table of zeros, not a copy of the reference."""
    policy = torch.zeros_like(reference_logits).requires_grad_(True)
    optimizer = torch.optim.Adam([policy], lr=lr)
    ref = reference_logits.log_softmax(-1)
    for _ in range(steps):
        logps = policy.log_softmax(-1)
        losses, _, _ = dpo_loss(logps[prompt, chosen], logps[prompt, rejected], ref[prompt, chosen],
                                ref[prompt, rejected], beta=beta, label_smoothing=label_smoothing)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
    return policy.detach()


def train_in_place(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200, lr=0.1):
    reference_logits += 0.0 * reference_logits + 1.0
    return ch10.train_table_reference(reference_logits, prompt, chosen, rejected, beta, label_smoothing, steps, lr)


def train_returns_probabilities(reference_logits, prompt, chosen, rejected, beta, label_smoothing=0.0, steps=200,
                                lr=0.1):
    return ch10.train_table_reference(reference_logits, prompt, chosen, rejected, beta, label_smoothing, steps,
                                      lr).softmax(-1)


@pytest.mark.parametrize("fn", [ch10.train_table_reference, train_table_summed])
def test_correct_training_passes_the_experiment(fn, grade):
    passed, out = grade(ch10.check_train_table, fn)
    assert passed and out == "✅ train_table: passed\n", out        # one line, the same every run (nbval compares it)


@pytest.mark.parametrize("wrong, hint", [
    (_trained_with(_loss_variant(sign=-1)), "preferred answers are less likely than under the reference"),
    (_trained_with(dpo_sign_flipped), "check your loss's sign"),
    (_trained_with(_loss_variant(smoothing="swapped")), "check your loss's sign"),
    (train_moving_reference, "the reference frozen (never the policy)"),
    (_trained_with(_loss_variant(beta_at="missing")), "expected it to shrink at least 1.5×"),
    (_trained_with(_loss_variant(beta_at="outside")), "β inside the sigmoid"),
    (_trained_with(_loss_variant(smoothing="ignored")), "label_smoothing used"),
    (train_with_sgd, "torch.optim.Adam"),
    (train_from_scratch, "should return the reference table itself"),
    (train_in_place, "modified its input `reference_logits` in place"),
    (train_returns_probabilities, "return its logits"),
])
def test_wrong_training_fails_the_experiment(wrong, hint, grade):
    passed, out = grade(ch10.check_train_table, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


def test_the_thresholds_hold_for_the_reference_over_seeds():
    """The reference runs the thresholds come from (table seeds 0-7; the check uses seed 0)."""
    ratios, preferred = [], []
    with one_thread():                    # as the check runs it (F.logsigmoid waits on a busy second core)
        for seed in range(8):
            rows = ch10.measure_table(ch10.train_table_reference, {**ch10.TABLE_EXPERIMENT, "seed": seed})
            kls = [kl for _, kl, _ in rows]
            ratios += [a / b for a, b in zip(kls, kls[1:])]
            preferred += [up for _, _, up in rows]
        one = ch10.measure_table(train_moving_reference)
    assert min(ratios) > 2.3 > 1.5 * ch10.MIN_KL_RATIO and min(preferred) > 0.39 > 1.9 * ch10.MIN_PREFERRED
    assert max(kl for _, kl, _ in one) / min(kl for _, kl, _ in one) < 1.01      # the same KL at every β


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch10.check_first_step_loss, lambda beta, label_smoothing: math.log(2)),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: torch.tensor(0.6931)),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: -F.logsigmoid(torch.tensor(0.0)).item()),
    (ch10.check_frozen_reference, lambda: "c"),
    (ch10.check_frozen_reference, lambda: "(C)"),
    (ch10.check_generation_term, lambda: "b"),
])
def test_right_answers_pass(check, answer, grade):
    passed, out = grade(check, answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch10.check_first_step_loss, lambda beta, label_smoothing: 0.0, "not 0"),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: 0.5, "σ(0) = ½ is the probability"),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: -math.log(2), "a positive number"),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: beta * math.log(2), "β drops out"),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: (1 - label_smoothing) * math.log(2),
     "(1 − ε)·log 2 + ε·log 2"),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: 1.0, "logits = (π_c − π_r) − (ref_c − ref_r) = 0"),
    (ch10.check_first_step_loss, lambda beta, label_smoothing: "log 2", "should return a number"),
    (ch10.check_frozen_reference, lambda: "a", "a bonus, not the reason"),
    (ch10.check_frozen_reference, lambda: "b", "DPO has no reward model"),
    (ch10.check_frozen_reference, lambda: "d", "the pairs are fixed data"),
    (ch10.check_frozen_reference, lambda: "e", "should return one of"),
    (ch10.check_generation_term, lambda: "a", "still read the reference"),
    (ch10.check_generation_term, lambda: "c", "β still scales"),
    (ch10.check_generation_term, lambda: "d", "both fall by the same amount"),
])
def test_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌") and hint in out, out


def test_the_answers_are_computed_from_the_package():
    for beta, eps in [(0.1, 0.0), (2.0, 0.3), (0.5, 0.5)]:
        assert math.isclose(ch10._first_step_loss(beta, eps), math.log(2), rel_tol=1e-12)
    assert ch10._moving_reference_stays_at_log_two()
    assert ch10._dpo_blind_to_falling_together()
