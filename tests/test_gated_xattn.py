"""Gated cross-attention: the media mask by hand, identity at gate 0, flamingo-pytorch's math, the cache."""

import pytest
import torch

from minivlm.gated_xattn import GatedCrossAttentionBlock, media_attention_mask

#                  tokens:  t0     <img>  t2     <img>  t4     t5
LOCATIONS = torch.tensor([[False, True, False, True, False, False]])


def test_mask_immediate_by_hand():
    mask = media_attention_mask(LOCATIONS, 3, only_attend_immediate_media=True)[0].int()
    assert mask.tolist() == [[0, 0, 0],      # before any image: nothing
                             [1, 0, 0],      # the <image> token belongs to its image
                             [1, 0, 0],
                             [0, 1, 0],      # the next image replaces the first
                             [0, 1, 0],
                             [0, 1, 0]]      # image 3 is never announced: never read


def test_mask_all_previous_by_hand():
    mask = media_attention_mask(LOCATIONS, 3, only_attend_immediate_media=False)[0].int()
    assert mask.tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]]


def test_mask_continues_from_images_before():
    chunk = torch.tensor([[False, False], [True, False]])
    mask = media_attention_mask(chunk, 3, True, images_before=torch.tensor([2, 2]))
    assert mask.int().tolist() == [[[0, 1, 0], [0, 1, 0]], [[0, 0, 1], [0, 0, 1]]]


def reference_block(block, x, media, media_locations):
    """flamingo-pytorch 0.1.2's GatedCrossAttentionBlock.forward, written out (-max fill, explicit softmax)."""
    attn = block.attn
    B, T, M, _ = media.shape
    H, d = attn.heads, attn.dim_head
    q = attn.to_q(attn.norm(x))
    k, v = attn.to_kv(media.reshape(B, T * M, -1)).chunk(2, dim=-1)
    q, k, v = (t.reshape(B, -1, H, d).transpose(1, 2) for t in (q, k, v))
    sim = (q * d ** -0.5) @ k.transpose(-1, -2)
    text_time = media_locations.long().cumsum(-1)[:, None, :, None]
    media_time = torch.arange(T).repeat_interleave(M)[None, None, None] + 1
    allowed = text_time == media_time if attn.only_attend_immediate_media else text_time >= media_time
    sim = sim.masked_fill(~allowed, -torch.finfo(sim.dtype).max)
    weights = (sim - sim.amax(-1, keepdim=True)).softmax(-1)
    if attn.only_attend_immediate_media:
        weights = weights.masked_fill(text_time == 0, 0.0)
    out = attn.to_out((weights @ v).transpose(1, 2).reshape(B, -1, H * d))
    x = out * block.attn_gate.tanh() + x
    return block.ff(x) * block.ff_gate.tanh() + x


def open_block(immediate=True, media_dim=None):
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(16, dim_head=8, heads=2, ff_mult=2, only_attend_immediate_media=immediate,
                                     media_dim=media_dim)
    with torch.no_grad():
        block.attn_gate.fill_(0.7)
        block.ff_gate.fill_(-0.4)
    return block


def inputs(media_dim=16):
    torch.manual_seed(1)
    return torch.randn(2, 6, 16), torch.randn(2, 3, 4, media_dim), torch.cat([LOCATIONS, LOCATIONS.roll(1, 1)])


@pytest.mark.parametrize("immediate", [True, False])
def test_matches_the_reference_math(immediate):
    block = open_block(immediate)
    x, media, locations = inputs()
    out, reference = block(x, media, locations), reference_block(block, x, media, locations)
    # tokens before any image: zero cross-attention in both modes (flamingo-pytorch's other mode averages all media)
    seen = locations.cumsum(-1) > 0
    torch.testing.assert_close(out[seen], reference[seen], rtol=1e-5, atol=1e-5)
    if immediate:
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_text_before_any_image_gets_zero_cross_attention():
    for immediate in (True, False):
        block = open_block(immediate)
        x, media, locations = inputs()
        alone = x[:1, :1] + block.ff(x[:1, :1]) * block.ff_gate.tanh()      # what token 0 gets with no image
        torch.testing.assert_close(block(x, media, locations)[:1, :1], alone)


def test_gate_zero_is_the_identity_exactly():
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(16, dim_head=8, heads=2)
    x, media, locations = inputs()
    assert torch.equal(block(x, media, locations), x)
    assert torch.equal(block(x, media), x)
    assert block.attn_gate.item() == 0 and block.ff_gate.item() == 0


def test_parameter_names_are_flamingo_pytorch_s():
    names = set(open_block().state_dict())
    assert names == {"attn.norm.weight", "attn.norm.bias", "attn.to_q.weight", "attn.to_kv.weight",
                     "attn.to_out.weight", "attn_gate", "ff.0.weight", "ff.0.bias", "ff.1.weight", "ff.3.weight",
                     "ff_gate"}


def test_media_of_another_width():
    block = open_block(media_dim=24)
    x, media, locations = inputs(media_dim=24)
    assert block.attn.to_kv.weight.shape == (32, 24)
    assert block(x, media, locations).shape == x.shape


def test_media_cache_and_images_before_give_the_same_result():
    block = open_block(immediate=False)
    x, media, locations = inputs()
    full = block(x, media, locations)
    cache = {}
    first = block(x[:, :3], media, locations[:, :3], kv_cache=cache)
    rest = block(x[:, 3:], None, locations[:, 3:], images_before=locations[:, :3].sum(1), kv_cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=1e-6, atol=1e-6)


def test_no_locations_reads_every_image():
    block = open_block()
    x, media, _ = inputs()
    as_one_image = media.reshape(2, 1, 12, 16)           # all T·M tokens as one image, announced at token 0
    first = torch.zeros(2, 6, dtype=torch.bool)
    first[:, 0] = True
    torch.testing.assert_close(block(x, media), block(x, as_one_image, first))


@pytest.mark.parametrize("change, message", [
    (dict(media_locations=torch.ones(2, 5, dtype=torch.bool)), r"media_locations must have shape \(B, L\) = \(2, 6\)"),
    (dict(media_locations=torch.ones(2, 6, dtype=torch.long)), "media_locations must be a bool tensor"),
    (dict(media_locations=torch.ones(2, 6, dtype=torch.bool)), "row 0 has 6 <image> tokens .* T = 3 images"),
    (dict(media=torch.randn(2, 3, 4, 8)), r"media must be \(B, T, M, Dm\) = \(2, T, M, 16\)"),
    (dict(media=torch.randn(2, 4, 16)), "media must be"),
    (dict(x=torch.randn(2, 6, 8)), r"x must be \(B, L, D=16\)"),
])
def test_bad_input_is_named(change, message):
    x, media, locations = inputs()
    args = {"x": x, "media": media, "media_locations": locations, **change}
    with pytest.raises(ValueError, match=message):
        open_block()(**args)


def test_validate_false_skips_the_count_check():
    x, media, _ = inputs()
    open_block()(x, media, torch.ones(2, 6, dtype=torch.bool), validate=False)
