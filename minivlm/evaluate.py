"""VQA on the Shapes world: accuracy per question type.

    questions = sample_vqa(scenes, per_image=4, seed=0)   # minivlm.data: [(image index, QA)], kinds balanced
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

import torch

from .data import QUESTION_KINDS
from .lm import IGNORE_INDEX
from .models.llava import encode_chat


def encode_vqa(tokenizer, pairs):
    """[(image index, QA)] -> right-padded tensors for training or scoring."""
    batch = encode_chat(tokenizer, [qa.question for _, qa in pairs], [qa.answer for _, qa in pairs])
    batch["image_index"] = torch.tensor([i for i, _ in pairs])
    return batch


@torch.no_grad()
def answer_correct(model, images, batch):
    """(B,) bool: greedy decoding would produce each row's answer and <eos> (one forward pass)."""
    out = model(images, batch["input_ids"], batch["attention_mask"], batch["labels"], batch["image_index"])
    targets, predicted = out.labels[:, 1:], out.logits[:, :-1].argmax(-1)   # position t predicts token t + 1
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
