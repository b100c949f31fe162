"""Datasets: a seeded ShapesDataset that batches, and a ShapesGenerator that resumes from its state."""

import pytest
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


def test_image_row_batches_take_whole_images_and_are_pure_functions_of_the_step():
    from minivlm.data import image_row_batches
    rows = {"input_ids": torch.arange(7)[:, None].expand(7, 4).clone(), "attention_mask": torch.ones(7, 4, dtype=torch.bool),
            "labels": torch.full((7, 4), -100), "image_index": torch.tensor([0, 0, 1, 2, 2, 2, 3])}
    rows["attention_mask"][:, 3] = False
    images = torch.arange(4.0)[:, None, None, None].expand(4, 3, 2, 2)
    get = image_row_batches(rows, 2, seed=0)
    chosen, ids, mask, labels, index = get(5, images)
    assert chosen.shape[0] == 2 and ids.shape[1] == 3                    # cut to the longest real row
    picked = chosen[:, 0, 0, 0].long().tolist()
    expected = [r for r in range(7) if rows["image_index"][r].item() in picked]
    assert sorted(ids[:, 0].tolist()) == expected                        # every row of the images taken
    assert [picked[i] for i in index.tolist()] == rows["image_index"][ids[:, 0]].tolist()
    assert all(torch.equal(a, b) for a, b in zip(get(5, images), image_row_batches(rows, 2, seed=0)(5, images)))
    with pytest.raises(ValueError, match="must be sorted"):
        image_row_batches(dict(rows, image_index=torch.tensor([1, 0, 1, 2, 2, 2, 3])), 2, seed=0)
