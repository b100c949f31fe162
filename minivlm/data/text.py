"""Text about the Shapes world: captions, and questions whose answers are exactly true.

Everything reads scenes from a SceneBatch of (B, N) tensors (world.py), one scene i at a time:

    caption(scenes, i)                 -> "a small red circle at the top left ."
    questions(scenes, i)               -> list[QA], one per kind, seeded by the scene
    sample_vqa(scenes, per_image=4)    -> [(scene index, QA)] for every scene, kinds in a random order
    world_vocabulary()                 -> every word all of these can contain
"""

import random
from typing import NamedTuple

from .world import COLORS, NUMBER_WORDS, PLURALS, POSITIONS, SHAPES, SIZES, scene_hash

QUESTION_KINDS = ("count", "color", "shape", "position", "exists")


class QA(NamedTuple):
    question: str
    answer: str
    kind: str


def caption(scenes, i, *, rng=None):
    """'a small red circle at the top left and a large blue square at the bottom right .'"""
    objects = scenes.objects(i)
    if rng is None:
        objects.sort(key=lambda o: o["cell"])  # reading order
    else:
        rng.shuffle(objects)
    phrases = [f"a {o['size']} {o['color']} {o['shape']} at the {o['position']}" for o in objects]
    text = phrases[-1] if len(phrases) < 2 else " , ".join(phrases[:-1]) + " and " + phrases[-1]
    return text + " ."


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _referents(objects, keys):
    """[(object, where)] for objects named uniquely by `keys`, or by `keys` plus their position."""
    found = []
    for o in objects:
        same = [p for p in objects if all(p[k] == o[k] for k in keys)]
        if len(same) == 1:
            found.append((o, ""))
        elif sum(p["position"] == o["position"] for p in same) == 1:
            found.append((o, f" at the {o['position']}"))
    return found


def sample_qa(scenes, i, kind, *, rng):
    """One random question of `kind` about scene i, or None if no template has a unique answer."""
    objects, config = scenes.objects(i), scenes.config
    if kind == "count":
        template = rng.randrange(3)
        ask_present = objects and rng.random() < 0.5  # else most colour / shape counts would be "zero"
        if template == 0:
            return QA("how many shapes are there ?", NUMBER_WORDS[len(objects)], kind)
        if template == 1:
            color = rng.choice(objects)["color"] if ask_present else rng.choice(config.colors)
            n = sum(o["color"] == color for o in objects)
            return QA(f"how many {color} shapes are there ?", NUMBER_WORDS[n], kind)
        shape = rng.choice(objects)["shape"] if ask_present else rng.choice(config.shapes)
        n = sum(o["shape"] == shape for o in objects)
        return QA(f"how many {PLURALS[shape]} are there ?", NUMBER_WORDS[n], kind)
    if kind in ("color", "shape"):     # name an object by its other attribute, ask for this one
        choices = _referents(objects, ["shape" if kind == "color" else "color"])
        if not choices:
            return None
        o, where = rng.choice(choices)
        named = o["shape"] if kind == "color" else f"{o['color']} object"
        return QA(f"what {kind} is the {named}{where} ?", o[kind], kind)
    if kind == "position":
        choices = [o for o, where in _referents(objects, ["color", "shape"]) if not where]
        if choices:
            o = rng.choice(choices)
            return QA(f"where is the {o['color']} {o['shape']} ?", o["position"], kind)
        return None
    if kind == "exists":
        present = {(o["color"], o["shape"]) for o in objects}
        absent = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in present]
        answer = "no" if absent and rng.random() < 0.5 else "yes"
        color, shape = rng.choice(absent if answer == "no" else sorted(present))
        return QA(f"is there {_article(color)} {color} {shape} ?", answer, kind)
    raise ValueError(f"kind must be one of {QUESTION_KINDS}, got {kind!r}")


def questions(scenes, i, *, rng=None, kinds=QUESTION_KINDS, shuffle=False, weights=None, per_scene=None):
    """Questions about scene i, at most one per kind in `kinds`, skipping kinds with no unique answer.

    Kinds are asked in the order given, or with `shuffle` in a random order drawn by `weights`
    (one per kind, default uniform: heavier kinds come earlier on average); with `per_scene`,
    stop after that many questions. Without `rng` the questions are seeded by the scene's hash:
    the same scene, the same questions.
    """
    if per_scene is not None and not 1 <= per_scene <= len(kinds):
        raise ValueError(f"per_scene must be in [1, {len(kinds)}] (one question per kind), got {per_scene}")
    if weights is not None and (not shuffle or len(weights) != len(kinds)):
        raise ValueError(f"weights need shuffle=True and one weight per kind in {kinds}, got {weights!r}")
    if rng is None:
        rng = random.Random(int(scene_hash(scenes[i])[0]))
    return ask_kinds(lambda kind: sample_qa(scenes, i, kind, rng=rng), kinds, rng, shuffle, weights, per_scene)


def ask_kinds(sample, kinds, rng, shuffle=False, weights=None, limit=None):
    """[QA]: sample(kind) for each kind (in a random order drawn by `weights` with `shuffle`), Nones skipped,
    at most `limit`. The one loop behind questions(), canvas_questions() and video_questions()."""
    if shuffle:
        kinds = _weighted_order(list(kinds), [1.0] * len(kinds) if weights is None else list(weights), rng)
    asked = []
    for kind in kinds:
        qa = sample(kind)
        if qa is not None:
            asked.append(qa)
            if len(asked) == limit:
                break
    return asked


def _weighted_order(items, weights, rng):
    """A random order of items, heavier ones earlier on average (sampling without replacement)."""
    keys = [rng.random() ** (1.0 / w) for w in weights]
    return [item for _, item in sorted(zip(keys, items), key=lambda pair: -pair[0])]


def sample_vqa(scenes, per_image=4, *, seed=0, kinds=QUESTION_KINDS, weights=None):
    """[(image index, QA)]: `per_image` questions about each scene, of different kinds.

    Kinds are drawn without replacement per image (by `weights`, default uniform); a kind
    with no unique answer in that scene (e.g. "what color is the circle ?" with two
    circles) is skipped for the next one, so a scene may get fewer questions.
    """
    if not 1 <= per_image <= len(kinds):
        raise ValueError(f"per_image must be in [1, {len(kinds)}] (one question per kind), got {per_image}")
    rng = random.Random(seed)
    return [(i, qa) for i in range(len(scenes))
            for qa in questions(scenes, i, rng=rng, kinds=kinds, shuffle=True, weights=weights, per_scene=per_image)]


def world_vocabulary():
    """Every word a caption, question or answer can contain, in grammar order."""
    words = [*NUMBER_WORDS, *COLORS, *SHAPES, *PLURALS.values(), *SIZES]
    words += [w for p in POSITIONS for w in p.split()]
    words += "a an at the and , . ? how many shapes are there what color is shape object where yes no".split()
    return list(dict.fromkeys(words))
