"""Checks for chapter 05 (LLaVA and InternVL's pixel unshuffle).

    from minivlm.course.grading import ch05
    ch05.check_pixel_unshuffle(pixel_unshuffle)
    ch05.check_answer_labels(answer_labels)
    ch05.check_splice_image(splice_image)
    ch05.check_prefix_mask(prefix_mask)

Each check compares with the reference (`minivlm.pixel_unshuffle`, `minivlm.models.llava`)
and recognises the usual mistakes (PyTorch's channel order instead of InternVL's, the window
read column by column, the <assistant> token or padding left in the loss, the <image>
placeholder kept next to the visual tokens, a prefix that lets the answer see the future)
to give a specific hint.
"""

import torch

from minivlm.course.grading import Hint, check, expect_close, expect_equal, expect_known_mistakes, expect_shape
from minivlm.lm import IGNORE_INDEX
from minivlm.pixel_unshuffle import pixel_unshuffle


@check("pixel_unshuffle")
def check_pixel_unshuffle(fn):
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)
    what = "pixel_unshuffle(x (2, 4, 6, 3), factor=2)"
    out = fn(x, 2)
    expect_shape(out, (2, 2, 3, 12), what,
                 hint="(B, H, W, C) -> (B, H/r, W/r, C·r²): the grid shrinks by r each way, channels grow by r².")
    B, H, W, C = x.shape
    column_first = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, 2, 3, 12)
    expect_known_mistakes(out, pixel_unshuffle(x, 2), [
        (pixel_unshuffle(x, 2, order="torch"),
         "that is PyTorch's order (channel slowest). InternVL keeps each token's C channels together "
         "and puts the r² tokens of the window one after the other: permute to (B, H/r, W/r, r, r, C)."),
        (column_first, "the window is read column by column. Raster order is top-left, top-right, "
                       "bottom-left, bottom-right: the row offset i must come before the column offset j."),
        (x.reshape(B, H // 2, W // 2, 12),
         "a plain reshape mixes tokens from different rows: split H and W into (H/r, r) and (W/r, r) first, "
         "then permute so both window offsets sit next to the channels."),
    ], what, exact=True)
    y = torch.randn(1, 6, 6, 5)
    expect_equal(fn(y, 3), pixel_unshuffle(y, 3), "pixel_unshuffle(y (1, 6, 6, 5), factor=3)",
                 hint="use the factor argument everywhere, not a hard-coded 2.")


def _reference_labels(input_ids, attention_mask, assistant_id):
    is_assistant = input_ids == assistant_id
    after = (is_assistant.long().cumsum(1) - is_assistant.long()) > 0
    return input_ids.masked_fill(~(after & attention_mask), IGNORE_INDEX)


@check("answer_labels")
def check_answer_labels(fn):
    # <bos> <user> <image> q q q <assistant> answer <eos> <pad>, assistant id 6, eos 2, pad 0
    input_ids = torch.tensor([[1, 5, 3, 20, 21, 22, 6, 30, 2, 0, 0],
                              [1, 5, 3, 20, 23, 24, 25, 6, 31, 32, 2]])
    attention_mask = input_ids != 0
    what = "answer_labels(input_ids, attention_mask, assistant_id=6)"
    out = fn(input_ids, attention_mask, 6)
    expect_shape(out, input_ids.shape, what, hint="one label per input token, (B, L).")
    expected = _reference_labels(input_ids, attention_mask, 6)
    is_assistant = input_ids == 6
    from_assistant = (is_assistant.long().cumsum(1) > 0)
    expect_known_mistakes(out, expected, [
        (input_ids.masked_fill(~(from_assistant & attention_mask), IGNORE_INDEX),
         "the <assistant> token itself is part of the prompt: label only the tokens after it."),
        (input_ids.masked_fill(~((from_assistant & ~is_assistant)), IGNORE_INDEX),
         "padding is still labelled: also set -100 where attention_mask is False."),
        (input_ids.masked_fill(~((from_assistant & ~is_assistant) & attention_mask), 0),
         "ignored positions must hold -100 (cross_entropy's ignore_index), not 0."),
        (input_ids.masked_fill(~((from_assistant & ~is_assistant) & attention_mask & (input_ids != 2)), IGNORE_INDEX),
         "keep <eos> in the labels: the model must learn to stop after the answer."),
        (input_ids.masked_fill(~attention_mask, IGNORE_INDEX),
         "the loss must cover the answer only, not the prompt: -100 up to and including <assistant>."),
    ], what, exact=True)


def _reference_splice(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, image_position + 1:]], dim=1)


@check("splice_image")
def check_splice_image(fn):
    g = torch.Generator().manual_seed(0)
    text, image = torch.randn(2, 7, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    what = "splice_image(text_embeds (2, 7, 4), image_embeds (2, 3, 4), image_position=2)"
    out = fn(text, image, 2)
    expected = _reference_splice(text, image, 2)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 10, 4):
        raise Hint(f"{what} has shape (2, 10, 4), expected (2, 9, 4). Hint: the <image> placeholder is "
                   "replaced by the visual tokens, not kept beside them: skip text position image_position.")
    expect_shape(out, (2, 9, 4), what, hint="L - 1 + T tokens: the placeholder becomes T visual tokens.")
    expect_known_mistakes(out, expected, [
        (torch.cat([text[:, :3], image, text[:, 4:]], 1),
         "the visual tokens go where the placeholder was: keep text[:, :image_position], not one more."),
        (torch.cat([text[:, :2], image, text[:, 2:6]], 1),
         "after the visual tokens comes the text after the placeholder: text[:, image_position + 1:]."),
        (torch.cat([image, text[:, :2], text[:, 3:]], 1),
         "the visual tokens go at image_position, not at the start."),
    ], what, exact=True)
    expect_close(fn(text, image, 0), _reference_splice(text, image, 0), "splice_image(..., image_position=0)",
                 hint="check the edge case where <image> is the first token.")


@check("prefix_mask")
def check_prefix_mask(fn):
    prefix = torch.tensor([[True, True, True, False, False], [True, True, True, True, False]])
    what = "prefix_mask(prefix (2, 5))"
    out = fn(prefix)
    expect_shape(out, (2, 5, 5), what, hint="one (S, S) mask per row: (B, S, S).")
    if out.dtype != torch.bool:
        raise Hint(f"{what} has dtype {out.dtype}, expected torch.bool (True = may attend).")
    causal = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 5, 5)
    both = prefix[:, :, None] & prefix[:, None, :]
    expect_known_mistakes(out, causal | both, [
        (causal.clone(), "that is plain causal attention: also let two prefix tokens see each other "
                         "(prefix[:, :, None] & prefix[:, None, :])."),
        (both.clone(), "the answer tokens see nothing: keep the causal part too (causal | prefix pairs)."),
        (causal | prefix[:, :, None], "a prefix token would see the answer: both the query and the key must "
                                      "be in the prefix (prefix[:, :, None] & prefix[:, None, :])."),
        (~causal | both, "the causal part is flipped: True on and below the diagonal (tril), not above."),
    ], what, exact=True)
