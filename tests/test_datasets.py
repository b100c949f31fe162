"""Datasets: a seeded ShapesDataset that batches, and a ShapesGenerator that resumes from its state."""

import torch

from minivlm.data import SPLITS, ShapesDataset, ShapesGenerator, collate_examples, scene_split


def test_dataset_is_deterministic_and_batches():
    data = ShapesDataset("val", length=40, image_size=24, seed=3)
    again = ShapesDataset("val", length=40, image_size=24, seed=3)
    assert len(data) == 40 and (scene_split(data.scenes) == SPLITS.index("val")).all()
    item = data[5]
    assert item["image"].shape == (3, 24, 24) and item["index"] == 5
    assert item["caption"] == again[5]["caption"] and item["qa"] == again[5]["qa"]
    assert torch.equal(item["image"], again[5]["image"])
    loader = torch.utils.data.DataLoader(data, batch_size=8, collate_fn=collate_examples)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 24, 24) and len(batch["caption"]) == len(batch["qa"]) == 8


def test_generator_is_deterministic_and_resumes():
    a, b = ShapesGenerator(seed=7), ShapesGenerator(seed=7)
    assert torch.equal(a.batch(16)[1], b.batch(16)[1])
    state = a.state_dict()
    scenes_1, images_1 = a.batch(16)
    a.load_state_dict(state)
    scenes_2, images_2 = a.batch(16)
    assert torch.equal(images_1, images_2) and torch.equal(scenes_1.cell, scenes_2.cell)
    assert images_1.shape == (16, 3, 32, 32)
