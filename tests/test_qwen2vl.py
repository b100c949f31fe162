"""The Qwen2-VL model: visual tokens follow the image, runs in reading order, M-RoPE ids, generation, bad input."""

import pytest
import torch

from minivlm.data import Tokenizer
from minivlm.lm import LanguageModel, LMConfig
from minivlm.models.llava import encode_chat
from minivlm.models.qwen2vl import Qwen2VL, Qwen2VLConfig, expand_image_tokens, left_pad, process_images

TOKENIZER = Tokenizer()
SIZES = [(32, 32), (64, 128), (32, 64)]


def batch(answers=True):
    torch.manual_seed(0)
    images = [torch.rand(3, H, W) for H, W in SIZES]
    patches, grid = process_images(images, Qwen2VLConfig())
    questions = ["how many shapes are there ?", "is there a red circle ?", "where is the blue square ?"]
    enc = encode_chat(TOKENIZER, questions, ["two", "yes", "top left"] if answers else None)
    ids, mask, labels = expand_image_tokens(enc["input_ids"], enc["attention_mask"], enc["labels"], grid,
                                            TOKENIZER.image_id)
    return images, patches, grid, ids, mask, labels


def model():
    torch.manual_seed(0)
    return Qwen2VL().eval()


def test_visual_tokens_follow_the_image():
    _, patches, grid, ids, mask, labels = batch()
    assert grid.tolist() == [[1, 4, 4], [1, 8, 16], [1, 4, 8]]
    assert (ids == TOKENIZER.image_id).sum(1).tolist() == [4, 32, 8]          # (H/8)(W/8)/4 tokens each
    assert (labels[ids == TOKENIZER.image_id] == -100).all()
    words = [TOKENIZER.vocab[t] for t, l in zip(ids[1].tolist(), labels[1].tolist()) if l != -100]
    assert words == ["yes", "<eos>"]


def test_each_run_holds_its_own_image_tokens():
    m = model()
    _, patches, grid, ids, mask, _ = batch()
    embeds = m.embed(patches, grid, ids)
    visual = m.vision(patches, grid)
    torch.testing.assert_close(embeds[ids == TOKENIZER.image_id], visual)
    torch.testing.assert_close(embeds[1][ids[1] == TOKENIZER.image_id], visual[4:36])
    alone_patches, alone_grid = process_images([batch()[0][1]], m.config)
    torch.testing.assert_close(m.vision(alone_patches, alone_grid), visual[4:36], rtol=1e-5, atol=1e-5)


def test_mrope_ids_give_images_rows_and_columns():
    m = model()
    _, patches, grid, ids, mask, _ = batch()
    position_ids = m.position_ids(ids, grid, mask)
    run = (ids[2] == TOKENIZER.image_id).nonzero()[:, 0]
    t, h, w = position_ids[:, 2, run]
    start = int(t[0])
    assert (t == start).all() and (h - start).tolist() == [0] * 4 + [1] * 4
    assert (w - start).tolist() == [0, 1, 2, 3] * 2


def test_forward_loss_and_gradient_reach_the_vit():
    m = model().train()
    _, patches, grid, ids, mask, labels = batch()
    out = m(patches, grid, ids, mask, labels)
    assert out.logits.shape == (*ids.shape, 58) and torch.isfinite(out.loss)
    out.loss.backward()
    assert m.vision.patch_embed.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_equals_greedy_full_reruns(use_cache):
    m = model()
    _, patches, grid, ids, mask, _ = batch(answers=False)
    ids, mask = left_pad(ids, mask)
    new = m.generate(patches, grid, ids, mask, max_new_tokens=3, use_cache=use_cache)
    reference_ids, reference_mask = ids, mask
    for step in range(new.shape[1]):
        logits = m(patches, grid, reference_ids, reference_mask).logits[:, -1]
        token = logits.argmax(-1)
        assert torch.equal(token, new[:, step]) or (new[:, :step] == 2).any(1).all()
        reference_ids = torch.cat([reference_ids, token[:, None]], 1)
        reference_mask = torch.cat([reference_mask, torch.ones_like(token[:, None], dtype=torch.bool)], 1)


def test_left_pad_moves_padding_to_the_front():
    ids = torch.tensor([[5, 6, 0, 0], [7, 8, 9, 10]])
    mask = ids != 0
    left, left_mask = left_pad(ids, mask)
    assert left.tolist() == [[0, 0, 5, 6], [7, 8, 9, 10]] and left_mask[:, -1].all()


@pytest.mark.parametrize("call, message", [
    (lambda: process_images([torch.rand(3, 30, 32)], Qwen2VLConfig()), "multiples of patch_size·merge_size = 16"),
    (lambda: process_images([torch.rand(32, 32)], Qwen2VLConfig()), r"images\[0\] must be a \(3, H, W\)"),
    (lambda: process_images([], Qwen2VLConfig()), "images is empty"),
    (lambda: expand_image_tokens(torch.tensor([[1, 9, 9]]), torch.ones(1, 3, dtype=torch.bool), None,
                                 torch.tensor([[1, 2, 2]]), TOKENIZER.image_id), "grid_thw has 1 images but input_ids only 0"),
    (lambda: expand_image_tokens(torch.tensor([[1, 3, 3]]), torch.ones(1, 3, dtype=torch.bool), None,
                                 torch.tensor([[1, 2, 2]]), TOKENIZER.image_id), "more <image> tokens than grid_thw"),
    (lambda: model().embed(batch()[1], batch()[2], torch.full((1, 3), TOKENIZER.image_id)), "44"),
    (lambda: Qwen2VLConfig(text_dim=32), "out_dim"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_1d_rope_lm_loads_and_computes_the_same_on_text():
    torch.manual_seed(0)
    m = model()
    text_lm = LanguageModel(LMConfig(vocab_size=58, dim=64, depth=2, heads=4, max_seq_len=256,
                                     tie_embeddings=False)).eval()
    m.load_language_model(text_lm)
    ids = torch.randint(8, 58, (2, 12))
    assert torch.equal(m.lm(ids).logits, text_lm(ids).logits)            # M-RoPE on text == 1D RoPE, exactly
    with pytest.raises(ValueError, match="up to the kind of RoPE"):
        m.load_language_model(LanguageModel(LMConfig(vocab_size=58, dim=32, depth=2, heads=4)))


def test_vision_start_and_end_wrap_every_run():
    ids = torch.tensor([[7, 3, 8, 3, 9], [7, 3, 9, 0, 0]])
    mask = ids != 0
    grid = torch.tensor([[1, 2, 4], [1, 2, 2], [1, 4, 2]])                     # 2, 1 and 2 tokens
    out, out_mask, labels = expand_image_tokens(ids, mask, ids.masked_fill(~mask, -100), grid, 3,
                                                vision_start_id=50, vision_end_id=51)
    assert out[0][out_mask[0]].tolist() == [7, 50, 3, 3, 51, 8, 50, 3, 51, 9]
    assert out[1][out_mask[1]].tolist() == [7, 50, 3, 3, 51, 9]
    assert (labels[out == 50] == -100).all() and (labels[out == 51] == -100).all()
    with pytest.raises(ValueError, match="both vision_start_id and vision_end_id"):
        expand_image_tokens(ids, mask, None, grid, 3, vision_start_id=50)
