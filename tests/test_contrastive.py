import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from minivlm.contrastive import (check_features, clip_loss, contrastive_loss, distributed_clip_loss,
                                 distributed_siglip_loss, gather_with_grad, siglip_loss, similarity_logits)


def features(B=6, E=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, E, generator=g, dtype=dtype), torch.randn(B, E, generator=g, dtype=dtype)


def clip_loss_loops(images, texts, scale):
    """The definition, one softmax at a time."""
    images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    B, total = len(images), 0.0
    for i in range(B):
        row = [scale * float(images[i] @ texts[j]) for j in range(B)]
        column = [scale * float(images[j] @ texts[i]) for j in range(B)]
        total += -math.log(math.exp(row[i]) / sum(map(math.exp, row)))
        total += -math.log(math.exp(column[i]) / sum(map(math.exp, column)))
    return total / (2 * B)


def siglip_loss_loops(images, texts, scale, bias):
    images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    B, total = len(images), 0.0
    for i in range(B):
        for j in range(B):
            label = 1 if i == j else -1
            logit = scale * float(images[i] @ texts[j]) + bias
            total += math.log(1 + math.exp(-label * logit))
    return total / B


def test_clip_loss_hand_computed():
    eye = torch.eye(2)
    # logits [[1, 0], [0, 1]]: every row and column is -log(e / (e + 1))
    assert clip_loss(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # texts both [1, 0]: logits [[1, 1], [0, 0]]; rows give log 2 each, columns log(1 + 1/e) and log(1 + e)
    texts = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    expected = (math.log(2) + (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2) / 2
    assert clip_loss(eye, texts, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_siglip_loss_hand_computed():
    eye = torch.eye(2)
    # scale 1, bias 0: diagonal logits 1, off-diagonal 0 -> (2 log(1 + 1/e) + 2 log 2) / 2
    expected = math.log(1 + math.exp(-1)) + math.log(2)
    assert siglip_loss(eye, eye, 1.0, 0.0).item() == pytest.approx(expected, rel=1e-6)
    # SigLIP's init (scale 10, bias -10): diagonal logits 0, off-diagonal -10
    expected = math.log(2) + math.log(1 + math.exp(-10))
    assert siglip_loss(eye, eye, torch.tensor(10.0), torch.tensor(-10.0)).item() == pytest.approx(expected, rel=1e-6)


def test_losses_match_loop_definitions():
    images, texts = features(B=5)
    assert clip_loss(images, texts, 3.0).item() == pytest.approx(clip_loss_loops(images, texts, 3.0), rel=1e-5)
    assert siglip_loss(images, texts, 4.0, -2.0).item() == pytest.approx(
        siglip_loss_loops(images, texts, 4.0, -2.0), rel=1e-5)


def test_clip_loss_is_symmetric_and_normalising_twice_is_harmless():
    images, texts = features()
    scale = torch.tensor(1 / 0.07)
    loss = clip_loss(images, texts, scale)
    assert torch.allclose(clip_loss(texts, images, scale), loss)
    assert torch.allclose(clip_loss(F.normalize(images, dim=-1), 5 * texts, scale), loss)
    assert torch.allclose(siglip_loss(texts, images, 10.0, -10.0), siglip_loss(images, texts, 10.0, -10.0))
    logits = similarity_logits(images, texts, 2.0, 0.5)
    assert logits.shape == (6, 6) and logits.max() <= 2.5 + 1e-6 and logits.min() >= -1.5 - 1e-6


def test_perfect_alignment_drives_both_losses_to_zero():
    eye = torch.eye(4)
    assert clip_loss(eye, eye, 100.0).item() < 1e-6
    assert siglip_loss(eye, eye, 100.0, -50.0).item() < 1e-6


def test_gradcheck_float64():
    images, texts = features(B=4, E=5, dtype=torch.float64)
    images.requires_grad_(), texts.requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(clip_loss, (images, texts, scale))
    assert torch.autograd.gradcheck(siglip_loss, (images, texts, scale, bias))


def test_bad_inputs_raise_clear_errors():
    images, texts = features(B=4)
    with pytest.raises(ValueError, match=r"image_features must be a \(B, E\) tensor, got \(4,\)"):
        clip_loss(images[:, 0], texts, 1.0)
    with pytest.raises(ValueError, match=r"must both be \(B, E\), got \(4, 8\) and \(3, 8\)"):
        clip_loss(images, texts[:3], 1.0)
    with pytest.raises(ValueError, match=r"B >= 2"):
        siglip_loss(images[:1], texts[:1], 10.0, -10.0)
    with pytest.raises(ValueError, match=r"torch.float64"):
        clip_loss(images.double(), texts, 1.0)
    with pytest.raises(ValueError, match=r"on meta"):
        check_features(images.to("meta"), texts)
    with pytest.raises(ValueError, match=r"logit_scale must be a scalar"):
        clip_loss(images, texts, torch.ones(2))
    with pytest.raises(ValueError, match=r"logit_bias must be a number"):
        siglip_loss(images, texts, 10.0, "zero")


def test_contrastive_loss_dispatches_and_single_process_distributed_forms_are_plain():
    images, texts = features()
    assert torch.equal(contrastive_loss(images, texts, 2.0), clip_loss(images, texts, 2.0))
    assert torch.equal(contrastive_loss(images, texts, 2.0, -1.0), siglip_loss(images, texts, 2.0, -1.0))
    assert torch.equal(distributed_clip_loss(images, texts, 2.0), clip_loss(images, texts, 2.0))
    assert torch.equal(distributed_siglip_loss(images, texts, 2.0, -1.0), siglip_loss(images, texts, 2.0, -1.0))
    assert gather_with_grad(images) is images


# ----------------------------------------------------------------------------- two processes

DIST_SCRIPT = r"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_contrastive import features
from test_clip import tiny_clip, shapes_batch
from minivlm.contrastive import contrastive_loss, distributed_clip_loss, distributed_siglip_loss
from minivlm.train import TrainConfig, fit

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
images, texts = features(B=8, E=6, dtype=torch.float64)       # the global batch, the same on every rank
b = 8 // world
results = {{}}
for name, loss_fn in (("clip", lambda i, t: distributed_clip_loss(i, t, 3.0)),
                      ("siglip", lambda i, t: distributed_siglip_loss(i, t, 3.0, -1.0))):
    local_images = images[rank * b:(rank + 1) * b].clone().requires_grad_()
    local_texts = texts[rank * b:(rank + 1) * b].clone().requires_grad_()
    loss = loss_fn(local_images, local_texts)
    loss.backward()
    results[name] = (loss.detach(), local_images.grad, local_texts.grad)

for loss_type in ("clip", "siglip"):
    model = tiny_clip(loss_type)
    fit(model, shapes_batch, lambda m, batch: contrastive_loss(*m(*batch)),
        TrainConfig(steps=6, lr=3e-3, warmup_steps=2, progress=False, device="cpu"))
    results[loss_type + " params"] = model.state_dict()
torch.save(results, f"{out}/rank{{rank}}.pt")
dist.destroy_process_group()
"""


def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    """Loss, feature gradients and a few DDP training steps of a dual encoder on 2 CPU ranks."""
    from test_clip import shapes_batch, tiny_clip
    from minivlm.train import TrainConfig, fit

    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT.format(tests=os.path.dirname(__file__), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script)], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    world = 2
    images, texts = features(B=8, E=6, dtype=torch.float64)
    images.requires_grad_(), texts.requires_grad_()
    single = {"clip": lambda: clip_loss(images, texts, 3.0), "siglip": lambda: siglip_loss(images, texts, 3.0, -1.0)}
    for name, loss_fn in single.items():
        loss = loss_fn()
        image_grad, text_grad = torch.autograd.grad(loss, (images, texts))
        # each rank's loss is its share: their mean (what train.fit reports) is the global loss
        assert torch.allclose((ranks[0][name][0] + ranks[1][name][0]) / world, loss.detach())
        for r in range(world):
            rows = slice(4 * r, 4 * (r + 1))
            # DDP convention: rank r's features get W · ∂L/∂f_r; DDP's mean over ranks gives ∂L/∂θ
            assert torch.allclose(ranks[r][name][1], world * image_grad[rows]), (name, r)
            assert torch.allclose(ranks[r][name][2], world * text_grad[rows]), (name, r)

    # and so DDP training of a dual encoder on 2 ranks equals training on one process
    for loss_type in ("clip", "siglip"):
        model = tiny_clip(loss_type)
        fit(model, shapes_batch, lambda m, batch: contrastive_loss(*m(*batch)),
            TrainConfig(steps=6, lr=3e-3, warmup_steps=2, progress=False, device="cpu"))
        rank0, rank1 = ranks[0][loss_type + " params"], ranks[1][loss_type + " params"]
        for key, value in model.state_dict().items():
            assert torch.equal(rank0[key], rank1[key]), (loss_type, key)
            if key.endswith("k_proj.bias"):
                # a key bias shifts every score of a query equally, so softmax ignores it: its true
                # gradient is 0 and Adam turns the rounding noise into full-size steps
                continue
            assert torch.allclose(rank0[key], value, atol=1e-5), (loss_type, key)
