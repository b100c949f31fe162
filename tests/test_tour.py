"""The tour's recipes and its data: what each recipe trains on, and batches cut as the model expects."""

import pytest
import torch

from minivlm import cli, tour
from minivlm.data import QUESTION_KINDS, Tokenizer
from minivlm.lm import IGNORE_INDEX


def test_recipes_by_name_and_v1_is_session_2s_recipe():
    assert tour.DEFAULT_RECIPE in tour.RECIPES and set(tour.RECIPES) >= {"v1", "v2"}
    v1 = tour.settings_for("cpu", "v1")
    assert (v1["clip_steps"], v1["steps"], v1["images_per_step"], v1["lr"]) == (300, 1100, 32, 3e-3)
    assert v1["model"] == dict(patch_size=8, vision_dim=64, vision_depth=2, text_dim=128, text_depth=2)
    assert tuple(v1["train_kinds"]) == QUESTION_KINDS
    assert tour.settings_for("cuda", "v1") is tour.RECIPES["v1"]["gpu"]
    with pytest.raises(ValueError, match="recipe must be one of"):
        tour.settings_for("cpu", "v3")
    with pytest.raises(SystemExit):
        cli.main(["tour", "--recipe", "v3"])


def test_stage_steps_scale_the_clip_stage_with_fewer_vqa_steps():
    settings = tour.settings_for("cpu", "v1")
    assert tour.stage_steps(settings, None) == (300, 1100)
    assert tour.stage_steps(settings, 110) == (30, 110)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        tour.stage_steps(settings, 0)


@pytest.mark.parametrize("recipe", ["v1", "v2"])
def test_batches_hold_each_images_own_questions_cut_to_the_longest_row(recipe):
    settings = dict(tour.settings_for("cpu", recipe), pool=200, images_per_step=8, clip_batch=16)
    tokenizer = Tokenizer()
    data = tour.TourData(tokenizer, settings, steps=5, seed=0, image_size=32, device="cpu")
    assert data.pool == 40                                   # 5 steps x 8 images: no larger than needed
    for step in (0, 3, 7):                                   # step 7 wraps around the pool
        images, ids, mask, labels, image_index = data.vqa_batch(step)
        assert images.shape == (8, 3, 32, 32) and ids.shape == mask.shape == labels.shape
        assert mask[:, -1].any() and image_index.min() == 0 and image_index.max() == 7
        assert (ids == tokenizer.image_id).sum(1).eq(1).all() and (labels[~mask] == IGNORE_INDEX).all()
        start = (step * 8) % (40 - 8 + 1)
        assert torch.equal(images, data.images[start:start + 8])
        images, caption_ids, caption_mask = data.clip_batch(step)
        assert images.shape[0] == caption_ids.shape[0] == 16 and caption_mask[:, -1].any()

def test_v2_asks_twice_as_often_how_many_as_v1():
    """v2 lists "count" twice among the training kinds: a third of its questions count, a fifth of v1's."""
    tokenizer = Tokenizer()
    share = {}
    for recipe in ("v1", "v2"):
        settings = dict(tour.settings_for("cpu", recipe), pool=2000)
        data = tour.TourData(tokenizer, settings, steps=1000, seed=0, image_size=32, device="cpu")
        questions = [tokenizer.decode(row) for row in data.vqa["input_ids"].tolist()]
        share[recipe] = sum(text.startswith("how many") for text in questions) / len(questions)
    assert share["v1"] == pytest.approx(1 / 5, abs=0.02) and share["v2"] == pytest.approx(1 / 3, abs=0.02)
