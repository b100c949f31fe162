"""The three projectors: shapes, token counts, and why the unshuffle order does not matter."""

import pytest
import torch

from minivlm.pixel_unshuffle import order_permutation, pixel_unshuffle
from minivlm.projector import (PROJECTORS, LinearProjector, MLPProjector, UnshuffleProjector, build_projector,
                               num_visual_tokens)


@pytest.mark.parametrize("kind, tokens", [("linear", 16), ("mlp", 16), ("unshuffle", 4)])
def test_shapes_and_token_counts(kind, tokens):
    torch.manual_seed(0)
    projector = build_projector(kind, 48, 32)
    out = projector(torch.randn(3, 16, 48))
    assert out.shape == (3, tokens, 32)
    assert num_visual_tokens(kind, 16) == tokens


def test_unshuffle_projector_non_square_grid_and_factor():
    projector = UnshuffleProjector(8, 16, factor=2)
    assert projector(torch.randn(2, 24, 8), grid_size=(4, 6)).shape == (2, 6, 16)
    assert UnshuffleProjector(8, 16, factor=3)(torch.randn(2, 36, 8)).shape == (2, 4, 16)


def test_unshuffle_projector_merges_neighbours():
    projector = UnshuffleProjector(3, 8)
    tokens = torch.randn(1, 16, 3)
    merged = projector.merge(tokens)
    grid = tokens.reshape(1, 4, 4, 3)
    assert torch.equal(merged[0, 1], torch.cat([grid[0, 0, 2], grid[0, 0, 3], grid[0, 1, 2], grid[0, 1, 3]]))


def test_linear_projector_is_one_linear_map():
    projector = LinearProjector(4, 6)
    x = torch.randn(2, 5, 4)
    assert torch.allclose(projector(x), x @ projector.proj.weight.T + projector.proj.bias)


def test_mlp_projector_has_a_nonlinearity():
    torch.manual_seed(0)
    projector = MLPProjector(4, 6)
    x = torch.randn(2, 5, 4)
    assert not torch.allclose(projector(2 * x) - projector(x), projector(x) - projector(0 * x), atol=1e-3)


def test_projector_absorbs_the_unshuffle_order():
    """A projector for order="internvl" equals one for order="torch" with permuted weights."""
    torch.manual_seed(0)
    dim = 5
    a = UnshuffleProjector(dim, 8, order="internvl")
    with torch.no_grad():
        a.norm.weight.normal_()
        a.norm.bias.normal_()
    b = UnshuffleProjector(dim, 8, order="torch")
    b.load_state_dict(a.state_dict())
    p = order_permutation(dim, 2)                   # torch channel k is internvl channel p[k]
    with torch.no_grad():
        b.norm.weight.copy_(a.norm.weight[p])
        b.norm.bias.copy_(a.norm.bias[p])
        b.fc1.weight.copy_(a.fc1.weight[:, p])
    tokens = torch.randn(2, 16, dim)
    assert not torch.allclose(b.merge(tokens), a.merge(tokens))
    assert torch.allclose(a(tokens), b(tokens), atol=1e-5)
    assert torch.equal(b.merge(tokens), pixel_unshuffle(tokens.reshape(2, 4, 4, dim), 2, "torch").reshape(2, 4, -1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="projector kind"):
        build_projector("qformer", 4, 4)
    with pytest.raises(ValueError, match=r"\(B, N, 4\)"):
        build_projector("linear", 4, 4)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="square"):
        build_projector("unshuffle", 4, 4)(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="not divisible"):
        build_projector("unshuffle", 4, 4)(torch.randn(2, 9, 4))
    assert PROJECTORS == ("linear", "mlp", "unshuffle")
