"""One model for every scenario: InternVL3's native multimodal pretraining against a staged recipe (chapter 11).

InternVL3 (Zhu et al. 2025, arXiv 2504.10479, §2.2) trains its LM and its vision side together from the start on
one stream of text, image–text, video and multi-image data, rather than adapting a text-only LM to images
afterwards. At toy scale: a Qwen2VL (models/qwen2vl.py: a ViT, M-RoPE) and its LM, both from scratch, for the
same steps of the same rows, two ways:

    "mixed"    every step draws its rows from the four scenarios in the `mix` proportions
               (INTERNVL3_MIX: text 40%, image 35%, video 15%, multi-image 10%)
    "staged"   the first `text_first` share of the steps on text alone, the rest on the other three scenarios
               in their proportions of the mix (text first, then images)

The scenarios, each a chat row "<user> ... <assistant> answer" (answers exactly true):

    "text"         the scene told in words, then a question     "<user> a small red circle at the top left . what color ..."
    "image"        one Shapes image, one question               "<user> <image> what color is the circle ?"
    "multi_image"  two images, a question about both together   "<user> <image> and <image> how many red shapes are there ?"
    "video"        8 frames of a Shapes video, a question that needs time (data/video_text.py)   "<user> <video> where ..."

Every row is expanded and given its M-RoPE ids once (examples()); a step pads its rows and packs their images
and videos for one ViT pass each. Accuracy is teacher-forced greedy exactness, as evaluate.answer_correct.

    results = run_recipes(seeds=(0, 1, 2))     # [{"recipe", "seed", "accuracy": {scenario: %}, "loss"}]
    majority_baseline()                        # {scenario: %} always saying the commonest answer: the floor
    write_results(results, "capstone")         # mixed.json, mixed.csv (`minivlm capstone --mixed` does all three)
"""

import csv
import functools
import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import NamedTuple, Optional

import torch

from .capstone import mean_sd
from .data import NUMBER_WORDS, ShapesGenerator, Tokenizer, WorldConfig, caption, sample_vqa
from .data.video import VideoConfig, render_video, sample_videos
from .data.video_text import sample_video_vqa
from .lm import IGNORE_INDEX
from .models.qwen2vl import Qwen2VL, Qwen2VLConfig, expand_image_tokens, process_images, process_videos
from .rope import mrope_position_ids
from .train import TrainConfig, fit
from .video_frames import sample_frame_indices

SCENARIOS = ("text", "image", "multi_image", "video")
INTERNVL3_MIX = {"text": 0.40, "image": 0.35, "video": 0.15, "multi_image": 0.10}
RECIPES = ("mixed", "staged")
SETTINGS = dict(world=dict(max_objects=1), image_size=32, train_examples=2_000, test_examples=200, steps=600,
                rows_per_step=32, lr=3e-3, text_first=0.4, mix=INTERNVL3_MIX, video_frames=16, frames_read=8)
TINY = dict(SETTINGS, train_examples=12, test_examples=6, steps=3, rows_per_step=8)      # the pipeline in seconds
TOKENIZER = Tokenizer()


class Example(NamedTuple):
    ids: torch.Tensor                      # (L,) long, <image> / <video> runs expanded
    labels: torch.Tensor                   # (L,) long, -100 but on the answer and <eos>
    positions: torch.Tensor                # (3, L) M-RoPE ids
    patches: Optional[torch.Tensor]        # (N, P) this row's images' patches, or None
    grid: Optional[torch.Tensor]           # (n, 3)
    video_patches: Optional[torch.Tensor]
    video_grid: Optional[torch.Tensor]


def model_config():
    return Qwen2VLConfig(vocab_size=len(TOKENIZER))


def encode(config, prompt, answer, images=(), video=None):
    """One chat row -> Example: "<bos> <user> {prompt} <assistant> {answer} <eos>", media expanded, M-RoPE ids."""
    ids, mask = TOKENIZER.batch_encode([f"<user> {prompt} <assistant> {answer}"], add_bos=True, add_eos=True)
    answer_starts = int((ids[0] == TOKENIZER.assistant_id).nonzero()[0, 0]) + 1
    labels = ids.clone()
    labels[:, :answer_starts] = IGNORE_INDEX
    patches = grid = video_patches = video_grid = None
    if images:
        patches, grid = process_images(list(images), config)
        ids, mask, labels = expand_image_tokens(ids, mask, labels, grid, config.image_token_id)
    if video is not None:
        video_patches, video_grid = process_videos([video], config)
        ids, mask, labels = expand_image_tokens(ids, mask, labels, video_grid, config.video_token_id)
    positions = mrope_position_ids(ids, grid, video_grid, image_token_id=config.image_token_id,
                                   video_token_id=config.video_token_id, spatial_merge_size=config.vision.merge_size,
                                   attention_mask=mask)[0]                  # as Qwen2VL.position_ids (no pooling)
    return Example(ids[0], labels[0], positions[:, 0], patches, grid, video_patches, video_grid)


def _multi_image_question(scenes, i, j, rng):
    """A question about two scenes together: a count over both, or whether either holds an object; half the
    time about an object that is there (so that "zero" and "no" are not the answer to most)."""
    objects = scenes.objects(i) + scenes.objects(j)
    config = scenes.config
    named = rng.choice(objects) if rng.random() < 0.5 else None
    if rng.random() < 0.5:
        color = named["color"] if named else rng.choice(config.colors)
        return f"how many {color} shapes are there ?", NUMBER_WORDS[sum(o["color"] == color for o in objects)]
    color, shape = (named["color"], named["shape"]) if named else (rng.choice(config.colors), rng.choice(config.shapes))
    present = any(o["color"] == color and o["shape"] == shape for o in objects)
    article = "an" if color[0] in "aeiou" else "a"
    return f"is there {article} {color} {shape} ?", "yes" if present else "no"


@functools.lru_cache(maxsize=4)
def _examples(settings_json, split, seed):
    settings = json.loads(settings_json)
    config, n = model_config(), settings["train_examples" if split == "train" else "test_examples"]
    world, size = WorldConfig(**settings["world"]), settings["image_size"]
    rng = random.Random(seed)
    out = {}
    scenes, images = ShapesGenerator(world, size, split, seed=seed).batch(2 * n)
    text_pairs = sample_vqa(scenes, 1, seed=seed)[:n]
    out["text"] = [encode(config, f"{caption(scenes, i)} {qa.question}", qa.answer) for i, qa in text_pairs]
    out["image"] = [encode(config, f"<image> {qa.question}", qa.answer, [images[i]])
                    for i, qa in sample_vqa(scenes, 1, seed=seed + 1)[:n]]
    out["multi_image"] = []
    for k in range(n):
        i, j = 2 * k, 2 * k + 1
        question, answer = _multi_image_question(scenes, i, j, rng)
        out["multi_image"].append(encode(config, f"<image> and <image> {question}", answer, [images[i], images[j]]))
    video_config = VideoConfig(frames=settings["video_frames"], image_size=size, min_speed=0.02, max_speed=0.045)
    videos = sample_videos(n, video_config, generator=torch.Generator().manual_seed(seed), split=split)
    frames = render_video(videos)[:, sample_frame_indices(settings["video_frames"], 8.0,
                                                          fps=settings["frames_read"] / settings["video_frames"] * 8)]
    out["video"] = [encode(config, f"<video> {qa.question}", qa.answer, video=frames[i])
                    for i, qa in sample_video_vqa(videos, 1, seed=seed)][:n]
    return out


def examples(settings, split):
    """{scenario: [Example]}: `train_examples` (or `test_examples`) rows per scenario of that split's scenes."""
    return _examples(json.dumps(settings, sort_keys=True), split, 0 if split == "train" else 1)


def collate(rows):
    """[Example] -> the keyword arguments of Qwen2VL.forward: padded rows, media packed in row order."""
    L = max(len(r.ids) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    labels = torch.full((len(rows), L), IGNORE_INDEX)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    positions = torch.zeros(3, len(rows), L, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.ids)
        ids[b, :n], labels[b, :n], mask[b, :n], positions[:, b, :n] = r.ids, r.labels, True, r.positions
    pack = lambda name: (torch.cat([getattr(r, name) for r in rows if getattr(r, name) is not None])
                         if any(getattr(r, name) is not None for r in rows) else None)
    return dict(patches=pack("patches"), grid_thw=pack("grid"), input_ids=ids, attention_mask=mask, labels=labels,
                position_ids=positions, video_patches=pack("video_patches"), video_grid_thw=pack("video_grid"))


def rows_per_scenario(mix, rows):
    """{scenario: rows a step}: the mix's shares of `rows`, rounded so that they sum to `rows`."""
    total = sum(mix.values())
    counts = {s: int(rows * mix.get(s, 0) / total) for s in SCENARIOS}
    leftover = sorted(SCENARIOS, key=lambda s: -(rows * mix.get(s, 0) / total - counts[s]))
    for s in leftover[:rows - sum(counts.values())]:
        counts[s] += 1
    return counts


def schedule(recipe, settings):
    """[{scenario: rows}] per step: the mix throughout ("mixed"), or text alone first, then the rest ("staged")."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    mix, steps, rows = settings["mix"], settings["steps"], settings["rows_per_step"]
    if recipe == "mixed":
        return [rows_per_scenario(mix, rows)] * steps
    text_steps = round(settings["text_first"] * steps)
    later = rows_per_scenario({s: w for s, w in mix.items() if s != "text"}, rows)
    return [rows_per_scenario({"text": 1.0}, rows)] * text_steps + [later] * (steps - text_steps)


@torch.no_grad()
def accuracy(model, rows, batch_size=256):
    """% of rows whose answer greedy decoding gives exactly (teacher-forced, as evaluate.answer_correct)."""
    model.eval()
    right = 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size])
        logits = model(**batch, validate=False).logits
        targets, predicted = batch["labels"][:, 1:], logits[:, :-1].argmax(-1)
        right += int(((predicted == targets) | (targets == IGNORE_INDEX)).all(1).sum())
    return 100 * right / len(rows)


def majority_baseline(settings=SETTINGS):
    """{scenario: % of test rows answered right by always giving the commonest training answer of that scenario}."""
    train, test = examples(settings, "train"), examples(settings, "test")
    answer = lambda row: tuple(row.ids[row.labels != IGNORE_INDEX].tolist())
    result = {}
    for s in SCENARIOS:
        counts = {}
        for row in train[s]:
            counts[answer(row)] = counts.get(answer(row), 0) + 1
        commonest = max(counts, key=counts.get)
        result[s] = 100 * sum(answer(row) == commonest for row in test[s]) / len(test[s])
    return result


def train_recipe(recipe, seed, settings=SETTINGS):
    """One run -> {"recipe", "seed", "accuracy": {scenario: % on test rows}, "loss": per step}."""
    train, test = examples(settings, "train"), examples(settings, "test")
    plan = schedule(recipe, settings)
    torch.manual_seed(seed)
    model = Qwen2VL(model_config())

    def get_batch(step):
        order = random.Random(seed * 100_003 + step)
        return collate([row for s in SCENARIOS for row in order.sample(train[s], plan[step][s])])

    history = fit(model, get_batch, lambda m, b: m(**b, validate=False).loss,
                  TrainConfig(steps=settings["steps"], lr=settings["lr"], warmup_steps=min(30, settings["steps"]),
                              seed=seed, device="cpu", progress=False))
    return {"recipe": recipe, "seed": seed, "accuracy": {s: accuracy(model, test[s]) for s in SCENARIOS},
            "loss": history["loss"]}


def _run(job, settings):
    torch.set_num_threads(1)
    return train_recipe(*job, settings)


def run_recipes(seeds=(0, 1, 2), recipes=RECIPES, settings=SETTINGS, workers=2):
    """Every (recipe, seed) run, in order, in `workers` spawn processes of one thread each (0: here)."""
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    unknown = [s for s in settings["mix"] if s not in SCENARIOS]
    if unknown or not sum(settings["mix"].values()) > 0 or min(settings["mix"].values()) < 0:
        raise ValueError(f"mix must give non-negative shares of {SCENARIOS} (not all 0), got {settings['mix']}")
    if not 0 <= settings["text_first"] < 1:
        raise ValueError(f"text_first must be a share of the steps in [0, 1), got {settings['text_first']!r}")
    jobs = [(recipe, seed) for seed in seeds for recipe in recipes]
    for recipe in recipes:
        schedule(recipe, settings)                   # names an unknown recipe before anything runs
    if workers == 0:
        return [train_recipe(*job, settings) for job in jobs]
    with ProcessPoolExecutor(min(workers, os.cpu_count() or 1), mp_context=get_context("spawn")) as pool:
        return list(pool.map(_run, jobs, [settings] * len(jobs)))


def summarize(results):
    """One row per recipe: {"recipe", "seeds", "accuracy": {scenario: (mean, sd)}, "mean": (mean, sd) over scenarios}."""
    rows = []
    for recipe in RECIPES:
        runs = [r for r in results if r["recipe"] == recipe]
        if runs:
            per_run_mean = [sum(r["accuracy"].values()) / len(SCENARIOS) for r in runs]
            rows.append({"recipe": recipe, "seeds": [r["seed"] for r in runs],
                         "accuracy": {s: mean_sd([r["accuracy"][s] for r in runs]) for s in SCENARIOS},
                         "mean": mean_sd(per_run_mean)})
    return rows


def format_table(rows, baseline):
    """The summary as text, the majority-answer floor first."""
    lines = [f"{'recipe':<10}" + "".join(f"{s:>15}" for s in SCENARIOS) + f"{'mean':>15}",
             f"{'majority':<10}" + "".join(f"{baseline[s]:>15.1f}" for s in SCENARIOS)]
    for r in rows:
        lines.append(f"{r['recipe']:<10}" + "".join(f"{m:>8.1f} ± {sd:<4.1f}" for m, sd in r["accuracy"].values())
                     + f"{r['mean'][0]:>8.1f} ± {r['mean'][1]:<4.1f}")
    return "\n".join(lines)


def write_results(results, out_dir, settings=SETTINGS):
    """mixed.json (every run, the summary, the floor, the settings) and mixed.csv (the summary) -> their paths."""
    os.makedirs(out_dir, exist_ok=True)
    rows, baseline = summarize(results), majority_baseline(settings)
    paths = {name: os.path.join(out_dir, f"mixed.{name}") for name in ("json", "csv")}
    with open(paths["json"], "w") as f:
        json.dump({"runs": results, "summary": rows, "majority_baseline": baseline, "settings": settings}, f, indent=1)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["recipe", "seeds"] + [f"{s}_{stat}" for s in (*SCENARIOS, "mean") for stat in ("mean", "sd")])
        writer.writerow(["majority", 0] + [v for s in SCENARIOS for v in (f"{baseline[s]:.2f}", "")] + ["", ""])
        for r in rows:
            writer.writerow([r["recipe"], len(r["seeds"])] + [f"{v:.2f}" for s in SCENARIOS for v in r["accuracy"][s]]
                            + [f"{v:.2f}" for v in r["mean"]])
    return paths
