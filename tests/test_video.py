"""Videos of the Shapes world: configs, sampling, splits, rendering over frames, and questions that need time."""

import random
import re

import pytest
import torch

from minivlm.data import (
    BACKGROUND, COLORS, NUMBER_WORDS, PLURALS, SHAPES, SIZES, SPLITS, VIDEO_QUESTION_KINDS, Tokenizer, VideoConfig,
    WorldConfig, caption, position_word, render_video, sample_video_vqa, sample_videos, video_frame, video_hash,
    video_objects, video_questions, video_sample_qa, video_split,
)

BG = torch.tensor(BACKGROUND)


def videos(n, seed=0, split=None, **fields):
    return sample_videos(n, VideoConfig(**fields), generator=torch.Generator().manual_seed(seed), split=split)


# ----------------------------------------------------------------------------- configs and sampling

@pytest.mark.parametrize("kwargs, name", [
    (dict(frames=1), "frames"), (dict(frames=8.0), "frames"), (dict(image_size=4), "image_size"),
    (dict(min_objects=0), "min_objects"), (dict(max_objects=10), "max_objects"),
    (dict(min_objects=3, max_objects=2), "min_objects"), (dict(radii=(0.1, 0.05)), "radii"),
    (dict(min_speed=0), "min_speed"), (dict(max_speed=0.5), "max_speed"), (dict(max_speed=0.01), "max_speed"),
    (dict(appear_disappear=1), "appear_disappear"), (dict(shapes=("hexagon",)), "shapes"), (dict(colors=()), "colors"),
])
def test_config_rejects_bad_values_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VideoConfig(**kwargs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        sample_videos(-1)
    with pytest.raises(ValueError, match="config"):
        sample_videos(4, WorldConfig())
    with pytest.raises(ValueError, match="split"):
        sample_videos(4, split="training")
    v = videos(4)
    with pytest.raises(ValueError, match="frame"):
        video_frame(v, 8)
    with pytest.raises(ValueError, match="videos"):
        render_video(video_frame(v, 0))
    with pytest.raises(ValueError, match="kind"):
        video_sample_qa(v, 0, "relation", rng=random.Random(0))
    with pytest.raises(ValueError, match="per_video"):
        sample_video_vqa(v, 0)
    with pytest.raises(ValueError, match="per_video"):
        video_questions(v, 0, per_video=5)


def test_same_seed_same_videos():
    a, b, c = (videos(30, seed=s, split="train", max_objects=4) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a._tensors().values(), b._tensors().values()))
    assert torch.equal(render_video(a), render_video(b)) and not torch.equal(render_video(a), render_video(c))
    assert [video_questions(a, i) for i in range(30)] == [video_questions(b, i) for i in range(30)]
    assert sample_video_vqa(a, 3, seed=4) == sample_video_vqa(b, 3, seed=4)


def test_sampled_objects_follow_the_config():
    config = VideoConfig(frames=6, min_objects=2, max_objects=4, shapes=("circle", "square"), colors=("red", "blue"))
    v = sample_videos(300, config, generator=torch.Generator().manual_seed(3))
    B, N, F = 300, 4, 6
    assert v.shape.shape == (B, N) and v.visible.shape == (B, N, F) and v.config is config
    assert ((v.count >= 2) & (v.count <= 4)).all() and set(v.count.tolist()) == {2, 3, 4}
    p = v.present
    assert set(v.shape[p].tolist()) == {0, 1} and set(v.color[p].tolist()) == {0, 2}
    duration = v.disappear - v.appear
    assert (v.appear[p] >= 0).all() and (v.disappear[p] <= F).all() and (duration[p] >= config.min_duration).all()
    assert (v.appear[p] > 0).any() and (v.disappear[p] < F).any()
    main = torch.maximum(v.vx.abs(), v.vy.abs())[p]
    off = torch.minimum(v.vx.abs(), v.vy.abs())[p]
    assert (main >= config.min_speed - 1e-6).all() and (main <= config.max_speed + 1e-6).all()
    assert (off <= 0.25 * main + 1e-6).all()  # mostly along one axis: the direction is plain
    x, y = v.positions()
    r = torch.tensor(config.radii)[v.size][..., None]
    for q in (x, y):  # inside the image on every frame
        assert ((q - r >= 0) & (q + r <= 1))[p].all()
    # co-visible objects never touch: their boxes stay apart on every frame
    apart = lambda q: (q[:, :, None] - q[:, None]).abs() >= r[:, :, None] + r[:, None]
    both = v.visible[:, :, None] & v.visible[:, None] & ~torch.eye(N, dtype=torch.bool)[None, :, :, None]
    assert (apart(x) | apart(y))[both].all()
    for name, t in v._tensors().items():  # empty slots hold zeros
        assert (t[~p] == 0).all(), name
    still = videos(50, appear_disappear=False)
    assert (still.appear == 0).all() and (still.disappear[still.present] == 8).all()


def test_runs_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    config = VideoConfig(max_objects=5)
    v = sample_videos(16, config, generator=torch.Generator("cuda").manual_seed(0), device="cuda", split="val")
    assert v.x0.device.type == "cuda" and (video_split(v) == 1).all()
    assert torch.equal(render_video(v).cpu(), render_video(v.to("cpu")))


# ----------------------------------------------------------------------------- splits

def test_splits_never_share_a_video():
    describe = lambda b, i: tuple(sorted(tuple(o.values()) for o in video_objects(b, i)))
    tiny = dict(frames=2, max_objects=1, shapes=("circle",), colors=("red",))
    hashes, described = {}, {}
    for k, split in enumerate(SPLITS):
        batch = videos(600, seed=k, split=split, **tiny)
        assert len(batch) == 600 and (video_split(batch) == k).all()
        hashes[split] = set(video_hash(batch).tolist())
        described[split] = {describe(batch, i) for i in range(len(batch))}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not hashes[a] & hashes[b] and not described[a] & described[b]
    share = torch.bincount(video_split(videos(3000, seed=9)), minlength=3) / 3000
    assert torch.allclose(share, torch.tensor([0.8, 0.1, 0.1]), atol=0.03)


def test_hash_ignores_slot_order_and_image_size():
    v = videos(100, max_objects=4)
    flipped = v[:]
    for name, t in flipped._tensors().items():
        setattr(flipped, name, t.flip(1))
    assert torch.equal(video_hash(v), video_hash(flipped))
    bigger = v[:]
    bigger.config = VideoConfig(image_size=64, max_objects=4)
    assert torch.equal(video_hash(v), video_hash(bigger))
    longer = v[:]
    longer.config = VideoConfig(frames=9, max_objects=4, max_speed=0.05)
    assert (video_hash(v) != video_hash(longer)).float().mean() > 0.98


# ----------------------------------------------------------------------------- rendering

@pytest.mark.parametrize("size", [32, 64])
def test_render_shape_range_and_centres(size):
    v = videos(30, seed=5, image_size=size, max_objects=4)
    frames = render_video(v)
    assert frames.shape == (30, 8, 3, size, size) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    x, y = v.positions()
    for b, n, f in v.visible.nonzero().tolist():  # every object on screen shows its colour at its centre
        px, py = int(x[b, n, f] * size), int(y[b, n, f] * size)
        if SHAPES[v.shape[b, n]] != "triangle":  # a triangle's centre pixel may sit on its tip's edge
            assert torch.equal(frames[b, f, :, py, px], torch.tensor(COLORS[tuple(COLORS)[v.color[b, n]]]))
    assert torch.equal(render_video(v[3])[0], frames[3])


def test_objects_are_absent_outside_their_frames():
    v = videos(60, seed=6, min_objects=1, max_objects=1)
    frames = render_video(v)
    drawn = (frames != BG[:, None, None]).any(2).flatten(2).any(2)  # (B, F): any non-background pixel
    f = torch.arange(8)
    on = (v.appear[:, :1] <= f) & (f < v.disappear[:, :1])
    assert torch.equal(drawn, on)
    assert (~on).any(1).float().mean() > 0.3  # many objects do come in late or go early


def test_a_lone_object_moves_by_its_velocity():
    v = videos(40, seed=7, image_size=64, min_objects=1, max_objects=1, shapes=("square",), appear_disappear=False)
    mask = (render_video(v) != BG[:, None, None]).any(2).float()  # (B, F, H, W)
    pixels = torch.arange(64.0) + 0.5
    mass = mask.sum((2, 3))
    cx = (mask.sum(2) * pixels).sum(-1) / mass  # (B, F) centre of mass in pixels
    cy = (mask.sum(3) * pixels).sum(-1) / mass
    step_x, step_y = cx.diff(dim=1), cy.diff(dim=1)  # (B, F - 1) pixels moved per frame
    assert (step_x - v.vx[:, :1] * 64).abs().max() < 1.0 and (step_y - v.vy[:, :1] * 64).abs().max() < 1.0
    fit = lambda c: (c[:, -1] - c[:, 0]) / 7  # over the whole video the rounding averages out
    assert (fit(cx) - v.vx[:, 0] * 64).abs().max() < 0.15 and (fit(cy) - v.vy[:, 0] * 64).abs().max() < 0.15


def test_frames_are_scenes_for_the_world_text():
    v = videos(20, seed=8, max_objects=4)
    x, y = v.positions()
    for f in (0, 5):
        frame = video_frame(v, f)
        assert torch.equal(frame.present, v.visible[:, :, f])
        for i in range(20):
            objects = video_objects(v, i, frame=f)
            assert objects == frame.objects(i) and len(objects) == int(v.visible[i, :, f].sum())
            for o, n in zip(objects, v.visible[i, :, f].nonzero()[:, 0].tolist()):
                assert o["x"] == x[i, n, f].item() and o["position"] == position_word(x[i, n, f], y[i, n, f])
            if objects:
                assert caption(frame, i).startswith("a ")


# ----------------------------------------------------------------------------- questions

def true_answer(v, i, question):
    """The answer worked out from the video's tensors, without the templates or the object dicts."""
    present, names = v.present[i], tuple(COLORS)
    singular = {plural: shape for shape, plural in PLURALS.items()}

    def select(mask, color=None, shape=None):
        if color is not None:
            mask = mask & (v.color[i] == names.index(color))
        if shape is not None:
            mask = mask & (v.shape[i] == SHAPES.index(shape))
        return mask

    if match := re.fullmatch(r"at (\w+) , (.*)", question):
        f = NUMBER_WORDS.index(match[1]) - 1
        on, question = v.visible[i, :, f], match[2]
        x, y = (p[i, :, f] for p in v.positions())
        where = lambda n: f"{'top' if y[n] < 0.5 else 'bottom'} {'left' if x[n] < 0.5 else 'right'}"
        if m := re.fullmatch(r"how many (\w+ )?(shapes|circles|squares|triangles) are there \?", question):
            return NUMBER_WORDS[int(select(on, m[1] and m[1].strip(), singular.get(m[2])).sum())]
        if m := re.fullmatch(r"is there an? (\w+) (\w+) \?", question):
            return "yes" if select(on, m[1], m[2]).any() else "no"
        if m := re.fullmatch(r"where is the (\w+) (\w+) \?", question):
            found = select(on, m[1], m[2]).nonzero()[:, 0].tolist()
            assert len(found) == 1, question
            return where(found[0])
        if m := re.fullmatch(r"what (color|shape) is the (\w+)(?: object)?(?: at the (\w+ \w+))? \?", question):
            key, name, place = m[1], m[2], m[3]
            mask = select(on, shape=name) if key == "color" else select(on, color=name)
            found = [n for n in mask.nonzero()[:, 0].tolist() if place in (None, where(n))]
            assert len(found) == 1, question
            return names[v.color[i, found[0]]] if key == "color" else SHAPES[v.shape[i, found[0]]]
        raise AssertionError(f"unknown frame question {question!r}")
    if match := re.fullmatch(r"how many (\w+ )?(shapes|circles|squares|triangles) are there \?", question):
        return NUMBER_WORDS[int(select(present, match[1] and match[1].strip(), singular.get(match[2])).sum())]
    if match := re.fullmatch(r"where is the (\w+) (\w+) \?", question):
        found = select(present, match[1], match[2]).nonzero()[:, 0].tolist()
        assert len(found) == 1, question
        vx, vy = v.vx[i, found[0]].item(), v.vy[i, found[0]].item()
        return ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("bottom" if vy > 0 else "top")
    if match := re.fullmatch(r"what (shape|color) is object (\w+) \?", question):
        k = NUMBER_WORDS.index(match[2]) - 1
        appear = torch.where(present, v.appear[i], 10**6)
        n = appear.argsort(stable=True)[k]
        assert (appear == appear[n]).sum() == 1, question  # no tie: the k-th to come in is plain
        return SHAPES[v.shape[i, n]] if match[1] == "shape" else names[v.color[i, n]]
    raise AssertionError(f"unknown question {question!r}")


@pytest.mark.parametrize("fields", [dict(max_objects=4), dict(frames=12, max_objects=6, max_speed=0.03, min_speed=0.02,
                                                              image_size=64), dict(appear_disappear=False)])
def test_answers_are_true_and_every_kind_is_asked(fields):
    v = videos(100, seed=11, split="val" if "frames" not in fields else None, **fields)
    pairs = sample_video_vqa(v, len(VIDEO_QUESTION_KINDS), seed=1)
    kinds = {qa.kind for _, qa in pairs}
    assert kinds == set(VIDEO_QUESTION_KINDS)  # without appear_disappear, "order" only for a lone object
    assert {i for i, _ in pairs} == set(range(len(v)))
    for i, qa in pairs:
        assert qa.answer == true_answer(v, i, qa.question), qa
    if v.config.frames > 9:  # frames past the ninth have no number word
        assert all(qa.question.split()[1] in NUMBER_WORDS[1:] for _, qa in pairs if qa.kind == "frame")


def test_questions_skip_what_the_frames_do_not_show():
    v = videos(200, seed=12, max_objects=5)
    rng = random.Random(0)
    for i in range(len(v)):
        objects = video_objects(v, i)
        names = [(o["color"], o["shape"]) for o in objects]
        qa = video_sample_qa(v, i, "direction", rng=rng)
        assert (qa is None) == all(names.count(n) > 1 for n in names)
        times = sorted(o["appear"] for o in objects)
        qa = video_sample_qa(v, i, "order", rng=rng)
        assert (qa is None) == all(times.count(t) > 1 for t in times)
        qa = video_sample_qa(v, i, "frame", rng=rng)
        if qa is not None and ("where" in qa.question or " at the " in qa.question):
            f = NUMBER_WORDS.index(qa.question.split()[1]) - 1
            words = qa.question.split()[3:]  # the world's question after "at <frame> ,"
            for o in video_objects(v, i, frame=f):  # every object the answer hangs on lies inside one quadrant
                named = (o["color"], o["shape"]) == (words[3], words[4]) if words[0] == "where" else words[4] in o.values()
                r = v.config.radii[SIZES.index(o["size"])]
                if named:
                    assert abs(o["x"] - 0.5) >= r and abs(o["y"] - 0.5) >= r, qa


def test_all_text_tokenizes_with_the_existing_tokenizer():
    tokenizer = Tokenizer()
    v = videos(100, seed=13, max_objects=6, frames=10, max_speed=0.05)
    words = set()
    for i, qa in sample_video_vqa(v, 4, seed=2):
        tokenizer.encode(qa.question + " " + qa.answer)  # raises on an unknown word
        words.update(qa.question.split())
    assert {"object", "where", "at"} <= words
    assert len(tokenizer) == 58
