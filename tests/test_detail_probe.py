"""The counting probe of chapter 08: examples as patchify_qwen2vl makes them, targets that add up, arms, a short run."""

import pytest
import torch
import torch.nn.functional as F

from minivlm.data.canvas import canvas_configs, render_canvas, sample_canvas_scenes
from minivlm.detail_probe import (ARMS, PIXEL_MEAN, PIXEL_STD, Arm, CountProbe, collate, encode_canvases,
                                  probe_accuracy, run_arm, run_arms, token_grid, train_probe)
from minivlm.dynamic_resolution import patchify_qwen2vl


def scenes(height=64, width=128, n=6, seed=0):
    config = canvas_configs(((height, width),), max_objects=4)[0]
    return sample_canvas_scenes(n, config, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arm", [Arm(), Arm(temporal_patch_size=2), Arm(resize=(32, 32)), Arm(resize=(128, 128)),
                                 Arm(max_tokens=4)])
def test_examples_are_each_image_patchified_alone(arm):
    batch = scenes()
    images = render_canvas(batch)
    if arm.resize is not None:
        shrink = arm.resize[0] < images.shape[2]
        images = F.interpolate(images, size=arm.resize, mode="area" if shrink else "bilinear",
                               align_corners=None if shrink else False)
    images = (images - torch.tensor(PIXEL_MEAN)[:, None, None]) / torch.tensor(PIXEL_STD)[:, None, None]
    for i, example in enumerate(encode_canvases(batch, arm)):
        frames = images[i:i + 1].expand(arm.temporal_patch_size, -1, -1, -1)
        patches, grid = patchify_qwen2vl(frames, arm.patch_size, arm.temporal_patch_size, arm.merge_size)
        assert torch.equal(example.patches, patches) and torch.equal(example.grid_thw, grid)


def test_token_targets_add_up_to_the_answers():
    batch = scenes(128, 64, n=20)
    for arm in (Arm(), Arm(resize=(32, 32)), Arm(max_tokens=4)):
        for i, example in enumerate(encode_canvases(batch, arm)):
            objects = batch.objects(i)
            assert example.answers.tolist() == [len(objects), sum(o["size"] == "small" for o in objects)]
            assert torch.equal(example.token_counts.sum(0), example.answers)
            assert len(example.token_counts) == token_grid(arm, 128, 64)[0] * token_grid(arm, 128, 64)[1]


def test_token_grids():
    assert token_grid(Arm(), 64, 128) == (2, 4)
    assert token_grid(Arm(resize=(32, 32)), 128, 128) == (1, 1)
    assert token_grid(Arm(max_tokens=4), 128, 128) == (2, 2)          # 16 tokens, s = 2
    assert token_grid(Arm(max_tokens=4), 64, 128) == (1, 2)           # 8 tokens, s = 1.41: int(2 // s), int(4 // s)
    assert token_grid(Arm(max_tokens=4), 64, 64) == (2, 2)            # 4 tokens: untouched
    with pytest.raises(ValueError, match="32-px merge windows"):
        token_grid(Arm(), 48, 64)


def test_probe_gives_one_count_pair_per_token():
    batch = collate(encode_canvases(scenes(), Arm()) + encode_canvases(scenes(32, 32), Arm()))
    assert CountProbe(Arm())(batch[0], batch[1]).shape == (6 * 8 + 6 * 1, 2)
    reduced = collate(encode_canvases(scenes(128, 128), Arm(max_tokens=4)))
    assert CountProbe(Arm(max_tokens=4))(reduced[0], reduced[1]).shape == (6 * 4, 2)
    assert len(CountProbe(ARMS["learned positions"]).vit.pos_embed.shape) == 3


def test_a_short_run_learns_and_is_reproducible():
    train = encode_canvases(scenes(64, 64, n=200, seed=1), Arm())
    test = encode_canvases(scenes(64, 64, n=100, seed=2), Arm())
    before = probe_accuracy(CountProbe(Arm()).eval(), test)
    after = probe_accuracy(train_probe(Arm(), 0, train, steps=120), test)
    assert after.shape == (2,) and ((0 <= after) & (after <= 100)).all()
    assert after[0] > before[0] + 40
    assert torch.equal(after, probe_accuracy(train_probe(Arm(), 0, train, steps=120), test))


def test_run_arms_here_is_run_arm():
    job = ("fixed 32x32", 1, 5, 20, 10)
    assert run_arms([job], workers=0) == [run_arm(*job)]
    result = run_arm(*job)
    assert result["arm"] == "fixed 32x32" and set(result["accuracy"]) >= {(32, 32), (128, 128), (192, 192)}
