"""Capstone: every connector of the course under one budget (chapter 11).

The surveys sort VLMs by what joins the vision encoder to the LM, and note the field's drift from
Q-Formers to plain projectors (VILA, arXiv 2312.07533). The course has built six; this module trains
each on the same Shapes VQA data, from the same frozen CLIP ViT (pretrained.vision_tower) and the same
frozen pretrained LM (pretrained.language_model), for the same number of steps of the same batches:

    "linear"     LLaVA (arXiv 2304.08485)          one Linear per patch token           16 visual tokens
    "mlp"        LLaVA-1.5 (arXiv 2310.03744)      a 2-layer MLP per patch token         16
    "unshuffle"  InternVL-1.5 (arXiv 2404.16821)   2x2 pixel unshuffle + MLP             4
    "qformer"    BLIP-2 (arXiv 2301.12597)         Q learned queries read the patches    Q
    "perceiver"  Idefics2 (arXiv 2405.02246)       a Perceiver's L latents, projected    L
    "xattn"      Flamingo (arXiv 2204.14198)       gated cross-attention to L latents    0 (the LM reads them
                                                   inside its layers; its sequence keeps the one <image> token)

(visual tokens: in the LM's input sequence, for the default 32-px images, 8-px patches and Q = L = 4).
Each run reports the held-out accuracy per question kind, the visual tokens per image, the trainable
parameters, the milliseconds per training step and the peak memory (CPU: the bytes autograd saves for
the backward pass of one step; CUDA: torch.cuda.max_memory_allocated). Each connector trains at the
learning rate of its own chapter (CONNECTOR_LR): what each was shown to learn with, not one rate for all.

A seed draws everything random in a run: the connector's initial weights, the order of the batches, and
the frozen parts themselves, a CLIP tower and an LM pretrained with that seed (cached). Within a seed
every connector stands on the same ViT and LM; across seeds, the spread includes theirs, which is
large: one LM draw can decide whether a connector reads colour at all.

    results = run_connectors(seeds=(0, 1, 2))       # [{"connector", "seed", "accuracy", "tokens", ...}]
    rows = summarize(results)                       # one row per connector, mean and sd over seeds
    write_results(results, "capstone")              # capstone.json, capstone.csv, capstone.png
"""

import csv
import functools
import hashlib
import json
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context

import torch
import torch.nn as nn

from . import pretrained
from .data import QUESTION_KINDS, ShapesGenerator, Tokenizer, WorldConfig, image_row_batches, sample_vqa
from .evaluate import encode_vqa, vqa_accuracy
from .models.blip2 import Blip2
from .models.flamingo import Flamingo, FlamingoConfig, Idefics2
from .lm import LMConfig
from .models.llava import Llava, LlavaConfig
from .qformer import QFormerConfig
from .train import TrainConfig, fit

CONNECTORS = ("linear", "mlp", "unshuffle", "qformer", "perceiver", "xattn")
PAPERS = {"linear": "LLaVA", "mlp": "LLaVA-1.5", "unshuffle": "InternVL-1.5", "qformer": "BLIP-2",
          "perceiver": "Idefics2", "xattn": "Flamingo"}
CONNECTOR_LR = {"linear": 3e-3, "mlp": 3e-3, "unshuffle": 3e-3, "qformer": 3e-3,      # chapters 05 and 06
                "perceiver": 1e-2, "xattn": 1e-2}                                     # chapter 07
SMALL_VIT = dict(dim=64, depth=2, heads=4)
SCALES = {
    # cpu: one-object scenes, 18 runs (6 connectors x 3 seeds) two at a time: about a minute on 2 cores
    "cpu": dict(world=dict(max_objects=1), image_size=32, patch_size=8, pool=2_000, clip_steps=150, clip_batch=64,
                steps=200, images_per_step=16, questions_per_image=4, test_scenes=150, latents=4,
                vision=SMALL_VIT, lm=None, device="cpu"),
    # gpu: the full world on a 4 x 4 grid at 64 px (64 patches), a 256-wide ViT and LM (the LM pretrained for it
    # first), 16 latents; runs one after another on the GPU, bf16 autocast through `fit`
    "gpu": dict(world=dict(grid=4, max_objects=8), image_size=64, patch_size=8, pool=50_000, clip_steps=1_000,
                clip_batch=256, steps=2_000, images_per_step=64, questions_per_image=4, test_scenes=1_000, latents=16,
                vision=dict(dim=256, depth=4, heads=8), lm=dict(dim=256, depth=4, heads=8), device="cuda"),
    # tiny: the pipeline end to end in seconds (tests)
    "tiny": dict(world=dict(max_objects=1), image_size=32, patch_size=8, pool=24, clip_steps=2, clip_batch=8,
                 steps=2, images_per_step=4, questions_per_image=2, test_scenes=4, latents=2,
                 vision=SMALL_VIT, lm=None, device="cpu"),
}
TOKENIZER = Tokenizer()


def lm_config(settings):
    """The frozen LM's config: chapter 04's pretrained LM (lm=None), or one of the given width and depth."""
    if settings["lm"] is None:
        return pretrained.default_config(TOKENIZER)
    return LMConfig(vocab_size=len(TOKENIZER), max_seq_len=128, tie_embeddings=False, **settings["lm"])


def llava_config(settings, projector="unshuffle"):
    """Chapter 05's VLM around the pretrained LM: a causal decoder, the ViT of the CLIP tower."""
    lm, vit = lm_config(settings), settings["vision"]
    return LlavaConfig(vocab_size=len(TOKENIZER), image_size=settings["image_size"], patch_size=settings["patch_size"],
                       vision_dim=vit["dim"], vision_depth=vit["depth"], vision_heads=vit["heads"],
                       projector=projector, text_dim=lm.dim, text_depth=lm.depth, text_heads=lm.heads,
                       max_seq_len=lm.max_seq_len, prefix="causal")


def flamingo_config(settings):
    c = llava_config(settings)
    return FlamingoConfig(vocab_size=c.vocab_size, image_size=c.image_size, patch_size=c.patch_size,
                          vision_dim=c.vision_dim, vision_depth=c.vision_depth, vision_heads=c.vision_heads,
                          text_dim=c.text_dim, text_depth=c.text_depth, text_heads=c.text_heads,
                          max_seq_len=c.max_seq_len, num_latents=settings["latents"])


def visual_tokens(connector, settings):
    """Visual tokens per image in the LM's input sequence (what attention over the sequence pays for)."""
    patches = (settings["image_size"] // settings["patch_size"]) ** 2
    return {"linear": patches, "mlp": patches, "unshuffle": patches // 4, "qformer": settings["latents"],
            "perceiver": settings["latents"], "xattn": 0}[connector]


class OneImagePerRow(nn.Module):
    """Flamingo or Idefics2 (image_index (B, T)) behind LLaVA's interface (image_index (B,)): one image a row."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, images, input_ids, attention_mask=None, labels=None, image_index=None, validate=True):
        if image_index is None:
            image_index = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.model(images, input_ids, attention_mask, labels, image_index[:, None], validate)


def build(connector, settings, vision=None, lm=None):
    """The VLM of `connector` with the CLIP ViT and the pretrained LM loaded, both frozen (only the connector trains);
    by default those of seed 0."""
    if connector not in CONNECTORS:
        raise ValueError(f"connector must be one of {CONNECTORS}, got {connector!r}")
    config = llava_config(settings)
    if connector in ("linear", "mlp", "unshuffle"):
        model = Llava(replace(config, projector=connector)).set_stage(1)      # LLaVA's stage 1: the projector alone
    elif connector == "qformer":
        model = Blip2(config, QFormerConfig(dim=64, depth=2, heads=4, mlp_hidden=128, image_dim=config.vision_dim,
                                            num_queries=settings["latents"]))
    else:
        model = (Idefics2 if connector == "perceiver" else Flamingo)(flamingo_config(settings))
    model.load_vision_tower(vision if vision is not None else clip_tower(settings))
    model.load_language_model(lm if lm is not None else frozen_lm(settings))
    return OneImagePerRow(model) if connector in ("perceiver", "xattn") else model


def clip_tower(settings, seed=0):
    """Chapter 03's CLIP image tower, pretrained with `seed` (cached)."""
    return pretrained.vision_tower(llava_config(settings).vision_config(), WorldConfig(**settings["world"]),
                                   settings["pool"], settings["clip_steps"], settings["clip_batch"], seed=seed,
                                   device=settings["device"])


def frozen_lm(settings, seed=0):
    """Chapter 04's LM, pretrained with `seed` (cached)."""
    return pretrained.language_model(lm_config(settings), seed=seed, device=settings["device"]).cpu()


@functools.lru_cache(maxsize=2)
def _data(settings_json):
    settings = json.loads(settings_json)
    world = WorldConfig(**settings["world"])
    scenes, images = ShapesGenerator(world, settings["image_size"], "train", seed=0).batch(settings["pool"])
    train_pairs = sample_vqa(scenes, settings["questions_per_image"], seed=0)
    test_scenes, test_images = ShapesGenerator(world, settings["image_size"], "test", seed=1).batch(
        settings["test_scenes"])
    return images, encode_vqa(TOKENIZER, train_pairs), test_images, sample_vqa(test_scenes, 4, seed=1), train_pairs


def data(settings):
    """(train images, their encoded VQA rows, test images, test [(image index, QA)]): the same for every run."""
    return _data(json.dumps(settings, sort_keys=True))[:4]


def majority_baseline(settings=SCALES["cpu"]):
    """{kind: % of the test questions answered right by always giving the commonest training answer of that kind},
    and "all": the floor a connector that reads nothing from the image reaches."""
    *_, test_pairs, train_pairs = _data(json.dumps(settings, sort_keys=True))     # the questions data() trains on
    commonest = {}
    for kind in QUESTION_KINDS:
        answers = [qa.answer for _, qa in train_pairs if qa.kind == kind]
        commonest[kind] = max(sorted(set(answers)), key=answers.count) if answers else None
    right = {kind: [qa.answer == commonest[kind] for _, qa in test_pairs if qa.kind == kind] for kind in QUESTION_KINDS}
    result = {"all": 100 * sum(sum(r) for r in right.values()) / len(test_pairs)}
    result.update({kind: 100 * sum(r) / len(r) for kind, r in right.items() if r})
    return result


def trainable_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def saved_activation_bytes(model, batch):
    """Bytes of the tensors autograd keeps for the backward pass of one step on `batch`."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(*batch, validate=False)
    return total


def fingerprint(*modules):
    """16 hex digits of a hash of the modules' weights: which frozen ViT and LM a run stood on."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_connector(connector, seed, settings=SCALES["cpu"], progress=False, frozen_seeds=None):
    """One run -> {"connector", "seed", "accuracy": {kind: %}, "tokens", "parameters", "ms_per_step", "memory_mb",
    "loss": per step, "frozen": the fingerprint of the frozen ViT and LM}. frozen_seeds=(clip seed, LM seed)
    stands the run on other frozen parts than its seed's own (to tell which of the two matters)."""
    device = torch.device(settings["device"])
    images, batch, test_images, test_pairs = data(settings)
    images = images.to(device)                   # the rows stay on the CPU: cutting a batch never waits for a GPU
    clip_seed, lm_seed = frozen_seeds or (seed, seed)
    vision, lm = clip_tower(settings, clip_seed), frozen_lm(settings, lm_seed)
    frozen = fingerprint(vision, lm)
    torch.manual_seed(seed)
    model = build(connector, settings, vision, lm)
    get = image_row_batches(batch, settings["images_per_step"], seed)
    get_batch = lambda step: tuple(t.to(device, non_blocking=True) for t in get(step, images))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history = fit(model, get_batch, lambda m, b: m(*b, validate=False).loss,
                  TrainConfig(steps=settings["steps"], lr=CONNECTOR_LR[connector],
                              warmup_steps=min(30, settings["steps"]), seed=seed, device=str(device),
                              progress=progress))
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else saved_activation_bytes(model, get_batch(0)))
    accuracy = vqa_accuracy(model, TOKENIZER, test_images, test_pairs)
    return {"connector": connector, "seed": seed, "accuracy": {k: 100 * v for k, v in accuracy.items() if k != "n"},
            "tokens": visual_tokens(connector, settings), "parameters": trainable_parameters(model),
            "ms_per_step": 1000 * history["seconds"] / settings["steps"], "memory_mb": memory / 2**20,
            "loss": history["loss"], "frozen": frozen}


def _run(job, settings, threads):
    torch.set_num_threads(threads)
    return train_connector(*job, settings)


def _prepare(kind, settings, seed):
    if kind == "clip":
        clip_tower(settings, seed)          # on CLIP_RECIPE's fixed threads
    else:
        frozen_lm(settings, seed)           # on the process's own threads, as in chapter 04's kernel


def run_connectors(seeds=(0, 1, 2), connectors=CONNECTORS, settings=SCALES["cpu"], workers=2, progress=False):
    """Every (connector, seed) run, in order -> [train_connector results]. With workers > 0, in that many spawn
    processes of one torch thread each (the CLIP tower and the LM prepared first); on a GPU (settings["device"]),
    here, one after another. `progress` prints a line as each run ends (workers > 0) or shows each run's progress
    bar (here)."""
    unknown = [c for c in connectors if c not in CONNECTORS]
    if unknown or not connectors:
        raise ValueError(f"connectors must be a non-empty subset of {CONNECTORS}, got {list(connectors)}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    missing = [name for name in SCALES["cpu"] if name not in settings]
    if missing:
        raise ValueError(f"settings lacks {missing}: start from dict(capstone.SCALES['cpu'], ...)")
    if torch.device(settings["device"]).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"settings['device'] is {settings['device']!r} but no CUDA device is available here")
    jobs = [(c, s) for s in seeds for c in connectors]
    if workers == 0 or settings["device"] != "cpu":          # one GPU: the runs one after another, here
        return [train_connector(c, s, settings, progress) for c, s in jobs]
    with ProcessPoolExecutor(min(workers, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        for future in [pool.submit(_prepare, kind, settings, seed) for seed in seeds for kind in ("clip", "lm")]:
            future.result()
        futures = [pool.submit(_run, job, settings, 1) for job in jobs]
        results = []
        for k, future in enumerate(futures, 1):
            results.append(future.result())
            if progress:
                r = results[-1]
                print(f"[{k}/{len(jobs)}] {r['connector']:<9} seed {r['seed']}: {r['accuracy']['all']:.1f}% "
                      f"in {r['ms_per_step'] * settings['steps'] / 1000:.0f} s", flush=True)
    return results


def mean_sd(values):
    """(mean, sample sd) of a list of numbers; sd 0 for one."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results):
    """One row per connector, in CONNECTORS order: {"connector", "paper", "seeds", "tokens", "parameters",
    "accuracy": {kind: (mean, sd)}, "ms_per_step": (mean, sd), "memory_mb": (mean, sd)}."""
    rows = []
    for connector in CONNECTORS:
        runs = [r for r in results if r["connector"] == connector]
        if not runs:
            continue
        kinds = [k for k in ("all", *QUESTION_KINDS) if k in runs[0]["accuracy"]]
        rows.append({"connector": connector, "paper": PAPERS[connector], "seeds": [r["seed"] for r in runs],
                     "tokens": runs[0]["tokens"], "parameters": runs[0]["parameters"],
                     "accuracy": {k: mean_sd([r["accuracy"][k] for r in runs]) for k in kinds},
                     "ms_per_step": mean_sd([r["ms_per_step"] for r in runs]),
                     "memory_mb": mean_sd([r["memory_mb"] for r in runs])})
    return rows


def format_table(rows):
    """The summary as text: one line per connector, accuracy mean ± sd per question kind."""
    kinds = list(rows[0]["accuracy"])
    lines = [f"{'connector':<10} {'paper':<13} {'tokens':>6} {'params':>8} {'ms/step':>8} {'memory MB':>9} "
             + "".join(f"{k:>13}" for k in kinds)]
    for r in rows:
        lines.append(f"{r['connector']:<10} {r['paper']:<13} {r['tokens']:>6} {r['parameters']:>8,} "
                     f"{r['ms_per_step'][0]:>8.1f} {r['memory_mb'][0]:>9.2f} "
                     + "".join(f"{m:>7.1f} ± {s:<4.1f}" for m, s in r["accuracy"].values()))
    return "\n".join(lines)


def pareto_figure(rows):
    """Accuracy (mean ± sd over seeds) against visual tokens per image; marker area ∝ trainable parameters.
    Connectors with the same token count stand side by side around it."""
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(10, 4.2))
    largest = max(r["parameters"] for r in rows)
    for r in rows:
        same = [other["connector"] for other in rows if other["tokens"] == r["tokens"]]
        x = r["tokens"] + 0.5 * (same.index(r["connector"]) - (len(same) - 1) / 2)
        mean, sd = r["accuracy"]["all"]
        axis.errorbar(x, mean, yerr=sd, fmt="none", ecolor="gray", capsize=3)
        axis.scatter(x, mean, s=40 + 600 * r["parameters"] / largest, alpha=0.6,
                     label=f"{r['connector']} ({r['paper']}): {r['parameters']:,} params")
    axis.set(xlabel="visual tokens per image in the LM's sequence", ylabel="held-out VQA accuracy (%)",
             title=f"one budget: mean ± sd over {len(rows[0]['seeds'])} seeds, area ∝ trainable parameters")
    legend = axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for handle in legend.legend_handles:
        handle.set_sizes([40])
    fig.tight_layout()
    return fig


def write_results(results, out_dir, settings=SCALES["cpu"]):
    """capstone.json (every run, the summary, the settings), capstone.csv (the summary) and capstone.png (the
    Pareto plot) -> their paths."""
    os.makedirs(out_dir, exist_ok=True)
    rows = summarize(results)
    paths = {name: os.path.join(out_dir, f"capstone.{name}") for name in ("json", "csv", "png")}
    with open(paths["json"], "w") as f:
        json.dump({"runs": results, "summary": rows, "settings": settings}, f, indent=1)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        kinds = list(rows[0]["accuracy"])
        writer.writerow(["connector", "paper", "seeds", "tokens", "parameters", "ms_per_step", "memory_mb"]
                        + [f"{k}_{stat}" for k in kinds for stat in ("mean", "sd")])
        for r in rows:
            writer.writerow([r["connector"], r["paper"], len(r["seeds"]), r["tokens"], r["parameters"],
                             f"{r['ms_per_step'][0]:.2f}", f"{r['memory_mb'][0]:.3f}"]
                            + [f"{v:.2f}" for k in kinds for v in r["accuracy"][k]])
    figure = pareto_figure(rows)
    figure.savefig(paths["png"], dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(figure)
    return paths
