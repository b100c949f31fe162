"""The `minivlm` command line.

    minivlm tour [--steps N] [--seed S] [--device D] [--out tour.png]
        trains a small Vision Transformer (chapter 01) to count the shapes in Shapes-world
        scenes, on the best device present, then reports its held-out accuracy
    minivlm exercises [--check]
        regenerates exercises/ from solutions/ (see minivlm/exercises.py)
"""

import argparse
import sys
import time

# One visible setting per device kind: the same tour, bigger on a GPU.
TOUR_SETTINGS = {
    "cpu": dict(dim=64, depth=2, heads=4, steps=300, batch_size=128, lr=3e-3),
    "gpu": dict(dim=192, depth=6, heads=6, steps=1500, batch_size=512, lr=1e-3),
}


def tour(args):
    import matplotlib
    matplotlib.use("Agg")
    import torch
    import torch.nn.functional as F
    from .data.shapes import NUMBER_WORDS, ShapesGenerator, WorldConfig, classification_labels
    from .train import TrainConfig, fit, pick_device, seed_everything
    from .viz import show_images
    from .vit import ViTClassifier, ViTConfig

    started = time.perf_counter()
    device = pick_device(args.device)
    settings = TOUR_SETTINGS["cpu" if device.type == "cpu" else "gpu"]
    steps = settings["steps"] if args.steps is None else args.steps
    if steps < 1:
        raise SystemExit(f"minivlm tour: --steps must be >= 1, got {steps}")
    seed_everything(args.seed)
    world = WorldConfig(min_objects=1, max_objects=4, grid=2)
    config = ViTConfig(image_size=32, patch_size=4, dim=settings["dim"], depth=settings["depth"],
                       heads=settings["heads"], positions="sincos", pool="cls")
    model = ViTClassifier(config, num_classes=world.max_objects + 1)
    print(f"minivlm tour: a {sum(p.numel() for p in model.parameters()):,}-parameter ViT learns to count "
          f"the shapes in 32x32 scenes ({steps} steps of {settings['batch_size']} scenes on {device.type})")

    train_data = ShapesGenerator(world, 32, split="train", seed=args.seed, device=device)

    def get_batch(step):
        scenes, images = train_data.batch(settings["batch_size"])
        return images, classification_labels(scenes, "count")

    def loss_fn(m, batch):
        images, labels = batch
        return F.cross_entropy(m(images), labels)

    fit(model, get_batch, loss_fn, TrainConfig(steps=steps, lr=settings["lr"], warmup_steps=min(30, steps),
                                               device=str(device), seed=args.seed))

    test_scenes, test_images = ShapesGenerator(world, 32, split="test", seed=12345, device=device).batch(2000)
    model.eval()
    with torch.no_grad():
        predictions = model(test_images).argmax(-1)
    truth = classification_labels(test_scenes, "count")
    correct = predictions == truth
    for k in range(8):
        mark = "✓" if correct[k] else "✗"
        print(f"  {mark} how many shapes are there ? -> {NUMBER_WORDS[predictions[k]]}"
              + ("" if correct[k] else f" (true: {NUMBER_WORDS[truth[k]]})"))
    titles = [f"says {NUMBER_WORDS[p]}" + ("" if p == t else f" (is {NUMBER_WORDS[t]})")
              for p, t in zip(predictions[:16].tolist(), truth[:16].tolist())]
    figure = show_images(test_images[:16].cpu(), titles, ncols=8,
                         colors=["green" if c else "red" for c in correct[:16].tolist()])
    figure.savefig(args.out, dpi=100)
    print(f"saved the figure to {args.out}")
    print(f"held-out accuracy: {100 * correct.float().mean().item():.1f}% ({len(truth)} questions) "
          f"in {time.perf_counter() - started:.0f} s on {device.type}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minivlm", description="minivlm: a from-scratch course on VLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    tour_parser = commands.add_parser("tour", help="train a small model on the Shapes world and report accuracy")
    tour_parser.add_argument("--steps", type=int, default=None, help="training steps (default: per device)")
    tour_parser.add_argument("--seed", type=int, default=0)
    tour_parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    tour_parser.add_argument("--out", default="tour.png", help="where to save the figure")
    commands.add_parser("exercises", help="regenerate exercises/ from solutions/", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "exercises":
        from .exercises import main as exercises_main
        return exercises_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return tour(args)


if __name__ == "__main__":
    sys.exit(main())
