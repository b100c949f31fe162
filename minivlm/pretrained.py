"""Pretrained models, to be kept frozen: chapter 04's LM trained on Shapes text, and a CLIP image tower.

LLaVA (arXiv 2304.08485), BLIP-2 (arXiv 2301.12597) and Flamingo (arXiv 2204.14198) all start
from a language model that already knows its language, and keep it frozen while a connector
learns to speak to it. Our stand-in is trained on the text side of the Shapes world: a scene
told in words, a question about it, and the answer,

    "<bos> <user> a large red circle at the top left . how many circles are there ? <assistant> one <eos>"

so it learns the captions' grammar, the question templates, which answer words fit which
question, and to read the answer off the description. A VLM's prompt is the same sentence with
the caption replaced by the picture, "<user> <image> how many circles ... <assistant>": what
its connector has to learn is to put into the LM's embedding space what the caption said.

    lm = language_model(LMConfig(vocab_size=58, dim=64, depth=2, tie_embeddings=False))   # trains once, then loads from the cache

Training takes a fixed number of steps (PRETRAIN["steps"]; about 25 s on a 2-core CPU); the weights
are cached under $MINIVLM_CACHE (default ~/.cache/minivlm), in a file named by a hash of the
LM config, the recipe, the seed and the package version. A file that does not load (cut off,
or from elsewhere) is trained again and replaced. The model comes back in eval mode with every
parameter frozen (requires_grad=False); unfreeze it for LLaVA's stage 2.

`vision_tower(vision_config, world, pool, steps)` is the other half, for the chapters that start
from both (10, 11): chapter 03's CLIP trained on the captions of `pool` train-split scenes, its
image tower returned frozen, cached the same way.
"""

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import asdict, fields

import torch

from . import __version__
from .contrastive import contrastive_loss
from .data import ShapesGenerator, Tokenizer, WorldConfig, caption, sample_scenes, sample_vqa
from .lm import LanguageModel, LMConfig
from .models.clip import CLIP, CLIPConfig
from .models.llava import LlavaConfig, chat_prompt
from .train import TrainConfig, fit, load_checkpoint, pick_device, save_checkpoint, seed_everything

# Threads split some float sums (the gradients of shared weights, layer norms) into partial sums added in another
# order, and hundreds of steps make those last bits into another model. The CLIP tower trains on a fixed number of
# CPU threads (cpu_threads), so every machine caches the same one. The LM trains on the threads it is given: two
# in chapter 04's kernel on the course's 2-core CPU, which the chapters' stored runs used (one thread would put
# chapter 04 over its minute, and the graders, which run one thread each, would train theirs twice as slowly
# again), so another thread count trains another LM (capstone.fingerprint tells them apart).
PRETRAIN = dict(steps=800, batch_size=64, lr=3e-3, warmup_steps=30, scenes=5_000, questions_per_scene=4)
CLIP_RECIPE = dict(lr=3e-3, warmup_steps=40, text_dim=64, text_depth=2, embed_dim=64, cpu_threads=1)


def default_config(tokenizer=None):
    """Chapter 04's LM (2 layers, 64 wide) with untied embeddings (see models/llava.py): the LM of chapters 05-07 and 10."""
    return LMConfig(vocab_size=len(tokenizer or Tokenizer()), dim=64, depth=2, heads=4, max_seq_len=128,
                    tie_embeddings=False)


@contextlib.contextmanager
def cpu_threads(device, threads):
    """Run the block on `threads` torch threads when `device` is the CPU (restored after)."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_dir():
    """$MINIVLM_CACHE, or ~/.cache/minivlm (created on first use)."""
    return os.environ.get("MINIVLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minivlm")


# Config fields added after the caches were named (interop.py's options): left out of a cache key while
# they hold their default, so the models cached before them keep their names.
LATER_FIELDS = ("kv_heads", "norm_eps", "gelu", "mlp_hidden")


def config_key(config):
    """asdict(config) without the LATER_FIELDS that hold their default value."""
    defaults = {f.name: f.default for f in fields(config)}
    return {k: v for k, v in asdict(config).items() if k not in LATER_FIELDS or v != defaults[k]}


def cache_path(config, seed):
    """The cache file for this config and seed: one name per (config, recipe, seed, package version)."""
    key = json.dumps({"config": config_key(config), "recipe": PRETRAIN, "seed": seed, "version": __version__},
                     sort_keys=True)
    return os.path.join(cache_dir(), f"lm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")


def pretraining_text(scenes, seed=0, per_scene=PRETRAIN["questions_per_scene"]):
    """One document per question: the chat template with the scene's caption where the image goes."""
    return [f"{chat_prompt(qa.question).replace('<image>', caption(scenes, i))} {qa.answer}"
            for i, qa in sample_vqa(scenes, per_scene, seed=seed)]


def pretrain_language_model(config=None, seed=0, device=None, progress=False):
    """Train a fresh LanguageModel on Shapes text (train-split scenes) -> (model, history)."""
    tokenizer = Tokenizer()
    config = config or default_config(tokenizer)
    device = pick_device(device)
    seed_everything(seed)
    scenes = sample_scenes(PRETRAIN["scenes"], WorldConfig(), generator=torch.Generator().manual_seed(seed),
                           split="train")
    ids, mask = tokenizer.batch_encode(pretraining_text(scenes, seed), add_bos=True, add_eos=True)
    if ids.shape[1] > config.max_seq_len:
        raise ValueError(f"max_seq_len={config.max_seq_len} is shorter than the longest document ({ids.shape[1]})")
    labels = ids.masked_fill(~mask, -100)
    ids, labels, lengths = ids.to(device), labels.to(device), mask.sum(1)

    def batch(step):
        rows = torch.randint(len(lengths), (PRETRAIN["batch_size"],), generator=torch.Generator().manual_seed(step))
        length = int(lengths[rows].max())
        rows = rows.to(device)
        return ids[rows, :length], labels[rows, :length]

    model = LanguageModel(config)
    history = fit(model, batch, lambda m, b: m(b[0], labels=b[1], validate=False).loss,
                  TrainConfig(steps=PRETRAIN["steps"], lr=PRETRAIN["lr"], warmup_steps=PRETRAIN["warmup_steps"],
                              device=str(device), seed=seed, progress=progress))
    return model, history


def language_model(config=None, seed=0, device=None, progress=False):
    """The pretrained LM for `config` (default: default_config()), from the cache or trained now.

    Returns a LanguageModel on `device` (default: the best present), in eval mode, frozen.
    """
    config = config or default_config()
    path = cache_path(config, seed)
    model = LanguageModel(config)
    try:
        load_checkpoint(path, model)
    except FileNotFoundError:
        model = None
    except ValueError as error:
        warnings.warn(f"rebuilding the cached language model: {error}", stacklevel=2)
        model = None
    if model is None:
        model, history = pretrain_language_model(config, seed, device, progress)
        save_checkpoint(path, model.cpu(), step=PRETRAIN["steps"], history=history,
                        extra={"config": asdict(config), "recipe": PRETRAIN, "seed": seed, "version": __version__})
    return model.to(pick_device(device)).eval().requires_grad_(False)


def vision_tower(vision_config, world=WorldConfig(), pool=2_000, steps=150, batch_size=64, seed=0, device="cpu"):
    """A CLIP image tower (ViT) of `vision_config`'s shape, from the cache or trained now (chapter 03's recipe, on
    `device`) on the captions of `pool` train-split scenes of `world` -> the ViT on the CPU, in eval mode, frozen."""
    tokenizer = Tokenizer()
    key = json.dumps({"vision": config_key(vision_config), "world": asdict(world), "pool": pool, "steps": steps,
                      "batch_size": batch_size, "recipe": CLIP_RECIPE, "seed": seed, "version": __version__,
                      "device": torch.device(device).type},
                     sort_keys=True, default=list)
    path = os.path.join(cache_dir(), f"clip-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")
    torch.manual_seed(seed)
    clip = CLIP(CLIPConfig(vision=vision_config, vocab_size=len(tokenizer), text_dim=CLIP_RECIPE["text_dim"],
                           text_depth=CLIP_RECIPE["text_depth"], text_causal=False, text_pool="mean",
                           embed_dim=CLIP_RECIPE["embed_dim"]))
    try:
        load_checkpoint(path, clip)
    except (FileNotFoundError, ValueError):
        scenes, images = ShapesGenerator(world, vision_config.image_size, "train", seed=seed, device=device).batch(pool)
        ids, mask = (t.to(device) for t in tokenizer.batch_encode([caption(scenes, i) for i in range(pool)],
                                                                  add_eos=True))
        mean = torch.tensor(LlavaConfig.pixel_mean, device=device)[:, None, None]
        std = torch.tensor(LlavaConfig.pixel_std, device=device)[:, None, None]
        standardised, size = (images - mean) / std, min(batch_size, pool)   # what the VLMs' ViT reads
        lengths = mask.sum(1).cpu()                                         # cutting batches never waits for a GPU

        def batch(step):
            start = (step * size) % (pool - size + 1)
            length = lengths[start:start + size].max().item()
            return standardised[start:start + size], ids[start:start + size, :length], mask[start:start + size, :length]

        with cpu_threads(device, CLIP_RECIPE["cpu_threads"]):
            fit(clip, batch, lambda m, b: contrastive_loss(*m(*b, validate=False)),
                TrainConfig(steps=steps, lr=CLIP_RECIPE["lr"], warmup_steps=min(CLIP_RECIPE["warmup_steps"], steps),
                            device=str(device), seed=seed, progress=False))
        save_checkpoint(path, clip.cpu(), step=steps, extra={"kind": "clip", "seed": seed, "version": __version__})
    return clip.vision.eval().requires_grad_(False)
