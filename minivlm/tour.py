"""The README's main job: a small LLaVA-style VLM trained end to end on Shapes VQA.

    stage 0 (chapter 03)  a ViT learns from captions with CLIP's contrastive loss, as LLaVA
                          starts from CLIP's vision tower;
    stage 2 (chapter 05)  the ViT is frozen; an InternVL pixel-unshuffle projector (2×2: one
                          visual token per grid cell) and a language model learn to answer.

LLaVA's stage 1 (the projector alone, against a frozen pretrained LM) is skipped: our LM
starts from scratch, so there is nothing to align to. Every image is encoded once per step and
reused by its 4 questions of different kinds; the image + question prefix attends both ways.
The data is made once, on the training device, before the first step.

A recipe has fixed step counts per device (not a time budget), so a seed gives the same run on
every machine. Two recipes, measured side by side by benchmarks/bench_tour.py (2-core CPU,
whole commands, seeds 0, 1, 2):
    "v1"  300 CLIP steps; 1,100 VQA steps of 32 images; a 2-layer, 128-wide LM; the kinds of
          question balanced. 96.9 ± 1.2% held-out (lowest 95.8%) in 128 ± 9 s.
    "v2"  (default) 150 CLIP steps; 800 VQA steps; a 3-layer, 96-wide LM (about the same time
          per step, and "where is it" / "is there one" form in fewer steps); twice as many
          counting questions, the kind a 2-layer LM learns last. 95.0 ± 5.6% (98.8, 88.6,
          97.5: seed 1 has not yet learned "where is") in 93 ± 3 s: 0.73x v1's time, 0.61x its
          training FLOPs. (With one thread the same seeds give 98.4, 95.0, 98.8: summation order
          changes the run, and 800 steps are close to where "where is" forms.) Cut to 600
          steps it takes 0.56x the time and gets 79.5 ± 10.4%.
The held-out test is the same for both: 2,000 questions, kinds balanced, on test-split scenes.

    run = train_vlm(seed=0)                       # model, tokenizer, history, steps
    results, images, pairs = held_out_test(run["model"], run["tokenizer"], seed=0)
    save_vlm("tour.pt", run, results);  model, tokenizer = load_vlm("tour.pt")
"""

from dataclasses import asdict

import torch

from .contrastive import contrastive_loss
from .data import QUESTION_KINDS, SPECIAL_TOKENS, ShapesGenerator, Tokenizer, WorldConfig, caption, sample_vqa
from .evaluate import encode_vqa, vqa_accuracy
from .models.clip import CLIP, CLIPConfig
from .models.llava import Llava, LlavaConfig
from .train import TrainConfig, fit, load_checkpoint, pick_device, save_checkpoint, seed_everything

CHECKPOINT_KIND = "minivlm-llava"
QUESTIONS_PER_IMAGE = 4
TEST_QUESTIONS = 2000
V1_MODEL = dict(patch_size=8, vision_dim=64, vision_depth=2, text_dim=128, text_depth=2)
V2_MODEL = dict(patch_size=8, vision_dim=64, vision_depth=2, text_dim=96, text_depth=3)     # deeper, narrower LM
GPU_MODEL = dict(patch_size=4, vision_dim=128, vision_depth=4, text_dim=256, text_depth=4, text_heads=8)
COUNT_TWICE = ("count", "count", "color", "shape", "position", "exists")   # training mix: a third of the questions count
RECIPES = {
    "v1": {
        "cpu": dict(model=V1_MODEL, clip_steps=300, clip_batch=64, steps=1100, images_per_step=32, pool=12_000,
                    lr=3e-3, train_kinds=QUESTION_KINDS),
        "gpu": dict(model=GPU_MODEL, clip_steps=1000, clip_batch=256, steps=3000, images_per_step=128, pool=100_000,
                    lr=2e-3, train_kinds=QUESTION_KINDS),
    },
    "v2": {
        "cpu": dict(model=V2_MODEL, clip_steps=150, clip_batch=64, steps=800, images_per_step=32, pool=12_000,
                    lr=3e-3, train_kinds=COUNT_TWICE),
        "gpu": dict(model=GPU_MODEL, clip_steps=1000, clip_batch=256, steps=3000, images_per_step=128, pool=100_000,
                    lr=2e-3, train_kinds=COUNT_TWICE),
    },
}
DEFAULT_RECIPE = "v2"


def settings_for(device, recipe=DEFAULT_RECIPE):
    """The recipe's settings for this kind of device: "cpu", or "gpu" for CUDA and MPS."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    return RECIPES[recipe]["cpu" if torch.device(device).type == "cpu" else "gpu"]


class TourData:
    """The training data, made once on the device: scenes with a caption and 4 questions each.

    clip_batch(step) and vqa_batch(step) are pure functions of the step (resumable, and the
    benchmark replays them to count FLOPs); each batch is cut to its longest real row.
    """

    def __init__(self, tokenizer, settings, steps, seed, image_size, device):
        self.clip_size, self.per_step = settings["clip_batch"], settings["images_per_step"]
        self.pool = max(self.per_step, self.clip_size, min(settings["pool"], steps * self.per_step))
        scenes, self.images = ShapesGenerator(WorldConfig(), image_size, "train", seed=seed,
                                              device=device).batch(self.pool)
        ids, mask = tokenizer.batch_encode([caption(scenes, i) for i in range(self.pool)], add_eos=True)
        self.caption_ids, self.caption_mask, self.caption_lengths = ids.to(device), mask.to(device), mask.sum(1)
        vqa = encode_vqa(tokenizer, sample_vqa(scenes, QUESTIONS_PER_IMAGE, seed=seed, kinds=settings["train_kinds"]))
        self.vqa = {key: value.to(device) for key, value in vqa.items()}
        # Row bookkeeping stays on the CPU, so that cutting a batch never waits for the GPU.
        self.vqa_lengths = vqa["attention_mask"].sum(1)
        self.first_row = torch.searchsorted(vqa["image_index"], torch.arange(self.pool + 1)).tolist()  # image i: rows first_row[i]..first_row[i+1]-1

    def clip_batch(self, step):
        """(images (b, 3, H, W), caption ids (b, L), mask (b, L)) for CLIP step `step`."""
        start = (step * self.clip_size) % (self.pool - self.clip_size + 1)
        rows = slice(start, start + self.clip_size)
        length = int(self.caption_lengths[rows].max())
        return self.images[rows], self.caption_ids[rows, :length], self.caption_mask[rows, :length]

    def vqa_batch(self, step):
        """(images, input_ids, attention_mask, labels, image_index): `images_per_step` images and their questions."""
        start = (step * self.per_step) % (self.pool - self.per_step + 1)
        rows = slice(self.first_row[start], self.first_row[start + self.per_step])
        length = int(self.vqa_lengths[rows].max())
        return (self.images[start:start + self.per_step], self.vqa["input_ids"][rows, :length],
                self.vqa["attention_mask"][rows, :length], self.vqa["labels"][rows, :length],
                self.vqa["image_index"][rows] - start)


def tour_config(tokenizer, settings):
    return LlavaConfig(vocab_size=len(tokenizer), **settings["model"])


def tour_clip(tokenizer, config):
    """The dual encoder of stage 0: its image tower has the VLM's ViT shape."""
    return CLIP(CLIPConfig(vision=config.vision_config(), vocab_size=len(tokenizer), text_dim=64, text_depth=2,
                           text_causal=False, text_pool="mean", embed_dim=64))


def stage_steps(settings, steps):
    """(CLIP steps, VQA steps): fewer VQA steps than the recipe's scale the CLIP stage down with them."""
    steps = settings["steps"] if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return max(1, round(settings["clip_steps"] * min(1.0, steps / settings["steps"]))), steps


def train_vlm(seed=0, steps=None, device=None, progress=True, recipe=DEFAULT_RECIPE):
    """Stage 0 then stage 2 -> dict(model, tokenizer, history, steps, seed, recipe).

    `steps`: stage-2 steps (default: the recipe's for this device); tests run a 3-step tour.
    """
    device = pick_device(device)
    settings = settings_for(device, recipe)
    clip_steps, steps = stage_steps(settings, steps)
    seed_everything(seed)
    tokenizer = Tokenizer()
    config = tour_config(tokenizer, settings)
    model = Llava(config)
    data = TourData(tokenizer, settings, steps, seed, config.image_size, device)

    clip = tour_clip(tokenizer, config)
    print(f"stage 0: CLIP pretraining of the vision tower on {data.pool} captioned scenes "
          f"({clip_steps} steps, {device.type})")
    fit(clip, data.clip_batch,
        lambda m, batch: contrastive_loss(*m(model.normalize(batch[0]), *batch[1:], validate=False)),
        TrainConfig(steps=clip_steps, lr=3e-3, warmup_steps=min(40, clip_steps), device=str(device),
                    seed=seed, progress=progress))
    model.load_vision_tower(clip.vision)

    model.set_stage(2)
    print(f"stage 2: {len(data.vqa['input_ids'])} questions train the projector and the LM "
          f"({config.num_visual_tokens} visual tokens per image, {steps} steps)")
    history = fit(model, data.vqa_batch, lambda m, batch: m(*batch, validate=False).loss,
                  TrainConfig(steps=steps, lr=settings["lr"], warmup_steps=min(50, steps), device=str(device),
                              seed=seed, progress=progress))
    model.set_stage("all")
    return {"model": model.eval(), "tokenizer": tokenizer, "history": history, "steps": steps, "seed": seed,
            "recipe": recipe}


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
                           "vocab": run["tokenizer"].vocab, "seed": run["seed"], "recipe": run.get("recipe"),
                           "accuracy": results})


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
