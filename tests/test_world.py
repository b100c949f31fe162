"""The Shapes world: configs, scene batches, sampling, content hashes and splits, labels."""

import pytest
import torch

from minivlm.data import (
    COLORS, SHAPES, SPLITS, WorldConfig, classification_labels, sample_scenes, scene_hash, scene_split,
)

SMALL_WORLD = WorldConfig(min_objects=1, max_objects=2, grid=2)


def scenes(n=64, seed=0, split=None, **config):
    return sample_scenes(n, WorldConfig(**config), generator=torch.Generator().manual_seed(seed), split=split)


def describe(batch, i):
    return tuple(sorted((o["shape"], o["color"], o["size"], o["cell"]) for o in batch.objects(i)))


@pytest.mark.parametrize("kwargs", [dict(grid=3), dict(grid=0), dict(max_objects=5, grid=2), dict(min_objects=0),
                                    dict(min_objects=3, max_objects=2), dict(shapes=("hexagon",)), dict(colors=())])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        WorldConfig(**kwargs)


def test_scene_batch_structure():
    batch = scenes(200, max_objects=4, grid=4)
    B, N = batch.shape.shape
    assert (B, N) == (200, 4) and len(batch) == 200
    assert batch.count.min() >= 1 and batch.count.max() <= 4
    for i in range(B):
        cells = batch.cell[i][batch.present[i]].tolist()
        assert len(set(cells)) == len(cells) == batch.count[i]
        assert len(batch.objects(i)) == batch.count[i]
    assert len(batch[3]) == 1 and len(batch[-1]) == 1 and len(batch[10:20]) == 10
    assert torch.equal(batch[5].shape[0], batch.shape[5])
    assert batch.to("cpu").x.device.type == "cpu"


def test_same_seed_same_scenes():
    a, b, c = scenes(seed=1, split="train"), scenes(seed=1, split="train"), scenes(seed=2, split="train")
    assert torch.equal(a.shape, b.shape) and torch.equal(a.x, b.x) and torch.equal(a.present, b.present)
    assert not torch.equal(a.cell, c.cell)


def test_continuous_objects_stay_in_their_cell():
    batch = scenes(500, continuous=True, max_objects=4, grid=4)
    grid = 4
    radius = torch.where(batch.size == 1, 0.4, 0.25) / grid
    cell_x = ((batch.cell % grid).float() + 0.5) / grid
    cell_y = ((batch.cell // grid).float() + 0.5) / grid
    inside = ((batch.x - cell_x).abs() + radius <= 0.5 / grid + 1e-6) & ((batch.y - cell_y).abs() + radius <= 0.5 / grid + 1e-6)
    assert inside[batch.present].all()
    assert (batch.x - cell_x)[batch.present].abs().max() > 0  # actually jittered


def test_hash_ignores_slot_order():
    batch = scenes(100, max_objects=4, grid=2)
    flipped = batch[:]
    for name in ("shape", "color", "size", "x", "y", "cell", "present"):
        setattr(flipped, name, getattr(batch, name).flip(1))
    assert torch.equal(scene_hash(batch), scene_hash(flipped))
    assert (scene_hash(batch) >= 0).all()


def test_splits_never_share_a_scene():
    hashes, described = {}, {}
    for k, split in enumerate(SPLITS):
        batch = sample_scenes(3000, SMALL_WORLD, generator=torch.Generator().manual_seed(k), split=split)
        assert len(batch) == 3000
        assert (scene_split(batch) == k).all()
        hashes[split] = set(scene_hash(batch).tolist())
        described[split] = {describe(batch, i) for i in range(len(batch))}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not hashes[a] & hashes[b]
        assert not described[a] & described[b]
    share = torch.bincount(scene_split(scenes(4000, seed=9, max_objects=4)), minlength=3) / 4000
    assert torch.allclose(share, torch.tensor([0.8, 0.1, 0.1]), atol=0.03)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        sample_scenes(4, split="training")
    with pytest.raises(ValueError, match="batch_size"):
        sample_scenes(-1)


def test_classification_labels():
    batch = scenes(50, max_objects=1)
    assert torch.equal(classification_labels(batch, "count"), torch.ones(50, dtype=torch.long))
    assert [SHAPES[s] for s in classification_labels(batch, "shape").tolist()] == [batch.objects(i)[0]["shape"] for i in range(50)]
    assert classification_labels(batch, "color").max() < len(COLORS)
    with pytest.raises(ValueError, match="task"):
        classification_labels(batch, "texture")
