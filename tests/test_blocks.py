import pytest
import torch
import torch.nn.functional as F

from minivlm.attention import causal_mask
from minivlm.blocks import MLP, RMSNorm, SwiGLU, TransformerBlock


def test_rmsnorm_matches_torch_and_ignores_the_scale_of_its_input():
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8)
    if hasattr(torch.nn, "RMSNorm"):       # torch >= 2.4
        reference = torch.nn.RMSNorm(8, eps=1e-6)
        with torch.no_grad():
            reference.weight.copy_(norm.weight)
        torch.testing.assert_close(norm(x), reference(x))
    torch.testing.assert_close(norm(7.0 * x), norm(x), rtol=1e-5, atol=1e-5)   # no mean, only the RMS
    assert not torch.allclose(norm(x + 3.0), norm(x), atol=1e-2)             # unlike LayerNorm: a shift matters
    unit = RMSNorm(8)(x)
    torch.testing.assert_close(unit.pow(2).mean(-1), torch.ones(3, 5), rtol=1e-4, atol=1e-4)


def test_swiglu_equals_torch_glu_and_has_no_biases():
    mlp = SwiGLU(8, 16)
    x = torch.randn(2, 3, 8)
    gate, value = x @ mlp.w1.weight.T, x @ mlp.w3.weight.T
    # silu(g)·v = (g·v)·σ(g), which is torch's GLU of [g·v, g]
    expected = F.glu(torch.cat([gate * value, gate], dim=-1), dim=-1) @ mlp.w2.weight.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert not any(layer.bias is not None for layer in (mlp.w1, mlp.w2, mlp.w3))


def test_gelu_mlp_equals_torch_sequential():
    mlp = MLP(8, 16)
    reference = torch.nn.Sequential(mlp.fc1, torch.nn.GELU(), mlp.fc2)
    x = torch.randn(4, 8)
    torch.testing.assert_close(mlp(x), reference(x))


@pytest.mark.parametrize("norm, mlp, bias, count", [
    # attention 4 x (32·32 [+ 32]), two norms, MLP 32·64 [+ 64] + 64·32 [+ 32] or SwiGLU 3 x 32·64
    ("layernorm", "gelu", True, 4 * (32 * 32 + 32) + 2 * 64 + (32 * 64 + 64 + 64 * 32 + 32)),
    ("rmsnorm", "swiglu", False, 4 * 32 * 32 + 2 * 32 + 3 * 32 * 64),
])
def test_block_kinds_and_exact_parameter_counts(norm, mlp, bias, count):
    block = TransformerBlock(32, 4, 64, norm=norm, mlp=mlp, bias=bias)
    assert sum(p.numel() for p in block.parameters()) == count
    assert block(torch.randn(2, 5, 32)).shape == (2, 5, 32)


def test_zeroed_branches_leave_the_residual_stream_untouched():
    block = TransformerBlock(16, 2, 32)
    with torch.no_grad():
        for linear in (block.attn.out_proj, block.mlp.fc2):
            linear.weight.zero_()
            linear.bias.zero_()
    x = torch.randn(2, 4, 16)
    torch.testing.assert_close(block(x), x)


def test_forward_with_weights_equals_forward_and_respects_the_mask():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 32, norm="rmsnorm", mlp="swiglu", bias=False)
    x = torch.randn(2, 6, 16)
    out, weights = block.forward_with_weights(x, is_causal=True)
    torch.testing.assert_close(out, block(x, is_causal=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, block(x, attn_mask=causal_mask(6, 6)), rtol=1e-5, atol=1e-5)
    assert weights.shape == (2, 2, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 6))
    assert (weights[..., ~causal_mask(6, 6)] == 0).all()


def test_bad_block_choices():
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerBlock(16, 2, 32, norm="batchnorm")
    with pytest.raises(ValueError, match="mlp must be one of"):
        TransformerBlock(16, 2, 32, mlp="relu")
