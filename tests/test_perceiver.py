"""The Perceiver resampler: shapes, Flamingo's [media; latents] keys, the time embedding, bad input."""

import pytest
import torch

from minivlm.perceiver import PerceiverResampler


def reference_resampler(model, media):
    """flamingo-pytorch 0.1.2's PerceiverResampler.forward, written out with explicit softmax."""
    if media.dim() == 3:
        media = media[:, None]
    B, T = media.shape[:2]
    media = media + model.media_pos_emb[:T]
    latents = model.latents[None, None].repeat(B, T, 1, 1)
    for attn, ff in model.layers:
        x, lat = attn.norm_media(media), attn.norm_latents(latents)
        H, d = attn.heads, attn.dim_head
        q = attn.to_q(lat)
        k, v = attn.to_kv(torch.cat([x, lat], dim=-2)).chunk(2, dim=-1)
        q, k, v = (t.reshape(*t.shape[:3], H, d).permute(0, 3, 1, 2, 4) for t in (q, k, v))   # (B, H, T, n, d)
        sim = (q * d ** -0.5) @ k.transpose(-1, -2)
        out = (sim - sim.amax(-1, keepdim=True)).softmax(-1) @ v
        out = out.permute(0, 2, 3, 1, 4).reshape(B, T, -1, H * d)
        latents = attn.to_out(out) + latents
        latents = ff(latents) + latents
    return model.norm(latents)


def small(**kwargs):
    torch.manual_seed(0)
    return PerceiverResampler(**{**dict(dim=16, depth=2, dim_head=8, heads=2, num_latents=5, num_media_embeds=4),
                                 **kwargs})


def test_matches_the_reference_math():
    model = small()
    media = torch.randn(3, 4, 7, 16)
    torch.testing.assert_close(model(media), reference_resampler(model, media), rtol=1e-5, atol=1e-5)
    media = torch.randn(2, 9, 16)
    torch.testing.assert_close(model(media), reference_resampler(model, media), rtol=1e-5, atol=1e-5)


def test_parameter_names_are_flamingo_pytorch_s():
    names = set(small(depth=1).state_dict())
    assert names == {"latents", "media_pos_emb", "norm.weight", "norm.bias",
                     "layers.0.0.norm_media.weight", "layers.0.0.norm_media.bias",
                     "layers.0.0.norm_latents.weight", "layers.0.0.norm_latents.bias",
                     "layers.0.0.to_q.weight", "layers.0.0.to_kv.weight", "layers.0.0.to_out.weight",
                     "layers.0.1.0.weight", "layers.0.1.0.bias", "layers.0.1.1.weight", "layers.0.1.3.weight"}
    model = small()
    assert model.layers[0][0].to_kv.weight.shape == (2 * 8 * 2, 16) and model.media_pos_emb.shape == (4, 1, 16)


@pytest.mark.parametrize("N", [1, 4, 64])
@pytest.mark.parametrize("T", [1, 3])
def test_output_is_L_tokens_per_image_whatever_N(N, T):
    assert small()(torch.randn(2, T, N, 16)).shape == (2, T, 5, 16)


def test_three_dims_is_one_image():
    model, media = small(), torch.randn(2, 6, 16)
    torch.testing.assert_close(model(media), model(media[:, None]))


def test_each_image_is_resampled_alone_with_its_time_embedding():
    model, media = small(), torch.randn(2, 3, 6, 16)
    out = model(media)
    # changing image 2 moves only slot 2
    changed = media.clone()
    changed[:, 2] += torch.randn_like(changed[:, 2])     # not a constant shift: the LayerNorm over features removes that
    moved = model(changed)
    torch.testing.assert_close(moved[:, :2], out[:, :2])
    assert not torch.allclose(moved[:, 2], out[:, 2])
    # the same image in another slot is resampled differently: the time embedding tells them apart
    swapped = model(media[:, [1, 0, 2]])
    assert not torch.allclose(swapped[:, 0], out[:, 1])
    with torch.no_grad():
        model.media_pos_emb.zero_()
    torch.testing.assert_close(model(media[:, [1, 0, 2]])[:, 0], model(media)[:, 1])


def test_latents_read_themselves_too():
    """Flamingo's change to the Perceiver: with no media token at all, the latents still attend (to themselves)."""
    model = small(depth=1)
    out = model(torch.randn(1, 1, 0, 16))
    assert out.shape == (1, 1, 5, 16) and torch.isfinite(out).all()


def test_gradients_reach_latents_and_time_embedding():
    model = small()
    model(torch.randn(2, 2, 4, 16)).square().sum().backward()
    assert model.latents.grad.abs().sum() > 0 and model.media_pos_emb.grad[:2].abs().sum() > 0
    assert model.media_pos_emb.grad[2:].abs().sum() == 0


@pytest.mark.parametrize("media, message", [
    (torch.randn(2, 3, 4, 8), "D = 16"),
    (torch.randn(16), r"\(B, T, N, D\)"),
    (torch.randn(1, 5, 4, 16), "num_media_embeds=4"),
    ([1, 2], "media must be"),
])
def test_bad_media_is_named(media, message):
    with pytest.raises(ValueError, match=message):
        small()(media)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="num_latents"):
        PerceiverResampler(dim=16, depth=1, num_latents=0)
