"""Questions about videos (video.py) whose answers need time, with the world's words only: the tokenizer
is unchanged. It has no "first", "up", "down", "move", "leave", "frame" or "which", so time is said with
words it has: frames are numbered one..nine ("at three ," = on the third frame), objects are numbered in
the order they come on screen ("object one" = the first to appear), and a direction is a side of the
image ("top" = upwards, "bottom" = downwards):

    "direction"  where is the red circle ?                 -> left / right / top / bottom (the way it moves)
    "order"      what shape is object one ?                -> the shape (or color) of the k-th object to appear
    "count"      how many [red] shapes / circles are there ?   -> objects in the whole video, counted once
    "frame"      at three , <a world question> ?           -> the world's sample_qa on that frame alone

A question is skipped (None) when its answer would not be plain from the frames: two red circles for
"direction", ties in appear time for "order", and for "frame" a position word when a named object
straddles the middle of the image.

    video_questions(videos, i)           -> list[QA], one per kind, seeded by the video's hash
    sample_video_vqa(videos, per_video)  -> [(video index, QA)], kinds in a random order per video
"""

import random
from collections import Counter

from .canvas_text import _count_qa
from .text import QA, QUESTION_KINDS, ask_kinds, sample_qa
from .video import video_frame, video_hash, video_objects
from .world import NUMBER_WORDS

VIDEO_QUESTION_KINDS = ("direction", "order", "count", "frame")


def frame_word(f):
    """The word for frame f (0-based) in questions: "one" for the first; frames past the ninth have none."""
    return NUMBER_WORDS[f + 1] if 0 <= f < len(NUMBER_WORDS) - 1 else None


def _straddles(o, radius):
    """The object covers both sides of a middle line of the image, so its position word is not plain."""
    return abs(o["x"] - 0.5) < radius or abs(o["y"] - 0.5) < radius


def _frame_qa(videos, i, rng):
    config = videos.config
    f = rng.randrange(min(config.frames, len(NUMBER_WORDS) - 1))
    frame = video_frame(videos[i], f)
    kinds = QUESTION_KINDS if frame.present.any() else ("count",)  # a frame with nothing on it: "zero"
    qa = sample_qa(frame, 0, rng.choice(kinds), rng=rng)
    if qa is None:
        return None
    words = qa.question.split()
    if qa.kind == "position":  # where is the {color} {shape} ?
        named = [o for o in frame.objects(0) if (o["color"], o["shape"]) == (words[3], words[4])]
    elif " at the " in qa.question:  # what color is the {shape} at the ... / what shape is the {color} object at ...
        named = [o for o in frame.objects(0) if words[4] in (o["shape"], o["color"])]
    else:
        named = []
    radius = lambda o: config.radii[("small", "large").index(o["size"])]
    if any(_straddles(o, radius(o)) for o in named):
        return None
    return QA(f"at {frame_word(f)} , {qa.question}", qa.answer, "frame")


def video_sample_qa(videos, i, kind, *, rng):
    """One random question of `kind` (VIDEO_QUESTION_KINDS) about video i, or None if none has a plain answer."""
    objects = video_objects(videos, i)
    if kind == "direction":
        names = Counter((o["color"], o["shape"]) for o in objects)
        choices = [o for o in objects if names[o["color"], o["shape"]] == 1]
        if not choices:
            return None
        o = rng.choice(choices)
        return QA(f"where is the {o['color']} {o['shape']} ?", o["direction"], kind)
    if kind == "order":
        ordered = sorted(objects, key=lambda o: o["appear"])
        times = Counter(o["appear"] for o in objects)
        ranks = [k for k, o in enumerate(ordered[:len(NUMBER_WORDS) - 1]) if times[o["appear"]] == 1]
        if not ranks:
            return None
        k = rng.choice(ranks)
        key = rng.choice(("shape", "color"))
        return QA(f"what {key} is object {NUMBER_WORDS[k + 1]} ?", ordered[k][key], kind)
    if kind == "count":
        return _count_qa(objects, videos.config, "count", rng)
    if kind == "frame":
        return _frame_qa(videos, i, rng)
    raise ValueError(f"kind must be one of {VIDEO_QUESTION_KINDS}, got {kind!r}")


def video_questions(videos, i, *, rng=None, kinds=VIDEO_QUESTION_KINDS, shuffle=False, per_video=None):
    """Questions about video i, at most one per kind, as text.questions (seeded by the video's hash)."""
    if per_video is not None and not 1 <= per_video <= len(kinds):
        raise ValueError(f"per_video must be in [1, {len(kinds)}] (one question per kind), got {per_video}")
    if rng is None:
        rng = random.Random(int(video_hash(videos[i])[0]))
    return ask_kinds(lambda kind: video_sample_qa(videos, i, kind, rng=rng), kinds, rng, shuffle, limit=per_video)


def sample_video_vqa(videos, per_video=2, *, seed=0, kinds=VIDEO_QUESTION_KINDS):
    """[(video index, QA)]: up to `per_video` questions of different kinds about each video."""
    if not 1 <= per_video <= len(kinds):
        raise ValueError(f"per_video must be in [1, {len(kinds)}] (one question per kind), got {per_video}")
    rng = random.Random(seed)
    return [(i, qa) for i in range(len(videos))
            for qa in video_questions(videos, i, rng=rng, kinds=kinds, shuffle=True, per_video=per_video)]
