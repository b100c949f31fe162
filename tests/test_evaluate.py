"""minivlm.evaluate: VQA batches, one-pass teacher-forced scoring that agrees with greedy generation,
and accuracy per question type."""

import pytest
import torch

from minivlm.data import QUESTION_KINDS, QA, ShapesGenerator, Tokenizer, WorldConfig, sample_vqa
from minivlm.evaluate import answer_correct, encode_vqa, vqa_accuracy
from minivlm.lm import IGNORE_INDEX
from minivlm.models.llava import Llava, LlavaConfig, answer_questions
from minivlm.train import TrainConfig, fit

TOKENIZER = Tokenizer()


def scenes_and_images(n, seed):
    return ShapesGenerator(WorldConfig(), 16, "train", seed).batch(n)


@pytest.fixture(scope="module")
def trained():
    """A tiny VLM trained a little: it answers in the right format, often wrongly."""
    torch.manual_seed(0)
    model = Llava(LlavaConfig(vocab_size=len(TOKENIZER), image_size=16, patch_size=4, vision_dim=32, vision_depth=1,
                              text_dim=32, text_depth=1))
    scenes, images = scenes_and_images(64, seed=1)
    data = encode_vqa(TOKENIZER, sample_vqa(scenes, 4, seed=1))
    batch = (images, data["input_ids"], data["attention_mask"], data["labels"], data["image_index"])
    fit(model, lambda step: batch, lambda m, b: m(*b).loss,
        TrainConfig(steps=40, lr=1e-2, warmup_steps=5, progress=False, device="cpu"))
    return model.eval()


def test_encode_vqa_rows_name_their_image_and_label_only_the_answer():
    pairs = [(2, QA("how many shapes are there ?", "two", "count")), (0, QA("where is the red circle ?", "top left", "position"))]
    batch = encode_vqa(TOKENIZER, pairs)
    assert batch["image_index"].tolist() == [2, 0]
    answers = [TOKENIZER.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]]
    assert answers == ["two", "top left"]                      # the answer and <eos> (decoded without specials)
    assert (batch["labels"] != IGNORE_INDEX).sum(1).tolist() == [2, 3]


def test_teacher_forced_scoring_equals_cached_greedy_generation(trained):
    scenes, images = scenes_and_images(40, seed=7)
    pairs = sample_vqa(scenes, 4, seed=7)
    verdict = answer_correct(trained, images, encode_vqa(TOKENIZER, pairs))
    generated = answer_questions(trained, TOKENIZER, images, [qa.question for _, qa in pairs],
                                 torch.tensor([i for i, _ in pairs]))
    assert generated.count("") < len(generated) // 2, "the model should have learned the answer format"
    assert verdict.tolist() == [g == qa.answer for g, (_, qa) in zip(generated, pairs)]
    assert 0 < int(verdict.sum()) < len(pairs)    # both verdicts occur, so the test means something


def test_vqa_accuracy_per_kind_in_chunks(trained):
    scenes, images = scenes_and_images(50, seed=3)
    pairs = sample_vqa(scenes, 4, seed=3)
    results = vqa_accuracy(trained, TOKENIZER, images, pairs, batch_size=64)      # 4 chunks of questions
    assert results["n"] == len(pairs) and set(results) == {"all", "n", *QUESTION_KINDS}
    correct = answer_correct(trained, images, encode_vqa(TOKENIZER, pairs))
    assert results["all"] == pytest.approx(correct.float().mean().item())
    for kind in QUESTION_KINDS:
        rows = torch.tensor([qa.kind == kind for _, qa in pairs])
        assert results[kind] == pytest.approx(correct[rows].float().mean().item())
    assert vqa_accuracy(trained, TOKENIZER, images, pairs, batch_size=10_000) == results
    assert trained.training is False
    with pytest.raises(ValueError, match="pairs is empty"):
        vqa_accuracy(trained, TOKENIZER, images, [])
