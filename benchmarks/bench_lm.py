"""Generation speed of minivlm.lm.LanguageModel with and without the KV cache.

    python benchmarks/bench_lm.py                         # the chapter-04 model on CPU
    python benchmarks/bench_lm.py --dim 256 --depth 4 --heads 8 --device cuda

For each generation length the script times `generate(..., use_cache=True/False)` (greedy, no
eos, so both run exactly that many steps; best of --repeats alternating runs), checks that both
give the same tokens, and prints tokens/s and the speed-up as a table. Ratios are measured in one run,
so they are comparable even when the absolute numbers depend on the machine's load.
"""

import argparse
import time

import torch
from timing import synchronize

from minivlm.lm import LanguageModel, LMConfig
from minivlm.train import pick_device


def timed_generate(model, prompts, new_tokens, use_cache):
    synchronize(prompts.device)
    start = time.perf_counter()
    tokens = model.generate(prompts, new_tokens, use_cache=use_cache)
    synchronize(prompts.device)
    return time.perf_counter() - start, tokens


def best_of(model, prompts, new_tokens, repeats):
    """Best seconds with and without the cache, alternating runs so both see the same machine load."""
    best, tokens = {True: float("inf"), False: float("inf")}, {}
    for _ in range(repeats):
        for use_cache in (True, False):
            seconds, tokens[use_cache] = timed_generate(model, prompts, new_tokens, use_cache)
            best[use_cache] = min(best[use_cache], seconds)
    return best[True], best[False], torch.equal(tokens[True], tokens[False])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=58, help="58 = the Shapes tokenizer's vocabulary")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=4, help="prompt length in tokens")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    torch.manual_seed(0)
    config = LMConfig(vocab_size=args.vocab, dim=args.dim, depth=args.depth, heads=args.heads,
                      max_seq_len=args.prompt + max(args.lengths))
    model = LanguageModel(config).to(device).eval()
    prompts = torch.randint(0, args.vocab, (args.batch, args.prompt), device=device)
    best_of(model, prompts, 4, 1)                       # warm-up (allocator, kernels)

    params = sum(p.numel() for p in model.parameters())
    print(f"LanguageModel dim={args.dim} depth={args.depth} heads={args.heads} ({params:,} parameters), "
          f"batch {args.batch}, prompt {args.prompt} tokens, {device}"
          + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""))
    header = f"{'new tokens':>10} {'cache tok/s':>12} {'no-cache tok/s':>15} {'speed-up':>9} {'same tokens':>12}"
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        t_cache, t_full, same = best_of(model, prompts, length, args.repeats)
        generated = args.batch * length
        print(f"{length:>10} {generated / t_cache:>12,.0f} {generated / t_full:>15,.0f} "
              f"{t_full / t_cache:>8.1f}× {str(same):>12}")


if __name__ == "__main__":
    main()
