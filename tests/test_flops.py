"""FLOPs counted analytically: one layer against a hand formula and against PyTorch's FlopCounterMode, a whole
LLaVA step built on the meta device, and the backward factors of the training stages."""

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from minivlm.blocks import TransformerBlock
from minivlm.flops import blocks_forward_flops, llava_step_flops, matmul_weights
from minivlm.lm import LanguageModel, LMConfig
from minivlm.models.llava import Llava, LlavaConfig
from minivlm.vit import ViT, ViTConfig

GPU_PRESET = dict(image_size=64, patch_size=8, vision_dim=256, vision_depth=6, vision_heads=8, text_dim=512,
                  text_depth=8, text_heads=8, max_seq_len=256)


def test_one_lm_layer_is_the_hand_formula_and_its_matmuls_what_pytorch_counts():
    D, H, B, L = 64, 176, 3, 10                                      # SwiGLU hidden H: three (D, H) matrices
    block = TransformerBlock(D, 4, H, norm="rmsnorm", mlp="swiglu", bias=False)
    by_hand = B * L * 2 * (4 * D * D + 3 * D * H) + 4 * L * L * D * B   # q, k, v, out + SwiGLU; QKᵀ and AV
    assert blocks_forward_flops(nn.ModuleList([block]), D, B, L) == by_hand
    with FlopCounterMode(display=False) as counter:
        block(torch.randn(B, L, D), is_causal=True)
    matmuls = sum(flops for op, flops in counter.get_flop_counts()["Global"].items()
                  if "attention" not in str(op))
    assert matmuls == B * L * 2 * (4 * D * D + 3 * D * H)


def test_the_lm_forward_is_what_pytorch_counts_for_its_matmuls():
    config = LMConfig(vocab_size=58, dim=64, depth=2, heads=4, max_seq_len=32)
    model = LanguageModel(config)
    B, L = 2, 12
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 58, (B, L)))
    matmuls = sum(flops for op, flops in counter.get_flop_counts()["Global"].items() if "attention" not in str(op))
    attention = 4 * L * L * config.dim * B * config.depth
    assert blocks_forward_flops(model.blocks, config.dim, B, L) + 2 * matmul_weights(model.lm_head) * B * L \
        == matmuls + attention


def test_the_vit_patch_embedding_counts_as_its_matmul():
    vit = ViT(ViTConfig(image_size=32, patch_size=8, dim=64, depth=1, heads=4))
    with FlopCounterMode(display=False) as counter:
        vit.patch_embed(torch.rand(2, 3, 32, 32))
    assert counter.get_total_flops() == 2 * matmul_weights(vit.patch_embed) * 2 * 16


def test_the_gpu_preset_builds_on_the_meta_device_and_its_step_counts_by_stage():
    with torch.device("meta"):
        model = Llava(LlavaConfig(vocab_size=58, **GPU_PRESET))
    assert next(model.parameters()).is_meta
    images, rows, length = 128, 512, 40
    stage2 = llava_step_flops(model.set_stage(2), images, rows, length)
    everything = llava_step_flops(model.set_stage("all"), images, rows, length)
    stage1 = llava_step_flops(model.set_stage(1), images, rows, length)
    # the first part that trains needs its weights' gradients only; every part behind it, its input's too
    assert everything["vision"] == 2 * stage2["vision"] and stage2["projector"] == everything["projector"] * 2 / 3
    assert stage2["lm"] == everything["lm"] and stage1["lm"] == stage2["lm"] * 2 / 3   # a frozen LM: no weight grads
    assert stage2["total"] == stage2["vision"] + stage2["projector"] + stage2["lm"]
    c = model.config
    lm_forward = stage2["lm"] / 3
    per_token = 2 * (c.text_depth * (4 * c.text_dim ** 2 + 3 * c.text_dim * c.lm_config().mlp_hidden)
                     + c.text_dim * c.vocab_size)
    assert lm_forward == pytest.approx(rows * length * per_token + 4 * length ** 2 * c.text_dim * rows * c.text_depth)
