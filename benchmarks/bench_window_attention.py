"""Forward time of the dynamic-resolution ViT with window attention vs full attention, as images grow.

    python benchmarks/bench_window_attention.py [--sizes 112 224 448 896] [--repeats 5] [--device cpu|cuda]

One row per square image side (pixels, patches of 14 px): the patches, and ms per forward pass
(no gradient) of `window_attention.DynamicResolutionViT` with every layer full, and with Qwen2.5-VL's
layout (112-px windows, the last layer full), their ratio measured in the same run. A full layer costs
O(N²) in the N patches, a windowed one O(N · 64); the full last layer keeps the windowed ViT's cost
quadratic in the end, with a smaller constant.
"""

import argparse

import torch
from timing import seconds_per_call

from minivlm.dynamic_resolution import patchify_qwen2vl
from minivlm.train import pick_device
from minivlm.window_attention import DynamicResolutionViT, DynamicViTConfig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224, 448, 896])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    models = {name: DynamicResolutionViT(DynamicViTConfig(depth=args.depth, window_size=window,
                                                          full_attention_layers=(args.depth - 1,))).to(device).eval()
              for name, window in (("full", None), ("window", 112))}
    models["window"].load_state_dict(models["full"].state_dict())
    print("| device | image px | patches | full attention ms | window attention ms | full / window |")
    print("|---|---|---|---|---|---|")
    for side in args.sizes:
        patches, grid = patchify_qwen2vl(torch.rand(1, 3, side, side, device=device))
        grid = grid[None]
        with torch.no_grad():
            times = {name: seconds_per_call(lambda m=model: m(patches, grid), args.repeats, device, warmup=1)
                     for name, model in models.items()}
        print(f"| {device.type} | {side} | {len(patches)} | {1000 * times['full']:.1f} | {1000 * times['window']:.1f} "
              f"| {times['full'] / times['window']:.2f} |")


if __name__ == "__main__":
    main()
