import random

import pytest
import torch

from minivlm.data import (
    BACKGROUND, COLORS, NUMBER_WORDS, QUESTION_KINDS, SHAPES, SPLITS, QA, ShapesDataset, ShapesGenerator,
    WorldConfig, caption, classification_labels, collate_examples, questions, render, sample_qa,
    sample_scenes, scene_hash, scene_split, scenes_from_objects, world_vocabulary,
)

SMALL_WORLD = WorldConfig(min_objects=1, max_objects=2, grid=2)


def scenes(n=64, seed=0, split=None, **config):
    return sample_scenes(n, WorldConfig(**config), generator=torch.Generator().manual_seed(seed), split=split)


def pixel(image, x, y):
    """Colour of the pixel at image coordinates (x, y) in [0, 1]."""
    H, W = image.shape[-2:]
    return image[:, int(y * H), int(x * W)]


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
    with pytest.raises(ValueError, match="image_size"):
        render(scenes(2), 0)
    with pytest.raises(ValueError, match="kind"):
        sample_qa(scenes(2), 0, "relation", rng=random.Random(0))


@pytest.mark.parametrize("size", [24, 32, 48, 64, 224])
def test_render_shapes_and_colours(size):
    batch = scenes(8 if size == 224 else 64, max_objects=4)
    images = render(batch, size)
    assert images.shape == (len(batch), 3, size, size) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    background = torch.tensor(BACKGROUND)
    for i in range(len(batch)):
        for o in batch.objects(i):
            assert torch.allclose(pixel(images[i], o["x"], o["y"]), torch.tensor(COLORS[o["color"]]))
        assert torch.allclose(images[i, :, 0, 0], background)  # corners are never covered
    assert torch.equal(render(batch[3], size)[0], images[3])


def test_render_geometry():
    one = lambda shape, size="large": [{"shape": shape, "color": "red", "size": size, "cell": 0}]
    batch = scenes_from_objects([one("circle"), one("square"), one("triangle"), one("square", "small")])
    area = (render(batch, 64) != torch.tensor(BACKGROUND)[:, None, None]).any(1).sum((1, 2)).float()
    r = 0.4 * 32  # large half-width in pixels: 0.4 of a 32-pixel cell
    expected = torch.tensor([3.14159 * r**2, 4 * r**2, 2 * r**2, 4 * (0.25 * 32) ** 2])
    assert torch.allclose(area, expected, rtol=0.1)
    triangle = (render(batch[2], 64)[0] != torch.tensor(BACKGROUND)[:, None, None]).any(0)
    assert triangle[16:32].sum() > 2 * triangle[0:16].sum()  # points up: wider at the bottom


def test_render_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    batch = scenes(32, max_objects=4)
    assert torch.allclose(render(batch, 32, device="cuda").cpu(), render(batch, 32))
    scenes_gpu = sample_scenes(16, generator=torch.Generator("cuda").manual_seed(0), device="cuda", split="val")
    assert render(scenes_gpu, 32).device.type == "cuda"


def test_caption_and_questions_of_a_known_scene():
    batch = scenes_from_objects([[{"shape": "square", "color": "blue", "size": "large", "cell": 3},
                                  {"shape": "circle", "color": "red", "size": "small", "cell": 0}]])
    assert caption(batch, 0) == "a small red circle at the top left and a large blue square at the bottom right ."
    rng = random.Random(0)
    asked = {qa.question: qa.answer for _ in range(200) for kind in QUESTION_KINDS
             for qa in [sample_qa(batch, 0, kind, rng=rng)]}
    assert asked["how many shapes are there ?"] == "two"
    assert asked["how many circles are there ?"] == "one"
    assert asked["how many triangles are there ?"] == "zero"
    assert asked["how many green shapes are there ?"] == "zero"
    assert asked["what color is the circle ?"] == "red"
    assert asked["what shape is the blue object ?"] == "square"
    assert asked["where is the blue square ?"] == "bottom right"
    assert asked["is there a red circle ?"] == "yes"
    assert asked["is there an orange circle ?"] == "no"


def test_questions_skip_ambiguous_referents():
    two_red_circles = [{"shape": "circle", "color": "red", "size": s, "cell": c} for s, c in (("small", 0), ("large", 1))]
    batch = scenes_from_objects([two_red_circles], WorldConfig(grid=4))
    for kind in ("color", "shape", "position"):  # same shape, colour and quadrant: no unique referent
        assert sample_qa(batch, 0, kind, rng=random.Random(0)) is None
    with_position = scenes_from_objects([[{**two_red_circles[0]}, {**two_red_circles[1], "cell": 3}]], WorldConfig(grid=4))
    qa = sample_qa(with_position, 0, "color", rng=random.Random(0))
    assert qa.question in ("what color is the circle at the top left ?", "what color is the circle at the top right ?")


def test_exists_is_balanced_and_correct():
    batch = scenes(100, max_objects=4)
    rng, answers = random.Random(0), []
    for i in range(len(batch)):
        qa = sample_qa(batch, i, "exists", rng=rng)
        color, shape = qa.question.split()[-3:-1]
        truth = any(o["color"] == color and o["shape"] == shape for o in batch.objects(i))
        assert qa.answer == ("yes" if truth else "no")
        answers.append(qa.answer)
    assert 30 < answers.count("yes") < 70


def test_questions_are_deterministic_and_typed():
    batch = scenes(20, max_objects=4)
    for i in range(len(batch)):
        qas = questions(batch, i)
        assert qas == questions(batch, i) and all(isinstance(qa, QA) for qa in qas)
        assert {qa.kind for qa in qas} <= set(QUESTION_KINDS) and qas[0].kind == "count"
        assert qas[0].answer in NUMBER_WORDS


def test_vocabulary_covers_all_world_text():
    vocabulary = set(world_vocabulary())
    rng = random.Random(0)
    for config in (dict(max_objects=4), dict(max_objects=9, grid=4, continuous=True)):
        batch = scenes(150, **config)
        for i in range(len(batch)):
            text = [caption(batch, i, rng=rng)] + [qa.question + " " + qa.answer for qa in questions(batch, i, rng=rng)]
            assert set(" ".join(text).split()) <= vocabulary


def test_classification_labels():
    batch = scenes(50, max_objects=1)
    assert torch.equal(classification_labels(batch, "count"), torch.ones(50, dtype=torch.long))
    assert [SHAPES[s] for s in classification_labels(batch, "shape").tolist()] == [batch.objects(i)[0]["shape"] for i in range(50)]
    assert classification_labels(batch, "color").max() < len(COLORS)
    with pytest.raises(ValueError, match="task"):
        classification_labels(batch, "texture")


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
