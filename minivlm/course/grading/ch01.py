"""Checks for chapter 01: images as tokens (patchify, patch embedding, masked attention, a ViT block).

Each check calls the learner's function on small inputs and compares it with the reference
in `minivlm/`. When the answer is wrong, it also compares with the usual mistakes (a
transposed flatten order, a forgotten scale, an inverted mask, post-norm, ...) and names
the one that matches, so the hint says what to change.
"""

import math

import torch

from minivlm import attention as attention_lib
from minivlm import patching
from minivlm.course.grading import Hint, check, expect_close, expect_known_mistakes, expect_shape
from minivlm.blocks import TransformerBlock


# ----------------------------------------------------------------------------- patchify

def _patches(images, p, order):
    """Patchify variants: the reference order and the usual mistakes."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    if order == "channels last":                                 # (P, P, C) flattening
        return x.permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p)
    if order == "columns first":                                 # patches read column by column
        return x.permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p)
    if order == "no permute":
        return images.reshape(B, -1, C * p * p)
    raise ValueError(order)


@check("patchify")
def check_patchify(patchify):
    torch.manual_seed(0)
    for images, p in ((torch.randn(2, 3, 8, 12), 4), (torch.randn(1, 1, 6, 6), 3)):
        what = f"patchify(images {tuple(images.shape)}, {p})"
        out = patchify(images.clone(), p)
        B, C, H, W = images.shape
        expect_shape(out, (B, (H // p) * (W // p), C * p * p), what,
                     hint="N = (H/P)·(W/P) patches, each a vector of C·P·P values (and don't assume C = 3).")
        # with C = 1 the channel order doesn't show: expect_known_mistakes skips that mistake
        expect_known_mistakes(out, patching.patchify(images, p), [
            (_patches(images, p, "channels last"),
             "it flattens each patch in (P, P, C) order. Flatten in (C, P, P) order — channels first — "
             "so a patch lines up with a Conv2d weight (D, C, P, P): permute to (B, H/P, W/P, C, P, P)."),
            (_patches(images, p, "columns first"),
             "it lists the patches column by column. Use raster order: row by row, left to right "
             "(the patch-row index comes before the patch-column index)."),
            (_patches(images, p, "no permute"),
             "it is a plain reshape, which mixes pixels of different patches. Split H into (H/P, P) "
             "and W into (W/P, P), permute the two patch indices to the front, then flatten."),
        ], what, hint="reshape to (B, C, H/P, P, W/P, P), permute to (B, H/P, W/P, C, P, P), "
                      "reshape to (B, N, C·P·P).")


# ----------------------------------------------------------------------------- patch embedding

@check("patch_embed_linear")
def check_patch_embed_linear(patch_embed_linear):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, kernel_size=4, stride=4)
    images = torch.randn(2, 3, 8, 12)
    weight, bias = conv.weight.detach(), conv.bias.detach()
    what = "patch_embed_linear(images (2, 3, 8, 12), conv_weight (5, 3, 4, 4), conv_bias, 4)"
    out = patch_embed_linear(images.clone(), weight.clone(), bias.clone(), 4)
    expected = conv(images).detach().flatten(2).transpose(1, 2)        # the conv, as (B, N, D)
    if isinstance(out, torch.Tensor) and out.shape == (2, 5, 6):
        raise Hint(f"{what} has shape (2, 5, 6) = (B, D, N): put the patches first, (B, N, D).")
    expect_shape(out, (2, 6, 5), what, hint="one D-vector per patch: (B, N, D) with N = 6 patches and D = 5.")
    patches = patching.patchify(images, 4)                               # (2, 6, 48)
    expect_known_mistakes(out, expected, [
        (patches @ weight.reshape(5, -1).T, "it is missing the bias: add conv_bias to every patch vector."),
        (patches @ weight.reshape(48, 5) + bias,
         "it reshapes the weight to (C·P·P, D) directly, which scrambles it. "
         "Reshape it to (D, C·P·P) — one row per output channel — then transpose."),
        (_patches(images, 4, "channels last") @ weight.reshape(5, -1).T + bias,
         "it flattens the patches in (P, P, C) order, but the weight reshape is (C, P, P): use patchify's order."),
    ], what, hint="patchify(images, P) @ conv_weight.reshape(D, -1).T + conv_bias")


# ----------------------------------------------------------------------------- attention

def _attention_variant(q, k, v, mask, variant):
    scale = {"no scale": 1.0, "scale by d": 1.0 / q.shape[-1]}.get(variant, 1.0 / math.sqrt(q.shape[-1]))
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        if variant == "inverted mask":
            scores = scores.masked_fill(mask, float("-inf"))
        elif variant == "mask with zero":
            scores = scores.masked_fill(~mask, 0.0)
        elif variant != "mask after softmax":
            scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-2 if variant == "softmax over queries" else -1)
    if mask is not None and variant == "mask after softmax":
        weights = weights * mask
    return weights @ v, weights


ATTENTION_MISTAKES = {
    "no scale": "the scores are not scaled: divide q @ kᵀ by √d, with d = q.shape[-1].",
    "scale by d": "the scores are divided by d: divide by √d (math.sqrt(q.shape[-1])) instead.",
    "softmax over queries": "the softmax runs over the queries (dim=-2): take it over the keys, dim=-1, so each "
                            "query's weights sum to 1.",
    "inverted mask": "the mask is used the wrong way round. True means *may attend*: fill the scores where the "
                     "mask is False (~mask) with -inf.",
    "mask with zero": "masked scores are set to 0, but exp(0) still gets weight after the softmax: fill them "
                      "with float('-inf') instead.",
    "mask after softmax": "the mask is applied after the softmax, so the remaining weights no longer sum to 1: "
                          "mask the scores (with -inf) before the softmax.",
}


@check("attention")
def check_attention(attention):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)   # L = 3 queries, S = 5 keys
    padding = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]       # (B, 1, 1, S)
    cases = [(None, "no mask"), (attention_lib.causal_mask(3, 5), "a causal (L, S) mask"),
             (padding, "a padding (B, 1, 1, S) mask")]
    for mask, name in cases:
        what = f"attention(q, k, v) with {name}"
        result = attention(q.clone(), k.clone(), v.clone(), None if mask is None else mask.clone())
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Hint(f"{what} should return a pair (output, weights), got {type(result).__name__}.")
        out, weights = result
        expected_out, expected_weights = attention_lib.attention_math(q, k, v, mask)
        expect_shape(weights, (2, 2, 3, 5), f"{what}: weights", hint="one weight per (query, key): (B, H, L, S).")
        expect_shape(out, (2, 2, 3, 8), f"{what}: output", hint="a weighted average of values: (B, H, L, d).")
        expect_known_mistakes(weights, expected_weights,
                              [(_attention_variant(q, k, v, mask, variant)[1], hint)
                               for variant, hint in ATTENTION_MISTAKES.items()], f"{what}: weights",
                              hint="softmax(q @ kᵀ / √d) over the keys, with masked scores set to -inf first.")
        expect_close(out, expected_out, f"{what}: output", hint="the output is weights @ v.")


# ----------------------------------------------------------------------------- a pre-norm block

def _block_variant(block, x, variant):
    if variant == "post-norm":
        x = block.attn_norm(x + block.attn(x))
        return block.mlp_norm(x + block.mlp(x))
    if variant == "no residual":
        x = block.attn(block.attn_norm(x))
        return block.mlp(block.mlp_norm(x))
    if variant == "no mlp":
        return x + block.attn(block.attn_norm(x))
    if variant == "parallel":
        return x + block.attn(block.attn_norm(x)) + block.mlp(block.mlp_norm(x))
    if variant == "norm in the residual":
        x = block.attn_norm(x)
        x = x + block.attn(x)
        x = block.mlp_norm(x)
        return x + block.mlp(x)
    raise ValueError(variant)


BLOCK_MISTAKES = {
    "post-norm": "this is a post-norm block (normalise after adding). Pre-norm normalises the input of each "
                 "sub-layer and adds the result to the un-normalised x: x = x + attn(attn_norm(x)).",
    "no residual": "the residual connections are missing: add each sub-layer's output to x "
                   "(x = x + attn(attn_norm(x)), then x = x + mlp(mlp_norm(x))).",
    "no mlp": "the MLP update is missing: after the attention update, x = x + mlp(mlp_norm(x)).",
    "parallel": "the MLP reads the block's input, not the output of the attention update: first "
                "x = x + attn(attn_norm(x)), then x = x + mlp(mlp_norm(x)) with the new x.",
    "norm in the residual": "the normalised x replaces x on the residual path. Keep x itself on the residual "
                            "path and normalise only the sub-layer's input: x = x + attn(attn_norm(x)).",
}


@check("vit_block_forward")
def check_vit_block_forward(vit_block_forward):
    torch.manual_seed(0)
    block = TransformerBlock(dim=16, heads=2, mlp_hidden=32)
    for norm in (block.attn_norm, block.mlp_norm):                # non-trivial norms, so a swapped norm shows up
        torch.nn.init.normal_(norm.weight, 1.0, 0.3)
        torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    block.eval()
    x = torch.randn(2, 5, 16) * 2 + 1
    what = "vit_block_forward(block, x (2, 5, 16))"
    with torch.no_grad():
        out = vit_block_forward(block, x.clone())
        expected = block(x)
        expect_shape(out, (2, 5, 16), what, hint="a block keeps the shape (B, N, D).")
        expect_known_mistakes(out, expected, [(_block_variant(block, x, variant), hint)
                                              for variant, hint in BLOCK_MISTAKES.items()], what,
                              hint="x = x + block.attn(block.attn_norm(x)); x = x + block.mlp(block.mlp_norm(x))")
