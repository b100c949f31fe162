"""Preference tuning against hallucination: chapter 10's experiments, SFT -> DPO / BCO / MPO.

InternVL3 (arXiv 2504.10479, §3.3) ends its training with Mixed Preference Optimisation (MPO, arXiv
2411.10442): from the SFT model, with a frozen copy of it as the reference, train on pairs of a chosen and a
rejected answer with w_p·DPO + w_q·BCO + w_g·SFT (preference.py). This module runs that recipe on a
VLM small enough for a CPU minute:

    train-split scenes (one object each, 32 px)
      -> stage 0: a CLIP image tower (chapter 03), seed 0, shared by every run
      -> SFT: chapter 05's VLM (the pretrained LM of pretrained.py, a 2x2 unshuffle projector, ViT frozen)
              on one *noisy* caption per scene (data/hallucination.py: 30% name an object that is not
              there, as web captions do), two VQA questions and one "yes" and one "no" question
      -> preference pairs from other train scenes: true vs hallucinated caption, true vs wrong count,
         colour and "is there" answers (preference_pairs)
      -> from the SFT model, `pref_steps` steps of each Method, the SFT model frozen as the reference
    test-split scenes -> evaluate(): CHAIR on greedy and sampled captions, POPE (random, popular,
         adversarial), VQA accuracy

A Method names a loss: "sigmoid" (DPO), "bco_pair" (BCO) or "mpo" with its three weights; METHODS are the
chapter's rows, BETAS its DPO β sweep. Every run records, per step, the mean reward margin
β·[(π_c − ref_c) − (π_r − ref_r)] and the implicit-reward accuracy (the share of pairs whose chosen reward
beats the rejected one), as TRL logs them.

The CLIP tower, each seed's SFT model and its log-probabilities of the pairs (the reference's) are computed
once and cached under pretrained.cache_dir(), in files named by a hash of the settings, the seed and the
package version (as pretrained.py caches its LM).

    results = run_all(seeds=(0, 1, 2))      # [{"seed", "method", "beta", "metrics", "history"}], SFT rows too
"""

import copy
import hashlib
import json
import os
import pickle
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import torch

from . import __version__, pretrained
from .data import ShapesGenerator, Tokenizer, WorldConfig, image_row_batches, sample_vqa
from .data.hallucination import (CAPTION_QUESTION, HALLUCINATION_RATE, POPE_SETTINGS, chair, noisy_caption,
                                 pope_questions, pope_scores, preference_pairs)
from .evaluate import vqa_accuracy
from .lm import IGNORE_INDEX
from .models.llava import Llava, LlavaConfig, answer_questions, decode_answers, encode_chat
from .preference import MPO_WEIGHTS, RunningMean, check_beta, dpo_loss, mpo_loss, sequence_logps
from .train import TrainConfig, fit, load_checkpoint, save_checkpoint

SETTINGS = dict(
    world=dict(max_objects=1), image_size=32, pool=2_000, clip_steps=150, clip_batch=64,
    sft_steps=300, sft_images=16, sft_lr=1e-3, questions_per_scene=2, question_weights=None, yes_no_per_scene=1,
    hallucination_rate=HALLUCINATION_RATE, pair_scenes=500, pref_steps=60, pairs_per_step=24, pref_lr=1e-4,
    test_scenes=200, caption_tokens=20,
)
TOKENIZER = Tokenizer()
EXAMPLES = 8            # captions (and stray POPE answers) kept per run, to be read


@dataclass(frozen=True)
class Method:
    loss: str = "sigmoid"                 # "sigmoid" (DPO), "bco_pair" (BCO) or "mpo"
    beta: float = 0.1
    weights: tuple = MPO_WEIGHTS          # MPO's (preference, quality, generation); ignored otherwise

    def __post_init__(self):
        if self.loss not in ("sigmoid", "bco_pair", "mpo"):
            raise ValueError(f"loss must be 'sigmoid', 'bco_pair' or 'mpo', got {self.loss!r}")
        check_beta(self.beta)


METHODS = {
    "DPO": Method("sigmoid"),
    "BCO": Method("bco_pair"),
    "MPO": Method("mpo"),
    "MPO without SFT": Method("mpo", weights=(0.8, 0.2, 0.0)),
}
BETAS = (0.1, 0.3, 1.0)


def vlm_config():
    """Chapter 05's VLM around the pretrained LM: a causal decoder, one visual token per cell."""
    lm = pretrained.default_config(TOKENIZER)
    return LlavaConfig(vocab_size=len(TOKENIZER), patch_size=8, text_dim=lm.dim, text_depth=lm.depth,
                       text_heads=lm.heads, max_seq_len=lm.max_seq_len, prefix="causal")


def sft_path(seed, settings=SETTINGS):
    """The cache file of seed's SFT model (it exists once sft_model has trained it)."""
    return _cache_path("pref-sft", settings, seed)


CACHE_KEYS = {   # the settings each cached stage depends on: changing a preference setting keeps the SFT models
    "pref-sft": ("world", "image_size", "pool", "clip_steps", "clip_batch", "sft_steps", "sft_images", "sft_lr",
                 "questions_per_scene", "question_weights", "yes_no_per_scene", "hallucination_rate"),
}
CACHE_KEYS["pref-ref"] = CACHE_KEYS["pref-sft"] + ("pair_scenes",)


def _cache_path(kind, settings, seed):
    used = {name: settings[name] for name in CACHE_KEYS[kind]}
    key = json.dumps({"kind": kind, "settings": used, "seed": seed, "version": __version__}, sort_keys=True,
                     default=list)
    return os.path.join(pretrained.cache_dir(), f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")


def train_scenes(settings):
    """(scenes, images (pool, 3, H, W)): the train-split pool every stage draws from, the same for every seed."""
    return ShapesGenerator(WorldConfig(**settings["world"]), settings["image_size"], "train", seed=0).batch(
        settings["pool"])


def sft_examples(scenes, settings):
    """[(scene, QA-like (question, answer))] of the SFT data, and the share of its captions that hallucinate:
    one noisy caption per scene, then `questions_per_scene` VQA questions."""
    rng = random.Random(0)
    noisy = [noisy_caption(scenes, i, rng, settings["hallucination_rate"]) for i in range(len(scenes))]
    vqa = sample_vqa(scenes, settings["questions_per_scene"], seed=0, weights=settings["question_weights"])
    examples = [(i, CAPTION_QUESTION, text) for i, (text, _) in enumerate(noisy)]
    examples += [(i, qa.question, qa.answer) for i, qa in vqa]
    examples += [(i, qa.question, qa.answer) for i in range(len(scenes))
                 for qa in pope_questions(scenes, i, "random", rng, settings["yes_no_per_scene"])]
    examples.sort(key=lambda example: example[0])                      # each scene's rows together
    return examples, sum(lie for _, lie in noisy) / len(noisy)


def encode_examples(examples):
    """[(scene, question, answer)] -> right-padded chat tensors with image_index (B,)."""
    batch = encode_chat(TOKENIZER, [q for _, q, _ in examples], [a for _, _, a in examples])
    batch["image_index"] = torch.tensor([i for i, _, _ in examples])
    return batch


def clip_tower(settings=SETTINGS):
    """The CLIP image tower (ViT) of stage 0, trained on the pool's captions (seed 0), cached (pretrained.py)."""
    return pretrained.vision_tower(vlm_config().vision_config(), WorldConfig(**settings["world"]), settings["pool"],
                                   settings["clip_steps"], settings["clip_batch"])


def sft_model(seed, settings=SETTINGS):
    """(the SFT VLM in eval mode, measured hallucination rate of its captions): trained once per seed, cached."""
    scenes, images = train_scenes(settings)
    examples, rate = sft_examples(scenes, settings)
    torch.manual_seed(seed)
    model = Llava(vlm_config())
    path = sft_path(seed, settings)
    try:
        load_checkpoint(path, model)
        return model.eval(), rate
    except (FileNotFoundError, ValueError):
        pass
    model.load_vision_tower(clip_tower(settings)).load_language_model(pretrained.language_model(device="cpu"))
    model.set_stage(2)
    get = image_row_batches(encode_examples(examples), settings["sft_images"], seed)
    fit(model, lambda step: get(step, images), lambda m, b: m(*b, validate=False).loss,
        TrainConfig(steps=settings["sft_steps"], lr=settings["sft_lr"], warmup_steps=30, seed=seed, device="cpu",
                    progress=False))
    save_checkpoint(path, model.set_stage("all"))
    return model.eval(), rate


class PairData:
    """Preference pairs of the pair scenes, encoded once: chosen rows then rejected rows, padded alike."""

    def __init__(self, settings):
        scenes, images = ShapesGenerator(WorldConfig(**settings["world"]), settings["image_size"], "train",
                                         seed=1).batch(settings["pair_scenes"])
        self.images, self.pairs = images, preference_pairs(scenes, seed=1)
        questions = [p.question for p in self.pairs]
        both = encode_chat(TOKENIZER, questions * 2, [p.chosen for p in self.pairs] + [p.rejected for p in self.pairs])
        self.ids, self.mask, self.labels = both["input_ids"], both["attention_mask"], both["labels"]
        self.image_index = torch.tensor([p.index for p in self.pairs])

    def __len__(self):
        return len(self.pairs)

    def rows(self, pair_rows):
        """(images (B, 3, H, W), ids, mask, labels, image_index) of these B pairs: the B chosen rows, then the
        B rejected ones, both about image b."""
        both = torch.cat([pair_rows, pair_rows + len(self)])
        length = int(self.mask[both].sum(1).max())
        return (self.images[self.image_index[pair_rows]], self.ids[both, :length], self.mask[both, :length],
                self.labels[both, :length], torch.arange(len(pair_rows)).repeat(2))


def completion_logps(model, rows):
    """(chosen logps (B,), rejected logps (B,), chosen answers' mean next-token loss): one forward of 2B rows."""
    out = model(*rows, validate=False)
    logps = sequence_logps(out.logits, out.labels)
    chosen, rejected = logps.chunk(2)
    scored = (out.labels[: len(chosen), 1:] != IGNORE_INDEX).sum()
    return chosen, rejected, -chosen.sum() / scored


@torch.no_grad()
def reference_logps(reference, data, batch=500):
    """(ref chosen logps (P,), ref rejected logps (P,)) for every pair, computed once."""
    parts = [completion_logps(reference, data.rows(torch.arange(s, min(s + batch, len(data)))))[:2]
             for s in range(0, len(data), batch)]
    return torch.cat([c for c, _ in parts]), torch.cat([r for _, r in parts])


def sft_reference(seed, data, settings=SETTINGS):
    """(SFT model, its hallucination rate, its reference_logps on `data`), the log-probabilities cached with it."""
    sft, rate = sft_model(seed, settings)
    path = _cache_path("pref-ref", settings, seed)
    try:
        ref = torch.load(path, weights_only=True)
        if isinstance(ref, tuple) and len(ref) == 2 and all(len(r) == len(data) for r in ref):
            return sft, rate, ref
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):       # absent, cut off, or not ours
        pass
    ref = reference_logps(sft, data)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(ref, f"{path}.tmp{os.getpid()}")
    os.replace(f"{path}.tmp{os.getpid()}", path)
    return sft, rate, ref


def preference_tune(sft, method, seed, data, ref_logps, settings=SETTINGS):
    """(policy in eval mode, history): `method` from the SFT model, which stays as it is (the frozen
    reference's log-probabilities are `ref_logps`). history holds per step the loss, the batch's mean
    chosen and rejected rewards, their mean margin and the implicit-reward accuracy."""
    policy = copy.deepcopy(sft).set_stage(2)
    running_mean, logged = RunningMean(), []
    order = torch.Generator().manual_seed(seed)

    def get_batch(step):
        return torch.randint(len(data), (settings["pairs_per_step"],), generator=order)

    def loss_fn(model, pair_rows):
        chosen, rejected, nll = completion_logps(model, data.rows(pair_rows))
        logps = (chosen, rejected, ref_logps[0][pair_rows], ref_logps[1][pair_rows])
        if method.loss == "mpo":
            loss = mpo_loss(*logps, nll, beta=method.beta, weights=method.weights, running_mean=running_mean,
                            validate=False)
            chosen_rewards = method.beta * (chosen - logps[2]).detach()
            rejected_rewards = method.beta * (rejected - logps[3]).detach()
        else:
            losses, chosen_rewards, rejected_rewards = dpo_loss(*logps, beta=method.beta, loss_type=method.loss,
                                                                running_mean=running_mean, validate=False)
            loss = losses.mean()
        logged.append(torch.stack([chosen_rewards.mean(), rejected_rewards.mean(),
                                   (chosen_rewards - rejected_rewards).mean(),
                                   (chosen_rewards > rejected_rewards).float().mean()]))
        return loss

    history = fit(policy, get_batch, loss_fn,
                  TrainConfig(steps=settings["pref_steps"], lr=settings["pref_lr"], warmup_steps=5, seed=seed,
                              device="cpu", progress=False))
    chosen, rejected, margin, accuracy = torch.stack(logged).T.tolist()     # read once, after training
    return policy.set_stage("all").eval(), {"loss": history["loss"], "chosen_reward": chosen,
                                            "rejected_reward": rejected, "margin": margin, "accuracy": accuracy}


class TestData:
    """Test-split scenes and their probes: the caption prompt, POPE questions per setting, VQA questions."""

    def __init__(self, settings):
        self.scenes, self.images = ShapesGenerator(WorldConfig(**settings["world"]), settings["image_size"], "test",
                                                   seed=2).batch(settings["test_scenes"])
        rng = random.Random(2)
        self.pope = {s: [(i, qa) for i in range(len(self.scenes)) for qa in pope_questions(self.scenes, i, s, rng)]
                     for s in POPE_SETTINGS}
        self.vqa = sample_vqa(self.scenes, 4, seed=2)
        self.caption_tokens = settings["caption_tokens"]


@torch.no_grad()
def captions(model, data, temperature=0.0, seed=0):
    """One caption per test scene: greedy, or sampled at `temperature` (seeded)."""
    prompts = encode_chat(TOKENIZER, [CAPTION_QUESTION] * len(data.images), padding_side="left")
    new = model.generate(data.images, prompts["input_ids"], prompts["attention_mask"], None, data.caption_tokens,
                         temperature=temperature, generator=torch.Generator().manual_seed(seed))
    return decode_answers(TOKENIZER, new)


def evaluate(model, data, seed=0):
    """{"greedy": CHAIR, "sampled": CHAIR (temperature 1), "pope": {setting: scores, "other": % answers neither
    yes nor no}, "vqa": accuracies}, in %; "examples": the first captions of each kind and answers neither
    yes nor no, (question, answer)."""
    greedy, sampled = captions(model, data), captions(model, data, 1.0, seed)
    metrics = {"greedy": chair(greedy, data.scenes), "sampled": chair(sampled, data.scenes), "pope": {},
               "examples": {"greedy": greedy[:EXAMPLES], "sampled": sampled[:EXAMPLES], "pope_other": []}}
    for setting, asked in data.pope.items():
        answers = answer_questions(model, TOKENIZER, data.images, [qa.question for _, qa in asked],
                                   torch.tensor([i for i, _ in asked]), max_new_tokens=2)
        metrics["pope"][setting] = pope_scores(answers, [qa.answer for _, qa in asked])
        other = [(qa.question, a) for (_, qa), a in zip(asked, answers) if a not in ("yes", "no")]
        metrics["pope"][setting]["other"] = 100 * len(other) / len(answers)
        metrics["examples"]["pope_other"] += other[:EXAMPLES - len(metrics["examples"]["pope_other"])]
    accuracy = vqa_accuracy(model, TOKENIZER, data.images, data.vqa)
    metrics["vqa"] = {k: 100 * v for k, v in accuracy.items() if k != "n"}
    return metrics


def jobs_for(seed, methods=tuple(METHODS), betas=BETAS):
    """[(seed, name, Method)]: the SFT row (Method None), each method at β = 0.1, the other βs of DPO."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seeds must be ints, got {seed!r}")
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(f"methods must be names in {tuple(METHODS)}, got {unknown}")
    jobs = [(seed, "SFT", None)] + [(seed, name, METHODS[name]) for name in methods]
    jobs += [(seed, "DPO", Method("sigmoid", beta)) for beta in betas if beta != Method().beta]
    return jobs


def run_jobs(jobs, settings=SETTINGS, threads=None):
    """Run [(seed, name, Method or None)] here -> [{"seed", "method", "beta", "metrics", "history"}]."""
    if threads:
        torch.set_num_threads(threads)
    pairs, test, results, cached = PairData(settings), TestData(settings), [], {}
    for seed, name, method in jobs:
        if seed not in cached:
            cached = {seed: sft_reference(seed, pairs, settings)}
        sft, rate, ref = cached[seed]
        if method is None:
            model, history = sft, {"sft_hallucination_rate": rate}
        else:
            model, history = preference_tune(sft, method, seed, pairs, ref, settings)
        results.append({"seed": seed, "method": name, "beta": None if method is None else method.beta,
                        "weights": None if method is None else method.weights,
                        "metrics": evaluate(model, test, seed), "history": history})
    return results


def _prepare(seed, settings):
    torch.set_num_threads(1)
    sft_reference(seed, PairData(settings), settings)
    return seed


def run_all(seeds=(0, 1, 2), methods=tuple(METHODS), betas=BETAS, settings=SETTINGS, workers=2):
    """Every seed's jobs (jobs_for) -> their results, in order. With workers > 0, in that many processes (one
    torch thread each): the CLIP tower first, then each seed's SFT model, then each seed's runs in two halves,
    handed out as the SFT models are ready. Every job is seeded by itself: the results do not depend on workers."""
    missing = [name for name in SETTINGS if name not in settings]
    if missing:
        raise ValueError(f"settings lacks {missing}: start from dict(preference_tuning.SETTINGS, ...)")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    jobs = [job for seed in seeds for job in jobs_for(seed, methods, betas)]
    if workers == 0:
        return run_jobs(jobs, settings)
    results = [None] * len(jobs)
    with ProcessPoolExecutor(min(workers, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(_prepare_clip, settings), pool.submit(_prepare_lm)]:
            future.result()
        ready = [pool.submit(_prepare, seed, settings) for seed in seeds]
        running = {}
        for future in ready:
            seed = future.result()
            mine = [k for k, job in enumerate(jobs) if job[0] == seed]
            for half in (mine[0::2], mine[1::2]):
                if half:
                    running[pool.submit(run_jobs, [jobs[k] for k in half], settings, 1)] = half
        for future, half in running.items():
            for k, result in zip(half, future.result()):
                results[k] = result
    return results


def _prepare_clip(settings):
    torch.set_num_threads(1)
    clip_tower(settings)


def _prepare_lm():
    torch.set_num_threads(1)
    pretrained.language_model(device="cpu")
