"""Text about scenes: captions, questions whose answers are true, sample_vqa over a batch, the vocabulary."""

import random
import re
from collections import Counter

import pytest
import torch

from minivlm.data import (
    NUMBER_WORDS, PLURALS, QUESTION_KINDS, QA, WorldConfig, caption, questions, sample_qa, sample_scenes, sample_vqa,
    scenes_from_objects, world_vocabulary,
)


def scenes(n=64, seed=0, split=None, **config):
    return sample_scenes(n, WorldConfig(**config), generator=torch.Generator().manual_seed(seed), split=split)


def test_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        sample_qa(scenes(2), 0, "relation", rng=random.Random(0))


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


def true_answer(objects, question):
    """The answer to a question, worked out from the scene's objects (a list of dicts) without the templates."""
    def only(matches):
        assert len(matches) == 1, f"{question!r} has no unique referent"
        return matches[0]
    where = lambda o, place: place is None or o["position"] == place
    if question == "how many shapes are there ?":
        return NUMBER_WORDS[len(objects)]
    if match := re.fullmatch(r"how many (\w+) shapes are there \?", question):
        return NUMBER_WORDS[sum(o["color"] == match[1] for o in objects)]
    if match := re.fullmatch(r"how many (\w+) are there \?", question):
        shape = next(s for s, plural in PLURALS.items() if plural == match[1])
        return NUMBER_WORDS[sum(o["shape"] == shape for o in objects)]
    if match := re.fullmatch(r"what color is the (\w+)(?: at the (.+))? \?", question):
        return only([o for o in objects if o["shape"] == match[1] and where(o, match[2])])["color"]
    if match := re.fullmatch(r"what shape is the (\w+) object(?: at the (.+))? \?", question):
        return only([o for o in objects if o["color"] == match[1] and where(o, match[2])])["shape"]
    if match := re.fullmatch(r"where is the (\w+) (\w+) \?", question):
        return only([o for o in objects if (o["color"], o["shape"]) == (match[1], match[2])])["position"]
    if match := re.fullmatch(r"is there an? (\w+) (\w+) \?", question):
        return "yes" if any((o["color"], o["shape"]) == (match[1], match[2]) for o in objects) else "no"
    raise AssertionError(f"unknown question {question!r}")


def test_questions_per_scene_and_shuffle():
    batch = scenes(30, max_objects=4)
    for i in range(len(batch)):
        assert questions(batch, i, per_scene=2) == questions(batch, i)[:2]
        shuffled = questions(batch, i, shuffle=True, per_scene=3)
        assert shuffled == questions(batch, i, shuffle=True, per_scene=3) and len(shuffled) <= 3
        assert len({qa.kind for qa in shuffled}) == len(shuffled)
    with pytest.raises(ValueError, match="per_scene"):
        questions(batch, 0, per_scene=0)
    with pytest.raises(ValueError, match="shuffle"):
        questions(batch, 0, weights=[1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="one weight per kind"):
        questions(batch, 0, shuffle=True, weights=[1, 1])


def test_sample_vqa_is_the_batch_version_of_questions():
    batch = scenes(40, max_objects=4)
    rng = random.Random(5)
    expected = [(i, qa) for i in range(len(batch)) for qa in questions(batch, i, rng=rng, shuffle=True, per_scene=3)]
    assert sample_vqa(batch, 3, seed=5) == expected


def test_sample_vqa_is_deterministic_for_a_seed():
    batch = scenes(50, max_objects=4)
    assert sample_vqa(batch, 4, seed=0) == sample_vqa(batch, 4, seed=0)
    assert sample_vqa(batch, 4, seed=0) != sample_vqa(batch, 4, seed=1)


@pytest.mark.parametrize("per_image", [1, 2, 4, 5])
def test_sample_vqa_asks_at_most_per_image_questions_of_different_kinds(per_image):
    batch = scenes(100, max_objects=4)
    by_scene = {}
    for i, qa in sample_vqa(batch, per_image, seed=2):
        assert isinstance(qa, QA) and qa.kind in QUESTION_KINDS
        by_scene.setdefault(i, []).append(qa.kind)
    assert set(by_scene) == set(range(len(batch)))  # "count" and "exists" always have an answer
    for kinds in by_scene.values():
        assert len(kinds) <= per_image and len(set(kinds)) == len(kinds)
    assert max(map(len, by_scene.values())) == per_image


@pytest.mark.parametrize("config", [dict(max_objects=4), dict(max_objects=9, grid=4, continuous=True)])
def test_sample_vqa_answers_are_true(config):
    batch = scenes(150, seed=1, **config)
    pairs = sample_vqa(batch, 5, seed=3)
    assert {qa.kind for _, qa in pairs} == set(QUESTION_KINDS)
    for i, qa in pairs:
        assert qa.answer == true_answer(batch.objects(i), qa.question), qa


@pytest.mark.parametrize("per_image, kinds", [(0, QUESTION_KINDS), (6, QUESTION_KINDS), (3, ("count", "color"))])
def test_sample_vqa_rejects_a_bad_per_image(per_image, kinds):
    with pytest.raises(ValueError, match=r"per_image must be in \[1, "):
        sample_vqa(scenes(4), per_image, kinds=kinds)


@pytest.mark.parametrize("favoured", ["exists", "position"])
def test_sample_vqa_weights_put_a_kind_first_more_often(favoured):
    batch = scenes(300, max_objects=4)
    def share_first(weights):
        first = {}
        for i, qa in sample_vqa(batch, 5, seed=0, weights=weights):
            first.setdefault(i, qa.kind)
        return Counter(first.values())[favoured] / len(batch)
    heavy = [10.0 if kind == favoured else 1.0 for kind in QUESTION_KINDS]
    assert share_first(heavy) > 0.55 and share_first(None) < 0.35
