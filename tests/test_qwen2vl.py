"""The Qwen2-VL model: visual tokens follow the image, runs in reading order, M-RoPE ids, generation, bad input."""

import pytest
import torch

from minivlm.data import Tokenizer
from minivlm.lm import LanguageModel, LMConfig
from minivlm.models.llava import encode_chat
from minivlm.models.qwen2vl import (Qwen2VL, Qwen2VLConfig, expand_image_tokens, left_pad, pooled_grid_thw,
                                    process_images, process_videos)
from minivlm.rope import mrope_position_ids
from minivlm.video_frames import pool_frame_tokens

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


# ----------------------------------------------------------------------------- videos

def video_batch(frames=(4, 6), size=32, seconds=None, config=None):
    """Two videos (frames[k], 3, size, size) after text, each asked about: expanded ids, mask, labels, inputs."""
    config = config or Qwen2VLConfig()
    torch.manual_seed(1)
    videos = [torch.rand(f, 3, size, size) for f in frames]
    patches, grid = process_videos(videos, config)
    enc = encode_chat(TOKENIZER, ["where is the red circle ?"] * len(frames), ["left", "top"][:len(frames)])
    ids = enc["input_ids"].masked_fill(enc["input_ids"] == TOKENIZER.image_id, TOKENIZER.video_id)
    lm_grid = pooled_grid_thw(grid, config.vision.merge_size, config.video_pool_stride)
    ids, mask, labels = expand_image_tokens(ids, enc["attention_mask"], enc["labels"], lm_grid, TOKENIZER.video_id)
    return videos, patches, grid, ids, mask, labels


def test_a_video_is_cut_into_tubelets_of_two_frames():
    _, patches, grid, ids, _, _ = video_batch()
    assert grid.tolist() == [[2, 4, 4], [3, 4, 4]]                    # t = F / 2, h = w = 32 / 8
    assert len(patches) == (2 + 3) * 16 and patches.shape[1] == 3 * 2 * 8 * 8
    assert (ids == TOKENIZER.video_id).sum(1).tolist() == [2 * 4, 3 * 4]


def test_an_image_is_a_video_of_two_equal_frames():
    m = model()
    image = torch.rand(3, 32, 64)
    image_tokens = m.vision(*process_images([image], m.config))
    video_tokens = m.encode_videos(*process_videos([image[None].repeat(2, 1, 1, 1)], m.config))
    torch.testing.assert_close(video_tokens, image_tokens)


def test_each_video_run_holds_its_videos_tokens():
    m = model()
    videos, patches, grid, ids, mask, _ = video_batch()
    embeds = m.embed(None, None, ids, video_patches=patches, video_grid_thw=grid)
    alone = m.encode_videos(*process_videos([videos[1]], m.config))
    torch.testing.assert_close(embeds[1][ids[1] == TOKENIZER.video_id], alone, rtol=1e-5, atol=1e-5)


def test_video_ids_count_time_rows_and_columns_and_text_goes_on_after():
    m = model()
    _, patches, grid, ids, mask, _ = video_batch()
    position_ids = m.position_ids(ids, None, mask, video_grid_thw=grid)
    run = (ids[1] == TOKENIZER.video_id).nonzero()[:, 0]
    t, h, w = position_ids[:, 1, run] - position_ids[0, 1, run[0]]
    assert t.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert h.tolist() == [0, 0, 1, 1] * 3 and w.tolist() == [0, 1, 0, 1] * 3
    after = position_ids[:, 1, run[-1] + 1]
    assert (after == position_ids[0, 1, run[0]] + 3).all()             # the block's largest id (t = 2) + 1


def test_absolute_time_spaces_the_temporal_ids_by_seconds():
    m = model()
    _, patches, grid, ids, mask, _ = video_batch(frames=(8,))
    run = (ids[0] == TOKENIZER.video_id).nonzero()[:, 0]
    by_index = m.position_ids(ids, None, mask, video_grid_thw=grid)[0, 0, run[::4]]
    by_time = m.position_ids(ids, None, mask, video_grid_thw=grid, video_seconds_per_grid=2.0)[0, 0, run[::4]]
    start = int(by_index[0])
    assert (by_index - start).tolist() == [0, 1, 2, 3]
    assert (by_time - start).tolist() == [0, 4, 8, 12]                # 2 s per group x 2 ids per second


def test_per_frame_pooling_shrinks_each_groups_map_bilinearly():
    config = Qwen2VLConfig(video_pool_stride=2)
    torch.manual_seed(0)
    m = Qwen2VL(config).eval()
    videos, patches, grid, ids, mask, labels = video_batch(size=64, config=config)
    assert (ids == TOKENIZER.video_id).sum(1).tolist() == [2 * 4, 3 * 4]   # 4 x 4 tokens per group -> 2 x 2
    full = m.vision(patches, grid)[:2 * 16].reshape(2, 4, 4, -1)
    torch.testing.assert_close(m.encode_videos(patches, grid)[:8], pool_frame_tokens(full, 2).reshape(8, -1))
    out = m(None, None, ids, mask, labels, video_patches=patches, video_grid_thw=grid)
    assert torch.isfinite(out.loss)


def test_1d_positions_number_every_token_in_raster_order():
    torch.manual_seed(0)
    m = Qwen2VL(Qwen2VLConfig(positions="1d")).eval()
    _, patches, grid, ids, mask, labels = video_batch()
    position_ids = m.position_ids(ids, None, mask, video_grid_thw=grid)
    expected = (mask.long().cumsum(1) - 1).clamp(min=0)
    assert all(torch.equal(stream, expected) for stream in position_ids)


@pytest.mark.parametrize("seconds", [None, 0.5])
def test_video_generation_with_the_cache_equals_full_reruns(seconds):
    m = model()
    _, patches, grid, ids, mask, _ = video_batch()
    enc = encode_chat(TOKENIZER, ["where is the red circle ?", "how many shapes are there ?"])
    ids = enc["input_ids"].masked_fill(enc["input_ids"] == TOKENIZER.image_id, TOKENIZER.video_id)
    ids, mask, _ = expand_image_tokens(ids, enc["attention_mask"], None, grid, TOKENIZER.video_id)
    ids, mask = left_pad(ids, mask)
    video = dict(video_patches=patches, video_grid_thw=grid, video_seconds_per_grid=seconds)
    cached = m.generate(None, None, ids, mask, max_new_tokens=4, **video)
    assert torch.equal(cached, m.generate(None, None, ids, mask, max_new_tokens=4, use_cache=False, **video))
    positions = m.position_ids(ids, None, mask, grid, seconds)
    _, rope_deltas = mrope_position_ids(ids, None, grid, image_token_id=TOKENIZER.image_id,
                                        video_token_id=TOKENIZER.video_id, attention_mask=mask,
                                        video_seconds_per_grid=seconds)
    # Qwen2-VL's rule: the token appended at index n gets id n + rope_deltas; the first new one, n = L
    assert torch.equal(positions.amax(dim=(0, 2)) + 1, ids.shape[1] + rope_deltas[:, 0])
    reference_ids, reference_mask = ids, mask
    for step in range(cached.shape[1]):                    # the continuation at the prompt's largest id + 1, ...
        logits = m(None, None, reference_ids, reference_mask, position_ids=positions, **video).logits[:, -1]
        assert torch.equal(logits.argmax(-1), cached[:, step])
        reference_ids = torch.cat([reference_ids, cached[:, step:step + 1]], 1)
        reference_mask = torch.cat([reference_mask, torch.ones_like(reference_mask[:, :1])], 1)
        positions = torch.cat([positions, positions.amax(dim=(0, 2))[None, :, None].expand(3, -1, 1) + 1], 2)


@pytest.mark.parametrize("call, message", [
    (lambda: process_videos([torch.rand(3, 3, 32, 32)], Qwen2VLConfig()), "3 frames: a video needs a multiple of"),
    (lambda: process_videos([torch.rand(3, 32, 32)], Qwen2VLConfig()), r"videos\[0\] must be a \(F, 3, H, W\)"),
    (lambda: process_videos([torch.rand(2, 3, 24, 32)], Qwen2VLConfig()), "multiples of patch_size·merge_size"),
    (lambda: process_videos([], Qwen2VLConfig()), "videos is empty"),
    (lambda: model().embed(None, None, torch.full((1, 3), TOKENIZER.video_id)), "no video patches"),
    (lambda: model().embed(None, None, torch.full((1, 3), TOKENIZER.video_id), video_patches=video_batch()[1],
                           video_grid_thw=video_batch()[2]), "3 <video> tokens but the videos give 20"),
    (lambda: Qwen2VLConfig(video_pool_stride=0), "video_pool_stride must be a positive int"),
    (lambda: Qwen2VLConfig(positions="2d"), "positions must be 'mrope' or '1d'"),
])
def test_bad_video_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_lms_rope_base_and_split_are_the_configs():
    config = Qwen2VLConfig(rope_theta=1e6, mrope_section=(4, 2, 2)).lm_config()
    assert config.rope == "mrope" and config.rope_theta == 1e6 and config.mrope_section == (4, 2, 2)
    assert Qwen2VLConfig().lm_config().mrope_section == (2, 3, 3)           # Qwen2-VL's 16 : 24 : 24 of 8 pairs
    with pytest.raises(ValueError, match="mrope_section"):
        Qwen2VLConfig(mrope_section=(4, 4, 4)).lm_config()
