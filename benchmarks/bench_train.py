"""Train-step time of the chapter-01 ViT classifier on the Shapes world.

    python benchmarks/bench_train.py [--steps 20] [--device cpu|cuda]

Prints one row per (model size, batch size, precision): ms per step and images/s, with
the ratio to the fp32 eager row of the same size measured in the same run. On CUDA it
adds bf16 autocast and bf16 + torch.compile rows.
"""

import argparse

import torch
import torch.nn.functional as F
from timing import seconds_per_call, train_step

from minivlm.data import ShapesGenerator, WorldConfig, classification_labels
from minivlm.train import pick_device
from minivlm.vit import ViTClassifier, ViTConfig

SIZES = {"tiny": dict(dim=64, depth=2, heads=4), "small": dict(dim=128, depth=4, heads=4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    variants = [("fp32", False, False)]
    if device.type == "cuda":
        variants += [("bf16", True, False), ("bf16+compile", True, True)]
    batches = (128, 512) if device.type == "cpu" else (512, 2048)
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, 32x32 images, patch 4")
    print(f"{'model':>6} {'batch':>6} {'precision':>13} {'ms/step':>9} {'images/s':>10} {'vs fp32':>8}")
    for size, dims in SIZES.items():
        for batch_size in batches:
            scenes, images = ShapesGenerator(WorldConfig(), 32, seed=0, device=device).batch(batch_size)
            labels = classification_labels(scenes, "count")
            baseline = None
            for name, amp, compiled in variants:
                torch.manual_seed(0)
                model = ViTClassifier(ViTConfig(image_size=32, patch_size=4, **dims), 5).to(device)
                if compiled:
                    model = torch.compile(model)
                step = train_step(model, lambda m: F.cross_entropy(m(images), labels), device, amp)
                seconds = seconds_per_call(step, args.steps, device)
                baseline = baseline or seconds
                print(f"{size:>6} {batch_size:>6} {name:>13} {1000 * seconds:>9.1f} "
                      f"{batch_size / seconds:>10.0f} {baseline / seconds:>7.2f}x")


if __name__ == "__main__":
    main()
