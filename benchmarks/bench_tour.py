"""The tour's recipes side by side: wall time, training FLOPs and held-out accuracy, per seed.

    python benchmarks/bench_tour.py                          # recipes v1 and v2, seeds 0 1 2
    python benchmarks/bench_tour.py --recipes v1 v2 v2@600   # v2@600: recipe v2 cut to 600 VQA steps
    python benchmarks/bench_tour.py --recipes v2 --seeds 0 --threads 2

Each run is the whole command as the README runs it, in a fresh process:
`minivlm tour --recipe R --seed S --quiet` (imports, data, both training stages, the held-out
test, the figure and the checkpoint), so the time is what a newcomer waits. This machine's speed
drifts by up to 2x within minutes, so the runs are interleaved (seed 0: v1, v2; seed 1: v1,
v2; ...) and the ratio compares the recipes over the same stretch of time.

Training FLOPs are counted analytically from the batches each recipe really makes (replayed
from `minivlm.tour.TourData`, no training): 2 FLOPs per weight of every linear layer (and the
patch-embedding conv) per token it sees, and 4·L·S·D per attention layer for QKᵀ and AV;
×3 where a backward pass runs (trained modules), ×1 for the ViT frozen in stage 2. Norms,
activations, softmax and the optimiser are left out: they are a few percent at these sizes (the
conventions of minivlm/flops.py, whose counters this uses).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from minivlm.data import QUESTION_KINDS, Tokenizer
from minivlm.flops import blocks_forward_flops, matmul_weights
from minivlm.models.llava import Llava
from minivlm.tour import RECIPES, TourData, settings_for, stage_steps, tour_clip, tour_config


def parse_run(name, steps=None):
    """"v2" -> ("v2", steps); "v2@600" -> ("v2", 600): a recipe, cut to other VQA steps (`minivlm tour --steps`)."""
    recipe, _, cut = name.partition("@")
    if recipe not in RECIPES or (cut and not cut.isdigit()):
        raise SystemExit(f"--recipes: {name!r} is not a recipe ({', '.join(RECIPES)}) or recipe@steps")
    return recipe, int(cut) if cut else steps


def training_flops(recipe, seed, steps=None):
    """(CLIP-stage FLOPs, VQA-stage FLOPs) of a tour run, from the batches it makes."""
    settings = settings_for("cpu", recipe)
    clip_steps, steps = stage_steps(settings, steps)
    tokenizer = Tokenizer()
    config = tour_config(tokenizer, settings)
    model, clip = Llava(config), tour_clip(tokenizer, config)
    data = TourData(tokenizer, settings, steps, seed, config.image_size, "cpu")
    vit, patches, T = model.vision, config.vision_config().grid_size ** 2, config.num_visual_tokens

    def vit_flops(images):
        return 2 * matmul_weights(vit.patch_embed) * images * patches + blocks_forward_flops(
            vit.blocks, config.vision_dim, images, patches)

    clip_total = 0
    for step in range(clip_steps):
        images, ids, _ = data.clip_batch(step)
        b, L = ids.shape
        text = blocks_forward_flops(clip.text.blocks, clip.config.text_dim, b, L)
        clip_total += 3 * (vit_flops(b) + text)
    vqa_total = 0
    for step in range(steps):
        images, ids, *_ = data.vqa_batch(step)
        rows, S = ids.shape[0], ids.shape[1] - 1 + T
        lm = blocks_forward_flops(model.lm.blocks, config.text_dim, rows, S)
        lm += 2 * matmul_weights(model.lm.lm_head) * rows * S
        projector = 2 * matmul_weights(model.projector) * len(images) * T
        vqa_total += vit_flops(len(images)) + 3 * (projector + lm)
    return clip_total, vqa_total


def tour_command():
    executable = shutil.which("minivlm")
    return [executable] if executable else [sys.executable, "-c", "import sys; from minivlm.cli import main; sys.exit(main())"]


def run_tour(recipe, seed, steps, threads, folder):
    """(wall seconds, {kind: accuracy %}) of one whole `minivlm tour` command."""
    command = tour_command() + ["tour", "--recipe", recipe, "--seed", str(seed), "--quiet",
                                "--out", os.path.join(folder, "tour.png"),
                                "--checkpoint", os.path.join(folder, "tour.pt")]
    command += ["--steps", str(steps)] if steps else []
    command += ["--threads", str(threads)] if threads else []
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    accuracy = {kind: float(value) for kind, value in re.findall(r"(\w+) ([\d.]+)%", result.stdout.split(
        "held-out accuracy per question type:")[1].splitlines()[0])}
    accuracy["all"] = float(re.search(r"held-out accuracy: ([\d.]+)%", result.stdout).group(1))
    return seconds, accuracy


def mean_sd(values):
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipes, or recipe@steps (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="VQA steps (default: each recipe's; a smoke test uses 3)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the tours (default: all cores)")
    args = parser.parse_args(argv)

    runs_of = {name: parse_run(name, args.steps) for name in args.recipes}
    flops = {(r, s): sum(training_flops(runs_of[r][0], s, runs_of[r][1])) for r in args.recipes for s in args.seeds}
    kinds = list(QUESTION_KINDS)
    print(f"| recipe | seed | wall s | train GFLOP | held-out | {' | '.join(kinds)} |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(kinds))
    runs = {r: [] for r in args.recipes}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for recipe in args.recipes:
                name, steps = runs_of[recipe]
                seconds, accuracy = run_tour(name, seed, steps, args.threads, folder)
                runs[recipe].append((seconds, accuracy, flops[recipe, seed]))
                print(f"| {recipe} | {seed} | {seconds:.1f} | {flops[recipe, seed] / 1e9:,.0f} | {accuracy['all']:.1f}% | "
                      + " | ".join(f"{accuracy.get(kind, float('nan')):.1f}%" for kind in kinds) + " |", flush=True)
    print()
    print("| recipe | wall s (mean ± sd) | train GFLOP | held-out % (mean ± sd) | lowest | time ratio | FLOP ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    first = args.recipes[0]
    base_time = statistics.mean(s for s, _, _ in runs[first])
    base_flops = statistics.mean(f for _, _, f in runs[first])
    for recipe in args.recipes:
        times, accs, counts = zip(*[(s, a["all"], f) for s, a, f in runs[recipe]])
        print(f"| {recipe} | {mean_sd(times)} | {statistics.mean(counts) / 1e9:,.0f} | {mean_sd(accs)} | {min(accs):.1f} | "
              f"{statistics.mean(times) / base_time:.2f}x | {statistics.mean(counts) / base_flops:.2f}x |")
    print(f"\n(ratios against {first}; torch {torch.__version__}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
