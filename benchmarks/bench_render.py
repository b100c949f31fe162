"""How fast does the Shapes world make images? Prints images/s for render alone and for
sample_scenes + render, on CPU (2 threads, like a small laptop) and on CUDA if available.

    python benchmarks/bench_render.py [--seconds 0.5] [--threads 2]

Each number is the best of several timed repeats (like `timeit`), so other processes on a
shared machine disturb it less. For the same reason OpenMP threads sleep instead of spin
while they wait: on an oversubscribed machine spinning threads stall every parallel op.
"""

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must be set before torch starts its thread pool
import torch  # noqa: E402

from minivlm.data import WorldConfig, render, sample_scenes  # noqa: E402


def images_per_second(fn, batch_size, device, seconds):
    fn()  # warm up
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return batch_size / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time spent on each row")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = WorldConfig(max_objects=4, grid=2)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"CPU threads: {torch.get_num_threads()}")
    print(f"{'device':>6} {'size':>5} {'batch':>6} {'render img/s':>14} {'sample+render img/s':>20}")
    for device in devices:
        generator = torch.Generator(device=device).manual_seed(0)
        for image_size in (32, 64):
            for batch_size in (256, 1024):
                scenes = sample_scenes(batch_size, config, generator=generator, device=device)
                render_only = images_per_second(lambda: render(scenes, image_size), batch_size, device, args.seconds)
                both = images_per_second(
                    lambda: render(sample_scenes(batch_size, config, generator=generator, device=device, split="train"),
                                   image_size), batch_size, device, args.seconds)
                print(f"{device.type:>6} {image_size:>5} {batch_size:>6} {render_only:>14,.0f} {both:>20,.0f}")


if __name__ == "__main__":
    main()
