"""DPO, IPO, BCO and MPO: TRL's formulas, the properties the papers state, the running mean, bad input."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.lm import LanguageModel, LMConfig, next_token_loss
from minivlm.preference import RunningMean, dpo_loss, mpo_loss, sequence_logps


def logps(seed=0, B=6):
    g = torch.Generator().manual_seed(seed)
    return [-torch.rand(B, generator=g, dtype=torch.float64) * 10 for _ in range(4)]


def test_sequence_logps_shift_mask_and_average():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 5, -100, -100]])
    table = logits.log_softmax(-1)
    first = table[0, 1, 3] + table[0, 2, 4] + table[0, 3, 1]         # position t scores token t + 1
    second = table[1, 0, 2] + table[1, 1, 5]
    torch.testing.assert_close(sequence_logps(logits, labels), torch.stack([first, second]))
    torch.testing.assert_close(sequence_logps(logits, labels, average=True), torch.stack([first / 3, second / 2]))
    one = labels[:1]
    torch.testing.assert_close(-sequence_logps(logits[:1], one, average=True)[0], next_token_loss(logits[:1], one))


def test_dpo_is_log_two_when_the_policy_is_the_reference():
    chosen, rejected, _, _ = logps()
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone())
    torch.testing.assert_close(losses, torch.full_like(losses, math.log(2)))
    assert (chosen_rewards == 0).all() and (rejected_rewards == 0).all()


def test_the_sigmoid_loss_and_rewards_are_the_formulas():
    pc, pr, rc, rr = logps(1)
    beta = 0.3
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=beta)
    logits = (pc - pr) - (rc - rr)
    torch.testing.assert_close(losses, -F.logsigmoid(beta * logits))
    torch.testing.assert_close(chosen_rewards, beta * (pc - rc))
    torch.testing.assert_close(rejected_rewards, beta * (pr - rr))
    eps = 0.1
    smoothed, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)           # conservative DPO
    torch.testing.assert_close(smoothed, -(1 - eps) * F.logsigmoid(beta * logits) - eps * F.logsigmoid(-beta * logits))
    assert (smoothed > losses).any()                       # it never trusts a pair fully: a floor above zero
    far, _, _ = dpo_loss(pc + 100, pr, rc, rr, beta=beta, label_smoothing=eps)
    plain_far, _, _ = dpo_loss(pc + 100, pr, rc, rr, beta=beta)
    assert (plain_far < 1e-9).all() and (far > 2).all()   # ... and grows again when a margin is pushed very far


def test_gradients_push_chosen_up_and_rejected_down():
    for loss_type in ("sigmoid", "ipo", "bco_pair"):
        pc, pr, rc, rr = logps(2)
        pc.requires_grad_(True), pr.requires_grad_(True)
        losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type=loss_type)
        losses.sum().backward()
        if loss_type == "ipo":                             # IPO pushes towards a margin of 1/(2β), from below up
            below = ((pc - pr) - (rc - rr) < 1 / (2 * 0.5)).detach()
            assert (pc.grad[below] < 0).all() and (pr.grad[below] > 0).all()
        else:
            assert (pc.grad < 0).all() and (pr.grad > 0).all(), loss_type   # descent raises pc, lowers pr
    assert dpo_loss(*logps(), validate=False)[1].requires_grad is False


def test_ipo_has_its_fixed_point_at_a_margin_of_one_over_two_beta():
    beta = 0.25
    rc, rr = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -4.0])
    pr = torch.tensor([-5.0, -2.0])
    pc = (pr + (rc - rr) + 1 / (2 * beta)).requires_grad_(True)        # margin exactly 1/(2β) = 2
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="ipo")
    losses.sum().backward()
    assert torch.equal(losses, torch.zeros(2)) and torch.equal(pc.grad, torch.zeros(2))
    over, _, _ = dpo_loss(pc.detach() + 1, pr, rc, rr, beta=beta, loss_type="ipo")
    assert torch.equal(over, torch.ones(2))                # past the margin it pulls back: squared, not sigmoid


def test_bco_running_mean_is_updated_before_it_is_read():
    beta = 0.2
    batches = [logps(seed) for seed in range(4)]
    running = RunningMean()
    means = []
    for pc, pr, rc, rr in batches:
        losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="bco_pair", running_mean=running)
        means.append(torch.cat([chosen, rejected]).mean().float())
        delta = sum(means) / len(means)                    # by hand: the mean of the batch means, this one included
        torch.testing.assert_close(running.mean, delta)
        torch.testing.assert_close(losses, -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta)))
    alone, chosen, rejected = dpo_loss(*batches[0], beta=beta, loss_type="bco_pair")   # no running mean: this batch's
    own = torch.cat([chosen, rejected]).mean()
    torch.testing.assert_close(alone, -F.logsigmoid(chosen - own) - F.logsigmoid(-(rejected - own)))


def test_mpo_is_the_weighted_sum_of_dpo_bco_and_sft():
    pc, pr, rc, rr = logps(3)
    nll = torch.tensor(1.7, dtype=torch.float64)
    sigmoid, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    bco, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="bco_pair")
    torch.testing.assert_close(mpo_loss(pc, pr, rc, rr, nll), 0.8 * sigmoid.mean() + 0.2 * bco.mean() + 1.0 * nll)
    torch.testing.assert_close(mpo_loss(pc, pr, rc, rr, nll, weights=(1.0, 0.0, 0.0)), sigmoid.mean())
    running = RunningMean()
    mpo_loss(pc, pr, rc, rr, nll, running_mean=running)
    assert running.count == 1                               # one update per step, by the BCO term


def test_dpo_training_moves_the_policy_and_never_the_reference():
    torch.manual_seed(0)
    policy = LanguageModel(LMConfig(vocab_size=12, dim=16, depth=1, heads=2, max_seq_len=8))
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    prompt = torch.tensor([[1, 5, 6]] * 4)
    chosen, rejected = torch.cat([prompt, torch.full((4, 1), 7)], 1), torch.cat([prompt, torch.full((4, 1), 8)], 1)
    labels = lambda ids: torch.cat([torch.full((4, 3), -100), ids[:, 3:]], 1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    margins = []
    for _ in range(20):
        with torch.no_grad():
            ref_c, ref_r = (sequence_logps(reference(ids).logits, labels(ids)) for ids in (chosen, rejected))
        pol_c, pol_r = (sequence_logps(policy(ids).logits, labels(ids)) for ids in (chosen, rejected))
        losses, chosen_rewards, rejected_rewards = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.5)
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
        margins.append((chosen_rewards - rejected_rewards).mean().item())
    assert margins[0] == 0 and margins[-1] > 1
    assert all(torch.equal(v, frozen[k]) for k, v in reference.state_dict().items())


@pytest.mark.parametrize("call, message", [
    (lambda: dpo_loss(*logps(B=3)[:3], logps(B=4)[0]), "same batch size"),
    (lambda: dpo_loss(torch.tensor([0.0, float("nan")]), *[torch.zeros(2)] * 3), "policy_chosen_logps holds non-finite"),
    (lambda: dpo_loss(*[torch.zeros(2)] * 3, torch.tensor([-float("inf"), 0.0])), "ref_rejected_logps holds non-finite"),
    (lambda: dpo_loss(*logps(), beta=0), "beta must be a positive"),
    (lambda: dpo_loss(*logps(), beta=-0.1), "beta must be a positive"),
    (lambda: dpo_loss(*logps(), loss_type="hinge"), "loss_type must be one of"),
    (lambda: dpo_loss(*logps(), label_smoothing=0.7), "label_smoothing"),
    (lambda: dpo_loss(torch.zeros(2, 3), *[torch.zeros(2)] * 3), r"policy_chosen_logps must be a \(B,\)"),
    (lambda: mpo_loss(*logps(), nll_loss=torch.zeros(3)), "nll_loss must be a scalar"),
    (lambda: mpo_loss(*logps(), nll_loss=torch.tensor(1.0), weights=(0.8, 0.2)), "weights must be three"),
    (lambda: sequence_logps(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long)), r"logits must be a \(B, L, V\)"),
    (lambda: sequence_logps(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long)), r"labels must be integer ids"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
