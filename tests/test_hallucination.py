"""Chapter 10's data: lies that are really lies, CHAIR and POPE as their papers score, preference pairs."""

import random

import pytest
import torch

from minivlm.data import WorldConfig, caption, sample_scenes
from minivlm.data.hallucination import (CAPTION_QUESTION, POPE_SETTINGS, caption_mentions, chair,
                                        hallucinated_caption, noisy_caption, pope_questions, pope_scores,
                                        popular_objects, preference_pairs)


def scenes(n=200, seed=0):
    return sample_scenes(n, WorldConfig(), generator=torch.Generator().manual_seed(seed))


def present(batch, i):
    return {(o["color"], o["shape"]) for o in batch.objects(i)}


def test_a_true_caption_parses_back_to_its_objects():
    batch = scenes(50)
    for i in range(len(batch)):
        mentions = caption_mentions(caption(batch, i))
        assert sorted(mentions) == sorted((o["size"], o["color"], o["shape"], o["position"]) for o in batch.objects(i))
    assert caption_mentions("a red a small blue circle at the top left and and .") == [
        ("small", "blue", "circle", "top left")]


def test_a_hallucinated_caption_adds_exactly_one_absent_object():
    batch, rng = scenes(), random.Random(0)
    for i in range(len(batch)):
        named = [(c, s) for _, c, s, _ in caption_mentions(hallucinated_caption(batch, i, rng))]
        assert len(named) == batch.count[i] + 1
        assert sum(pair not in present(batch, i) for pair in named) == 1


def test_noisy_captions_lie_at_the_rate_asked_and_chair_measures_it():
    batch, rng = scenes(1000), random.Random(1)
    noisy = [noisy_caption(batch, i, rng, rate=0.3) for i in range(len(batch))]
    score = chair([text for text, _ in noisy], batch)
    lies = sum(n for _, n in noisy)
    assert abs(lies / len(batch) - 0.3) < 0.05
    assert score["CHAIR_s"] == pytest.approx(100 * lies / len(batch))
    mentioned = sum(len(caption_mentions(text)) for text, _ in noisy)
    assert score["CHAIR_i"] == pytest.approx(100 * lies / mentioned)
    assert chair([caption(batch, i) for i in range(len(batch))], batch)["CHAIR_s"] == 0
    with pytest.raises(ValueError, match="rate must be a probability"):
        noisy_caption(batch, 0, rng, rate=1.5)


def test_popular_hallucinations_are_the_popular_objects():
    batch, rng = scenes(2000), random.Random(2)
    counts = {}
    for i in range(len(batch)):
        for _, c, s, _ in caption_mentions(hallucinated_caption(batch, i, rng)):
            if (c, s) not in present(batch, i):
                counts[c, s] = counts.get((c, s), 0) + 1
    ranked = popular_objects(batch.config)
    assert counts[ranked[0]] > 2 * counts[ranked[-1]]


@pytest.mark.parametrize("setting", POPE_SETTINGS)
def test_pope_is_balanced_and_true(setting):
    batch, rng = scenes(), random.Random(3)
    yes = no = 0
    for i in range(len(batch)):
        for qa in pope_questions(batch, i, setting, rng, per_answer=2):
            words = qa.question.split()
            pair = (words[3], words[4])
            assert (pair in present(batch, i)) == (qa.answer == "yes")
            if setting == "adversarial" and qa.answer == "no":
                assert any(pair[0] == c or pair[1] == s for c, s in present(batch, i))
            if setting == "popular" and qa.answer == "no":
                assert pair in popular_objects(batch.config)[:6 + len(present(batch, i))]
            yes, no = yes + (qa.answer == "yes"), no + (qa.answer == "no")
    assert yes == no > 0


def test_pope_scores_are_the_papers():
    scores = pope_scores(["yes", "yes", "no", "no", "yes"], ["yes", "no", "no", "yes", "yes"])
    assert scores["accuracy"] == 60 and scores["yes_ratio"] == 60
    assert scores["precision"] == pytest.approx(200 / 3) and scores["recall"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="as many predictions"):
        pope_scores(["yes"], ["yes", "no"])


def test_preference_pairs_put_the_truth_against_a_plausible_lie():
    batch = scenes(100)
    pairs = preference_pairs(batch, seed=0)
    assert {p.kind for p in pairs} == {"caption", "count", "color", "exists"}
    for p in pairs:
        assert p.chosen != p.rejected
        if p.kind == "caption":
            assert p.question == CAPTION_QUESTION and p.chosen == caption(batch, p.index)
            assert sum((c, s) not in present(batch, p.index) for _, c, s, _ in caption_mentions(p.rejected)) == 1
        if p.kind == "exists":
            assert {p.chosen, p.rejected} == {"yes", "no"}
    assert pairs == preference_pairs(batch, seed=0)
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        preference_pairs(batch, kinds=("position",))
