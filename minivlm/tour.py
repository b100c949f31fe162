"""The README's main job: a small LLaVA-style VLM trained end to end on Shapes VQA.

    stage 0 (chapter 03)  a ViT learns from captions with CLIP's contrastive loss, as LLaVA
                          starts from CLIP's vision tower;
    stage 2 (chapter 05)  the ViT is frozen; an InternVL pixel-unshuffle projector (2×2: one
                          visual token per grid cell) and a language model learn to answer.

LLaVA's stage 1 (the projector alone, against a frozen pretrained LM) is skipped: our LM
starts from scratch, so there is nothing to align to. Every image is encoded once per step and
reused by its 4 questions of different kinds; the image + question prefix attends both ways.
The data is made once, on the training device, before the first step.

The recipe has fixed step counts per device (not a time budget), so a seed gives the same run
on every machine. On a 2-core laptop CPU it takes 80-100 s and reaches 95-98% held-out accuracy
(seeds 0, 1, 2); counting is the hardest question type.

    run = train_vlm(seed=0)                       # model, tokenizer, history, steps
    results, images, pairs = held_out_test(run["model"], run["tokenizer"], seed=0)
    save_vlm("tour.pt", run, results);  model, tokenizer = load_vlm("tour.pt")
"""

from dataclasses import asdict

import torch

from .contrastive import contrastive_loss
from .data import SPECIAL_TOKENS, ShapesGenerator, Tokenizer, WorldConfig, caption, sample_vqa
from .evaluate import encode_vqa, vqa_accuracy
from .models.clip import CLIP, CLIPConfig
from .models.llava import Llava, LlavaConfig
from .train import TrainConfig, fit, load_checkpoint, pick_device, save_checkpoint, seed_everything

CHECKPOINT_KIND = "minivlm-llava"
QUESTIONS_PER_IMAGE = 4
TEST_QUESTIONS = 2000
SETTINGS = {
    "cpu": dict(model=dict(patch_size=8, vision_dim=64, vision_depth=2, text_dim=128, text_depth=2),
                clip_steps=300, clip_batch=64, steps=1100, images_per_step=32, pool=12_000, lr=3e-3),
    "gpu": dict(model=dict(patch_size=4, vision_dim=128, vision_depth=4, text_dim=256, text_depth=4, text_heads=8),
                clip_steps=1000, clip_batch=256, steps=3000, images_per_step=128, pool=100_000, lr=2e-3),
}


def settings_for(device):
    return SETTINGS["cpu" if torch.device(device).type == "cpu" else "gpu"]


def train_vlm(seed=0, steps=None, device=None, progress=True):
    """Stage 0 then stage 2 -> dict(model, tokenizer, history, steps). `steps`: stage-2 steps (default per device).

    Fewer steps scale the CLIP stage and the data pool down with them (tests run a 3-step tour).
    """
    device = pick_device(device)
    settings = settings_for(device)
    steps = settings["steps"] if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    seed_everything(seed)
    tokenizer = Tokenizer()
    config = LlavaConfig(vocab_size=len(tokenizer), **settings["model"])
    model = Llava(config)

    # The data, made once: training scenes, each with its caption and 4 questions of different kinds.
    per_step, clip_batch = settings["images_per_step"], settings["clip_batch"]
    clip_steps = max(1, round(settings["clip_steps"] * min(1.0, steps / settings["steps"])))
    pool = max(per_step, clip_batch, min(settings["pool"], steps * per_step))
    scenes, images = ShapesGenerator(WorldConfig(), config.image_size, "train", seed=seed, device=device).batch(pool)
    captions = [t.to(device) for t in tokenizer.batch_encode([caption(scenes, i) for i in range(pool)], add_eos=True)]
    vqa = {key: value.to(device)
           for key, value in encode_vqa(tokenizer, sample_vqa(scenes, QUESTIONS_PER_IMAGE, seed=seed)).items()}
    first_row = torch.searchsorted(vqa["image_index"], torch.arange(pool + 1, device=device))   # image i: rows [first_row[i], first_row[i+1])

    clip = CLIP(CLIPConfig(vision=config.vision_config(), vocab_size=len(tokenizer), text_dim=64, text_depth=2,
                           text_causal=False, text_pool="mean", embed_dim=64))

    def clip_batches(step):
        start = (step * clip_batch) % (pool - clip_batch + 1)
        ids, mask = (t[start:start + clip_batch] for t in captions)
        length = int(mask.sum(1).max())
        return model.normalize(images[start:start + clip_batch]), ids[:, :length], mask[:, :length]

    print(f"stage 0: CLIP pretraining of the vision tower on {pool} captioned scenes ({clip_steps} steps, {device.type})")
    fit(clip, clip_batches, lambda m, batch: contrastive_loss(*m(*batch, validate=False)),
        TrainConfig(steps=clip_steps, lr=3e-3, warmup_steps=min(40, clip_steps), device=str(device),
                    seed=seed, progress=progress))
    model.load_vision_tower(clip.vision)

    def vqa_batches(step):
        start = (step * per_step) % (pool - per_step + 1)
        rows = slice(int(first_row[start]), int(first_row[start + per_step]))
        length = int(vqa["attention_mask"][rows].sum(1).max())
        return (images[start:start + per_step], vqa["input_ids"][rows, :length], vqa["attention_mask"][rows, :length],
                vqa["labels"][rows, :length], vqa["image_index"][rows] - start)

    model.set_stage(2)
    print(f"stage 2: {len(vqa['input_ids'])} questions train the projector and the LM "
          f"({config.num_visual_tokens} visual tokens per image, {steps} steps)")
    history = fit(model, vqa_batches, lambda m, batch: m(*batch, validate=False).loss,
                  TrainConfig(steps=steps, lr=settings["lr"], warmup_steps=min(50, steps), device=str(device),
                              seed=seed, progress=progress))
    model.set_stage("all")
    return {"model": model.eval(), "tokenizer": tokenizer, "history": history, "steps": steps, "seed": seed}


def held_out_test(model, tokenizer, seed=0, questions=TEST_QUESTIONS):
    """Accuracy on test-split scenes (never seen in training) -> (results, images, [(image index, QA)]).

    4 questions per scene (fewer where a scene has fewer kinds to ask): a third as many scenes as questions.
    """
    device = next(model.parameters()).device
    test_scenes, test_images = ShapesGenerator(WorldConfig(), model.config.image_size, "test", seed=10_000 + seed,
                                               device=device).batch(max(1, questions // 3))
    pairs = sample_vqa(test_scenes, QUESTIONS_PER_IMAGE, seed=10_000 + seed)[:questions]
    return vqa_accuracy(model, tokenizer, test_images, pairs), test_images, pairs


def save_vlm(path, run, results=None):
    """A checkpoint `load_vlm` (and `minivlm ask`) can read: weights, config and vocabulary, written atomically."""
    save_checkpoint(path, run["model"], step=run["steps"], history=run["history"],
                    extra={"kind": CHECKPOINT_KIND, "llava_config": asdict(run["model"].config),
                           "vocab": run["tokenizer"].vocab, "seed": run["seed"], "accuracy": results})


def load_vlm(path, device="cpu"):
    """(model in eval mode, tokenizer) from a `save_vlm` checkpoint; ValueError if it is not one."""
    state = load_checkpoint(path, map_location="cpu")
    extra = state.get("extra") or {}
    if extra.get("kind") != CHECKPOINT_KIND or "llava_config" not in extra or "vocab" not in extra:
        raise ValueError(f"checkpoint {path} is not a minivlm VLM checkpoint (made by `minivlm tour`)")
    vocab = list(extra["vocab"])
    if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"checkpoint {path} has a vocabulary without the special tokens {SPECIAL_TOKENS}")
    try:
        model = Llava(LlavaConfig(**extra["llava_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"checkpoint {path} does not fit its own model config: {str(error).splitlines()[0]}") from None
    return model.to(device).eval(), Tokenizer(vocab[len(SPECIAL_TOKENS):])
