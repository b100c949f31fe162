"""What every benchmark script here times with: seconds per call, and one optimiser step.

The scripts run as `python benchmarks/bench_*.py`, so this folder is on `sys.path` and they
import it as `timing`. CUDA launches kernels asynchronously: the clock is read only after
`torch.cuda.synchronize()`, or it would time the launches, not the work.
"""

import time

import torch


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(fn, repeats, device, warmup=3):
    """Mean wall seconds of `fn()` over `repeats` calls, after `warmup` untimed ones (allocator, compilation)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def train_step(model, loss_of, device, amp=False, lr=1e-3):
    """A function doing one training step: loss_of(model) under bf16 autocast if `amp`, backward, AdamW.

    `model` may be a `torch.compile` wrapper; the optimiser takes its trainable parameters.
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_of(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step
