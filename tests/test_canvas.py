"""The world at any size: canvas configs, scenes, rendering, splits, questions needing detail; the old world unchanged."""

import hashlib
import random
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from minivlm.data import (
    BACKGROUND, CANVAS_QUESTION_KINDS, CANVAS_SIZES, COLORS, NUMBER_WORDS, PLURALS, SHAPES, SIZES, SPLITS,
    CanvasConfig, Tokenizer, WorldConfig, canvas_configs, canvas_questions, canvas_sample_qa, canvas_scene_hash,
    canvas_scene_split, caption, questions, render, render_canvas, sample_canvas_scenes, sample_canvas_vqa,
    sample_scenes, sample_vqa, scene_hash,
)

BG = torch.tensor(BACKGROUND)


def canvas(n, height=128, width=128, seed=0, split=None, **fields):
    config = CanvasConfig(height, width, **fields)
    return sample_canvas_scenes(n, config, generator=torch.Generator().manual_seed(seed), split=split)


# ----------------------------------------------------------------------------- the old world is untouched

def test_old_world_outputs_are_bit_identical():
    """Hashes computed before canvas.py existed: chapters 00-07 depend on these exact outputs."""
    digest = lambda data: hashlib.sha256(data).hexdigest()[:16]
    scenes = sample_scenes(64, generator=torch.Generator().manual_seed(0))
    world = WorldConfig(max_objects=9, grid=4, continuous=True)
    other = sample_scenes(64, world, generator=torch.Generator().manual_seed(0), split="train")
    assert digest(render(scenes, 32).numpy().tobytes()) == "c824a4a267f1946e"
    assert digest(render(other, 48).numpy().tobytes()) == "065409f9fbbca920"
    assert digest("\n".join(caption(scenes, i) for i in range(64)).encode()) == "e3e9a979e0d7bb60"
    assert digest(repr([questions(other, i) for i in range(64)]).encode()) == "db29a00a829ad02b"
    assert digest(repr(sample_vqa(scenes, 4, seed=0)).encode()) == "a23086904f2adeb2"
    tokenizer = Tokenizer()
    assert len(tokenizer) == 58 and digest(" ".join(tokenizer.vocab).encode()) == "33d94f2005409114"


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("kwargs, name", [
    (dict(height_px=48), "height_px"), (dict(width_px=16), "width_px"), (dict(height_px=64.0), "height_px"),
    (dict(cell_px=2), "cell_px"), (dict(min_objects=0), "min_objects"), (dict(max_objects=65), "max_objects"),
    (dict(min_objects=3, max_objects=2), "min_objects"), (dict(small_fraction=1.5), "small_fraction"),
    (dict(small_radius_px=8.0), "small_radius_px"), (dict(large_radius=0.5), "large_radius"),
    (dict(shapes=("hexagon",)), "shapes"), (dict(colors=()), "colors"),
])
def test_config_rejects_bad_values_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CanvasConfig(**{"height_px": 128, "width_px": 128, **kwargs})


def test_default_canvas_sizes_and_grids():
    configs = canvas_configs()
    assert [(c.height_px, c.width_px) for c in configs] == list(CANVAS_SIZES)
    assert [(c.rows, c.cols) for c in configs] == [(2, 2), (2, 4), (4, 2), (4, 4), (4, 8), (8, 4), (8, 8)]
    assert [c.max_objects for c in configs] == [4, 8, 8, 9, 9, 9, 9]  # clamped to the cells, counts up to nine
    assert canvas_configs([(64, 64)], cell_px=8, max_objects=20, large_radius=0.3)[0].cells == 64


# ----------------------------------------------------------------------------- scenes and images

@pytest.mark.parametrize("config", canvas_configs(), ids=lambda c: f"{c.height_px}x{c.width_px}")
def test_scenes_and_images(config):
    scenes = sample_canvas_scenes(40, config, generator=torch.Generator().manual_seed(1))
    B, N = scenes.shape.shape
    assert (B, N) == (40, config.max_objects) and scenes.config is config
    assert scenes.x.dtype == scenes.y.dtype == torch.float32 and scenes.present.dtype == torch.bool
    assert all(t.dtype == torch.long for t in (scenes.shape, scenes.color, scenes.size, scenes.cell))
    images = render_canvas(scenes)
    assert images.shape == (B, 3, config.height_px, config.width_px) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    for i in range(B):
        cells = scenes.cell[i][scenes.present[i]].tolist()
        assert len(set(cells)) == len(cells) == scenes.count[i]
        for o in scenes.objects(i):
            px, py = o["x"] * config.width_px, o["y"] * config.height_px
            assert torch.equal(images[i, :, int(py), int(px)], torch.tensor(COLORS[o["color"]]))  # centre pixel
            row, col = divmod(o["cell"], config.cols)
            r = config.radii_px[SIZES.index(o["size"])]
            assert col * config.cell_px + 1 <= px - r and px + r <= (col + 1) * config.cell_px - 1  # inside its cell
            assert row * config.cell_px + 1 <= py - r and py + r <= (row + 1) * config.cell_px - 1
        covered = (images[i] != BG[:, None, None]).any(0).view(config.rows, config.cell_px, config.cols, config.cell_px)
        assert not covered[:, [0, -1]].any() and not covered[..., [0, -1]].any()  # a free pixel around every cell
        assert torch.equal(images[i, :, 0, 0], BG)
    assert torch.equal(render_canvas(scenes[3])[0], images[3])


def test_small_shapes_are_three_pixels_across():
    one = lambda shape: canvas(200, 32, 32, seed=2, shapes=(shape,), small_fraction=1.0, min_objects=1, max_objects=1)
    for shape, area in (("square", 9), ("circle", 5), ("triangle", 5)):
        mask = (render_canvas(one(shape)) != BG[:, None, None]).any(1)
        assert (mask.sum((1, 2)) == area).all(), shape
        assert mask.any(1).sum(1).max() == 3 and mask.any(2).sum(1).max() == 3  # 3 pixels wide and tall


def test_same_seed_same_scenes():
    a, b, c = (canvas(32, 64, 128, seed=s, split="train", max_objects=6) for s in (1, 1, 2))
    assert torch.equal(render_canvas(a), render_canvas(b)) and torch.equal(a.cell, b.cell)
    assert not torch.equal(render_canvas(a), render_canvas(c))
    assert [canvas_questions(a, i) for i in range(32)] == [canvas_questions(b, i) for i in range(32)]
    assert sample_canvas_vqa(a, 3, seed=4) == sample_canvas_vqa(b, 3, seed=4)


def test_without_jitter_objects_sit_at_the_cell_centre():
    scenes = canvas(50, 64, 32, jitter=False, max_objects=8)
    centre = lambda index, cells, px: ((index * 16 + 8.5) / px)
    assert torch.equal(scenes.x[scenes.present], centre(scenes.cell % 2, 2, 32)[scenes.present])
    assert torch.equal(scenes.y[scenes.present], centre(scenes.cell // 2, 4, 64)[scenes.present])


def test_small_objects_fade_in_a_fixed_low_resolution_resize():
    scenes = canvas(300, 128, 128, seed=3, min_objects=9, max_objects=9)
    down = F.interpolate(render_canvas(scenes), (32, 32), mode="area")  # 16-pixel cells become 4-pixel cells
    contrast = {size: [] for size in SIZES}
    palette = torch.tensor(list(COLORS.values()))
    for i, n in scenes.present.nonzero().tolist():
        row, col = divmod(scenes.cell[i, n].item(), 8)
        block = down[i, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4]  # only this object lies in this block
        full = (palette[scenes.color[i, n]] - BG).abs().max()
        contrast[SIZES[scenes.size[i, n]]].append(((block - BG[:, None, None]).abs().amax() / full).item())
    assert max(contrast["small"]) < 0.6 and sum(contrast["small"]) / len(contrast["small"]) < 0.4
    assert min(contrast["large"]) > 0.99


def test_render_canvas_rejects_world_scenes_and_runs_on_cuda():
    with pytest.raises(ValueError, match="CanvasConfig"):
        render_canvas(sample_scenes(2))
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    scenes = canvas(16, 64, 128, max_objects=9)
    assert torch.equal(render_canvas(scenes, device="cuda").cpu(), render_canvas(scenes))
    config = CanvasConfig(128, 64, max_objects=9)
    on_gpu = sample_canvas_scenes(8, config, generator=torch.Generator("cuda").manual_seed(0), device="cuda", split="val")
    assert render_canvas(on_gpu).device.type == "cuda" and (canvas_scene_split(on_gpu) == 1).all()


# ----------------------------------------------------------------------------- splits

def test_splits_never_share_a_scene():
    describe = lambda b, i: tuple(sorted((o["shape"], o["color"], o["size"], o["cell"], o["x"], o["y"])
                                         for o in b.objects(i)))
    hashes, described = {}, {}
    for k, split in enumerate(SPLITS):
        batch = canvas(2000, 32, 32, seed=k, split=split, max_objects=2, jitter=False, shapes=("circle",))
        assert len(batch) == 2000 and (canvas_scene_split(batch) == k).all()
        hashes[split] = set(canvas_scene_hash(batch).tolist())
        described[split] = {describe(batch, i) for i in range(len(batch))}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not hashes[a] & hashes[b] and not described[a] & described[b]
    share = torch.bincount(canvas_scene_split(canvas(4000, 64, 128, seed=9, max_objects=9)), minlength=3) / 4000
    assert torch.allclose(share, torch.tensor([0.8, 0.1, 0.1]), atol=0.03)


def test_the_canvas_is_part_of_a_scene():
    wide = canvas(200, 64, 128, seed=5, max_objects=4)
    tall = wide[:]
    tall.config = CanvasConfig(128, 64, max_objects=4)
    assert torch.equal(scene_hash(wide), scene_hash(tall))
    assert (canvas_scene_hash(wide) != canvas_scene_hash(tall)).float().mean() > 0.99


# ----------------------------------------------------------------------------- questions

def true_answer(scenes, i, question):
    """The answer worked out from the scene's tensors, without the templates or the object dicts."""
    present = scenes.present[i]
    def count(size=None, color=None, shape=None):
        keep = present.clone()
        for value, names, t in ((size, SIZES, scenes.size), (color, tuple(COLORS), scenes.color), (shape, SHAPES, scenes.shape)):
            if value is not None:
                keep &= t[i] == names.index(value)
        return int(keep.sum())
    singular = {plural: shape for shape, plural in PLURALS.items()}
    if match := re.fullmatch(r"how many (small )?(\w+ )?(shapes|circles|squares|triangles) are there \?", question):
        size = "small" if match[1] else None
        color = match[2].strip() if match[2] else None
        return NUMBER_WORDS[count(size, color, singular.get(match[3]))]
    if match := re.fullmatch(r"is there an? (small )?(\w+) (\w+) \?", question):
        return "yes" if count("small" if match[1] else None, match[2], match[3]) else "no"
    if match := re.fullmatch(r"what (color|shape) is the (\w+)(?: object)?(?: at the (\w+ \w+))? \?", question):
        key, name, place = match[1], match[2], match[3]
        found = [o for o in scenes.objects(i) if o["color" if key == "shape" else "shape"] == name
                 and place in (None, o["position"])]
        assert len(found) == 1, question
        return found[0][key]
    if match := re.fullmatch(r"where is the (\w+) (\w+) \?", question):
        found = [o for o in scenes.objects(i) if (o["color"], o["shape"]) == (match[1], match[2])]
        assert len(found) == 1, question
        return found[0]["position"]
    raise AssertionError(f"unknown question {question!r}")


@pytest.mark.parametrize("config", canvas_configs(), ids=lambda c: f"{c.height_px}x{c.width_px}")
def test_answers_are_true_and_every_kind_is_asked(config):
    scenes = sample_canvas_scenes(120, config, generator=torch.Generator().manual_seed(7), split="val")
    pairs = sample_canvas_vqa(scenes, len(CANVAS_QUESTION_KINDS), seed=1)
    assert {qa.kind for _, qa in pairs} == set(CANVAS_QUESTION_KINDS)
    assert {i for i, _ in pairs} == set(range(len(scenes)))
    for i, qa in pairs:
        assert qa.answer == true_answer(scenes, i, qa.question), qa


def test_detail_questions_mention_small_objects_and_are_balanced():
    scenes = canvas(300, 128, 64, seed=4, max_objects=9)
    rng = random.Random(0)
    asked = [canvas_sample_qa(scenes, i, kind, rng=rng) for i in range(len(scenes)) for kind in ("count_small", "exists_small")]
    assert all(qa.question.startswith(("how many small ", "is there a small ")) for qa in asked)
    answers = Counter(qa.answer for qa in asked if qa.kind == "exists_small")
    assert 0.3 < answers["yes"] / len(scenes) < 0.7
    assert len({qa.question for qa in asked if qa.kind == "count_small"}) > 20


def test_counts_over_nine_are_never_asked():
    scenes = canvas(60, 128, 128, min_objects=12, max_objects=20, small_fraction=0.2)
    for i in range(len(scenes)):
        for qa in canvas_questions(scenes, i, rng=random.Random(i)):
            assert qa.question != "how many shapes are there ?"
            assert qa.answer == true_answer(scenes, i, qa.question)


def test_all_text_tokenizes_with_the_existing_tokenizer():
    tokenizer = Tokenizer()
    for config in canvas_configs(max_objects=20):
        scenes = sample_canvas_scenes(60, config, generator=torch.Generator().manual_seed(8))
        for i in range(len(scenes)):
            tokenizer.encode(caption(scenes, i))  # raises on an unknown word
            for qa in canvas_questions(scenes, i, shuffle=True):
                tokenizer.encode(qa.question + " " + qa.answer)
    assert len(tokenizer) == 58


def test_bad_arguments():
    config = CanvasConfig(64, 64)
    with pytest.raises(ValueError, match="batch_size"):
        sample_canvas_scenes(-1, config)
    with pytest.raises(ValueError, match="config"):
        sample_canvas_scenes(4, WorldConfig())
    with pytest.raises(ValueError, match="split"):
        sample_canvas_scenes(4, config, split="training")
    scenes = sample_canvas_scenes(4, config)
    with pytest.raises(ValueError, match="kind"):
        canvas_sample_qa(scenes, 0, "relation", rng=random.Random(0))
    with pytest.raises(ValueError, match="per_image"):
        sample_canvas_vqa(scenes, 0)
    with pytest.raises(ValueError, match="per_scene"):
        canvas_questions(scenes, 0, per_scene=8)
