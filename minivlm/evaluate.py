"""VQA on the Shapes world: question sets, and accuracy per question type.

    questions = sample_vqa(scenes, per_image=4, seed=0)   # [(image index, QA)] with kinds balanced
    vqa_accuracy(model, tokenizer, images, questions)    # {"all": 0.97, "count": 0.93, ..., "n": 2000}

An answer counts as correct when greedy decoding produces exactly its words, then <eos>.
That is checked in one teacher-forced forward pass instead of a generation loop: feed the
prompt followed by the true "answer <eos>" and take the argmax at every answer position.
If every argmax equals the next true token, greedy generation (which picks the argmax,
then conditions on it) produces the answer token by token, then <eos>; if one argmax
differs, greedy generation diverges there. So the two verdicts are identical (tested
against `Llava.generate` with the KV cache in tests/test_llava.py), and scoring is one
batched forward pass.
"""

import random

import torch

from .data.shapes import QUESTION_KINDS, sample_qa
from .lm import IGNORE_INDEX
from .models.llava import encode_chat


def sample_vqa(scenes, per_image=4, *, seed=0, kinds=QUESTION_KINDS, weights=None):
    """[(image index, QA)]: `per_image` questions about each scene, of different kinds.

    Kinds are drawn without replacement per image (by `weights`, default uniform); a kind
    with no unique answer in that scene (e.g. "what color is the circle ?" with two
    circles) is skipped for the next one, so a scene may get fewer questions.
    """
    if not 1 <= per_image <= len(kinds):
        raise ValueError(f"per_image must be in [1, {len(kinds)}] (one question per kind), got {per_image}")
    rng = random.Random(seed)
    weights = list(weights) if weights is not None else [1.0] * len(kinds)
    pairs = []
    for i in range(len(scenes)):
        order = _weighted_order(list(kinds), weights, rng)
        asked = 0
        for kind in order:
            qa = sample_qa(scenes, i, kind, rng=rng)
            if qa is not None:
                pairs.append((i, qa))
                asked += 1
                if asked == per_image:
                    break
    return pairs


def _weighted_order(items, weights, rng):
    """A random order of items, heavier ones earlier on average (sampling without replacement)."""
    keys = [rng.random() ** (1.0 / w) for w in weights]
    return [item for _, item in sorted(zip(keys, items), key=lambda pair: -pair[0])]


def encode_vqa(tokenizer, pairs):
    """[(image index, QA)] -> right-padded tensors for training or scoring."""
    batch = encode_chat(tokenizer, [qa.question for _, qa in pairs], [qa.answer for _, qa in pairs])
    batch["image_index"] = torch.tensor([i for i, _ in pairs])
    return batch


@torch.no_grad()
def answer_correct(model, images, batch):
    """(B,) bool: greedy decoding would produce each row's answer and <eos> (one forward pass)."""
    embeds, attention_mask, labels, prefix = model.merge_image_tokens(
        batch["input_ids"], model.encode_images(images), batch["attention_mask"], batch["labels"],
        batch["image_index"])
    logits, _ = model.lm(inputs_embeds=embeds, attention_mask=attention_mask,
                         attn_mask=model.prefix_attention(prefix))
    targets, predicted = labels[:, 1:], logits[:, :-1].argmax(-1)     # position t predicts token t + 1
    scored = targets != IGNORE_INDEX
    return ((predicted == targets) | ~scored).all(1)


@torch.no_grad()
def vqa_accuracy(model, tokenizer, images, pairs, batch_size=1024):
    """Accuracy over `pairs` [(image index into images, QA)] and per kind: {"all", kind..., "n"}."""
    if not pairs:
        raise ValueError("pairs is empty: no questions to score")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        used = sorted({i for i, _ in chunk})
        remap = {old: new for new, old in enumerate(used)}
        batch = encode_vqa(tokenizer, [(remap[i], qa) for i, qa in chunk])
        batch = {key: value.to(device) for key, value in batch.items()}
        correct.append(answer_correct(model, images[used].to(device), batch).cpu())
    model.train(was_training)
    correct = torch.cat(correct)
    results = {"all": correct.float().mean().item(), "n": len(pairs)}
    for kind in QUESTION_KINDS:
        mask = torch.tensor([qa.kind == kind for _, qa in pairs])
        if mask.any():
            results[kind] = correct[mask].float().mean().item()
    return results
