"""Checks for chapter 07 (Flamingo: the Perceiver resampler and tanh-gated cross-attention).

    from minivlm.course.grading import ch07
    ch07.check_media_attention_mask(media_attention_mask)
    ch07.check_gated_xattn_block(gated_xattn_block)
    ch07.check_perceiver_attention(perceiver_attention)
    ch07.check_perceiver_resampler(perceiver_resampler)
    ch07.check_encode_media(encode_media)                  # an experiment: trains a small Flamingo for ~10 s
    ch07.check_why_gates_start_at_zero(why_gates_start_at_zero)    # concept questions
    ch07.check_before_any_image(before_any_image)
    ch07.check_media_tokens_per_image(media_tokens_per_image)

Each check draws its sizes, `<image>` positions, modes, gates, widths and seeds at random (`check_rng`),
compares with the reference (`minivlm.gated_xattn`, `minivlm.perceiver`, `models.flamingo.Flamingo.encode_media`)
and recognises the usual mistakes (an `<image>` token that does not read its own image, images counted from 0,
the two modes swapped, future images read; a gate without tanh or with a sigmoid, the feed-forward reading the
input of the block, the media locations dropped; keys and values from the media alone, a missing or shared
LayerNorm, a wrong scale, keys and values swapped, an extra residual; no time embedding, no final LayerNorm; a ViT
read without `normalize`, or with a gradient) to give a specific hint.
"""

import random

import torch

from minivlm import pretrained
from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng,
                                    expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.course.grading.clip_tower import train_clip_vision
from minivlm.data import Tokenizer, WorldConfig, encode_interleaved, few_shot_episodes, render, sample_scenes
from minivlm.evaluate import answer_correct
from minivlm.gated_xattn import GatedCrossAttentionBlock, MaskedCrossAttention, media_attention_mask
from minivlm.models.flamingo import Flamingo, FlamingoConfig
from minivlm.perceiver import PerceiverAttention, PerceiverResampler
from minivlm.train import TrainConfig, fit


def _randomise_norms(module, rng):
    """LayerNorms that are not the identity at the start, so that a skipped or swapped one shows."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.getrandbits(31))
        for sub in module.modules():
            if isinstance(sub, torch.nn.LayerNorm):
                torch.nn.init.normal_(sub.weight, 1.0, 0.3)
                torch.nn.init.normal_(sub.bias, 0.0, 0.3)


def _seeded(rng, build):
    """build() under a seed drawn from rng; the learner's global RNG stays as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.getrandbits(31))
        return build()


# -----------------------------------------------------------------------------
# the media mask: which image each text token reads


def _media_locations(rng, B, L, T):
    """(B, L) bool: each row 0..T <image> tokens at random places; one row has T, one (if B >= 3) none,
    and the first row starts with text (a token before any image)."""
    counts = [rng.randint(0, min(T, L - 1)) for _ in range(B)]
    counts[0] = min(T, L - 1)
    if B >= 3:
        counts[rng.randrange(1, B)] = 0
    rows = []
    for b, n in enumerate(counts):
        places = set(rng.sample(range(1 if b == 0 else 0, L), n))
        rows.append([t in places for t in range(L)])
    return torch.tensor(rows, dtype=torch.bool)


def _mask_mistakes(locations, T, immediate):
    text_time = locations.long().cumsum(-1)[..., None]                          # (B, L, 1)
    j = torch.arange(1, T + 1)
    exclusive = text_time - locations.long()[..., None]
    same = (lambda t, js: t == js) if immediate else (lambda t, js: t >= js)
    mistakes = [
        (same(exclusive, j), "an <image> token already belongs to its image: text_time = cumsum(media_locations), "
                             "counting the <image> token itself."),
        (same(text_time, j - 1), "images count from 1: a token with text_time = t reads image j = t (1-based, so "
                                 "image j is media[:, j - 1]), and text_time = 0 reads none."),
        (media_attention_mask(locations, T, not immediate),
         f"that is the other mode's mask: only_attend_immediate_media={immediate} means "
         + ("the latest image only (text_time == j)." if immediate else "every image so far (text_time >= j).")),
        (text_time <= j, "a token may never read an image that comes after it: text_time >= j (image j at or "
                         "before the token), not <=."),
        (same(locations.long().cumsum(0)[..., None], j), "count the <image> tokens along each row (dim=-1), not "
                                                         "down the batch."),
        (same(text_time, j) | (text_time == 0), "a token before any image (text_time = 0) reads nothing: its row "
                                                "of the mask is all False."),
    ]
    if not immediate:
        mistakes.append((text_time > j, "a token reads its own latest image too: text_time >= j, not >."))
    return mistakes


@check("media_attention_mask", points=2)
def check_media_attention_mask(media_attention_mask_fn):
    rng = check_rng()
    first = rng.random() < 0.5
    cases = [  # (B, L, T, only_attend_immediate_media)
        (rng.randint(3, 5), rng.randint(6, 12), rng.randint(2, 4), first),
        (rng.randint(3, 5), rng.randint(6, 12), rng.randint(2, 4), not first),
        (rng.randint(2, 4), rng.randint(4, 9), 1, rng.random() < 0.5),            # one image
        (1, rng.randint(5, 9), rng.randint(2, 3), rng.random() < 0.5),
    ]
    for B, L, T, immediate in cases:
        locations = _media_locations(rng, B, L, T)
        what = (f"media_attention_mask(media_locations ({B}, {L}) with {locations.sum(1).tolist()} images per row, "
                f"num_media={T}, only_attend_immediate_media={immediate})")
        expected = media_attention_mask(locations, T, immediate)
        out = call_learner(media_attention_mask_fn, locations, T, immediate, what="media_attention_mask")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T, L) and T != L:
            raise Hint(f"{what} has shape {(B, T, L)}, expected {(B, L, T)}. Hint: one row per text token (who "
                       "reads), one column per image (what is read).")
        expect_shape(out, expected.shape, what, hint="(B, L, T): text tokens × images.")
        if out.dtype != torch.bool:
            raise Hint(f"{what} has dtype {out.dtype}, expected torch.bool (True = may read).")
        expect_known_mistakes(out, expected, _mask_mistakes(locations, T, immediate), what, exact=True,
                              hint="text_time = cumsum(media_locations, dim=-1); image j = 1..T is read iff "
                                   "text_time == j (immediate) or text_time >= j (every image so far).")


# -----------------------------------------------------------------------------
# the tanh-gated block: the identity at initialisation


def _block(rng, immediate):
    heads, dim_head = rng.choice([1, 2, 4]), rng.randint(2, 5)
    D, Dm = rng.randint(4, 12), rng.randint(3, 10)
    block = _seeded(rng, lambda: GatedCrossAttentionBlock(D, dim_head, heads, rng.choice([1, 2]), immediate, Dm))
    _randomise_norms(block, rng)
    return block


@torch.no_grad()
def _gated_mistakes(block, x, media, locations):
    a, f = block.attn_gate, block.ff_gate
    attn = block.attn(x, media, locations)

    def ff_after(h, gate=f.tanh()):
        return h + block.ff(h) * gate

    h = x + attn * a.tanh()
    mistakes = [
        (ff_after(x + attn * a, f), "squash each gate with tanh: x + tanh(attn_gate) · attn(...), not the raw gate."),
        (ff_after(x + attn * a.sigmoid(), f.sigmoid()), "the gate is a tanh, not a sigmoid: sigmoid(0) = 0.5, so "
                                                        "the block would not start as the identity."),
        (ff_after(x + attn * f.tanh(), a.tanh()), "the gates are swapped: attn_gate gates the cross-attention, "
                                                   "ff_gate the feed-forward."),
        (h + block.ff(x) * f.tanh(), "the feed-forward reads the output of the gated cross-attention (x after the "
                                     "first residual), not the block's input."),
        (ff_after((x + attn) * a.tanh()), "gate the new part only: x + tanh(gate) · attn(...), not tanh(gate) · "
                                          "(x + attn(...))."),
        (ff_after(x + torch.tanh(attn * a)), "tanh of the gate, times the output: attn(...) · tanh(attn_gate), not "
                                             "tanh(attn_gate · attn(...))."),
        (ff_after(x + block.attn(x, media) * a.tanh()), "pass media_locations to block.attn: without them every "
                                                         "token reads every image, later ones included."),
        (h, "the feed-forward is missing: x = x + tanh(ff_gate) · block.ff(x), after the cross-attention."),
        (ff_after(x), "the cross-attention is missing: x = x + tanh(attn_gate) · block.attn(x, media, "
                      "media_locations) first."),
        (h + block.ff(h), "gate the feed-forward too: + tanh(ff_gate) · block.ff(x)."),
        (ff_after(x + block.attn(block.attn.norm(x), media, locations) * a.tanh()),
         "block.attn normalises x itself (its attn.norm): pass x as it is."),
    ]
    return mistakes


@check("gated_xattn_block", points=1)
def check_gated_xattn_block(gated_xattn_block):
    rng = check_rng()
    g = torch_generator(rng)
    first = rng.random() < 0.5
    with one_thread():
        for immediate in (first, not first, rng.random() < 0.5):
            block = _block(rng, immediate)
            B, L, T, M = rng.randint(1, 3), rng.randint(4, 9), rng.randint(1, 3), rng.randint(1, 4)
            x = torch.randn(B, L, block.dim, generator=g)
            media = torch.randn(B, T, M, block.media_dim, generator=g)
            locations = _media_locations(rng, B, L, T)
            what = (f"gated_xattn_block(block, x ({B}, {L}, {block.dim}), media ({B}, {T}, {M}, {block.media_dim}), "
                    f"media_locations)")
            with torch.no_grad():                                          # 1. at initialisation: gates 0
                out = call_learner(gated_xattn_block, block, x, media, locations, what="gated_xattn_block")
            expect_shape(out, x.shape, what, hint="the block keeps the text's shape: (B, L, D).")
            if not torch.equal(out, x):
                for wrong, mistake in _gated_mistakes(block, x, media, locations):
                    if not torch.equal(wrong, x) and torch.allclose(out, wrong, atol=1e-5):
                        raise Hint(f"{what} with both gates at 0 is not x. Hint: {mistake}")
                raise Hint(f"{what} with both gates at 0 (the initialisation) should return x exactly, bit for bit, "
                           "so that the frozen LM computes what it computed alone. Hint: x + tanh(attn_gate) · "
                           "block.attn(...), then x + tanh(ff_gate) · block.ff(x): tanh(0) = 0.")
            with torch.no_grad():                                          # 2. gates opened, both signs
                a = rng.choice([-1, 1]) * rng.uniform(0.4, 1.5)
                f = -a / abs(a) * rng.uniform(0.4, 1.5)
                block.attn_gate.fill_(a)
                block.ff_gate.fill_(f)
                expected = block(x, media, locations)
                out = call_learner(gated_xattn_block, block, x, media, locations, what="gated_xattn_block")
            what = what.replace("(block,", f"(block with attn_gate={a:.2f}, ff_gate={f:.2f},")
            expect_shape(out, expected.shape, what, hint="the block keeps the text's shape: (B, L, D).")
            expect_known_mistakes(out, expected, _gated_mistakes(block, x, media, locations), what,
                                  hint="x = x + tanh(attn_gate) · block.attn(x, media, media_locations); "
                                       "then x = x + tanh(ff_gate) · block.ff(x).")


# -----------------------------------------------------------------------------
# Perceiver attention: keys and values from [media; latents]


def _perceiver_math(attn, media, latents, *, kv="both", norm_media=True, norm_latents=True, shared_norm=None,
                    scale=None, swap=False, heads=None, across_t=False, residual=False):
    """PerceiverAttention.forward written out, with switches for the usual mistakes."""
    B, T, L, D = latents.shape
    H = attn.heads if heads is None else heads
    d = attn.heads * attn.dim_head // H
    nm = attn.norm_media if shared_norm is None else shared_norm
    nl = attn.norm_latents if shared_norm is None else shared_norm
    m = nm(media) if norm_media else media
    x = nl(latents) if norm_latents else latents
    q = attn.to_q(x)                                                     # (B, T, L, H·d)
    source = {"both": torch.cat([m, x], dim=2), "media": m}[kv]
    k, v = attn.to_kv(source).chunk(2, dim=-1)
    if swap:
        k, v = v, k
    if across_t:                                                         # every slot reads every slot's media
        k = k.reshape(B, 1, -1, H * d).expand(B, T, -1, -1)
        v = v.reshape(B, 1, -1, H * d).expand(B, T, -1, -1)

    def heads_of(t):
        return t.reshape(B, T, t.shape[2], H, d).transpose(2, 3)           # (B, T, H, S, d)

    q, k, v = heads_of(q), heads_of(k), heads_of(v)
    weights = (q @ k.transpose(-1, -2) * (d ** -0.5 if scale is None else scale)).softmax(-1)
    out = (weights @ v).transpose(2, 3).reshape(B, T, L, H * d)
    out = attn.to_out(out)
    return latents + out if residual else out


def _perceiver_mistakes(attn, media, latents):
    inner = attn.heads * attn.dim_head
    D = latents.shape[-1]
    with torch.no_grad():
        mistakes = [
            (_perceiver_math(attn, media, latents, kv="media"),
             "the keys and values come from the media *and* the latents: to_kv(cat([media, latents], dim=2)) "
             "(Flamingo's change to the Perceiver), both after their LayerNorm."),
            (_perceiver_math(attn, media, latents, norm_media=False),
             "normalise the media with attn.norm_media before the keys and values."),
            (_perceiver_math(attn, media, latents, norm_latents=False),
             "normalise the latents with attn.norm_latents first (for the queries and for their keys and values)."),
            (_perceiver_math(attn, media, latents, shared_norm=attn.norm_latents),
             "the media have their own LayerNorm: attn.norm_media for the media, attn.norm_latents for the latents."),
            (_perceiver_math(attn, media, latents, shared_norm=attn.norm_media),
             "the latents have their own LayerNorm: attn.norm_latents for the latents, attn.norm_media for the "
             "media."),
            (_perceiver_math(attn, media, latents, scale=1.0), "scale the scores by 1/sqrt(dim_head) before the "
                                                               "softmax."),
            (_perceiver_math(attn, media, latents, scale=1 / D ** 0.5),
             "the scale is 1/sqrt(dim_head), the width of one head, not 1/sqrt(D)."),
            (_perceiver_math(attn, media, latents, scale=1 / inner ** 0.5),
             "the scale is 1/sqrt(dim_head), the width of one head, not of all heads together."),
            (_perceiver_math(attn, media, latents, scale=1 / attn.dim_head),
             "the scale is 1/sqrt(dim_head), not 1/dim_head."),
            (_perceiver_math(attn, media, latents, swap=True), "to_kv gives the keys first, then the values: "
                                                               "k, v = to_kv(...).chunk(2, dim=-1)."),
            (_perceiver_math(attn, media, latents, across_t=True),
             "each media slot t is resampled on its own: latents[:, t] read media[:, t] (and themselves) only."),
            (_perceiver_math(attn, media, latents, residual=True),
             "return the attention's output alone: the resampler adds the residual (latents + attn(media, "
             "latents))."),
        ]
        if attn.heads > 1:
            split = f"split the {attn.heads} heads (each dim_head wide) and attend in each on its own."
            mistakes += [(_perceiver_math(attn, media, latents, heads=1, scale=attn.dim_head ** -0.5), split),
                         (_perceiver_math(attn, media, latents, heads=1), split)]
    return mistakes


@check("perceiver_attention", points=2)
def check_perceiver_attention(perceiver_attention):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [  # (B, T, N, L, heads)
        (rng.randint(1, 3), rng.randint(2, 3), rng.randint(3, 9), rng.randint(2, 5), rng.choice([2, 4])),
        (rng.randint(1, 3), 1, rng.randint(2, 9), rng.randint(1, 4), rng.choice([2, 3])),
        (rng.randint(1, 2), rng.randint(1, 3), rng.randint(2, 6), rng.randint(2, 5), 1),
    ]
    with one_thread():
        for B, T, N, L, heads in cases:
            D, dim_head = rng.randint(4, 12), rng.randint(2, 6)
            attn = _seeded(rng, lambda: PerceiverAttention(D, dim_head, heads))
            _randomise_norms(attn, rng)
            media = torch.randn(B, T, N, D, generator=g)
            latents = torch.randn(B, T, L, D, generator=g) * 2
            what = (f"perceiver_attention(attn with {heads} head(s) of {dim_head}, media ({B}, {T}, {N}, {D}), "
                    f"latents ({B}, {T}, {L}, {D}))")
            with torch.no_grad():
                expected = attn(media, latents)
                out = call_learner(perceiver_attention, attn, media, latents, what="perceiver_attention")
            if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T, L, heads * dim_head) and heads * dim_head != D:
                raise Hint(f"{what} has shape {tuple(out.shape)}, expected {(B, T, L, D)}. Hint: attn.to_out maps "
                           "the heads back to the width D.")
            if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T, N + L, D):
                raise Hint(f"{what} has shape {tuple(out.shape)}, expected {(B, T, L, D)}. Hint: only the latents ask "
                           "(the queries come from the latents); the media and latents are the keys and values.")
            expect_shape(out, expected.shape, what, hint="one output per latent: (B, T, L, D).")
            expect_known_mistakes(out, expected, _perceiver_mistakes(attn, media, latents), what,
                                  hint="q = to_q(norm_latents(latents)); k, v = to_kv(cat([norm_media(media), "
                                       "norm_latents(latents)], dim=2)).chunk(2, -1); softmax(q·kᵀ/sqrt(dim_head)) "
                                       "per head, over the N + L keys; then to_out.")


# -----------------------------------------------------------------------------
# the resampler: any N in, L latents out per image


def _resampler_mistakes(resampler, media):
    B, T, N, D = media.shape

    def run(pos="media", attn_residual=True, ff_residual=True, final_norm=True):
        m = media + resampler.media_pos_emb[:T] if pos == "media" else media
        if pos == "first":
            m = media + resampler.media_pos_emb[:1]
        x = resampler.latents.expand(B, T, *resampler.latents.shape)
        if pos == "latents":
            x = x + resampler.media_pos_emb[:T]
        for attn, ff in resampler.layers:
            x = (x if attn_residual else 0) + attn(m, x)
            x = (x if ff_residual else 0) + ff(x)
        return resampler.norm(x) if final_norm else x

    with torch.no_grad():
        mistakes = [
            (run(pos=None), "add the time embedding first: media + resampler.media_pos_emb[:T] (one learned "
                            "vector per media slot, (T, 1, D))."),
            (run(pos="latents"), "the time embedding goes on the media, not on the latents: media + "
                                 "media_pos_emb[:T]."),
            (run(attn_residual=False), "keep a residual around the attention: latents = latents + attn(media, "
                                       "latents)."),
            (run(ff_residual=False), "keep a residual around the feed-forward: latents = latents + ff(latents)."),
            (run(final_norm=False), "end with the resampler's LayerNorm: resampler.norm(latents)."),
        ]
        if T > 1:
            mistakes.append((run(pos="first"), "each media slot t has its own time embedding: media_pos_emb[:T], "
                                               "not the first one for all."))
    return mistakes


@check("perceiver_resampler", points=1)
def check_perceiver_resampler(perceiver_resampler):
    rng = check_rng()
    g = torch_generator(rng)
    cases = [(rng.randint(1, 3), rng.randint(2, 4), rng.randint(2, 9), rng.randint(1, 2)),   # (B, T, N, depth)
             (rng.randint(1, 3), 1, rng.randint(10, 20), rng.randint(1, 2)),
             (2, rng.randint(2, 3), 1, 2)]
    with one_thread():
        for B, T, N, depth in cases:
            D, L = rng.randint(4, 10), rng.randint(1, 5)
            resampler = _seeded(rng, lambda: PerceiverResampler(D, depth, dim_head=rng.randint(2, 5),
                                                                heads=rng.choice([1, 2]), num_latents=L,
                                                                num_media_embeds=T + rng.randint(0, 2), ff_mult=2))
            _randomise_norms(resampler, rng)
            media = torch.randn(B, T, N, D, generator=g)
            what = (f"perceiver_resampler(resampler with {L} latents and {depth} layer(s), media ({B}, {T}, {N}, {D}))")
            with torch.no_grad():
                expected = resampler(media)
                out = call_learner(perceiver_resampler, resampler, media, what="perceiver_resampler")
            if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T, N, D) and N != L:
                raise Hint(f"{what} has shape {tuple(out.shape)}, expected {(B, T, L, D)}. Hint: return the latents, "
                           "not the media: L = num_latents tokens per image, whatever N.")
            expect_shape(out, expected.shape, what, hint="L latents per media slot: (B, T, L, D).")
            expect_known_mistakes(out, expected, _resampler_mistakes(resampler, media), what,
                                  hint="media + media_pos_emb[:T]; latents expanded to (B, T, L, D); per layer "
                                       "latents += attn(media, latents), latents += ff(latents); then norm.")


# -----------------------------------------------------------------------------
# the experiment: a small Flamingo reading few-shot episodes with your encode_media

# One-object Shapes scenes, a CLIP tower trained for 60 steps, the pretrained LM of chapter 04, then 300 steps of
# Flamingo's Perceiver and gated cross-attention (ViT and LM frozen) on few-shot episodes of 0, 1 and 2 shots whose
# hidden rule is the object's colour or its shape: about 15 s at one thread on a 2-core CPU. The run is seeded
# (`seed`), not drawn: whether the frozen LM starts reading the images within 300 steps varies between draws (over
# 8 draws of the data and initialisation with the correct function, 1 shot reached 24-97%, two draws stayed at the
# level of a model that cannot see), so the check measures one fixed run, which a correct function passes with a
# wide margin: with this seed 49% at 0 shots (the rule is ambiguous: at best half the queries) and 96% at 1 shot
# (the reference), 81-97% with correct alternatives. A model that cannot see the query image reaches about 24% at
# 1 shot (the commonest colour or shape under the rule read off the example) and 17-19% at 0 shots.
ENCODE_MEDIA_EXPERIMENT = dict(train_scenes=600, test_scenes=200, episodes_per_shots=600, train_shots=(0, 1, 2),
                               test_episodes=200, batch_size=24, clip_steps=60, steps=300, lr=1e-2, num_latents=4,
                               seed=5)
MIN_GAIN = 0.15            # 1-shot accuracy must beat 0-shot accuracy by this much
MIN_ONE_SHOT = 0.40        # and reach this


def _refuse_encode_media(*args, **kwargs):
    raise Hint("encode_media called model.encode_media, the answer key: run model.vision, pick the images with "
               "image_index and run model.perceiver yourself.")


def _plug(model, encode_media):
    """Make the learner's encode_media the model's (what forward and answer_correct call)."""
    inside = []

    def plugged(images, image_index):
        if inside:
            _refuse_encode_media()
        inside.append(True)
        try:
            return encode_media(model, images, image_index)
        finally:
            inside.pop()
    model.encode_media = plugged
    return model


def _image_index(rng, B, T, num_images):
    """(B, T) long: row 0 has T images, the others 1..T, then -1."""
    rows = []
    for b in range(B):
        n = T if b == 0 else rng.randint(1, T)
        rows.append([rng.randrange(num_images) for _ in range(n)] + [-1] * (T - n))
    return torch.tensor(rows, dtype=torch.long)


def _probe(encode_media, rng):
    """On a small Flamingo whose ViT still has requires_grad=True: values, shape and where the gradient goes."""
    g = torch_generator(rng)
    L, Dv = rng.randint(2, 5), rng.choice([8, 16])
    config = FlamingoConfig(vision_dim=Dv, vision_depth=1, vision_heads=2, text_dim=8, text_depth=1, text_heads=2,
                            num_latents=L, perceiver_heads=2, perceiver_dim_head=4, xattn_heads=2, xattn_dim_head=4)
    model = _seeded(rng, lambda: Flamingo(config))
    model.vision.requires_grad_(True)
    model.encode_media = _refuse_encode_media
    B, T, num_images = rng.randint(2, 3), rng.randint(2, 3), rng.randint(3, 6)
    images = torch.rand(num_images, 3, 32, 32, generator=g)
    image_index = _image_index(rng, B, T, num_images)
    valid = image_index >= 0
    what = f"encode_media(model with L={L} latents, images ({num_images}, 3, 32, 32), image_index {image_index.tolist()})"
    with torch.no_grad():
        expected = Flamingo.encode_media(model, images, image_index)
        tokens = model.vision(model.normalize(images)).tokens
        raw = model.vision(images).tokens
        index = image_index.clamp(min=0)
        wrong = [
            (model.perceiver(raw[index]), "the ViT reads standardised images: model.vision(model.normalize("
                                          "images)), as in chapters 05 and 06."),
            (model.perceiver(model.vision(model.normalize(images)).pooled[:, None][index]),
             "the Perceiver reads every patch token (.tokens, (B_img, N, Dv)), not the pooled vector."),
            (model.perceiver(tokens[torch.arange(B * T).reshape(B, T) % num_images]),
             "row b's t-th image is images[image_index[b, t]]: index the ViT's tokens with image_index."),
            (model.perceiver(tokens[index.flip(1)]), "keep the images in their order: media[:, t] is the t-th "
                                                     "<image> of the row."),
        ]
    out = call_learner(encode_media, model, images, image_index, what="encode_media")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (num_images, 1, L, Dv):
        raise Hint(f"{what} has shape {tuple(out.shape)}, expected {(B, T, L, Dv)}. Hint: gather each row's images "
                   "first, tokens[image_index.clamp(min=0)] (B, T, N, Dv), then the Perceiver resamples each of them.")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (B, T, tokens.shape[1], Dv):
        raise Hint(f"{what} has shape {tuple(out.shape)}, expected {(B, T, L, Dv)}: those are the ViT's patch "
                   "tokens. Hint: model.perceiver turns each image's N tokens into L latents.")
    expect_shape(out, (B, T, L, Dv), what, hint="L latents for each of a row's T images: (B, T, L, vision_dim).")
    # slots past a row's last image (-1) are never read: compare the real ones only
    expect_known_mistakes(out[valid], expected[valid], [(w[valid], hint) for w, hint in wrong], what,
                          hint="model.perceiver(tokens[image_index.clamp(min=0)]), tokens = model.vision("
                               "model.normalize(images)).tokens computed under torch.no_grad().")
    if not out.requires_grad:
        raise Hint(f"{what} carries no gradient, so the Perceiver can't train. Hint: only the ViT runs under "
                   "torch.no_grad(); no .detach() on what follows it.")
    out[valid].square().sum().backward()
    if any(p.grad is not None for p in model.vision.parameters()):
        raise Hint(f"the gradient of {what} reaches the ViT. Hint: run the frozen ViT under torch.no_grad(): "
                   "Flamingo never trains it, so it needs no graph (less memory, less time).")
    if model.perceiver.latents.grad is None:
        raise Hint(f"the gradient of {what} does not reach the Perceiver's latents. Hint: only the ViT runs under "
                   "torch.no_grad().")


def _encode_media_setup(seed):
    """A Flamingo with a CLIP-trained ViT and the pretrained LM, the training batches, and the test episodes."""
    setup, tokenizer = ENCODE_MEDIA_EXPERIMENT, Tokenizer()
    world = WorldConfig(max_objects=1)
    scenes = sample_scenes(setup["train_scenes"], world, generator=torch.Generator().manual_seed(seed), split="train")
    images = render(scenes, 32)
    test_scenes = sample_scenes(setup["test_scenes"], world, generator=torch.Generator().manual_seed(seed + 1),
                                split="test")
    test_images = render(test_scenes, 32)
    config = FlamingoConfig(vocab_size=len(tokenizer), num_latents=setup["num_latents"])
    model = Flamingo(config)

    clip = train_clip_vision(config.vision_config(), tokenizer, scenes, images, model.normalize, setup["clip_steps"])
    lm = pretrained.language_model(config.lm_config(), device="cpu")
    model.load_vision_tower(clip.vision).load_language_model(lm).set_stage()

    rows = [episode for k in setup["train_shots"]
            for episode in few_shot_episodes(scenes, setup["episodes_per_shots"], k, seed=seed + k)]
    random.Random(seed).shuffle(rows)

    def batches(step, size=setup["batch_size"]):
        start = (step * size) % (len(rows) - size + 1)
        batch = encode_interleaved(tokenizer, rows[start:start + size])
        used, inverse = torch.unique(batch["image_index"].clamp(min=0), return_inverse=True)
        index = torch.where(batch["image_index"] >= 0, inverse, -1)       # into images[used]: fewer for the ViT
        return images[used], batch["input_ids"], batch["attention_mask"], batch["labels"], index

    tests = {k: encode_interleaved(tokenizer, few_shot_episodes(test_scenes, setup["test_episodes"], k,
                                                                seed=seed + 100 + k), label="query")
             for k in (0, 1)}
    return model, batches, (test_images, tests)


def _state(module):
    return {key: value.clone() for key, value in module.state_dict().items()}


def _unchanged(module, before):
    return all(torch.equal(value, before[key]) for key, value in module.state_dict().items())


def _train_and_measure(encode_media, model, batches, test):
    """Train with the learner's encode_media: {shots: held-out accuracy}; a Hint if the ViT or the LM changed."""
    vision, lm = _state(model.vision), _state(model.lm)
    _plug(model, encode_media)
    setup = ENCODE_MEDIA_EXPERIMENT
    fit(model, batches, lambda m, b: m(*b, validate=False).loss,
        TrainConfig(steps=setup["steps"], lr=setup["lr"], warmup_steps=min(50, setup["steps"]), device="cpu",
                    progress=False))
    if not _unchanged(model.vision, vision):
        raise Hint("the ViT's weights changed while Flamingo trained. Hint: encode_media only reads model.vision, "
                   "under torch.no_grad().")
    if not _unchanged(model.lm, lm):
        raise Hint("the LM's weights changed while Flamingo trained. Hint: encode_media only computes the media: it "
                   "doesn't touch model.lm.")
    images, tests = test
    model.eval()
    with torch.no_grad():
        return {k: answer_correct(model, images, batch).float().mean().item() for k, batch in tests.items()}


@check("encode_media", points=3)
def check_encode_media(encode_media):
    rng = check_rng()
    setup = ENCODE_MEDIA_EXPERIMENT
    seed = setup["seed"]           # the measured run is the same every time: its outcome is a fact about the code
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)    # the models' initialisation; the learner's global RNG is restored afterwards
        for _ in range(2):         # 1. the function itself, on small models (fast: no training)
            _probe(encode_media, rng)
        model, batches, test = _encode_media_setup(seed)    # 2. measured: accuracy at 0 and 1 shots
        accuracy = _train_and_measure(encode_media, model, batches, test)
    measured = f"0 shots: {accuracy[0]:.0%}, 1 shot: {accuracy[1]:.0%} of the held-out queries"
    if not (accuracy[1] >= accuracy[0] + MIN_GAIN and accuracy[1] >= MIN_ONE_SHOT):
        raise Hint(f"after {setup['steps']} steps: {measured}; expected 1 shot to reach {MIN_ONE_SHOT:.0%} and beat "
                   f"0 shots by {MIN_GAIN:.0%}. Hint: the LM can only read the query's image from what "
                   "encode_media gives the cross-attention: ViT tokens of each row's images -> model.perceiver, with "
                   "the gradient reaching the Perceiver.")


# -----------------------------------------------------------------------------
# concept questions


WHY_GATES_OPTIONS = {
    "a": "so that at initialisation the model computes exactly what the frozen LM computes, and training starts "
         "from a working language model",
    "b": "so that the cross-attention's weights get no gradient and stay frozen",
    "c": "so that the text tokens before the first image read nothing",
    "d": "so that the block can be skipped, to save compute, until the gate opens",
}


def _gate_zero_is_identity():
    """A fresh GatedCrossAttentionBlock returns its input bit for bit (from minivlm.gated_xattn)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = GatedCrossAttentionBlock(8, 4, 2, 2, True, 6)
        x, media = torch.randn(2, 5, 8), torch.randn(2, 2, 3, 6)
        with torch.no_grad():
            return torch.equal(block(x, media, torch.tensor([[1, 0, 0, 1, 0]] * 2, dtype=torch.bool)), x)


@check("why_gates_start_at_zero", points=1)
def check_why_gates_start_at_zero(why_gates_start_at_zero):
    answer = answer_choice(call_learner(why_gates_start_at_zero, what="why_gates_start_at_zero"), WHY_GATES_OPTIONS,
                           "why_gates_start_at_zero()")
    if answer == ("a" if _gate_zero_is_identity() else None):
        return
    raise Hint({
        "b": f'"{answer}" is not it. Hint: the gate itself gets a gradient at 0 (the cross-attention\'s output times '
             'the loss\'s gradient), so training opens it and the cross-attention trains from there on.',
        "c": f'"{answer}" is not it. Hint: that is the media mask\'s job: a token before any image reads nothing '
             'whatever the gate.',
        "d": f'"{answer}" is not it. Hint: the block runs all the same; only what it adds is multiplied by '
             'tanh(0) = 0.',
    }.get(answer, f'"{answer}" is not it.'))


BEFORE_ANY_IMAGE_OPTIONS = {
    "a": "the first image of the document",
    "b": "nothing: its cross-attention output is zero, so it goes on as in the frozen LM",
    "c": "the mean of every image in the document",
    "d": "the latest image",
}


def _before_any_image_answer():
    """What minivlm.gated_xattn gives a token before any image, in both modes: "b" if zero."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        x, media = torch.randn(1, 4, 8), torch.randn(1, 2, 3, 8)
        locations = torch.tensor([[False, True, False, True]])
        outs = [MaskedCrossAttention(8, 4, 2, immediate)(x, media, locations)[0, 0] for immediate in (True, False)]
    return "b" if all(torch.equal(out, torch.zeros_like(out)) for out in outs) else None


@check("before_any_image", points=1)
def check_before_any_image(before_any_image):
    answer = answer_choice(call_learner(before_any_image, what="before_any_image"), BEFORE_ANY_IMAGE_OPTIONS,
                           "before_any_image()")
    if answer == _before_any_image_answer():
        return
    raise Hint({
        "a": f'"{answer}" is not it. Hint: image j is read when text_time >= j >= 1; before any <image> text_time = 0.',
        "c": f'"{answer}" is not it. Hint: that is what a softmax over all-masked keys gives (uniform weights), as '
             'flamingo-pytorch 0.1.2 does in the every-previous-image mode: a token would read images of its '
             'future. Its output is set to zero instead.',
        "d": f'"{answer}" is not it. Hint: before the first <image> there is no latest image yet.',
    }.get(answer, f'"{answer}" is not it.'))


MEDIA_TOKENS_QUESTION = dict(num_latents=64, image_size=448, patch_size=14)


@check("media_tokens_per_image", points=1)
def check_media_tokens_per_image(media_tokens_per_image):
    q = MEDIA_TOKENS_QUESTION
    answer = answer_number(call_learner(media_tokens_per_image, what="media_tokens_per_image"),
                           "media_tokens_per_image()", integer=True)
    patches = (q["image_size"] // q["patch_size"]) ** 2
    with torch.random.fork_rng(devices=[]), torch.no_grad():     # a tiny resampler with Flamingo's 64 latents
        resampler = PerceiverResampler(8, 1, dim_head=4, heads=2, num_latents=q["num_latents"], num_media_embeds=1)
        expected = resampler(torch.randn(1, 1, patches, 8)).shape[2]
    if answer == expected:
        return
    for wrong, hint in [
        (patches, "that is the ViT's patch count: the LM's cross-attention never reads the patches, only the "
                  "Perceiver's latents."),
        (patches + expected, "the keys and values from [media; latents] are inside the Perceiver: what comes out, "
                             "and what the LM reads, is the latents alone."),
        (q["image_size"] // q["patch_size"], "that is the patch grid's side, and the LM doesn't read the patches "
                                             "anyway: only the Perceiver's latents."),
        ((224 // q["patch_size"]) ** 2, "that is the patch count at 224×224, and the LM doesn't read the patches "
                                        "anyway: only the Perceiver's latents."),
        (1, "the Perceiver gives more than a pooled vector: one token per learned latent."),
    ]:
        if answer == wrong:
            raise Hint(f"media_tokens_per_image() is {answer}. Hint: {hint}")
    raise Hint(f"media_tokens_per_image() is {answer}. Hint: the Perceiver turns any number N of patch tokens into "
               "one token per learned latent.")
