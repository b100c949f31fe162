"""Preference tuning: DPO, its IPO and BCO variants, and InternVL's Mixed Preference Optimisation.

DPO (Rafailov et al. 2023, arXiv 2305.18290) trains a policy on pairs (chosen, rejected) against a
frozen reference copy of itself. The implicit reward of a completion y is β·(log π(y) − log π_ref(y));
the loss asks the chosen reward to beat the rejected one through a sigmoid, with no reward model and
no sampling:

    logits = (log π(y_c) − log π(y_r)) − (log π_ref(y_c) − log π_ref(y_r))            (B,)
    "sigmoid"   −(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits)       DPO; ε > 0: conservative DPO
    "ipo"       (logits − 1/(2β))²                                  IPO (Azar et al. 2023, arXiv 2310.12036),
                                                                     on length-averaged log-probabilities
    "bco_pair"  −log σ(β(π_c − ref_c) − δ) − log σ(−(β(π_r − ref_r) − δ))
                BCO (Jung et al. 2024, arXiv 2404.04656): each completion judged on its own, "good" or
                "bad", against δ, the running mean of the batches' mean rewards

MPO (Wang et al. 2024, "Enhancing the Reasoning Ability of MLLMs via Mixed Preference Optimization",
arXiv 2411.10442; InternVL3, arXiv 2504.10479) adds the three: w_p·DPO + w_q·BCO + w_g·SFT, with
(0.8, 0.2, 1.0), the generation loss being the chosen answer's next-token loss.

Semantics follow TRL's DPOTrainer (0.28): `sequence_logps` is its per-sequence log-probability (the
one-position shift of a causal LM, labels −100 ignored, averaged for IPO), the losses its `dpo_loss`
for loss_type "sigmoid", "ipo" and "bco_pair", and `RunningMean` its RunningMoments' mean, updated
with a batch *before* δ is read; `mpo_loss` is loss_type=["sigmoid", "bco_pair", "sft"] with
loss_weights=[0.8, 0.2, 1.0]. Shapes: logits (B, L, V), labels (B, L), every log-probability (B,).
"""

import math
import numbers

import torch
import torch.nn.functional as F

from .lm import IGNORE_INDEX

LOSS_TYPES = ("sigmoid", "ipo", "bco_pair")
MPO_WEIGHTS = (0.8, 0.2, 1.0)       # preference (DPO), quality (BCO), generation (SFT)


class RunningMean:
    """The running mean δ of BCO: the mean of every batch's mean reward seen so far, each batch weighted once
    (TRL's RunningMoments fed one scalar per batch). `mean` is a 0-dim float32 tensor once updated."""

    def __init__(self):
        self.mean = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, batch_mean):
        batch_mean = batch_mean.detach().float()
        self.count += 1
        self.mean = self.mean + (batch_mean - self.mean) / self.count
        return self.mean


def check_beta(beta):
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 < beta < math.inf:
        raise ValueError(f"beta must be a positive, finite number, got {beta!r}")


def sequence_logps(logits, labels, average=False):
    """(B,) summed log-probabilities of the completion tokens, or their mean with average=True.

    logits (B, L, V) from a causal LM; labels (B, L), the input ids with −100 where nothing is scored
    (the prompt, padding). Position t's logits score token t + 1."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be a (B, L, V) tensor, got {tuple(getattr(logits, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:2] or labels.is_floating_point():
        raise ValueError(f"labels must be integer ids (B, L) = {tuple(logits.shape[:2])}, "
                         f"got {getattr(labels, 'dtype', None)} {tuple(getattr(labels, 'shape', ()))}")
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    token_logps = torch.gather(logits[:, :-1].float().log_softmax(-1), 2,
                               targets.masked_fill(~scored, 0).unsqueeze(-1)).squeeze(-1)    # (B, L-1)
    total = (token_logps * scored).sum(-1)
    return total / scored.sum(-1) if average else total


def _check_logps(tensors, validate):
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    for name, tensor in zip(names, tensors):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a (B,) float tensor of sequence log-probabilities, "
                             f"got {tuple(getattr(tensor, 'shape', ()))}")
    sizes = {name: len(tensor) for name, tensor in zip(names, tensors)}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the four log-probabilities must have the same batch size, got {sizes}")
    if validate:                     # reads the values: a GPU -> CPU sync; validate=False in a hot loop
        for name, tensor in zip(names, tensors):
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{name} holds non-finite values (inf or NaN): a completion with no scored "
                                 f"token averages 0/0, a -inf log-probability comes from a masked-out token")


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
             loss_type="sigmoid", label_smoothing=0.0, running_mean=None, *, validate=True):
    """-> (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); rewards β·(policy − reference), detached.

    running_mean: a RunningMean carried across steps for "bco_pair" (None: δ is this batch's mean)."""
    _check_logps((policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps), validate)
    check_beta(beta)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not 0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing (ε, the assumed rate of flipped labels) must be in [0, 0.5], "
                         f"got {label_smoothing!r}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    logits = chosen_logratios - rejected_logratios     # = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:                                              # bco_pair
        chosen, rejected = beta * chosen_logratios, beta * rejected_logratios
        running_mean = running_mean if running_mean is not None else RunningMean()
        delta = running_mean.update(torch.cat([chosen, rejected]).mean())
        losses = -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def mpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, nll_loss,
             beta=0.1, weights=MPO_WEIGHTS, running_mean=None, *, validate=True):
    """InternVL's MPO, scalar: mean(w_p·sigmoid + w_q·bco_pair) + w_g·nll_loss (the chosen answers' SFT loss)."""
    if not isinstance(nll_loss, torch.Tensor) or nll_loss.dim() != 0:
        raise ValueError(f"nll_loss must be a scalar tensor (the chosen completions' next-token loss), "
                         f"got {tuple(getattr(nll_loss, 'shape', ()))}")
    if len(weights) != 3 or any(isinstance(w, bool) or not isinstance(w, numbers.Real) or w < 0 for w in weights):
        raise ValueError(f"weights must be three non-negative numbers (preference, quality, generation), "
                         f"got {weights!r}")
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    preference, _, _ = dpo_loss(*logps, beta=beta, loss_type="sigmoid", validate=validate)
    quality, _, _ = dpo_loss(*logps, beta=beta, loss_type="bco_pair", running_mean=running_mean, validate=False)
    w_p, w_q, w_g = weights
    return (w_p * preference + w_q * quality).mean() + w_g * nll_loss
