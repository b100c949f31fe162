"""The chapter 07 checks pass the reference and other correct implementations, say "not implemented yet"
to a stub, and give a specific hint (not a pass) to typical mistakes, whatever sizes they draw."""

import pytest
import torch
import torch.nn.functional as F

from minivlm.course.grading import ch07
from minivlm.gated_xattn import media_attention_mask

SEEDS = [1, 2, 3, 4]


def stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- correct implementations

def mask_by_loops(media_locations, num_media, only_attend_immediate_media):
    B, L = media_locations.shape
    mask = torch.zeros(B, L, num_media, dtype=torch.bool)
    for b in range(B):
        seen = 0
        for i in range(L):
            seen += int(media_locations[b, i])
            for j in range(1, num_media + 1):
                mask[b, i, j - 1] = seen == j if only_attend_immediate_media else seen >= j
    return mask


def mask_by_one_hot(media_locations, num_media, only_attend_immediate_media):
    text_time = media_locations.cumsum(-1)                                  # bool cumsum -> long
    latest = F.one_hot(text_time, num_media + 1)[..., 1:].bool()           # (B, L, T): image text_time only
    if only_attend_immediate_media:
        return latest
    return latest.flip(-1).cumsum(-1).flip(-1).bool()                      # every image up to the latest


def gated_by_reference(block, x, media, media_locations):
    x = x + block.attn(x, media, media_locations) * block.attn_gate.tanh()
    return x + block.ff(x) * block.ff_gate.tanh()


def gated_by_torch_tanh(block, x, media, media_locations):
    read = torch.tanh(block.attn_gate) * block.attn(x, media, media_locations)
    h = torch.add(x, read)
    return h + torch.tanh(block.ff_gate) * block.ff(h)


def perceiver_by_reference(attn, media, latents):
    media, latents = attn.norm_media(media), attn.norm_latents(latents)
    B, T, L, _ = latents.shape
    q = attn.to_q(latents)
    k, v = attn.to_kv(torch.cat([media, latents], dim=2)).chunk(2, dim=-1)

    def heads(t):
        return t.reshape(B * T, t.shape[2], attn.heads, attn.dim_head).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    return attn.to_out(out.transpose(1, 2).reshape(B, T, L, attn.heads * attn.dim_head))


def perceiver_by_einsum(attn, media, latents):
    """Latents first in the keys (the order of keys doesn't matter), plain softmax, einsum over heads."""
    x = attn.norm_latents(latents)
    kv_input = torch.cat([x, attn.norm_media(media)], dim=-2)
    H, d = attn.heads, attn.dim_head
    q = attn.to_q(x).unflatten(-1, (H, d))                                  # (B, T, L, H, d)
    k, v = (t.unflatten(-1, (H, d)) for t in attn.to_kv(kv_input).chunk(2, dim=-1))
    weights = torch.einsum("btlhd,btshd->bthls", q, k).div(d ** 0.5).softmax(-1)
    out = torch.einsum("bthls,btshd->btlhd", weights, v).flatten(-2)
    return attn.to_out(out)


def resampler_by_reference(resampler, media):
    B, T, N, D = media.shape
    media = media + resampler.media_pos_emb[:T]
    latents = resampler.latents.expand(B, T, *resampler.latents.shape)
    for attn, ff in resampler.layers:
        latents = latents + attn(media, latents)
        latents = latents + ff(latents)
    return resampler.norm(latents)


def resampler_by_repeat(resampler, media):
    B, T = media.shape[:2]
    media = media + resampler.media_pos_emb[:T]
    x = resampler.latents[None, None].repeat(B, T, 1, 1)
    for attn, ff in resampler.layers:
        x = attn(media, x) + x
        x = ff(x) + x
    return F.layer_norm(x, x.shape[-1:], resampler.norm.weight, resampler.norm.bias, resampler.norm.eps)


def encode_media(model, images, image_index):
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    return model.perceiver(tokens[image_index.clamp(min=0)])


def encode_media_unclamped(model, images, image_index):
    """-1 picks the last image: those slots are never read, so this is correct too."""
    B, T = image_index.shape
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    picked = tokens[image_index.reshape(-1)]
    return model.perceiver(picked.reshape(B, T, *picked.shape[1:]))


CORRECT = [
    (ch07.check_media_attention_mask, media_attention_mask),
    (ch07.check_media_attention_mask, mask_by_loops),
    (ch07.check_media_attention_mask, mask_by_one_hot),
    (ch07.check_gated_xattn_block, gated_by_reference),
    (ch07.check_gated_xattn_block, gated_by_torch_tanh),
    (ch07.check_perceiver_attention, lambda attn, media, latents: attn(media, latents)),
    (ch07.check_perceiver_attention, perceiver_by_reference),
    (ch07.check_perceiver_attention, perceiver_by_einsum),
    (ch07.check_perceiver_resampler, resampler_by_reference),
    (ch07.check_perceiver_resampler, resampler_by_repeat),
]


@pytest.mark.parametrize("check, fn", CORRECT)
def test_correct_implementations_pass(check, fn, grade):
    passed, out = grade(check, fn)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check", [ch07.check_media_attention_mask, ch07.check_gated_xattn_block,
                                   ch07.check_perceiver_attention, ch07.check_perceiver_resampler,
                                   ch07.check_encode_media, ch07.check_why_gates_start_at_zero,
                                   ch07.check_before_any_image, ch07.check_media_tokens_per_image])
def test_a_stub_is_not_implemented(check, grade):
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


def test_the_written_out_perceiver_math_is_the_module():
    from minivlm.perceiver import PerceiverAttention
    torch.manual_seed(0)
    attn = PerceiverAttention(12, 5, 3)
    media, latents = torch.randn(2, 3, 7, 12), torch.randn(2, 3, 4, 12)
    torch.testing.assert_close(ch07._perceiver_math(attn, media, latents), attn(media, latents))


# ----------------------------------------------------------------------------- typical mistakes

def _text_time(media_locations):
    return media_locations.long().cumsum(-1)[..., None]


def mask_exclusive(media_locations, num_media, only_attend_immediate_media):
    t = _text_time(media_locations) - media_locations.long()[..., None]
    j = torch.arange(1, num_media + 1)
    return t == j if only_attend_immediate_media else t >= j


def mask_zero_based(media_locations, num_media, only_attend_immediate_media):
    t, j = _text_time(media_locations), torch.arange(num_media)
    return t == j if only_attend_immediate_media else t >= j


def mask_modes_swapped(media_locations, num_media, only_attend_immediate_media):
    return media_attention_mask(media_locations, num_media, not only_attend_immediate_media)


def mask_always_immediate(media_locations, num_media, only_attend_immediate_media):
    return media_attention_mask(media_locations, num_media, True)


def mask_strictly_after(media_locations, num_media, only_attend_immediate_media):
    t, j = _text_time(media_locations), torch.arange(1, num_media + 1)
    return t == j if only_attend_immediate_media else t > j


def mask_future(media_locations, num_media, only_attend_immediate_media):
    t, j = _text_time(media_locations), torch.arange(1, num_media + 1)
    return t == j if only_attend_immediate_media else t <= j


def mask_transposed(media_locations, num_media, only_attend_immediate_media):
    return media_attention_mask(media_locations, num_media, only_attend_immediate_media).transpose(1, 2)


def mask_float(media_locations, num_media, only_attend_immediate_media):
    return media_attention_mask(media_locations, num_media, only_attend_immediate_media).float()


def mask_cumsum_down_the_batch(media_locations, num_media, only_attend_immediate_media):
    t, j = media_locations.long().cumsum(0)[..., None], torch.arange(1, num_media + 1)
    return t == j if only_attend_immediate_media else t >= j


def mask_before_any_image_sees_all(media_locations, num_media, only_attend_immediate_media):
    before = _text_time(media_locations) == 0
    return media_attention_mask(media_locations, num_media, only_attend_immediate_media) | before


def gated_no_tanh(block, x, media, media_locations):
    x = x + block.attn(x, media, media_locations) * block.attn_gate
    return x + block.ff(x) * block.ff_gate


def gated_sigmoid(block, x, media, media_locations):
    x = x + block.attn(x, media, media_locations) * block.attn_gate.sigmoid()
    return x + block.ff(x) * block.ff_gate.sigmoid()


def gated_swapped(block, x, media, media_locations):
    x = x + block.attn(x, media, media_locations) * block.ff_gate.tanh()
    return x + block.ff(x) * block.attn_gate.tanh()


def gated_parallel(block, x, media, media_locations):
    return x + block.attn(x, media, media_locations) * block.attn_gate.tanh() + block.ff(x) * block.ff_gate.tanh()


def gated_whole_residual(block, x, media, media_locations):
    x = (x + block.attn(x, media, media_locations)) * block.attn_gate.tanh()
    return x + block.ff(x) * block.ff_gate.tanh()


def gated_no_locations(block, x, media, media_locations):
    return gated_by_reference(block, x, media, None)


def gated_no_ff(block, x, media, media_locations):
    return x + block.attn(x, media, media_locations) * block.attn_gate.tanh()


def gated_ff_ungated(block, x, media, media_locations):
    x = x + block.attn(x, media, media_locations) * block.attn_gate.tanh()
    return x + block.ff(x)


def gated_in_place(block, x, media, media_locations):
    x += block.attn(x, media, media_locations) * block.attn_gate.tanh()
    return x + block.ff(x) * block.ff_gate.tanh()


def gated_extra_norm(block, x, media, media_locations):
    x = x + block.attn(block.attn.norm(x), media, media_locations) * block.attn_gate.tanh()
    return x + block.ff(x) * block.ff_gate.tanh()


def _perceiver_variant(**switches):
    return lambda attn, media, latents: ch07._perceiver_math(attn, media, latents, **switches)


def perceiver_shared_norm(attn, media, latents):
    return ch07._perceiver_math(attn, media, latents, shared_norm=attn.norm_latents)


def perceiver_scale_by_dim(attn, media, latents):
    return ch07._perceiver_math(attn, media, latents, scale=latents.shape[-1] ** -0.5)


def perceiver_no_to_out(attn, media, latents):
    media, latents = attn.norm_media(media), attn.norm_latents(latents)
    B, T, L, _ = latents.shape
    k, v = attn.to_kv(torch.cat([media, latents], dim=2)).chunk(2, dim=-1)
    q = attn.to_q(latents)
    heads = [t.reshape(B * T, t.shape[2], attn.heads, attn.dim_head).transpose(1, 2) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*heads).transpose(1, 2).reshape(B, T, L, -1)


def perceiver_queries_from_all(attn, media, latents):
    both = torch.cat([attn.norm_media(media), attn.norm_latents(latents)], dim=2)
    B, T, S, _ = both.shape
    q = attn.to_q(both)
    k, v = attn.to_kv(both).chunk(2, dim=-1)
    heads = [t.reshape(B * T, S, attn.heads, attn.dim_head).transpose(1, 2) for t in (q, k, v)]
    return attn.to_out(F.scaled_dot_product_attention(*heads).transpose(1, 2).reshape(B, T, S, -1))


def resampler_no_time(resampler, media):
    B, T = media.shape[:2]
    x = resampler.latents.expand(B, T, *resampler.latents.shape)
    for attn, ff in resampler.layers:
        x = x + attn(media, x)
        x = x + ff(x)
    return resampler.norm(x)


def resampler_no_final_norm(resampler, media):
    B, T = media.shape[:2]
    media = media + resampler.media_pos_emb[:T]
    x = resampler.latents.expand(B, T, *resampler.latents.shape)
    for attn, ff in resampler.layers:
        x = x + attn(media, x)
        x = x + ff(x)
    return x


def resampler_no_attention_residual(resampler, media):
    B, T = media.shape[:2]
    media = media + resampler.media_pos_emb[:T]
    x = resampler.latents.expand(B, T, *resampler.latents.shape)
    for attn, ff in resampler.layers:
        x = attn(media, x)
        x = x + ff(x)
    return resampler.norm(x)


def resampler_time_on_latents(resampler, media):
    B, T = media.shape[:2]
    x = resampler.latents.expand(B, T, *resampler.latents.shape) + resampler.media_pos_emb[:T]
    for attn, ff in resampler.layers:
        x = x + attn(media, x)
        x = x + ff(x)
    return resampler.norm(x)


def resampler_returns_media(resampler, media):
    return media + resampler.media_pos_emb[:media.shape[1]]


MISTAKES = [
    (ch07.check_media_attention_mask, mask_exclusive, "already belongs to its image"),
    (ch07.check_media_attention_mask, mask_zero_based, "images count from 1"),
    (ch07.check_media_attention_mask, mask_modes_swapped, "the other mode's mask"),
    (ch07.check_media_attention_mask, mask_always_immediate, "the other mode's mask"),
    (ch07.check_media_attention_mask, mask_strictly_after, "not >"),
    (ch07.check_media_attention_mask, mask_future, "not <="),
    (ch07.check_media_attention_mask, mask_transposed, "one row per text token"),
    (ch07.check_media_attention_mask, mask_float, "torch.bool"),
    (ch07.check_media_attention_mask, mask_cumsum_down_the_batch, "along each row"),
    (ch07.check_media_attention_mask, mask_before_any_image_sees_all, "reads nothing"),
    (ch07.check_gated_xattn_block, gated_no_tanh, "squash each gate with tanh"),
    (ch07.check_gated_xattn_block, gated_sigmoid, "not a sigmoid"),
    (ch07.check_gated_xattn_block, gated_swapped, "the gates are swapped"),
    (ch07.check_gated_xattn_block, gated_parallel, "not the block's input"),
    (ch07.check_gated_xattn_block, gated_whole_residual, "gate the new part only"),
    (ch07.check_gated_xattn_block, gated_no_locations, "pass media_locations"),
    (ch07.check_gated_xattn_block, gated_no_ff, "the feed-forward is missing"),
    (ch07.check_gated_xattn_block, gated_ff_ungated, "gate the feed-forward too"),
    (ch07.check_gated_xattn_block, gated_in_place, "modified its input `x` in place"),
    (ch07.check_gated_xattn_block, gated_extra_norm, "normalises x itself"),
    (ch07.check_perceiver_attention, _perceiver_variant(kv="media"), "the media *and* the latents"),
    (ch07.check_perceiver_attention, _perceiver_variant(norm_media=False), "attn.norm_media"),
    (ch07.check_perceiver_attention, _perceiver_variant(norm_latents=False), "attn.norm_latents first"),
    (ch07.check_perceiver_attention, perceiver_shared_norm, "the media have their own LayerNorm"),
    (ch07.check_perceiver_attention, _perceiver_variant(scale=1.0), "1/sqrt(dim_head) before the softmax"),
    (ch07.check_perceiver_attention, perceiver_scale_by_dim, "not 1/sqrt(D)"),
    (ch07.check_perceiver_attention, _perceiver_variant(swap=True), "the keys first, then the values"),
    (ch07.check_perceiver_attention, _perceiver_variant(across_t=True), "resampled on its own"),
    (ch07.check_perceiver_attention, _perceiver_variant(residual=True), "the resampler adds the residual"),
    (ch07.check_perceiver_attention, _perceiver_variant(heads=1), "split the"),
    (ch07.check_perceiver_attention, perceiver_no_to_out, "attn.to_out"),
    (ch07.check_perceiver_attention, perceiver_queries_from_all, "only the latents ask"),
    (ch07.check_perceiver_resampler, resampler_no_time, "add the time embedding first"),
    (ch07.check_perceiver_resampler, resampler_no_final_norm, "resampler.norm(latents)"),
    (ch07.check_perceiver_resampler, resampler_no_attention_residual, "a residual around the attention"),
    (ch07.check_perceiver_resampler, resampler_time_on_latents, "not on the latents"),
    (ch07.check_perceiver_resampler, resampler_returns_media, "return the latents, not the media"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


KEY_CASES = [
    (ch07.check_media_attention_mask, mask_by_loops, True),
    (ch07.check_media_attention_mask, mask_exclusive, False),
    (ch07.check_media_attention_mask, mask_modes_swapped, False),
    (ch07.check_gated_xattn_block, gated_by_torch_tanh, True),
    (ch07.check_gated_xattn_block, gated_no_tanh, False),
    (ch07.check_gated_xattn_block, gated_parallel, False),
    (ch07.check_perceiver_attention, perceiver_by_einsum, True),
    (ch07.check_perceiver_attention, _perceiver_variant(kv="media"), False),
    (ch07.check_perceiver_attention, _perceiver_variant(scale=1.0), False),
    (ch07.check_perceiver_resampler, resampler_by_repeat, True),
    (ch07.check_perceiver_resampler, resampler_no_time, False),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", KEY_CASES)
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and out.startswith("✅" if passes else "❌"), out


# ----------------------------------------------------------------------------- the experiment: encode_media

def encode_media_unnormalised(model, images, image_index):
    with torch.no_grad():
        tokens = model.vision(images).tokens
    return model.perceiver(tokens[image_index.clamp(min=0)])


def encode_media_pooled(model, images, image_index):
    with torch.no_grad():
        pooled = model.vision(model.normalize(images)).pooled
    return model.perceiver(pooled[:, None][image_index.clamp(min=0)])


def encode_media_in_order(model, images, image_index):
    """Ignores image_index: the first B·T images, in order."""
    B, T = image_index.shape
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    order = torch.arange(B * T).reshape(B, T) % len(images)
    return model.perceiver(tokens[order])


def encode_media_per_image(model, images, image_index):
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    return model.perceiver(tokens)


def encode_media_patch_tokens(model, images, image_index):
    with torch.no_grad():
        tokens = model.vision(model.normalize(images)).tokens
    return tokens[image_index.clamp(min=0)]


def encode_media_with_vit_gradient(model, images, image_index):
    tokens = model.vision(model.normalize(images)).tokens
    return model.perceiver(tokens[image_index.clamp(min=0)])


def encode_media_all_no_grad(model, images, image_index):
    with torch.no_grad():
        return encode_media(model, images, image_index)


def encode_media_answer_key(model, images, image_index):
    return model.encode_media(images, image_index)


def encode_media_bumps_the_lm(model, images, image_index):
    with torch.no_grad():
        model.lm.tok_emb.weight[0] += 1e-3
    return encode_media(model, images, image_index)


ENCODE_MEDIA_MISTAKES = [
    (encode_media_unnormalised, "model.normalize(images)"),
    (encode_media_pooled, "not the pooled vector"),
    (encode_media_in_order, "index the ViT's tokens with image_index"),
    (encode_media_per_image, "gather each row's images first"),
    (encode_media_patch_tokens, "those are the ViT's patch tokens"),
    (encode_media_with_vit_gradient, "reaches the ViT"),
    (encode_media_all_no_grad, "carries no gradient"),
    (encode_media_answer_key, "the answer key"),
    (encode_media_bumps_the_lm, "modified its input `model` in place"),
]


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("wrong, hint", ENCODE_MEDIA_MISTAKES)
def test_encode_media_mistakes_get_a_hint_before_any_training(wrong, hint, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch07, "_encode_media_setup", stub)      # they must fail on the small models, before training
    passed, out = grade(ch07.check_encode_media, wrong)
    assert not passed and out.startswith("❌") and hint in out and "Traceback" not in out, out


@pytest.mark.parametrize("seed", [0, *SEEDS])
@pytest.mark.parametrize("fn", [encode_media, encode_media_unclamped])
def test_a_correct_encode_media_passes_the_small_models(fn, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    monkeypatch.setattr(ch07, "_encode_media_setup", stub)      # reaching the experiment is passing the probe
    passed, out = grade(ch07.check_encode_media, fn)
    assert not passed and "not implemented yet" in out, out


def test_a_correct_encode_media_passes_the_measured_experiment(grade):
    """The full experiment, once: trains a small Flamingo on few-shot episodes (about 15 s)."""
    passed, out = grade(ch07.check_encode_media, encode_media)
    assert passed and out == "✅ encode_media: passed\n", out      # one line, the same every run (nbval compares it)


SMALL_RUN = dict(train_scenes=100, test_scenes=30, episodes_per_shots=30, test_episodes=20, clip_steps=1)


def test_too_little_training_fails_the_measured_accuracy(monkeypatch, grade):
    monkeypatch.setattr(ch07, "ENCODE_MEDIA_EXPERIMENT", {**ch07.ENCODE_MEDIA_EXPERIMENT, **SMALL_RUN, "steps": 1})
    passed, out = grade(ch07.check_encode_media, encode_media)
    assert not passed and "after 1 steps: 0 shots: " in out and ", 1 shot: " in out, out
    assert "expected 1 shot to reach" in out, out


def test_the_measured_weights_catch_what_the_small_models_did_not_see(monkeypatch, grade):
    monkeypatch.setattr(ch07, "_probe", lambda *args: None)
    monkeypatch.setattr(ch07, "ENCODE_MEDIA_EXPERIMENT", {**ch07.ENCODE_MEDIA_EXPERIMENT, **SMALL_RUN, "steps": 2})

    def bumps_the_vit(model, images, image_index):
        with torch.no_grad():
            model.vision.norm.weight += 1e-3
        return encode_media(model, images, image_index)

    passed, out = grade(ch07.check_encode_media, encode_media_bumps_the_lm)
    assert not passed and "the LM's weights changed" in out, out
    passed, out = grade(ch07.check_encode_media, bumps_the_vit)
    assert not passed and "the ViT's weights changed" in out, out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("check, answer", [
    (ch07.check_why_gates_start_at_zero, lambda: "a"),
    (ch07.check_why_gates_start_at_zero, lambda: " (A) "),
    (ch07.check_before_any_image, lambda: "b"),
    (ch07.check_media_tokens_per_image, lambda: 64),
    (ch07.check_media_tokens_per_image, lambda: torch.tensor(64)),
])
def test_right_answers_pass(check, answer, grade):
    passed, out = grade(check, answer)
    assert passed and out.startswith("✅"), out


@pytest.mark.parametrize("check, answer, hint", [
    (ch07.check_why_gates_start_at_zero, lambda: "b", "the gate itself gets a gradient"),
    (ch07.check_why_gates_start_at_zero, lambda: "c", "the media mask's job"),
    (ch07.check_why_gates_start_at_zero, lambda: "d", "the block runs all the same"),
    (ch07.check_why_gates_start_at_zero, lambda: "e", 'one of "a", "b", "c", "d"'),
    (ch07.check_before_any_image, lambda: "a", "text_time = 0"),
    (ch07.check_before_any_image, lambda: "c", "flamingo-pytorch 0.1.2"),
    (ch07.check_before_any_image, lambda: "d", "no latest image yet"),
    (ch07.check_media_tokens_per_image, lambda: 1024, "the ViT's patch count"),
    (ch07.check_media_tokens_per_image, lambda: 1088, "inside the Perceiver"),
    (ch07.check_media_tokens_per_image, lambda: 32, "the patch grid's side"),
    (ch07.check_media_tokens_per_image, lambda: 256, "the patch count at 224×224"),
    (ch07.check_media_tokens_per_image, lambda: 1, "more than a pooled vector"),
    (ch07.check_media_tokens_per_image, lambda: 128, "one token per learned latent"),
    (ch07.check_media_tokens_per_image, lambda: 64.0, "should return an int"),
])
def test_wrong_answers_get_a_hint(check, answer, hint, grade):
    passed, out = grade(check, answer)
    assert not passed and out.startswith("❌") and hint in out, out


def test_the_answers_are_computed_from_the_package():
    assert ch07._gate_zero_is_identity() and ch07._before_any_image_answer() == "b"
