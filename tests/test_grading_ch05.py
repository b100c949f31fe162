"""The chapter 05 checks pass the reference, and give a specific hint (not a pass) to typical mistakes."""

import pytest
import torch

from minivlm.course.grading import ch05
from minivlm.lm import IGNORE_INDEX
from minivlm.pixel_unshuffle import pixel_unshuffle


def stub(*args, **kwargs):
    raise NotImplementedError()


def answer_labels(input_ids, attention_mask, assistant_id):
    is_assistant = input_ids == assistant_id
    after = (is_assistant.long().cumsum(1) - is_assistant.long()) > 0
    return input_ids.masked_fill(~(after & attention_mask), IGNORE_INDEX)


def splice_image(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, image_position + 1:]], dim=1)


def prefix_mask(prefix):
    S = prefix.shape[1]
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    return causal | (prefix[:, :, None] & prefix[:, None, :])


@pytest.mark.parametrize("check, reference", [
    (ch05.check_pixel_unshuffle, pixel_unshuffle),
    (ch05.check_answer_labels, answer_labels),
    (ch05.check_splice_image, splice_image),
    (ch05.check_prefix_mask, prefix_mask),
])
def test_reference_passes_and_stub_is_not_implemented(check, reference, grade):
    passed, out = grade(check, reference)
    assert passed and out.startswith("✅"), out
    passed, out = grade(check, stub)
    assert not passed and "not implemented yet" in out


# ----------------------------------------------------------------------------- typical mistakes

def unshuffle_torch_order(x, factor=2):
    return pixel_unshuffle(x, factor, order="torch")


def unshuffle_column_first(x, factor=2):
    B, H, W, C = x.shape
    r = factor
    return x.reshape(B, H // r, r, W // r, r, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // r, W // r, C * r * r)


def unshuffle_plain_reshape(x, factor=2):
    B, H, W, C = x.shape
    return x.reshape(B, H // factor, W // factor, C * factor * factor)


def unshuffle_fixed_factor(x, factor=2):
    return pixel_unshuffle(x, 2)


def labels_with_assistant(input_ids, attention_mask, assistant_id):
    from_assistant = (input_ids == assistant_id).long().cumsum(1) > 0
    return input_ids.masked_fill(~(from_assistant & attention_mask), IGNORE_INDEX)


def labels_with_padding(input_ids, attention_mask, assistant_id):
    return answer_labels(input_ids, torch.ones_like(attention_mask), assistant_id)


def labels_zero_ignored(input_ids, attention_mask, assistant_id):
    labels = answer_labels(input_ids, attention_mask, assistant_id)
    return labels.masked_fill(labels == IGNORE_INDEX, 0)


def labels_everything(input_ids, attention_mask, assistant_id):
    return input_ids.masked_fill(~attention_mask, IGNORE_INDEX)


def splice_keeps_placeholder(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position + 1], image_embeds, text_embeds[:, image_position + 1:]], 1)


def splice_drops_wrong_token(text_embeds, image_embeds, image_position):
    return torch.cat([text_embeds[:, :image_position], image_embeds, text_embeds[:, image_position:-1]], 1)


def splice_at_start(text_embeds, image_embeds, image_position):
    return torch.cat([image_embeds, text_embeds[:, :image_position], text_embeds[:, image_position + 1:]], 1)


def prefix_mask_causal_only(prefix):
    S = prefix.shape[1]
    return torch.ones(S, S, dtype=torch.bool).tril().expand(len(prefix), S, S)


def prefix_mask_no_causal(prefix):
    return prefix[:, :, None] & prefix[:, None, :]


def prefix_mask_query_leak(prefix):
    S = prefix.shape[1]
    return torch.ones(S, S, dtype=torch.bool).tril() | prefix[:, :, None]


def prefix_mask_float(prefix):
    return prefix_mask(prefix).float()


@pytest.mark.parametrize("check, wrong, hint", [
    (ch05.check_pixel_unshuffle, unshuffle_torch_order, "PyTorch's order"),
    (ch05.check_pixel_unshuffle, unshuffle_column_first, "column by column"),
    (ch05.check_pixel_unshuffle, unshuffle_plain_reshape, "plain reshape"),
    (ch05.check_pixel_unshuffle, unshuffle_fixed_factor, "factor argument"),
    (ch05.check_answer_labels, labels_with_assistant, "<assistant> token itself"),
    (ch05.check_answer_labels, labels_with_padding, "padding"),
    (ch05.check_answer_labels, labels_zero_ignored, "not 0"),
    (ch05.check_answer_labels, labels_everything, "answer only"),
    (ch05.check_splice_image, splice_keeps_placeholder, "not kept beside"),
    (ch05.check_splice_image, splice_drops_wrong_token, "image_position + 1"),
    (ch05.check_splice_image, splice_at_start, "not at the start"),
    (ch05.check_prefix_mask, prefix_mask_causal_only, "plain causal"),
    (ch05.check_prefix_mask, prefix_mask_no_causal, "keep the causal part"),
    (ch05.check_prefix_mask, prefix_mask_query_leak, "would see the answer"),
    (ch05.check_prefix_mask, prefix_mask_float, "torch.bool"),
])
def test_typical_mistakes_get_a_hint(check, wrong, hint, grade):
    passed, out = grade(check, wrong)
    assert not passed and out.startswith("❌") and hint in out, out
