"""minivlm.course.grading.ch01: the reference passes, a stub is "not implemented yet", and each typical
mistake gets a hint that names it (never a pass, never a traceback)."""

import math

import pytest
import torch

from minivlm import attention as attention_lib
from minivlm import patching
from minivlm.course.grading import ch01


def last_line(capsys):
    return capsys.readouterr().out.strip()


def stub(*args):
    raise NotImplementedError()


# ----------------------------------------------------------------------------- patchify

def patchify_channels_last(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p)


def patchify_columns_first(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p)


def patchify_plain_reshape(images, p):
    B, C, H, W = images.shape
    return images.reshape(B, -1, C * p * p)


def patchify_three_channels(images, p):
    B, _, H, W = images.shape
    return images.reshape(B, 3, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, 3 * p * p)


@pytest.mark.parametrize("patchify, expected", [
    (patching.patchify, "✅ patchify: passed"),
    (stub, "⏳ patchify: not implemented yet"),
    (patchify_channels_last, "flattens each patch in (P, P, C) order"),
    (patchify_columns_first, "lists the patches column by column"),
    (patchify_plain_reshape, "is a plain reshape"),
    (patchify_three_channels, "your code raised RuntimeError"),
])
def test_check_patchify(patchify, expected, capsys):
    result = ch01.check_patchify(patchify)
    out = last_line(capsys)
    assert expected in out.splitlines()[0] and "Traceback" not in out
    assert bool(result) == expected.startswith("✅")


# ----------------------------------------------------------------------------- patch embedding

def embed_reference(images, weight, bias, p):
    return patching.patchify(images, p) @ weight.reshape(weight.shape[0], -1).T + bias


@pytest.mark.parametrize("embed, expected", [
    (embed_reference, "✅ patch_embed_linear: passed"),
    (patching.patch_embed_linear, "✅ patch_embed_linear: passed"),
    (stub, "⏳ patch_embed_linear: not implemented yet"),
    (lambda x, w, b, p: patching.patchify(x, p) @ w.reshape(w.shape[0], -1).T, "missing the bias"),
    (lambda x, w, b, p: patching.patchify(x, p) @ w.reshape(-1, w.shape[0]) + b, "scrambles it"),
    (lambda x, w, b, p: patchify_channels_last(x, p) @ w.reshape(w.shape[0], -1).T + b, "(P, P, C) order"),
    (lambda x, w, b, p: embed_reference(x, w, b, p).transpose(1, 2), "(B, D, N): put the patches first"),
])
def test_check_patch_embed_linear(embed, expected, capsys):
    result = ch01.check_patch_embed_linear(embed)
    assert expected in last_line(capsys)
    assert bool(result) == expected.startswith("✅")


# ----------------------------------------------------------------------------- attention

def attention_with(scale=True, softmax_dim=-1, fill=float("-inf"), invert=False, after_softmax=False, pair=True):
    def attention(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1)
        if scale:
            scores = scores / math.sqrt(q.shape[-1])
        if mask is not None and not after_softmax:
            scores = scores.masked_fill(mask if invert else ~mask, fill)
        weights = scores.softmax(dim=softmax_dim)
        if mask is not None and after_softmax:
            weights = weights * mask
        return (weights @ v, weights) if pair else weights @ v
    return attention


@pytest.mark.parametrize("attention, expected", [
    (attention_with(), "✅ attention: passed"),
    (attention_lib.attention_math, "✅ attention: passed"),
    (stub, "⏳ attention: not implemented yet"),
    (attention_with(scale=False), "divide q @ kᵀ by √d"),
    (attention_with(softmax_dim=-2), "over the keys, dim=-1"),
    (attention_with(invert=True), "wrong way round"),
    (attention_with(fill=0.0), "float('-inf')"),
    (attention_with(after_softmax=True), "mask the scores (with -inf) before the softmax"),
    (attention_with(pair=False), "should return a pair (output, weights)"),
])
def test_check_attention(attention, expected, capsys):
    result = ch01.check_attention(attention)
    out = last_line(capsys)
    assert expected in out and "Traceback" not in out
    assert bool(result) == expected.startswith("✅")


def test_attention_hint_names_the_masked_case(capsys):
    ch01.check_attention(attention_with(fill=0.0))
    assert "with a causal (L, S) mask" in last_line(capsys)


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


@pytest.mark.parametrize("forward, expected", [
    (pre_norm, "✅ vit_block_forward: passed"),
    (lambda block, x: block(x), "✅ vit_block_forward: passed"),
    (stub, "⏳ vit_block_forward: not implemented yet"),
    (post_norm, "post-norm block"),
    (lambda block, x: block.mlp(block.mlp_norm(block.attn(block.attn_norm(x)))), "residual connections are missing"),
    (lambda block, x: x + block.attn(block.attn_norm(x)), "MLP update is missing"),
    (lambda block, x: x + block.attn(block.attn_norm(x)) + block.mlp(block.mlp_norm(x)), "reads the block's input"),
    (swapped_norms, "wrong values"),
    (lambda block, x: x[:, :4], "has shape (2, 4, 16), expected (2, 5, 16)"),
])
def test_check_vit_block_forward(forward, expected, capsys):
    result = ch01.check_vit_block_forward(forward)
    out = last_line(capsys)
    assert expected in out and "Traceback" not in out
    assert bool(result) == expected.startswith("✅")


def test_checks_do_not_change_the_inputs_they_compare_with():
    """A learner that writes into its inputs in place must not turn a wrong answer into a pass."""
    def in_place(images, p):
        images.mul_(0)
        return patching.patchify(images, p)
    assert not ch01.check_patchify(in_place)
