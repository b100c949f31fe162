"""Checks for chapter 01: images as tokens (patchify, patch embedding, masked attention, a ViT block,
the position-embedding experiment, and three concept questions).

Each check draws random sizes (`check_rng`), computes the expected value with the reference in
`minivlm/` on the original inputs, calls the learner's function on copies (`call_learner`) and
compares shapes, dtypes and values. When the answer is wrong, it also compares with the usual
mistakes (a transposed flatten order, a forgotten scale, an inverted mask, post-norm, ...) and
names the one that matches, so the hint says what to change.
"""

import contextlib
import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from minivlm import attention as attention_lib
from minivlm import patching
from minivlm.blocks import TransformerBlock
from minivlm.course.grading import (Hint, answer_choice, answer_number, call_learner, check, check_rng, expect_close,
                                    expect_known_mistakes, expect_shape, one_thread, torch_generator)
from minivlm.data import COLORS, SHAPES, SIZES, WorldConfig, render, scenes_from_objects
from minivlm.train import TrainConfig, fit
from minivlm.vit import ViT, ViTClassifier, ViTConfig


@contextlib.contextmanager
def _seeded_global_rng(rng):
    """Build modules (whose init draws from torch's global RNG) from `rng`, leaving the learner's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.getrandbits(63))
        yield


def _expect_dtype(out, expected, what):
    """A dtype mismatch gets its own message: the shape-and-order hints would point the wrong way."""
    if isinstance(out, torch.Tensor) and out.dtype != expected.dtype:
        raise Hint(f"{what} has dtype {out.dtype}, expected {expected.dtype}: keep the inputs' dtype "
                   "(don't cast with .float() or torch.tensor(...)).")


# ----------------------------------------------------------------------------- patchify

def _patches(images, p, order):
    """Patchify variants: the usual mistakes."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    if order == "channels last":                                 # (P, P, C) flattening
        return x.permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p)
    if order == "columns first":                                 # patches read column by column
        return x.permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p)
    if order == "pixels columns first":                          # inside a patch, x before y
        return x.permute(0, 2, 4, 1, 5, 3).reshape(B, -1, C * p * p)
    if order == "no permute":
        return images.reshape(B, -1, C * p * p)
    raise ValueError(order)


PATCHIFY_MISTAKES = {
    "channels last": "it flattens each patch in (P, P, C) order. Flatten in (C, P, P) order — channels first — "
                     "so a patch lines up with a Conv2d weight (D, C, P, P): permute to (B, H/P, W/P, C, P, P).",
    "columns first": "it lists the patches column by column. Use raster order: row by row, left to right "
                     "(the patch-row index comes before the patch-column index).",
    "pixels columns first": "inside each patch it reads the pixels column by column. Keep the pixel-row index "
                            "before the pixel-column index: (C, P_row, P_col), as in the image itself.",
    "no permute": "it is a plain reshape, which mixes pixels of different patches. Split H into (H/P, P) "
                  "and W into (W/P, P), permute the two patch indices to the front, then flatten.",
}


def _patchify_cases(rng):
    """(B, C, grid_h, grid_w, P, dtype, name): the general case first, so every mistake shows in it."""
    grid_h = rng.randint(2, 5)
    return [
        (rng.randint(1, 3), rng.randint(2, 4), grid_h, rng.choice([g for g in range(2, 7) if g != grid_h]),
         rng.randint(2, 5), torch.float32, "non-square"),
        (rng.randint(1, 3), 1, rng.randint(1, 4), rng.randint(1, 4), rng.choice([3, 5]), torch.float32,
         "one channel, odd patch size"),
        (rng.randint(1, 2), rng.randint(2, 5), rng.randint(1, 5), rng.randint(1, 5), 1, torch.float32,
         "patch size 1"),
        (rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 4), rng.randint(2, 6),
         torch.float64, "float64"),
    ]


@check("patchify", points=2)
def check_patchify(patchify):
    rng = check_rng()
    generator = torch_generator(rng)
    for B, C, grid_h, grid_w, p, dtype, _ in _patchify_cases(rng):
        images = torch.randn(B, C, grid_h * p, grid_w * p, generator=generator, dtype=dtype)
        what = f"patchify(images {tuple(images.shape)}, {p})"
        expected = patching.patchify(images, p)
        out = call_learner(patchify, images, p, what=what)
        expect_shape(out, expected.shape, what,
                     hint="N = (H/P)·(W/P) patches, each a vector of C·P·P values (images need not be square, "
                          "and C need not be 3).")
        _expect_dtype(out, expected, what)
        # where a mistake gives the right answer on this input (C = 1, P = 1, a 1-wide grid) it is skipped
        expect_known_mistakes(out, expected, [(_patches(images, p, order), hint)
                                              for order, hint in PATCHIFY_MISTAKES.items()], what,
                              hint="reshape to (B, C, H/P, P, W/P, P), permute to (B, H/P, W/P, C, P, P), "
                                   "reshape to (B, N, C·P·P).")


# ----------------------------------------------------------------------------- patch embedding

def _embed_cases(rng):
    """(B, C, D, grid_h, grid_w, P, dtype): the first case has N != D, so (B, D, N) can't pass for (B, N, D)."""
    grid_h, grid_w = rng.randint(2, 4), rng.randint(2, 4)
    return [
        (rng.randint(1, 3), rng.randint(2, 4), rng.choice([d for d in range(2, 10) if d != grid_h * grid_w]),
         grid_h, grid_w, rng.randint(2, 5), torch.float32),
        (rng.randint(1, 3), 1, rng.randint(1, 8), rng.randint(1, 3), rng.randint(1, 5), rng.choice([1, 3]),
         torch.float32),
        (rng.randint(1, 3), rng.randint(1, 4), rng.randint(2, 9), rng.randint(1, 4), rng.randint(1, 4),
         rng.randint(2, 5), torch.float64),
    ]


@check("patch_embed_linear", points=1)
def check_patch_embed_linear(patch_embed_linear):
    rng = check_rng()
    generator = torch_generator(rng)
    for B, C, D, grid_h, grid_w, p, dtype in _embed_cases(rng):
        images = torch.randn(B, C, grid_h * p, grid_w * p, generator=generator, dtype=dtype)
        weight = torch.randn(D, C, p, p, generator=generator, dtype=dtype) / p
        bias = torch.randn(D, generator=generator, dtype=dtype)
        N = grid_h * grid_w
        what = (f"patch_embed_linear(images {tuple(images.shape)}, conv_weight {tuple(weight.shape)}, "
                f"conv_bias ({D},), {p})")
        expected = patching.patch_embed_linear(images, weight, bias, p)         # == the conv, as (B, N, D)
        out = call_learner(patch_embed_linear, images, weight, bias, p, what=what)
        if isinstance(out, torch.Tensor) and out.shape == (B, D, N) and D != N:
            raise Hint(f"{what} has shape {(B, D, N)} = (B, D, N): put the patches first, (B, N, D).")
        expect_shape(out, expected.shape, what, hint=f"one D-vector per patch: (B, N, D) with N = {N} patches "
                                                     f"and D = {D}.")
        _expect_dtype(out, expected, what)
        patches = patching.patchify(images, p)                                  # (B, N, C·P·P)
        expect_known_mistakes(out, expected, [
            (patches @ weight.reshape(D, -1).T, "it is missing the bias: add conv_bias to every patch vector."),
            (patches @ weight.reshape(-1, D) + bias,
             "it reshapes the weight to (C·P·P, D) directly, which scrambles it. "
             "Reshape it to (D, C·P·P) — one row per output channel — then transpose."),
            (_patches(images, p, "channels last") @ weight.reshape(D, -1).T + bias,
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


def _attention_cases(rng, generator):
    """(q, k, v, mask, name): random sizes, L != S, a different head size d in every case; no query row is
    fully masked."""
    def qkv(B, H, L, S, d, dtype=torch.float32):
        return [torch.randn(B, H, n, d, generator=generator, dtype=dtype) for n in (L, S, S)]

    def sizes(min_queries=1):
        L = rng.randint(min_queries, 6)
        return rng.randint(1, 3), rng.randint(1, 4), L, L + rng.randint(1, 4)

    B, H, L, _ = sizes()
    S = rng.choice([s for s in range(1, 9) if s != L])                  # fewer or more keys than queries
    head_dims = rng.sample([d for d in range(2, 13) if d != S], 4)      # d != S: (weights, output) can't be swapped
    cases = [(*qkv(B, H, L, S, head_dims[0]), None, "no mask")]
    B, H, L, S = sizes(min_queries=2)                                   # one query would see every key anyway
    cases.append((*qkv(B, H, L, S, head_dims[1]), attention_lib.causal_mask(L, S), f"a causal ({L}, {S}) mask"))
    B, H, L, S = sizes()
    lengths = [rng.randint(1, S - 1) for _ in range(B)]                 # every sequence has some padding
    padding = (torch.arange(S) < torch.tensor(lengths)[:, None])[:, None, None, :]
    cases.append((*qkv(B, H, L, S, head_dims[2]), padding, f"a padding ({B}, 1, 1, {S}) mask"))
    B, H, L, S = sizes(min_queries=2)                                   # a mask that differs between queries
    allowed = torch.rand(B, H, L, S, generator=generator) < 0.6
    allowed[..., rng.randrange(S)] = True
    cases.append((*qkv(B, H, L, S, head_dims[3], torch.float64), allowed, f"a ({B}, {H}, {L}, {S}) mask, float64"))
    return cases


@check("attention", points=2)
def check_attention(attention):
    rng = check_rng()
    for q, k, v, mask, name in _attention_cases(rng, torch_generator(rng)):
        what = f"attention(q {tuple(q.shape)}, k {tuple(k.shape)}, v) with {name}"
        expected_out, expected_weights = attention_lib.attention_math(q, k, v, mask)
        result = call_learner(attention, q, k, v, mask, what=what)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Hint(f"{what} should return a pair (output, weights), got {type(result).__name__}.")
        out, weights = result
        if (isinstance(out, torch.Tensor) and isinstance(weights, torch.Tensor) and out.shape != weights.shape
                and out.shape == expected_weights.shape and weights.shape == expected_out.shape):
            raise Hint(f"{what} returns (weights, output): return them in the order (output, weights).")
        expect_shape(weights, expected_weights.shape, f"{what}: weights",
                     hint="one weight per (query, key): (B, H, L, S).")
        expect_shape(out, expected_out.shape, f"{what}: output", hint="a weighted average of values: (B, H, L, d).")
        _expect_dtype(weights, expected_weights, f"{what}: weights")
        _expect_dtype(out, expected_out, f"{what}: output")
        expect_known_mistakes(weights, expected_weights,
                              [(_attention_variant(q, k, v, mask, variant)[1], hint)
                               for variant, hint in ATTENTION_MISTAKES.items()], f"{what}: weights",
                              hint="softmax(q @ kᵀ / √d) over the keys, with masked scores set to -inf first "
                                   "(the mask broadcasts to (B, H, L, S) as it is).")
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
    if variant == "swapped norms":
        x = x + block.attn(block.mlp_norm(x))
        return x + block.mlp(block.attn_norm(x))
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
    "swapped norms": "the two norms are swapped: attn_norm goes before the attention, mlp_norm before the MLP.",
}


def _random_block(rng, dim, heads, dtype, **kinds):
    """A TransformerBlock with non-trivial norms, so that a swapped or skipped norm shows up."""
    with _seeded_global_rng(rng):
        block = TransformerBlock(dim=dim, heads=heads, mlp_hidden=rng.randint(dim, 3 * dim), **kinds)
        for norm in (block.attn_norm, block.mlp_norm):
            torch.nn.init.normal_(norm.weight, 1.0, 0.3)
            if getattr(norm, "bias", None) is not None:
                torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    return block.to(dtype).eval()


@check("vit_block_forward", points=1)
def check_vit_block_forward(vit_block_forward):
    rng = check_rng()
    generator = torch_generator(rng)
    cases = [(torch.float32, {}), (torch.float32, {"norm": "rmsnorm", "mlp": "swiglu"}), (torch.float64, {})]
    # a different number of heads in each case, and N >= 2 where it matters (one token attends only to itself)
    for (dtype, kinds), heads, min_tokens in zip(cases, rng.sample(range(1, 5), 3), (2, 2, 1)):
        B, N, D = rng.randint(1, 3), rng.randint(min_tokens, 9), heads * rng.randint(2, 8)
        block = _random_block(rng, D, heads, dtype, **kinds)
        x = torch.randn(B, N, D, generator=generator, dtype=dtype) * 2 + 1
        kind = "an RMSNorm/SwiGLU block" if kinds else "a LayerNorm/GELU block"
        what = f"vit_block_forward(block, x {(B, N, D)}) with {kind} of {heads} head(s)"
        with torch.no_grad():
            expected = block(x)
            out = call_learner(vit_block_forward, block, x, what=what)
            expect_shape(out, expected.shape, what, hint="a block keeps the shape (B, N, D).")
            _expect_dtype(out, expected, what)
            expect_known_mistakes(out, expected, [(_block_variant(block, x, variant), hint)
                                                  for variant, hint in BLOCK_MISTAKES.items()], what,
                                  hint="x = x + block.attn(block.attn_norm(x)); x = x + block.mlp(block.mlp_norm(x))")


# ----------------------------------------------------------------------------- experiment: do positions matter?

# The task: where is the one object of a scene? Its cell (row * 2 + col) is the class: top left,
# top right, bottom left, bottom right. A quadrant is 16 pixels = 2 patches of 8, so moving the
# object to another quadrant only permutes the patches: without positions the ViT sees the same bag.
EXPERIMENT = dict(image_size=32, patch_size=8, dim=32, depth=1, heads=2, steps=150, batch_size=64, lr=3e-3,
                  position_std=0.3)
MIN_ACCURACY_WITH, MAX_ACCURACY_WITHOUT = 0.9, 0.3


def one_object_scenes(image_size=32):
    """Every one-object scene of the 2 × 2 Shapes world, 3 shapes × 7 colours × 2 sizes × 4 cells = 168:
    images (168, 3, H, W) and the object's cell (168,), the class of the where-is-it task."""
    objects = [[{"shape": shape, "color": color, "size": size, "cell": cell}]
               for shape in SHAPES for color in COLORS for size in SIZES for cell in range(4)]
    scenes = scenes_from_objects(objects, WorldConfig(min_objects=1, max_objects=1))
    return render(scenes, image_size), scenes.cell[:, 0].clone()


def _classify_variant(model, images, use_positions, variant=None):
    """The reference forward of the exercise, or one of its usual mistakes."""
    vit = model.vit
    x = vit.patch_embed(images)
    if use_positions and variant not in ("no positions", "positions after the blocks"):
        x = x + vit.pos_embed
    if variant == "positions without the flag":
        x = x + vit.pos_embed
    for block in vit.blocks:
        x = block(x)
    if use_positions and variant == "positions after the blocks":
        x = x + vit.pos_embed
    if variant == "norm after pooling":
        return model.head(vit.norm(x.mean(dim=1)))
    if variant != "no final norm":
        x = vit.norm(x)
    if variant == "first token":
        return model.head(x[:, 0])
    return model.head(x.sum(dim=1) if variant == "sum" else x.mean(dim=1))


CLASSIFY_MISTAKES = {
    "no positions": "with use_positions=True, add model.vit.pos_embed (1, N, D) to the patch embeddings "
                    "before the blocks.",
    "positions without the flag": "with use_positions=False, add no position vectors: that model must see "
                                  "only a bag of patches.",
    "positions after the blocks": "add the positions to the patch embeddings, before the blocks, not after them.",
    "no final norm": "apply the final LayerNorm, model.vit.norm, to the tokens after the last block.",
    "norm after pooling": "normalise each token with model.vit.norm first, then average the tokens.",
    "first token": "this model has no [CLS] token: pool by averaging all N patch tokens (mean over dim=1).",
    "sum": "average the tokens (mean over dim=1), don't sum them.",
}


def _expect_classify_matches_vit(vit_classify, rng):
    """The learner's forward equals the package's ViT (with and without positions) on a random model."""
    heads, patch, grid = rng.randint(2, 3), rng.randint(2, 4), rng.randint(2, 4)
    # D >= 8: a LayerNorm over very few channels maps most tokens to the same few vectors, hiding mistakes
    config = ViTConfig(image_size=patch * grid, patch_size=patch, dim=heads * rng.randint(4, 8),
                       depth=rng.randint(1, 2), heads=heads, positions="learned", pool="mean")
    classes = rng.randint(2, 5)
    with _seeded_global_rng(rng):
        model = ViTClassifier(config, classes).eval()
        torch.nn.init.normal_(model.vit.pos_embed, 0.0, 0.5)
        without = ViTClassifier(replace(config, positions="none"), classes).eval()
    without.load_state_dict(model.state_dict(), strict=False)             # the same weights, no position table
    images = torch.randn(rng.randint(1, 3), 3, config.image_size, config.image_size, generator=torch_generator(rng))
    with torch.no_grad():
        for use_positions, reference in ((True, model), (False, without)):
            what = (f"vit_classify(model, images {tuple(images.shape)}, use_positions={use_positions}) "
                    f"on a ViT of depth {config.depth}")
            expected = reference(images)
            out = call_learner(vit_classify, model, images, use_positions, what=what)
            expect_shape(out, expected.shape, what, hint="one logit per class: (B, num_classes).")
            _expect_dtype(out, expected, what)
            expect_known_mistakes(out, expected, [(_classify_variant(model, images, use_positions, variant), hint)
                                                  for variant, hint in CLASSIFY_MISTAKES.items()], what,
                                  hint="patch_embed, (+ pos_embed), every block, norm, mean over the tokens, head.")


def position_experiment(vit_classify, seed, steps=EXPERIMENT["steps"]):
    """Train the where-is-the-object ViT twice, with `vit_classify` and use_positions True, then False, from the
    same initial weights and batches; return {True: accuracy, False: accuracy} on all 168 one-object scenes."""
    e = EXPERIMENT
    images, labels = one_object_scenes(e["image_size"])
    rng_seed = torch.Generator().manual_seed(seed)
    batches = torch.randint(len(images), (steps, e["batch_size"]), generator=rng_seed)
    model_seed = int(torch.randint(2**62, (), generator=rng_seed))
    accuracies = {}
    with one_thread():
        for use_positions in (True, False):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(model_seed)
                model = ViTClassifier(ViTConfig(image_size=e["image_size"], patch_size=e["patch_size"], dim=e["dim"],
                                                depth=e["depth"], heads=e["heads"], positions="learned", pool="mean"),
                                      num_classes=4)
                # ViT's 0.02 start is too faint to be picked up in 150 steps; a larger one is learned at once
                torch.nn.init.normal_(model.vit.pos_embed, 0.0, e["position_std"])

            def loss_fn(model, batch, use_positions=use_positions):
                logits = call_learner(vit_classify, model, batch[0], use_positions, what="vit_classify")
                if not logits.requires_grad:
                    raise Hint("vit_classify's logits carry no gradient, so nothing can train: don't use "
                               "torch.no_grad() or .detach() in it.")
                return F.cross_entropy(logits, batch[1])

            fit(model, lambda step: (images[batches[step]], labels[batches[step]]), loss_fn,
                TrainConfig(steps=steps, lr=e["lr"], warmup_steps=10, device="cpu", progress=False))
            model.eval()
            with torch.no_grad():
                logits = call_learner(vit_classify, model, images, use_positions, what="vit_classify")
            accuracies[use_positions] = (logits.argmax(-1) == labels).double().mean().item()
    return accuracies


@check("positions_experiment", points=3)
def check_positions_experiment(vit_classify):
    rng = check_rng()
    _expect_classify_matches_vit(vit_classify, rng)
    accuracy = position_experiment(vit_classify, seed=rng.getrandbits(31))
    if accuracy[True] < MIN_ACCURACY_WITH:
        raise Hint(f"with positions the trained ViT found the object in only {accuracy[True]:.0%} of the 168 scenes "
                   f"(expected ≥ {MIN_ACCURACY_WITH:.0%}). Hint: let the gradient reach the model and its pos_embed "
                   "(no torch.no_grad() or .detach() in vit_classify).")
    if accuracy[False] > MAX_ACCURACY_WITHOUT:
        raise Hint(f"without positions the trained ViT found the object in {accuracy[False]:.0%} of the scenes, but a "
                   "bag of patches can't know where the object is (expected about 25%, chance). Hint: with "
                   "use_positions=False, nothing in vit_classify may depend on where a patch sits.")


# ----------------------------------------------------------------------------- concept questions

@check("attention_weights_224", points=1)
def check_attention_weights_224(attention_weights_224):
    answer = call_learner(attention_weights_224, what="attention_weights_224()")
    config = ViTConfig(image_size=224, patch_size=16, dim=8, depth=1, heads=1, pool="cls")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        weights = ViT(config).attention_maps(torch.zeros(1, 3, 224, 224))[0]    # (1, heads, N + 1, N + 1)
    tokens = weights.shape[-1]
    answer = answer_number(answer, "attention_weights_224()", integer=True)
    mistakes = {
        (tokens - 1) ** 2: "the [CLS] token is part of the sequence too: it is a query and a key like every patch.",
        tokens: "that is the number of tokens. A head computes one weight for every (query, key) pair.",
        tokens - 1: "that is the number of patches. Add the [CLS] token, then count the (query, key) pairs.",
    }
    if answer != weights[0, 0].numel():
        raise Hint(f"attention_weights_224() returned {answer}, which is not it. Hint: "
                   + mistakes.get(answer, "count the tokens first (the patches of the (224/16) × (224/16) grid, "
                                          "plus [CLS]); a head has one weight per (query, key) pair."))


PADDING_OPTIONS = {"a": "keep", "b": "keep[:, None, None, :]", "c": "keep[:, :, None, None]", "d": "keep[None, None]"}
PADDING_HINTS = {
    "a": "broadcasting lines up the last dimensions: (B, S) meets the (L, S) of (B, H, L, S), so query i would use "
         "sequence i's padding (and it fails when B != L).",
    "c": "(B, S, 1, 1) puts the keys on the heads axis. The keys are the last axis of (B, H, L, S).",
    "d": "(1, 1, B, S) puts the batch on the query axis L: query i would use sequence i's padding.",
}


def _padding_options(keep):
    return {"a": keep, "b": keep[:, None, None, :], "c": keep[:, :, None, None], "d": keep[None, None]}


@check("padding_mask", points=1)
def check_padding_mask(padding_mask):
    answer = call_learner(padding_mask, what="padding_mask()")
    letter = answer_choice(answer, PADDING_OPTIONS, "padding_mask()")
    B, H, L, S = 3, 2, 3, 4                 # B = L, so that the wrong options broadcast and can be compared
    keep = torch.tensor([[True] * 4, [True] * 2 + [False] * 2, [True] * 3 + [False]])
    wanted = attention_lib.build_mask(B, H, L, S, key_padding_mask=keep).expand(B, H, L, S)
    right = [option for option, mask in _padding_options(keep).items()
             if _broadcasts(mask, (B, H, L, S)) and torch.equal(mask.expand(B, H, L, S), wanted)]
    if letter not in right:
        raise Hint(f"padding_mask() returned {letter!r} ({PADDING_OPTIONS[letter]}), which is not it. "
                   f"Hint: {PADDING_HINTS.get(letter, 'the mask must broadcast to (B, H, L, S) with the keys last.')}")


def _broadcasts(tensor, shape):
    try:
        torch.broadcast_shapes(tensor.shape, shape)
    except RuntimeError:
        return False
    return torch.broadcast_shapes(tensor.shape, shape) == torch.Size(shape)


@check("patch_embed_parameters", points=1)
def check_patch_embed_parameters(patch_embed_parameters):
    answer = call_learner(patch_embed_parameters, what="patch_embed_parameters()")
    with torch.device("meta"):                  # shapes only: no memory, no random numbers
        embed = patching.PatchEmbed(patch_size=16, in_channels=3, dim=768)
    weights, biases = embed.proj.weight.numel(), embed.proj.bias.numel()
    answer = answer_number(answer, "patch_embed_parameters()", integer=True)
    mistakes = {
        weights: "every output channel also has a bias.",
        weights * 196 + biases: "the same weights are applied to every patch: the count doesn't depend on the "
                                "number of patches.",
        3 * 16 * 16: "that is the length of one flattened patch (C·P·P); the layer maps it to D = 768 values.",
    }
    if answer != weights + biases:
        raise Hint(f"patch_embed_parameters() returned {answer}, which is not it. Hint: "
                   + mistakes.get(answer, "the conv is one linear map from a flattened patch (C·P·P values) to D "
                                          "values, shared by every patch, plus a bias per output."))
