"""Interleaved image-text documents and few-shot episodes of the Shapes world (Flamingo, chapter 07).

Flamingo (arXiv 2204.14198) trains on web pages where images and text alternate, and then answers
in context: a few solved examples in the prompt define the task. Both come from scenes here:

    interleaved_documents(scenes, images_per_document=3)
        "<image> a small red circle at the top left . <eos> <image> a large blue square ... <eos> ..."
    few_shot_episodes(scenes, 200, shots=2)
        "<user> <image> what is the object ? <assistant> red <eos>         k solved examples,
         <user> <image> what is the object ? <assistant> green <eos>       all under one hidden rule,
         <user> <image> what is the object ? <assistant>"                  then the query: "blue"

Each image becomes one `<image>` token in the text; a chunk ends with END_OF_CHUNK. Flamingo adds
an `<EOC>` token for this; the tokenizer's `<eos>` plays the part here: the pretrained LM already
ends every answer with it, and generation stops there.

An episode's **rule** says which attribute of the one object the answer names ("color": "red",
"shape": "circle", "size": "small"), and the question is always the same, so the query alone is
ambiguous: with no example a model can only guess the rule, and with one it can read the rule off
the example's answer. Episodes need scenes of exactly one object (WorldConfig(max_objects=1)).

Both return plain Python (scene indices and text); `encode_interleaved` tokenises them into padded
tensors. Draw train and test episodes from scenes of different splits (`sample_scenes(...,
split=)`) and no scene is shared; the images are `render(scenes)`, on whatever device.
"""

import random
from typing import NamedTuple

import torch

from .text import caption

END_OF_CHUNK = "<eos>"
EPISODE_QUESTION = "what is the object ?"
RULES = ("color", "shape", "size")


class Document(NamedTuple):
    scene_indices: tuple     # the images, in order: one <image> token each
    text: str                # "<image> caption <eos> <image> caption <eos> ..."
    answers: tuple           # the text to be learned after each image (here the captions)


class Episode(NamedTuple):
    scene_indices: tuple     # k shots, then the query
    text: str                # the k solved chunks and the query's prompt, ending at <assistant>
    answers: tuple           # k + 1 answers, the query's last
    rule: str                # the attribute every answer names: one of RULES


def interleaved_documents(scenes, images_per_document=3, *, seed=0):
    """Documents of `images_per_document` scenes each, drawn without replacement from `scenes`."""
    if not isinstance(images_per_document, int) or not 1 <= images_per_document <= len(scenes):
        raise ValueError(f"images_per_document must be an int in [1, {len(scenes)}], got {images_per_document!r}")
    order = list(range(len(scenes)))
    random.Random(seed).shuffle(order)
    documents = []
    for start in range(0, len(order) - images_per_document + 1, images_per_document):
        chosen = tuple(order[start:start + images_per_document])
        captions = tuple(caption(scenes, i) for i in chosen)
        documents.append(Document(chosen, " ".join(f"<image> {c} {END_OF_CHUNK}" for c in captions), captions))
    return documents


def object_attribute(scenes, i, rule):
    """The word for `rule` ("color", "shape" or "size") of the one object in scene i."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    objects = scenes.objects(i)
    if len(objects) != 1:
        raise ValueError(f"episodes need scenes of exactly one object (WorldConfig(max_objects=1)); "
                         f"scene {i} has {len(objects)}")
    return objects[0][rule]


def episode_chunk(answer=None):
    """One example: the question about an <image>, and its answer with END_OF_CHUNK (or the open prompt)."""
    prompt = f"<user> <image> {EPISODE_QUESTION} <assistant>"
    return prompt if answer is None else f"{prompt} {answer} {END_OF_CHUNK}"


def few_shot_episodes(scenes, num_episodes, shots, *, rules=RULES[:2], seed=0):
    """`num_episodes` episodes of `shots` solved examples and a query, k + 1 distinct scenes each.

    The rule of each episode is drawn uniformly from `rules`; the answers are the objects'
    attribute under it. Seeded: the same arguments give the same episodes.
    """
    if not isinstance(shots, int) or not 0 <= shots < len(scenes):
        raise ValueError(f"shots must be an int in [0, {len(scenes) - 1}] (k + 1 distinct scenes), got {shots!r}")
    if not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
    if not rules or not set(rules) <= set(RULES):
        raise ValueError(f"rules must be a non-empty subset of {RULES}, got {rules!r}")
    rng = random.Random(seed)
    episodes = []
    for _ in range(num_episodes):
        rule = rng.choice(list(rules))
        chosen = tuple(rng.sample(range(len(scenes)), shots + 1))
        answers = tuple(object_attribute(scenes, i, rule) for i in chosen)
        text = " ".join([episode_chunk(a) for a in answers[:-1]] + [episode_chunk()])
        episodes.append(Episode(chosen, text, answers, rule))
    return episodes


def encode_interleaved(tokenizer, items, *, with_answers=True, label="all", padding_side="right"):
    """Documents or episodes -> {"input_ids", "attention_mask", "labels" (B, L), "image_index" (B, T)}.

    image_index[b, t] is the scene of row b's t-th <image> (-1 past its last); T = the most images
    in a row. Episodes get their query's answer and END_OF_CHUNK appended when `with_answers`.
    labels: the answer tokens and their END_OF_CHUNK, of every chunk (label="all": what training
    learns from) or of the query alone (label="query": what scoring reads); -100 elsewhere.
    """
    if label not in ("all", "query"):
        raise ValueError(f"label must be 'all' or 'query', got {label!r}")
    texts = [item.text + (f" {item.answers[-1]} {END_OF_CHUNK}" if with_answers and isinstance(item, Episode) else "")
             for item in items]
    ids, mask = tokenizer.batch_encode(texts, add_bos=True, padding_side=padding_side)
    labels = torch.full_like(ids, -100)
    for row, item in enumerate(items):
        # an answer runs from after its image's prompt (the <image> token, or <assistant> in an episode)
        # to END_OF_CHUNK, inclusive
        row_ids = ids[row].tolist()
        opens = tokenizer.assistant_id if isinstance(item, Episode) else tokenizer.image_id
        starts = [k + 1 for k, token in enumerate(row_ids) if token == opens]
        ends = [k for k, token in enumerate(row_ids) if token == tokenizer.token_to_id[END_OF_CHUNK]]
        spans = list(zip(starts, ends))
        if label == "query":      # the query's own span, when its answer is in the text
            spans = spans[len(item.answers) - 1:]
        for start, end in spans:
            labels[row, start:end + 1] = ids[row, start:end + 1]
    most = max(len(item.scene_indices) for item in items)
    image_index = torch.full((len(items), most), -1, dtype=torch.long)
    for row, item in enumerate(items):
        image_index[row, :len(item.scene_indices)] = torch.tensor(item.scene_indices)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "image_index": image_index}
