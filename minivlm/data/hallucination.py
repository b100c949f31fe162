"""The world tells the truth and lies: hallucinated captions, preference pairs and POPE probes (chapter 10).

Web captions mention things that are not in the picture, and a VLM trained on them learns to say such
things too: an object hallucination. Preference tuning (preference.py) is trained on pairs of a true
answer (chosen) and a plausible false one (rejected); hallucination is measured two ways:

    CHAIR (Rohrbach et al. 2018, arXiv 1809.02156): of the objects a generated caption mentions, the
      share not in the scene (per object, CHAIR_i) and the share of captions with at least one (CHAIR_s);
    POPE (Li et al. 2023, arXiv 2305.10355): balanced yes/no questions "is there a red circle ?", half
      about objects in the scene, half about absent ones drawn at random, among the *popular* objects
      (the ones the training captions mention most) or *adversarially* (sharing a colour or a shape with
      an object in the scene, the ones a model confuses); scored by accuracy, precision, recall, F1 and
      the share of "yes".

The noisy captions of the SFT data: with probability `rate` a caption gets one extra phrase about an
object the scene does not hold, half the time a confusion of a present object (its shape in another
colour, or its colour on another shape), else a popular one (POPULAR, a fixed Zipf-like ranking of the
(colour, shape) pairs), as web captions name common objects. The caption prompt uses the world's words:
"what shapes are there ?" (CAPTION_QUESTION).

    noisy_caption(scenes, i, rng, rate)          -> (caption, number of hallucinated objects)
    caption_mentions(text)                       -> [(size, color, shape, position)] parsed back
    chair(captions, scenes)                      -> {"CHAIR_s", "CHAIR_i"} in %
    pope_questions(scenes, i, setting, rng)      -> [QA] yes and no, balanced
    pope_scores(predicted, answers)              -> {"accuracy", "precision", "recall", "f1", "yes_ratio"} in %
    preference_pairs(scenes, seed)               -> [PreferencePair]: a true and a false answer each
"""

import random
from typing import NamedTuple

from .text import QA, _article, caption, questions
from .world import NUMBER_WORDS, POSITIONS, SIZES

CAPTION_QUESTION = "what shapes are there ?"
HALLUCINATION_RATE = 0.3
POPE_SETTINGS = ("random", "popular", "adversarial")
PAIR_KINDS = ("caption", "count", "color", "exists")


class PreferencePair(NamedTuple):
    index: int         # the scene
    question: str
    chosen: str        # true of the scene
    rejected: str      # a plausible hallucination
    kind: str          # PAIR_KINDS


def popular_objects(config):
    """Every (color, shape) of the world's config, most popular first: the order the noisy captions'
    popular hallucinations are drawn with (weights 1/rank) and POPE's 'popular' setting reads."""
    pairs = [(c, s) for s in config.shapes for c in config.colors]
    random.Random(10).shuffle(pairs)              # a fixed ranking, not the config's order
    return pairs


def _phrase(size, color, shape, position):
    return f"a {size} {color} {shape} at the {position}"


def _join(phrases):
    text = phrases[-1] if len(phrases) < 2 else " , ".join(phrases[:-1]) + " and " + phrases[-1]
    return text + " ."


def _absent_object(objects, config, rng, popular_share=0.5):
    """A (color, shape) not in the scene: a popular one, or a confusion of a present object."""
    present = {(o["color"], o["shape"]) for o in objects}
    if objects and rng.random() >= popular_share:
        o = rng.choice(objects)
        confusions = [(c, o["shape"]) for c in config.colors] + [(o["color"], s) for s in config.shapes]
        confusions = [pair for pair in confusions if pair not in present]
        if confusions:
            return rng.choice(confusions)
    ranked = [pair for pair in popular_objects(config) if pair not in present]
    return rng.choices(ranked, weights=[1 / (k + 1) for k in range(len(ranked))])[0]


def hallucinated_caption(scenes, i, rng):
    """The scene's caption with one extra phrase about an object it does not hold, at a random place."""
    objects = scenes.objects(i)
    phrases = [_phrase(o["size"], o["color"], o["shape"], o["position"]) for o in objects]
    color, shape = _absent_object(objects, scenes.config, rng)
    phrases.insert(rng.randrange(len(phrases) + 1), _phrase(rng.choice(SIZES), color, shape, rng.choice(POSITIONS)))
    return _join(phrases)


def noisy_caption(scenes, i, rng, rate=HALLUCINATION_RATE):
    """(caption, hallucinated objects in it): the true caption, or with probability `rate` one with a lie."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be a probability in [0, 1], got {rate!r}")
    if rng.random() < rate:
        return hallucinated_caption(scenes, i, rng), 1
    return caption(scenes, i), 0


def caption_mentions(text):
    """[(size, color, shape, position)]: every 'a {size} {color} {shape} at the {position}' phrase of a caption.
    Words that do not make a phrase are skipped (a generated caption need not be well formed)."""
    words = text.replace(" .", "").replace(" ,", " and").split()
    mentions, k = [], 0
    while k + 8 <= len(words):
        if words[k] in ("a", "an") and words[k + 4:k + 6] == ["at", "the"]:
            position = " ".join(words[k + 6:k + 8])
            if position in POSITIONS:
                mentions.append((words[k + 1], words[k + 2], words[k + 3], position))
                k += 8
                continue
        k += 1
    return mentions


def chair(captions, scenes):
    """{"CHAIR_s": % captions naming an object not in their scene, "CHAIR_i": % of named objects not there,
    "objects": mentions per caption}. An object counts as there when a scene object has its colour and shape."""
    if len(captions) != len(scenes):
        raise ValueError(f"got {len(captions)} captions for {len(scenes)} scenes")
    mentioned = hallucinated = bad_captions = 0
    for i, text in enumerate(captions):
        present = {(o["color"], o["shape"]) for o in scenes.objects(i)}
        named = [(color, shape) for _, color, shape, _ in caption_mentions(text)]
        wrong = sum(pair not in present for pair in named)
        mentioned, hallucinated, bad_captions = mentioned + len(named), hallucinated + wrong, bad_captions + (wrong > 0)
    return {"CHAIR_s": 100 * bad_captions / max(1, len(captions)), "CHAIR_i": 100 * hallucinated / max(1, mentioned),
            "objects": mentioned / max(1, len(captions))}


def pope_questions(scenes, i, setting, rng, per_answer=1):
    """`per_answer` "yes" and as many "no" questions about scene i (fewer if it lacks objects to ask about)."""
    if setting not in POPE_SETTINGS:
        raise ValueError(f"setting must be one of {POPE_SETTINGS}, got {setting!r}")
    objects, config = scenes.objects(i), scenes.config
    present = sorted({(o["color"], o["shape"]) for o in objects})
    absent = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in present]
    if setting == "popular":
        absent = [pair for pair in popular_objects(config) if pair not in present][:3 * per_answer]
    elif setting == "adversarial":
        shared = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        absent = shared or absent
    n = min(per_answer, len(present), len(absent))
    ask = lambda color, shape: f"is there {_article(color)} {color} {shape} ?"
    return ([QA(ask(*pair), "yes", f"pope_{setting}") for pair in rng.sample(present, n)]
            + [QA(ask(*pair), "no", f"pope_{setting}") for pair in rng.sample(absent, n)])


def pope_scores(predicted, answers):
    """POPE's scores, "yes" the positive class: {"accuracy", "precision", "recall", "f1", "yes_ratio"} in %."""
    if len(predicted) != len(answers) or not answers:
        raise ValueError(f"need as many predictions as answers (and at least one), got {len(predicted)} and {len(answers)}")
    pairs = list(zip(predicted, answers))
    tp = sum(p == "yes" and a == "yes" for p, a in pairs)
    fp = sum(p == "yes" and a == "no" for p, a in pairs)
    fn = sum(p != "yes" and a == "yes" for p, a in pairs)
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return {"accuracy": 100 * sum(p == a for p, a in pairs) / len(pairs), "precision": 100 * precision,
            "recall": 100 * recall, "f1": 100 * (2 * precision * recall / max(1e-12, precision + recall)),
            "yes_ratio": 100 * sum(p == "yes" for p in predicted) / len(predicted)}


def _false_answer(qa, scenes, i, rng):
    """A plausible wrong answer to a true QA: a count off by one, another colour, the other yes/no."""
    if qa.kind == "count":
        n = NUMBER_WORDS.index(qa.answer)
        up = n == 0 or (n + 1 < len(NUMBER_WORDS) and rng.random() < 0.5)
        return NUMBER_WORDS[n + 1] if up else NUMBER_WORDS[n - 1]
    if qa.kind == "color":
        return rng.choice([c for c in scenes.config.colors if c != qa.answer])
    return "no" if qa.answer == "yes" else "yes"


def preference_pairs(scenes, seed=0, kinds=PAIR_KINDS):
    """[PreferencePair]: for each scene, one pair per kind it allows: the true caption against one with a
    hallucinated object, and a true answer against a wrong one for a count, a colour and an "is there" question."""
    unknown = [k for k in kinds if k not in PAIR_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {PAIR_KINDS}, got {kinds!r}")
    rng = random.Random(seed)
    pairs = []
    for i in range(len(scenes)):
        if "caption" in kinds:
            pairs.append(PreferencePair(i, CAPTION_QUESTION, caption(scenes, i), hallucinated_caption(scenes, i, rng),
                                        "caption"))
        asked = [k for k in kinds if k != "caption"]
        for qa in questions(scenes, i, rng=rng, kinds=asked) if asked else []:
            pairs.append(PreferencePair(i, qa.question, qa.answer, _false_answer(qa, scenes, i, rng), qa.kind))
    return pairs
