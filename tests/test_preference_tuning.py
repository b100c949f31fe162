"""Chapter 10's pipeline at a tiny scale: SFT data, pair batches, the policy against its frozen reference, runs."""

import math
import os

import pytest
import torch

from minivlm import preference_tuning as pt
from minivlm.data.hallucination import CAPTION_QUESTION, POPE_SETTINGS
from minivlm.preference import sequence_logps

TINY = dict(pt.SETTINGS, pool=32, clip_steps=2, clip_batch=8, sft_steps=2, sft_images=4, pair_scenes=6,
            pref_steps=3, pairs_per_step=4, test_scenes=6, caption_tokens=12)


@pytest.fixture
def cache(lm_cache):
    return lm_cache


def test_the_sft_data_has_one_noisy_caption_per_scene_and_balanced_yes_no():
    scenes, _ = pt.train_scenes(dict(TINY, pool=400))
    examples, rate = pt.sft_examples(scenes, dict(TINY, pool=400))
    captions = [e for e in examples if e[1] == CAPTION_QUESTION]
    assert [i for i, _, _ in captions] == list(range(400))
    assert 0.25 < rate < 0.35                                      # HALLUCINATION_RATE = 0.3, measured
    yes_no = [a for _, q, a in examples if q.startswith("is there")]
    assert yes_no.count("yes") >= 400 and yes_no.count("no") >= 400
    assert [i for i, _, _ in examples] == sorted(i for i, _, _ in examples)


def test_pair_rows_put_each_chosen_and_rejected_answer_on_the_same_image_and_prompt():
    data = pt.PairData(TINY)
    rows = torch.tensor([3, 0, 5])
    images, ids, mask, labels, image_index = data.rows(rows)
    assert images.shape[0] == 3 and ids.shape[0] == 6 and image_index.tolist() == [0, 1, 2, 0, 1, 2]
    torch.testing.assert_close(images, data.images[data.image_index[rows]])
    tokenizer = pt.TOKENIZER
    completion = lambda r: ids[r][labels[r] != -100].tolist()
    prompt = lambda r: ids[r][(labels[r] == -100) & mask[r]].tolist()
    for k, pair in enumerate(data.pairs[i] for i in rows.tolist()):
        assert completion(k)[-1] == completion(k + 3)[-1] == tokenizer.eos_id
        assert (tokenizer.decode(completion(k)), tokenizer.decode(completion(k + 3))) == (pair.chosen, pair.rejected)
        assert prompt(k) == prompt(k + 3) and tokenizer.decode(prompt(k)).endswith(pair.question)


def test_completion_logps_are_the_rows_own_and_the_nll_is_the_chosen_rows_loss():
    torch.manual_seed(0)
    model = pt.Llava(pt.vlm_config()).eval()
    data = pt.PairData(TINY)
    rows = data.rows(torch.tensor([1, 4]))
    with torch.no_grad():
        chosen, rejected, nll = pt.completion_logps(model, rows)
        images, ids, mask, labels, index = rows
        alone = model(images, ids[:2], mask[:2], labels[:2], index[:2])
        torch.testing.assert_close(chosen, sequence_logps(alone.logits, alone.labels))
        torch.testing.assert_close(nll, alone.loss)
        other = model(images, ids[2:], mask[2:], labels[2:], index[2:])
        torch.testing.assert_close(rejected, sequence_logps(other.logits, other.labels))


def test_the_sft_cache_ignores_the_preference_settings_only():
    assert pt.sft_path(0, dict(TINY, pref_lr=1.0, pref_steps=9, test_scenes=3)) == pt.sft_path(0, TINY)
    assert pt.sft_path(0, dict(TINY, sft_steps=3)) != pt.sft_path(0, TINY) != pt.sft_path(1, TINY)


def test_methods_and_their_bad_input():
    assert pt.METHODS["MPO"].weights == (0.8, 0.2, 1.0) and pt.METHODS["MPO without SFT"].weights[2] == 0
    with pytest.raises(ValueError, match="loss must be"):
        pt.Method("hinge")
    with pytest.raises(ValueError, match="beta must be a positive"):
        pt.Method("sigmoid", beta=0)
    with pytest.raises(ValueError, match="beta must be a positive"):
        pt.run_all((0,), betas=(0.1, -1.0), workers=0)
    with pytest.raises(ValueError, match="methods must be names in"):
        pt.run_all((0,), methods=("DPO", "KTO"), workers=0)
    with pytest.raises(ValueError, match="seeds must be ints"):
        pt.run_all(("0",), workers=0)
    with pytest.raises(ValueError, match="seeds is empty"):
        pt.run_all((), workers=0)
    with pytest.raises(ValueError, match=r"settings lacks \['pool'\]"):
        pt.run_all((0,), settings={k: v for k, v in TINY.items() if k != "pool"}, workers=0)


def test_sft_is_cached_and_preference_tuning_leaves_the_reference_as_it_was(cache, monkeypatch):
    assert not os.path.exists(pt.sft_path(0, TINY))
    sft, rate = pt.sft_model(0, TINY)
    assert 0 <= rate <= 1 and os.path.exists(pt.sft_path(0, TINY))
    with monkeypatch.context() as patched:
        patched.setattr(pt, "fit", lambda *args, **kwargs: pytest.fail("a cached model was trained again"))
        again, _ = pt.sft_model(0, TINY)
    assert all(torch.equal(a, b) for a, b in zip(sft.state_dict().values(), again.state_dict().values()))

    data = pt.PairData(TINY)
    ref = pt.reference_logps(sft, data)
    for _ in range(2):                                         # computed, then read from the cache
        _, _, cached = pt.sft_reference(0, data, TINY)
        assert all(torch.equal(a, b) for a, b in zip(ref, cached))
    before = {k: v.clone() for k, v in sft.state_dict().items()}
    policy, history = pt.preference_tune(sft, pt.METHODS["DPO"], 0, data, ref, TINY)
    assert all(torch.equal(before[k], v) for k, v in sft.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert all(len(history[key]) == TINY["pref_steps"] for key in ("loss", "margin", "accuracy", "chosen_reward"))
    # step 0: the policy is the reference, so every reward is 0 and the DPO loss is log 2
    assert history["margin"][0] == pytest.approx(0, abs=1e-5) and history["accuracy"][0] == 0
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert not policy.training
    assert all(torch.equal(before[f"vision.{k}"], v) for k, v in policy.vision.state_dict().items())   # stage 2


def test_evaluate_scores_captions_pope_and_vqa(cache):
    sft, _ = pt.sft_model(0, TINY)
    metrics = pt.evaluate(sft, pt.TestData(TINY))
    assert set(metrics) == {"greedy", "sampled", "pope", "vqa", "examples"} and set(metrics["pope"]) == set(POPE_SETTINGS)
    for setting in POPE_SETTINGS:
        scores = metrics["pope"][setting]
        assert 0 <= scores["accuracy"] <= 100 and 0 <= scores["yes_ratio"] + scores["other"] <= 100
    assert 0 <= metrics["greedy"]["CHAIR_s"] <= 100 and 0 <= metrics["vqa"]["all"] <= 100
    assert len(metrics["examples"]["sampled"]) == min(pt.EXAMPLES, TINY["test_scenes"])


def test_run_all_in_workers_gives_the_results_of_running_here(cache):
    jobs = dict(seeds=(0,), methods=("DPO", "MPO"), betas=(0.1, 1.0), settings=TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # as each worker runs (another thread count sums in another order)
    try:
        here = pt.run_all(**jobs, workers=0)
    finally:
        torch.set_num_threads(threads)
    assert [(r["method"], r["beta"]) for r in here] == [("SFT", None), ("DPO", 0.1), ("MPO", 0.1), ("DPO", 1.0)]
    there = pt.run_all(**jobs, workers=2)
    assert here == there
