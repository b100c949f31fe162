"""Model FLOPs of a training step, counted analytically: what MFU divides by (benchmarks/bench_gpu.py, chapter 11).

Model FLOPs utilisation (MFU, PaLM: Chowdhery et al. 2022, arXiv 2204.02311, appendix B) is the FLOPs the model's
math needs per second, over the device's peak; recomputation and padding do not count. The convention:

    a weight matrix (out, in) applied to a token         2·out·in FLOPs forward (a multiply and an add each)
    attention over a sequence of L tokens, width D       4·L²·D per layer forward (QKᵀ and AV, all L² pairs:
                                                         what dense attention kernels compute, causal or not)
    backward                                             1x the forward for the weights' gradients where a part
                                                         trains, + 1x for its input's gradient where something
                                                         before it trains: 2x for an LM behind a trained
                                                         projector (6N in all), 1x for a frozen LM behind one,
                                                         0 for a frozen ViT with nothing before it

Norms, activations, softmax and the optimiser are left out: a few percent at these widths. `matmul_weights` reads
the weight shapes only, so a model built on the meta device (no memory) counts the same as a real one.

    flops = llava_step_flops(model, images=32, sequences=128, length=30)   # {"vision", "projector", "lm", "total"}
"""

import torch.nn as nn


def matmul_weights(module):
    """Elements of the weights of `module`'s Linear and convolution layers: 2 FLOPs each per token (or patch)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d)))


def blocks_forward_flops(blocks, dim, sequences, length):
    """Forward FLOPs of a stack of transformer blocks of width `dim` over `sequences` sequences of `length` tokens."""
    tokens = sequences * length
    return 2 * matmul_weights(blocks) * tokens + 4 * length * length * dim * sequences * len(blocks)


def llava_step_flops(model, images, sequences, length):
    """FLOPs of one training step of a models.llava.Llava: `images` images through the ViT and the projector, then
    `sequences` chat rows of `length` tokens each after the visual tokens are spliced in -> {"vision", "projector",
    "lm", "total"}. Which parts train (model.set_stage) sets their backward cost."""
    c = model.config
    patches = c.vision_config().grid_size ** 2
    vision = model.vision
    vision_forward = (2 * matmul_weights(vision.patch_embed) * images * patches
                      + blocks_forward_flops(vision.blocks, c.vision_dim, images, patches))
    projector_forward = 2 * matmul_weights(model.projector) * images * c.num_visual_tokens    # after any merge
    lm_forward = (blocks_forward_flops(model.lm.blocks, c.text_dim, sequences, length)
                  + 2 * matmul_weights(model.lm.lm_head) * sequences * length)
    trains = {name: any(p.requires_grad for p in part.parameters())
              for name, part in (("vision", vision), ("projector", model.projector), ("lm", model.lm))}
    upstream = {"vision": False, "projector": trains["vision"], "lm": trains["vision"] or trains["projector"]}
    flops = {}
    for name, forward in (("vision", vision_forward), ("projector", projector_forward), ("lm", lm_forward)):
        flops[name] = forward * (1 + trains[name] + upstream[name])        # forward, weight grads, input grads
    flops["total"] = sum(flops.values())
    return flops
