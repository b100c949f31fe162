"""Questions about canvas scenes (canvas.py), with the world's words only: the tokenizer is unchanged.

The world's kinds, plus two that need every small object seen:

    "count"         how many shapes / red shapes / circles are there ?   (skipped if the answer is over nine)
    "color", "shape", "position", "exists"                               the world's sample_qa, unchanged
    "count_small"   how many small [red] shapes / circles are there ?   how many small red circles are there ?
    "exists_small"  is there a small red circle ?                       (a large red circle does not count)

    canvas_questions(scenes, i)           -> list[QA], one per kind, seeded by the scene's canvas hash
    sample_canvas_vqa(scenes, per_image)  -> [(scene index, QA)], kinds in a random order per scene
"""

import random

from .canvas import canvas_scene_hash
from .text import QA, ask_kinds, sample_qa
from .world import NUMBER_WORDS, PLURALS

CANVAS_QUESTION_KINDS = ("count", "color", "shape", "position", "exists", "count_small", "exists_small")


def _count_qa(objects, config, kind, rng):
    """'how many [small] [red] shapes / circles are there ?', or None when the answer is over nine."""
    pool = [o for o in objects if o["size"] == "small"] if kind == "count_small" else objects
    small = "small " if kind == "count_small" else ""
    ask_present = pool and rng.random() < 0.5  # else most colour / shape counts would be "zero"
    color = rng.choice(pool)["color"] if ask_present else rng.choice(config.colors)
    shape = rng.choice(pool)["shape"] if ask_present else rng.choice(config.shapes)
    template = rng.randrange(4 if kind == "count_small" else 3)
    if template == 0:
        question, n = f"how many {small}shapes are there ?", len(pool)
    elif template == 1:
        question, n = f"how many {small}{color} shapes are there ?", sum(o["color"] == color for o in pool)
    elif template == 2:
        question, n = f"how many {small}{PLURALS[shape]} are there ?", sum(o["shape"] == shape for o in pool)
    else:
        question = f"how many {small}{color} {PLURALS[shape]} are there ?"
        n = sum((o["color"], o["shape"]) == (color, shape) for o in pool)
    return QA(question, NUMBER_WORDS[n], kind) if n < len(NUMBER_WORDS) else None


def canvas_sample_qa(scenes, i, kind, *, rng):
    """One random question of `kind` (CANVAS_QUESTION_KINDS) about canvas scene i, or None if none fits.

    "count" uses the world's count templates, skipped when the answer is over nine; "count_small" counts
    only small objects; "exists_small" asks for a small object of a colour and shape (a large one
    does not count). The other kinds are the world's sample_qa.
    """
    objects, config = scenes.objects(i), scenes.config
    if kind in ("count", "count_small"):
        return _count_qa(objects, config, kind, rng)
    if kind == "exists_small":
        present = sorted({(o["color"], o["shape"]) for o in objects if o["size"] == "small"})
        absent = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in present]
        answer = "no" if absent and (not present or rng.random() < 0.5) else "yes"
        color, shape = rng.choice(absent if answer == "no" else present)
        return QA(f"is there a small {color} {shape} ?", answer, kind)
    if kind in CANVAS_QUESTION_KINDS:
        return sample_qa(scenes, i, kind, rng=rng)
    raise ValueError(f"kind must be one of {CANVAS_QUESTION_KINDS}, got {kind!r}")


def canvas_questions(scenes, i, *, rng=None, kinds=CANVAS_QUESTION_KINDS, shuffle=False, per_scene=None):
    """Questions about canvas scene i, at most one per kind, as text.questions (seeded by the scene's hash)."""
    if per_scene is not None and not 1 <= per_scene <= len(kinds):
        raise ValueError(f"per_scene must be in [1, {len(kinds)}] (one question per kind), got {per_scene}")
    if rng is None:
        rng = random.Random(int(canvas_scene_hash(scenes[i])[0]))
    return ask_kinds(lambda kind: canvas_sample_qa(scenes, i, kind, rng=rng), kinds, rng, shuffle, limit=per_scene)


def sample_canvas_vqa(scenes, per_image=4, *, seed=0, kinds=CANVAS_QUESTION_KINDS):
    """[(image index, QA)]: up to `per_image` questions of different kinds about each canvas scene."""
    if not 1 <= per_image <= len(kinds):
        raise ValueError(f"per_image must be in [1, {len(kinds)}] (one question per kind), got {per_image}")
    rng = random.Random(seed)
    return [(i, qa) for i in range(len(scenes))
            for qa in canvas_questions(scenes, i, rng=rng, kinds=kinds, shuffle=True, per_scene=per_image)]
