"""minivlm.course.grading.ch01: the reference and other correct implementations pass, a stub is
"not implemented yet", and each typical mistake fails with a hint that names it (never a traceback)."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm import attention as attention_lib
from minivlm import patching
from minivlm.course.grading import ch01

SEEDS = [1, 2, 3]


def last_line(capsys):
    return capsys.readouterr().out.strip()


def stub(*args):
    raise NotImplementedError()


def assert_graded(result, out, expected):
    assert expected in out.splitlines()[0] and "Traceback" not in out
    assert bool(result) == expected.startswith("✅")


# ----------------------------------------------------------------------------- patchify

def patchify_order(images, p, order):
    B, C, H, W = images.shape
    return images.reshape(B, C, H // p, p, W // p, p).permute(0, *order).reshape(B, -1, C * p * p)


def patchify_unfold(images, p):
    """F.unfold lists the patches in raster order, each flattened (C, P, P): the same answer."""
    return F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)


def patchify_loop(images, p):
    B, C, H, W = images.shape
    return torch.stack([images[:, :, r:r + p, c:c + p].reshape(B, -1)
                        for r in range(0, H, p) for c in range(0, W, p)], dim=1)


def patchify_three_channels(images, p):
    B, _, H, W = images.shape
    return images.reshape(B, 3, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, 3 * p * p)


def patchify_square_only(images, p):
    B, C, H, _ = images.shape                   # assumes W = H
    return images.reshape(B, C, H // p, p, H // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)


def patchify_old_grid(images, p):
    """Hard-coded to the old check's (2, 3, 8, 12) images: a 2 x 3 grid of patches."""
    B, C, H, W = images.shape
    return images.reshape(B, C, 2, p, 3, p).permute(0, 2, 4, 1, 3, 5).reshape(B, 6, C * p * p)


def patchify_in_place(images, p):
    images -= images.mean()                      # "normalise" the caller's images
    return patching.patchify(images, p)


@pytest.mark.parametrize("patchify, expected", [
    (patching.patchify, "✅ patchify: passed"),
    (patchify_unfold, "✅ patchify: passed"),
    (patchify_loop, "✅ patchify: passed"),
    (stub, "⏳ patchify: not implemented yet"),
    (lambda x, p: patchify_order(x, p, (2, 4, 3, 5, 1)), "flattens each patch in (P, P, C) order"),
    (lambda x, p: patchify_order(x, p, (4, 2, 1, 3, 5)), "lists the patches column by column"),
    (lambda x, p: patchify_order(x, p, (2, 4, 1, 5, 3)), "reads the pixels column by column"),
    (lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p), "is a plain reshape"),
    (patchify_three_channels, "your code raised RuntimeError"),
    (patchify_square_only, "❌ patchify"),
    (patchify_old_grid, "your code raised RuntimeError"),
    (lambda x, p: patching.patchify(x, 4), "❌ patchify"),                                     # ignores patch_size
    (lambda x, p: patching.patchify(x, p).float(), "has dtype torch.float32, expected torch.float64"),
    (patchify_in_place, "modified its input `images` in place"),
])
def test_check_patchify(patchify, expected, capsys):
    result = ch01.check_patchify(patchify)
    assert_graded(result, last_line(capsys), expected)


# ----------------------------------------------------------------------------- patch embedding

def embed_reference(images, weight, bias, p):
    return patching.patchify(images, p) @ weight.reshape(weight.shape[0], -1).T + bias


def embed_conv(images, weight, bias, p):
    return F.conv2d(images, weight, bias, stride=p).flatten(2).transpose(1, 2)


def embed_einsum(images, weight, bias, p):
    B, C, H, W = images.shape
    grid = images.reshape(B, C, H // p, p, W // p, p)
    return torch.einsum("bchpwq,dcpq->bhwd", grid, weight).reshape(B, -1, weight.shape[0]) + bias


def embed_in_place(images, conv_weight, conv_bias, patch_size):
    conv_bias.unsqueeze_(0)                      # (1, D), to broadcast over the patches
    return patching.patchify(images, patch_size) @ conv_weight.reshape(conv_weight.shape[0], -1).T + conv_bias


@pytest.mark.parametrize("embed, expected", [
    (embed_reference, "✅ patch_embed_linear: passed"),
    (patching.patch_embed_linear, "✅ patch_embed_linear: passed"),
    (embed_conv, "✅ patch_embed_linear: passed"),
    (embed_einsum, "✅ patch_embed_linear: passed"),
    (stub, "⏳ patch_embed_linear: not implemented yet"),
    (lambda x, w, b, p: patching.patchify(x, p) @ w.reshape(w.shape[0], -1).T, "missing the bias"),
    (lambda x, w, b, p: patching.patchify(x, p) @ w.reshape(-1, w.shape[0]) + b, "scrambles it"),
    (lambda x, w, b, p: patchify_order(x, p, (2, 4, 3, 5, 1)) @ w.reshape(w.shape[0], -1).T + b, "(P, P, C) order"),
    (lambda x, w, b, p: embed_reference(x, w, b, p).transpose(1, 2), "= (B, D, N): put the patches first"),
    (lambda x, w, b, p: embed_reference(x, w, b, 4), "❌ patch_embed_linear"),               # ignores patch_size
    (lambda x, w, b, p: embed_reference(x.float(), w.float(), b.float(), p), "expected torch.float64"),
    (embed_in_place, "modified its input `conv_bias` in place"),
])
def test_check_patch_embed_linear(embed, expected, capsys):
    result = ch01.check_patch_embed_linear(embed)
    assert_graded(result, last_line(capsys), expected)


# ----------------------------------------------------------------------------- attention

def attention_with(scale=True, softmax_dim=-1, fill=float("-inf"), invert=False, after_softmax=False, pair=True,
                   scale_dim=-1):
    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1)
        if scale:
            scores = scores / math.sqrt(q.shape[scale_dim])
        if mask is not None and not after_softmax:
            scores = scores.masked_fill(mask if invert else ~mask, fill)
        weights = scores.softmax(dim=softmax_dim)
        if mask is not None and after_softmax:
            weights = weights * mask
        return (weights @ v, weights) if pair else weights @ v
    return attention


def attention_einsum(q, k, v, mask=None):
    scores = torch.einsum("bhld,bhsd->bhls", q, k) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, -1e9)            # a huge finite fill gives the same zeros
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("bhls,bhsd->bhld", weights, v), weights


def attention_old_scale(q, k, v, mask=None):
    """Hard-coded to the old check's head size d = 8."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def attention_in_place(q, k, v, mask=None):
    q /= math.sqrt(q.shape[-1])                  # scale the queries in place
    return attention_lib.attention_math(q * math.sqrt(q.shape[-1]), k, v, mask)


def attention_key_padding_only(q, k, v, mask=None):
    """Assumes every mask is a (B, S) key-padding mask."""
    if mask is not None:
        mask = mask.reshape(mask.shape[0], -1)[:, None, None, : k.shape[2]]
    return attention_lib.attention_math(q, k, v, mask)


@pytest.mark.parametrize("attention, expected", [
    (attention_with(), "✅ attention: passed"),
    (attention_lib.attention_math, "✅ attention: passed"),
    (attention_einsum, "✅ attention: passed"),
    (stub, "⏳ attention: not implemented yet"),
    (attention_with(scale=False), "divide q @ kᵀ by √d"),
    (attention_with(scale_dim=-2), "❌ attention"),                         # √L instead of √d
    (attention_old_scale, "❌ attention"),
    (attention_with(softmax_dim=-2), "over the keys, dim=-1"),
    (attention_with(invert=True), "wrong way round"),
    (attention_with(fill=0.0), "float('-inf')"),
    (attention_with(after_softmax=True), "mask the scores (with -inf) before the softmax"),
    (attention_with(pair=False), "should return a pair (output, weights)"),
    (lambda q, k, v, mask=None: attention_lib.attention_math(q, k, v, mask)[::-1], "return them in the order"),
    (lambda q, k, v, mask=None: attention_lib.attention_math(q.float(), k.float(), v.float(), mask),
     "expected torch.float64"),
    (attention_in_place, "modified its input `q` in place"),
    (attention_key_padding_only, "❌ attention"),
])
def test_check_attention(attention, expected, capsys):
    result = ch01.check_attention(attention)
    assert_graded(result, last_line(capsys), expected)


def test_attention_hint_names_the_masked_case(capsys):
    ch01.check_attention(attention_with(fill=0.0))
    assert "with a causal (" in last_line(capsys)


# ----------------------------------------------------------------------------- ViT block

def pre_norm(block, x):
    x = x + block.attn(block.attn_norm(x))
    return x + block.mlp(block.mlp_norm(x))


def post_norm(block, x):
    x = block.attn_norm(x + block.attn(x))
    return block.mlp_norm(x + block.mlp(x))


def swapped_norms(block, x):
    x = x + block.attn(block.mlp_norm(x))
    return x + block.mlp(block.attn_norm(x))


def manual_attention(attn, h, heads):
    B, N, D = h.shape
    split = lambda t: t.reshape(B, N, heads, D // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h)))
    return attn.out_proj(out.transpose(1, 2).reshape(B, N, D))


def pre_norm_by_hand(block, x):
    """The attention written out from its projections, with the block's own number of heads."""
    x = x + manual_attention(block.attn, block.attn_norm(x), block.attn.num_heads)
    return x + block.mlp(block.mlp_norm(x))


def two_heads_by_hand(block, x):
    x = x + manual_attention(block.attn, block.attn_norm(x), 2)            # the old check's 2 heads
    return x + block.mlp(block.mlp_norm(x))


def pre_norm_in_place(block, x):
    x += block.attn(block.attn_norm(x))
    x += block.mlp(block.mlp_norm(x))
    return x


def layer_norms_by_hand(block, x):
    """Rebuilds LayerNorm from the norms' weights: wrong for an RMSNorm block."""
    norm = lambda n, t: F.layer_norm(t, t.shape[-1:], n.weight, getattr(n, "bias", None))
    x = x + block.attn(norm(block.attn_norm, x))
    return x + block.mlp(norm(block.mlp_norm, x))


@pytest.mark.parametrize("forward, expected", [
    (pre_norm, "✅ vit_block_forward: passed"),
    (lambda block, x: block(x), "✅ vit_block_forward: passed"),
    (pre_norm_by_hand, "✅ vit_block_forward: passed"),
    (stub, "⏳ vit_block_forward: not implemented yet"),
    (post_norm, "post-norm block"),
    (lambda block, x: block.mlp(block.mlp_norm(block.attn(block.attn_norm(x)))), "residual connections are missing"),
    (lambda block, x: x + block.attn(block.attn_norm(x)), "MLP update is missing"),
    (lambda block, x: x + block.attn(block.attn_norm(x)) + block.mlp(block.mlp_norm(x)), "reads the block's input"),
    (swapped_norms, "the two norms are swapped"),
    (lambda block, x: pre_norm(block, x)[:, :-1], "has shape"),
    (two_heads_by_hand, "❌ vit_block_forward"),
    (pre_norm_in_place, "modified its input `x` in place"),
    (layer_norms_by_hand, "❌ vit_block_forward"),
    (lambda block, x: pre_norm(block, x).float(), "expected torch.float64"),
])
def test_check_vit_block_forward(forward, expected, capsys):
    result = ch01.check_vit_block_forward(forward)
    assert_graded(result, last_line(capsys), expected)


# ----------------------------------------------------------------------------- the same verdicts on other draws

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("check, fn, passes", [
    (ch01.check_patchify, patchify_unfold, True),
    (ch01.check_patchify, lambda x, p: patchify_order(x, p, (2, 4, 3, 5, 1)), False),
    (ch01.check_patchify, patchify_square_only, False),
    (ch01.check_patchify, patchify_old_grid, False),
    (ch01.check_patch_embed_linear, embed_einsum, True),
    (ch01.check_patch_embed_linear, lambda x, w, b, p: embed_reference(x, w, b, 4), False),
    (ch01.check_patch_embed_linear, lambda x, w, b, p: embed_reference(x, w, b, p).transpose(1, 2), False),
    (ch01.check_attention, attention_einsum, True),
    (ch01.check_attention, attention_old_scale, False),
    (ch01.check_attention, attention_with(fill=0.0), False),
    (ch01.check_attention, attention_key_padding_only, False),
    (ch01.check_vit_block_forward, pre_norm_by_hand, True),
    (ch01.check_vit_block_forward, two_heads_by_hand, False),
    (ch01.check_vit_block_forward, swapped_norms, False),
])
def test_verdict_does_not_depend_on_the_draw(check, fn, passes, seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    passed, out = grade(check, fn)
    assert passed == passes and "Traceback" not in out, out


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ch01.check_vit_block_forward(pre_norm)
    ch01.check_positions_experiment(classify_first_token)      # fails in its pre-check, after building models
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------- experiment: positions

def classify(model, images, use_positions):
    vit = model.vit
    x = vit.patch_embed(images)
    if use_positions:
        x = x + vit.pos_embed
    for block in vit.blocks:
        x = block(x)
    return model.head(vit.norm(x).mean(dim=1))


def classify_einsum(model, images, use_positions):
    """The patch embedding as a matmul on patches, the pooling as an einsum: the same function."""
    vit = model.vit
    x = patching.patch_embed_linear(images, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias,
                                    vit.patch_embed.patch_size)
    x = x + vit.pos_embed * use_positions
    for block in vit.blocks:
        x = block(x)
    return model.head(torch.einsum("bnd->bd", vit.norm(x)) / x.shape[1])


def classify_always_positions(model, images, use_positions):
    return classify(model, images, True)


def classify_never_positions(model, images, use_positions):
    return classify(model, images, False)


def classify_first_token(model, images, use_positions):
    vit = model.vit
    x = vit.patch_embed(images) + vit.pos_embed * use_positions
    for block in vit.blocks:
        x = block(x)
    return model.head(vit.norm(x)[:, 0])


def classify_no_norm(model, images, use_positions):
    vit = model.vit
    x = vit.patch_embed(images) + vit.pos_embed * use_positions
    for block in vit.blocks:
        x = block(x)
    return model.head(x.mean(dim=1))


def classify_no_blocks(model, images, use_positions):
    vit = model.vit
    x = vit.patch_embed(images) + vit.pos_embed * use_positions
    return model.head(vit.norm(x).mean(dim=1))


def classify_no_grad(model, images, use_positions):
    with torch.no_grad():
        return classify(model, images, use_positions)


def classify_in_place(model, images, use_positions):
    images -= 0.5                                # centre the caller's pixels
    return classify(model, images + 0.5, use_positions)


def test_position_experiment_passes_a_correct_implementation(grade):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    passed, out = grade(ch01.check_positions_experiment, classify_einsum)
    assert passed and out.strip() == "✅ positions_experiment: passed"
    assert torch.equal(torch.get_rng_state(), state), "the experiment must not touch the learner's global RNG"


@pytest.mark.parametrize("fn, expected", [
    (stub, "⏳ positions_experiment: not implemented yet"),
    (classify, "✅"),                                # the pre-check only: a full run is the test above
    (classify_never_positions, "add model.vit.pos_embed (1, N, D)"),
    (classify_always_positions, "add no position vectors"),
    (classify_first_token, "no [CLS] token"),
    (classify_no_norm, "apply the final LayerNorm"),
    (classify_no_blocks, "❌ positions_experiment"),
    (classify_no_grad, "carry no gradient"),
    (classify_in_place, "modified its input `images` in place"),
    (lambda model, images, use_positions: classify(model, images, use_positions).argmax(-1), "has shape"),
])
def test_check_positions_experiment_fails_fast(fn, expected, capsys, monkeypatch):
    if expected == "✅":                    # a correct alternative: pass the pre-check, skip the training here
        monkeypatch.setattr(ch01, "position_experiment", lambda fn, seed: {True: 1.0, False: 0.25})
    result = ch01.check_positions_experiment(fn)
    assert_graded(result, last_line(capsys), expected)


def test_position_experiment_measures_what_positions_do():
    """The measurement itself separates the variants, before the check's pre-check: a bag of patches is stuck at
    chance (25%) on the where-is-it task, a ViT with positions learns it."""
    always = ch01.position_experiment(classify_always_positions, seed=5, steps=70)
    assert always[True] >= 0.9 and always[False] >= 0.9
    never = ch01.position_experiment(classify_never_positions, seed=5, steps=70)
    assert never[True] <= 0.3 and never[False] <= 0.3


@pytest.mark.parametrize("seed", SEEDS)
def test_position_experiment_fails_fast_on_other_draws(seed, monkeypatch, grade):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", str(seed))
    for fn in (classify_always_positions, classify_never_positions, classify_no_norm):
        passed, out = grade(ch01.check_positions_experiment, fn)
        assert not passed and "Traceback" not in out


# ----------------------------------------------------------------------------- concept questions

@pytest.mark.parametrize("answer, expected", [
    (lambda: ((224 // 16) ** 2 + 1) ** 2, "✅ attention_weights_224: passed"),
    (lambda: 38809, "✅ attention_weights_224: passed"),
    (stub, "⏳ attention_weights_224: not implemented yet"),
    (lambda: 196 ** 2, "the [CLS] token is part of the sequence"),
    (lambda: 197, "that is the number of tokens"),
    (lambda: 196, "that is the number of patches"),
    (lambda: 50176, "count the tokens first"),
    (lambda: 38809.0, "should return an int"),
    (lambda: "38809", "should return an int"),
])
def test_check_attention_weights_224(answer, expected, capsys):
    result = ch01.check_attention_weights_224(answer)
    assert_graded(result, last_line(capsys), expected)


@pytest.mark.parametrize("answer, expected", [
    (lambda: "b", "✅ padding_mask: passed"),
    (lambda: " B) ", "✅ padding_mask: passed"),
    (stub, "⏳ padding_mask: not implemented yet"),
    (lambda: "a", "(B, S) meets the (L, S)"),
    (lambda: "c", "puts the keys on the heads axis"),
    (lambda: "d", "puts the batch on the query axis"),
    (lambda: "e", "should return one of \"a\", \"b\", \"c\", \"d\""),
    (lambda: 2, "should return one of"),
    (lambda: "keep[:, None, None, :]", "should return one of"),
])
def test_check_padding_mask(answer, expected, capsys):
    result = ch01.check_padding_mask(answer)
    assert_graded(result, last_line(capsys), expected)


@pytest.mark.parametrize("answer, expected", [
    (lambda: 768 * 3 * 16 * 16 + 768, "✅ patch_embed_parameters: passed"),
    (lambda: sum(p.numel() for p in torch.nn.Linear(768, 768).parameters()), "✅ patch_embed_parameters: passed"),
    (stub, "⏳ patch_embed_parameters: not implemented yet"),
    (lambda: 768 * 768, "also has a bias"),
    (lambda: (768 * 768) * 196 + 768, "doesn't depend on the number of patches"),
    (lambda: 768, "the length of one flattened patch"),
    (lambda: 768 * 16 * 16 + 768, "one linear map from a flattened patch"),
    (lambda: 590592.0, "should return an int"),
])
def test_check_patch_embed_parameters(answer, expected, capsys):
    result = ch01.check_patch_embed_parameters(answer)
    assert_graded(result, last_line(capsys), expected)
