"""Architecture figures drawn from a model's own config, so every number in them is the config's:

    vit_figure(ViTConfig)        chapter 01: patches -> tokens -> pre-norm blocks -> pooled vector
    decoder_figure(LMConfig)     chapter 04: the decoder block, and the KV cache of generation
    llava_figure(LlavaConfig)    chapter 05: the visual tokens spliced in place of <image>

Boxes and arrows on a canvas measured in inches. No model imports: a config is read by its fields.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch


FONT = 8.5                        # points
CHAR = FONT / 72 * 0.62           # inches per character (a generous average for the default font)
LINE = FONT / 72 * 1.3            # inches per line of text
FILL = dict(data="#eeeeee", vision="#cfe2ff", embed="#fff3c4", norm="#e8e0f5", attn="#ffd6d6",   # box colours
            mlp="#d1f0d1", answer="#c9ecd6", new="#fdae6b")


def _canvas(width, height, title):
    """A figure whose data units are inches, (0, 0) bottom left, with a title on top."""
    figure = plt.figure(figsize=(width, height))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, width)
    axis.set_ylim(0, height)
    axis.axis("off")
    axis.text(width / 2, height - 0.15, title, ha="center", va="top", fontsize=FONT + 2)
    return figure, axis


def _size(text):
    """(width, height) in inches of a box that holds text."""
    lines = text.split("\n")
    return max(map(len, lines)) * CHAR + 0.2, len(lines) * LINE + 0.16


def _box(axis, x, y, text, color, width, height, stacked=False):
    """A rounded box centred at (x, y) with text in it; stacked draws two cards behind it (× depth).
    Returns its edges (left, right, bottom, top)."""
    for lift in ((0.16, 0.08) if stacked else ()) + (0,):
        axis.add_patch(FancyBboxPatch((x - width / 2, y - height / 2 + lift), width, height,
                                      boxstyle="round,pad=0,rounding_size=0.06", facecolor=color,
                                      edgecolor="0.35", linewidth=1))
    axis.text(x, y, text, ha="center", va="center", fontsize=FONT)
    return x - width / 2, x + width / 2, y - height / 2, y + height / 2


def _arrow(axis, start, end):
    axis.annotate("", xy=end, xytext=start,
                  arrowprops=dict(arrowstyle="-|>", color="0.2", lw=1.1, shrinkA=0, shrinkB=0))


def _row(axis, y, items, x=None, width=13.0, gap=0.35):
    """Boxes (text, colour[, stacked]) left to right from x (None: centred on a canvas `width` wide;
    "right": flush right) at height y, joined by arrows; "+" is a residual add. Returns each box's edges."""
    height = max(_size(item[0])[1] for item in items)
    widths = [0.34 if item[0] == "+" else _size(item[0])[0] for item in items]
    spare = width - sum(widths) - gap * (len(widths) - 1)
    x = spare / 2 if x is None else spare - 0.2 if x == "right" else x
    edges = []
    for item, w in zip(items, widths):
        if item[0] == "+":
            axis.add_patch(Circle((x + w / 2, y), w / 2, facecolor="white", edgecolor="0.35"))
            axis.text(x + w / 2, y, "+", ha="center", va="center", fontsize=FONT + 3)
            edges.append((x, x + w, y - w / 2, y + w / 2))
        else:
            edges.append(_box(axis, x + w / 2, y, item[0], item[1], w, height, stacked=len(item) > 2))
        x += w + gap
    for before, after in zip(edges, edges[1:]):
        _arrow(axis, (before[1], y), (after[0], y))
    return edges


def _block_row(axis, y, x_text, norm, attention, mlp):
    """One pre-norm block drawn open: x -> norm -> attention -> + -> norm -> MLP -> + -> x, with both
    residual paths; inside a dashed frame. Returns the frame's (left, right, bottom, top)."""
    edges = _row(axis, y, [(x_text, FILL["data"]), (norm, FILL["norm"]), (attention, FILL["attn"]), ("+",),
                           (norm, FILL["norm"]), (mlp, FILL["mlp"]), ("+",), (x_text, FILL["data"])])
    over = max(edge[3] for edge in edges) + 0.2
    for before, add in ((0, 3), (3, 6)):
        start, centre = (edges[before][1] + edges[before + 1][0]) / 2, (edges[add][0] + edges[add][1]) / 2
        axis.plot([start, start, centre], [y, over, over], color="0.2", lw=1.1)
        _arrow(axis, (centre, over), (centre, y + 0.17))
    frame = (edges[0][0] - 0.12, edges[-1][1] + 0.12, 2 * y - over - 0.2, over + 0.2)
    axis.add_patch(FancyBboxPatch(frame[::2], frame[1] - frame[0], frame[3] - frame[2], facecolor="none",
                                  boxstyle="round,pad=0,rounding_size=0.1", edgecolor="0.5", linestyle="--"))
    return frame


def _opens_into(axis, box, frame):
    """Dashed lines from the bottom corners of a box to the top corners of the frame that draws it open."""
    for corner, x in ((box[0], frame[0]), (box[1], frame[1])):
        axis.plot([corner, x], [box[2], frame[3]], color="0.5", lw=0.8, linestyle="--")


def vit_figure(config):
    """A vit.ViTConfig drawn: images (B, C, H, W) -> N patch tokens (B, N, D) -> depth pre-norm
    blocks (one drawn open) -> LayerNorm -> pooled (B, D). Returns the Figure."""
    c = config
    g, D, P, C = c.image_size // c.patch_size, c.dim, c.patch_size, c.channels
    N, hidden, head_dim = g * g, int(c.dim * c.mlp_ratio), c.dim // c.heads
    L = N + (c.pool == "cls")
    positions = {"learned": f"+ learned positions\none vector per patch\n({N} × {D} table)",
                 "sincos": "+ fixed 2D sin/cos\nof (row, col)",
                 "rope2d": "no added positions:\n2D RoPE turns q, k\nin every block",
                 "none": "no positions\n(a bag of patches)"}[c.positions]
    positions += f"\nprepend [CLS]: (B, {L}, {D})" if c.pool == "cls" else f"\n(B, {L}, {D})"
    pooled = "the [CLS] token" if c.pool == "cls" else f"mean of {N} tokens"
    figure, axis = _canvas(13, 4.7, f"ViT: a {c.image_size} × {c.image_size} image becomes N = {N} tokens of "
                                    f"D = {D} dimensions, then one vector (B, {D})")
    top = _row(axis, 3.55, [
        (f"image\n{c.image_size} × {c.image_size} px\n(B, {C}, {c.image_size}, {c.image_size})", FILL["data"]),
        (f"patchify\n{g} × {g} grid of {P} × {P} px\nN = {N} patches\nof {C}·{P}·{P} = {C * P * P} values",
         FILL["vision"]),
        (f"patch embedding\nLinear {C * P * P} → {D}\n(a Conv2d, stride {P})\n(B, {N}, {D})", FILL["embed"]),
        (positions, FILL["embed"]),
        (f"{c.depth} × pre-norm\nblock\n(B, {L}, {D})", FILL["attn"], "stacked"),
        (f"final\nLayerNorm\n({D})", FILL["norm"]),
        (f"pool: {pooled}\npooled (B, {D})\ntokens (B, {N}, {D})", FILL["data"])])
    rope = "\nq, k turned by 2D RoPE" if c.positions == "rope2d" else ""
    frame = _block_row(axis, 1.2, f"x\n(B, {L}, {D})", f"LayerNorm\n({D})",
                       f"multi-head attention\n{c.heads} heads × {head_dim} dims\nsoftmax(q kᵀ / √{head_dim}) v{rope}",
                       f"MLP\nLinear {D} → {hidden}\nGELU\nLinear {hidden} → {D}")
    _opens_into(axis, top[4], frame)
    axis.text(frame[0], frame[2] - 0.08, f"each of the {c.depth} blocks: x ← x + attention(LayerNorm(x)), "
              f"then x ← x + MLP(LayerNorm(x))", fontsize=FONT, color="0.3", va="top")
    return figure


def decoder_figure(config):
    """An lm.LMConfig drawn: token ids (B, L) -> embedding -> depth decoder blocks (one drawn open)
    -> RMSNorm -> lm_head -> logits (B, L, V), and the KV cache that generation keeps per layer."""
    c = config
    D, V, H, head_dim = c.dim, c.vocab_size, c.heads, c.dim // c.heads
    rope = (f"M-RoPE turns q, k\n(t, h, w) pairs {'/'.join(map(str, c.mrope_section))}" if c.rope == "mrope"
            else f"RoPE turns q, k (θ base {c.rope_theta:g})")
    head = (f"lm_head, tied:\nthe embedding matrix\nreused, {D} → {V}" if c.tie_embeddings
            else f"lm_head\nLinear {D} → {V}\n(its own weights)")
    figure, axis = _canvas(13, 6.3, f"Decoder LM: {c.depth} blocks of width D = {D}, {H} heads, a vocabulary "
                                    f"of V = {V}, up to {c.max_seq_len} tokens")
    top = _row(axis, 5.25, [(f"token ids\n(B, L)", FILL["data"]),
                           (f"embedding\n{V} × {D} table\n(B, L, {D})", FILL["embed"]),
                           (f"{c.depth} × decoder\nblock\n(B, L, {D})", FILL["attn"], "stacked"),
                           (f"RMSNorm\n({D})", FILL["norm"]), (head, FILL["embed"]),
                           (f"logits\n(B, L, {V})", FILL["data"])])
    frame = _block_row(axis, 3.1, f"x\n(B, L, {D})", f"RMSNorm\n({D})",
                       f"causal self-attention\n{H} heads × {head_dim} dims\n{rope}\nno biases",
                       f"SwiGLU\nw1, w3: {D} → {c.mlp_hidden}\nsilu(w1 x) ⊙ w3 x\nw2: {c.mlp_hidden} → {D}")
    _opens_into(axis, top[2], frame)
    axis.text(frame[0], frame[2] - 0.08, f"each of the {c.depth} blocks: x ← x + attention(RMSNorm(x)), "
              f"then x ← x + SwiGLU(RMSNorm(x)); positions enter only through the rotation of q and k",
              fontsize=FONT, color="0.3", va="top")

    # generation: per layer, the keys and values of the S earlier tokens, and one new token appending its own
    y, cell, left = 0.75, 0.3, 0.65
    axis.text(0.2, y + 0.85, "generating with a KV cache", fontsize=FONT + 1, va="center")
    for lift, name in ((0.2, "K"), (-0.2, "V")):
        axis.text(left - 0.1, y + lift, name, ha="right", va="center", fontsize=FONT)
        for k in range(9):
            axis.add_patch(FancyBboxPatch((left + k * cell, y + lift - 0.15), cell - 0.04, 0.26,
                                          boxstyle="square,pad=0", facecolor=FILL["new"] if k == 8 else FILL["norm"],
                                          edgecolor="0.35", linewidth=0.8))
    axis.text(left, y + 0.45, f"per layer (× {c.depth}): (B, {H}, S, {head_dim})", va="bottom", fontsize=FONT)
    axis.text(left + 4 * cell, y - 0.45, "S earlier tokens", ha="center", va="top", fontsize=FONT)
    axis.text(left + 8.5 * cell, y - 0.45, "new", ha="center", va="top", fontsize=FONT)
    text = f"one new token (B, 1)\nits q, k, v: (B, {H}, 1, {head_dim})\nk, v appended: S → S + 1"
    new = _box(axis, left + 9 * cell + 0.6 + _size(text)[0] / 2, y, text, FILL["new"], *_size(text))
    _arrow(axis, (new[0], y), (left + 9 * cell, y))
    axis.text(new[1] + 0.3, y, f"its one query attends to all S + 1 cached keys, so a step runs one token\n"
              f"through the model instead of the whole prefix; S ≤ max_seq_len = {c.max_seq_len};\n"
              f"the cache holds 2 × {c.depth} layers × B × S × {D} numbers", va="center", fontsize=FONT)
    return figure


CHAT = "<bos> <user> <image> how many circles are there ? <assistant> two <eos>"


def _tokens(axis, x, y, words, colors):
    """One small box per token, left to right from x; returns each box's edges."""
    edges = []
    for word, color in zip(words, colors):
        width = _size(word)[0] - 0.06
        edges.append(_box(axis, x + width / 2, y, word, color, width, LINE + 0.16))
        x += width + 0.07
    return edges


def llava_figure(config):
    """A models.llava.LlavaConfig drawn: image -> ViT -> projector -> T visual tokens, spliced in place
    of the one <image> token of a chat prompt (L tokens -> L - 1 + T) -> the LM, trained on the answer."""
    c = config
    g, T, Dv, Dt, r = c.image_size // c.patch_size, c.num_visual_tokens, c.vision_dim, c.text_dim, c.unshuffle_factor
    projector = {"linear": f"projector: linear\nLinear {Dv} → {Dt}\none token per patch",
                 "mlp": f"projector: MLP\nLinear {Dv} → {Dt}, GELU,\nLinear {Dt} → {Dt}\none token per patch",
                 "unshuffle": f"projector: pixel unshuffle\neach {r} × {r} window → 1 token:\n"
                              f"({g}/{r})² = {T} tokens of {Dv}·{r}² = {Dv * r * r}\nLayerNorm, MLP → {Dt}"}[c.projector]
    words = CHAT.split()
    L, image_at, answer_at = len(words), words.index("<image>"), words.index("<assistant>") + 1
    figure, axis = _canvas(13, 6.0, f"LLaVA: {T} visual tokens of width {Dt} take the place of the <image> token; "
                                    f"the language model answers")
    vision = _row(axis, 4.95, [
        (f"image\n{c.image_size} × {c.image_size} px", FILL["data"]),
        (f"ViT: {c.vision_depth} blocks, {c.vision_heads} heads, {c.vision_positions} positions\n"
         f"{g} × {g} grid of {c.patch_size} px patches:\n{g * g} tokens of width {Dv}", FILL["vision"]),
        (projector, FILL["embed"]), (f"T = {T} visual tokens\n(B, {T}, {Dt})", FILL["vision"])], x="right")

    prompt_y, merged_y, x0 = 3.55, 2.25, 1.75
    axis.text(0.2, prompt_y, f"chat prompt\nL = {L} tokens", va="center", fontsize=FONT)
    prompt = _tokens(axis, x0, prompt_y, words, [FILL["new"] if w == "<image>" else FILL["data"] for w in words])
    shown = [f"v{k}" for k in range(1, T + 1)] if T <= 8 else ["v1", "v2", "v3", "…", f"v{T}"]
    merged_words = words[:image_at] + shown + words[image_at + 1:]
    first_answer = answer_at - 1 + len(shown)                         # where the answer sits after the splice
    colors = ([FILL["data"]] * image_at + [FILL["vision"]] * len(shown)
              + [FILL["data"]] * (first_answer - image_at - len(shown)) + [FILL["answer"]] * (L - answer_at))
    axis.text(0.2, merged_y, f"LM input\nL − 1 + T\n= {L} − 1 + {T} = {L - 1 + T}", va="center", fontsize=FONT)
    merged = _tokens(axis, x0, merged_y, merged_words, colors)
    run = (merged[image_at][0] + merged[image_at + len(shown) - 1][1]) / 2

    # the splice: the <image> token, and the projector's output, both land on the run of visual tokens
    middle = (prompt_y + merged_y) / 2
    spliced = vision[-1]
    axis.plot([(spliced[0] + spliced[1]) / 2] * 2 + [run], [spliced[2], middle, middle], color="0.2", lw=1.1)
    axis.plot([(prompt[image_at][0] + prompt[image_at][1]) / 2, run], [prompt[image_at][2], middle],
              color="0.2", lw=1.1)
    _arrow(axis, (run, middle), (run, merged[image_at][3]))
    axis.text(run + 0.3, middle + 0.06, f"the one <image> token is replaced by the {T} visual tokens",
              fontsize=FONT, va="bottom")

    # the labels: -100 on the prompt and the image, the next-token loss on the answer
    for (start, end), text in (((0, first_answer - 1), "label −100: no loss on the prompt and the image"),
                               ((first_answer, len(merged) - 1), "loss")):
        low = merged_y - 0.3
        axis.plot([merged[start][0], merged[start][0], merged[end][1], merged[end][1]],
                  [low + 0.06, low, low, low + 0.06], color="0.35", lw=1)
        axis.text((merged[start][0] + merged[end][1]) / 2, low - 0.05, text, ha="center", va="top", fontsize=FONT)

    attention = ("image + question see each other, the answer is causal" if c.prefix == "bidirectional"
                 else "causal everywhere")
    lm = _row(axis, 0.75, [
        (f"language model: {c.text_depth} decoder blocks, width {Dt}, {c.text_heads} heads\n"
         f"attention: {attention}", FILL["attn"]),
        (f"logits\n(B, {L - 1 + T}, {c.vocab_size})", FILL["data"]),
        (f"answer\n\"{' '.join(words[answer_at:-1])}\"", FILL["answer"])], x=x0)
    turn, centre = merged[-1][1] + 0.3, (lm[0][0] + lm[0][1]) / 2
    axis.plot([merged[-1][1], turn, turn, centre], [merged_y, merged_y, 1.4, 1.4], color="0.2", lw=1.1)
    _arrow(axis, (centre, 1.4), (centre, lm[0][3]))
    return figure
