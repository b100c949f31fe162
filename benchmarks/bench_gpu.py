"""The GPU path, measured: ms/step, tokens/s, MFU, peak memory, fp32 : bf16 : bf16 + compile, and the data's share.

    python benchmarks/bench_gpu.py [--presets cpu gpu large] [--steps 20] [--device cuda] [--peak-tflops 989]

One training step of the chapter-05 VLM (LLaVA's stage 2: the ViT frozen, projector and LM training, as in
`minivlm tour`) per preset, on a pool of Shapes VQA rendered on the device once (as the tour makes its data):

    cpu     the tour's CPU model: 32-px scenes, 4 visual tokens, a 3-layer 96-wide LM
    gpu     the tour's GPU model: 32-px scenes, 4-px patches (16 visual tokens), 256-wide ViT and LM
    large   128-px scenes of a 4 x 4 grid (up to 8 objects), 64 visual tokens, a 768-wide ViT and a 1024-wide LM

Each row: ms per step (forward, backward, AdamW), LM tokens per second (every position of every row, visual tokens
included), MFU = model FLOPs per step (minivlm/flops.py, counted analytically) / step time / the device's peak
bf16 FLOP/s (printed with the assumed peak; fp32 rows are divided by the same bf16 peak), peak memory
(torch.cuda.max_memory_allocated), the ratio to the preset's fp32 row, and the share of the step spent making its
batch (indexing the pool on the device: it should be ~0). On a machine without CUDA the CPU preset's fp32 row runs
and every CUDA row says it is skipped. Several GPUs: `minivlm.train.fit` runs the same step under
`torchrun --nproc_per_node=N` (DDP); this script times one device.
"""

import argparse
import time

import torch
from timing import seconds_per_call, synchronize, train_step

from minivlm.data import ShapesGenerator, Tokenizer, WorldConfig, image_row_batches, sample_vqa
from minivlm.evaluate import encode_vqa
from minivlm.flops import llava_step_flops
from minivlm.models.llava import Llava, LlavaConfig
from minivlm.tour import GPU_MODEL, V2_MODEL
from minivlm.train import pick_device

PRESETS = {
    "cpu": dict(model=dict(V2_MODEL, image_size=32), world=WorldConfig(), images=32, cuda_images=256),
    "gpu": dict(model=dict(GPU_MODEL, image_size=32), world=WorldConfig(), images=8, cuda_images=256),
    "large": dict(model=dict(image_size=128, patch_size=8, vision_dim=768, vision_depth=8, vision_heads=12,
                             text_dim=1024, text_depth=8, text_heads=16, max_seq_len=160),
                  world=WorldConfig(grid=4, max_objects=8), images=2, cuda_images=256),
}
PEAK_BF16_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125}   # dense, no sparsity
QUESTIONS_PER_IMAGE = 4
POOL_IMAGES_PER_STEP = 8        # the pool holds this many steps' worth of images


def assumed_peak(device, override):
    """(peak FLOP/s or None, how it was found) for MFU."""
    if override:
        return override * 1e12, f"{override:g} TFLOP/s (--peak-tflops)"
    if device.type != "cuda":
        return None, "none (not a CUDA device: MFU not computed; pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"{tflops} TFLOP/s dense bf16 ({name})"
    return None, f"unknown for {name}: pass --peak-tflops"


def pool_batches(preset, images_per_step, device, tokenizer):
    """get(step) -> a training batch, indexed out of a pool rendered on the device once."""
    pool = images_per_step * POOL_IMAGES_PER_STEP
    scenes, images = ShapesGenerator(preset["world"], preset["model"]["image_size"], "train", seed=0,
                                     device=device).batch(pool)
    rows = encode_vqa(tokenizer, sample_vqa(scenes, QUESTIONS_PER_IMAGE, seed=0))
    get = image_row_batches(rows, images_per_step, seed=0)       # rows stay on the CPU: cutting them never waits
    return lambda step: tuple(t.to(device, non_blocking=True) for t in get(step, images))    # for the device


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=None, choices=tuple(PRESETS),
                        help="default: all on CUDA, cpu elsewhere")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--images", type=int, default=None, help="images per step (default: the preset's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak bf16 TFLOP/s, for MFU")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    presets = args.presets or (list(PRESETS) if on_cuda else ["cpu"])
    peak, peak_note = assumed_peak(device, args.peak_tflops)
    tokenizer = Tokenizer()
    print(f"device {device}, torch {torch.__version__}, {args.steps} timed steps a row; peak for MFU: {peak_note}")
    print("| preset | precision | images/step | LM tokens/step | GFLOP/step | ms/step | tokens/s | MFU | peak MB "
          "| vs fp32 | data share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in presets:
        preset = PRESETS[name]
        images_per_step = args.images or (preset["cuda_images"] if on_cuda else preset["images"])
        get = pool_batches(preset, images_per_step, device, tokenizer)
        baseline = None
        for precision, amp, compiled in (("fp32", False, False), ("bf16", True, False), ("bf16+compile", True, True)):
            if (amp or compiled) and not on_cuda:
                print(f"| {name} | {precision} | skipped: needs a CUDA device (bf16 autocast and torch.compile "
                      f"are used on CUDA only) |||||||||")
                continue
            torch.manual_seed(0)
            model = Llava(LlavaConfig(vocab_size=len(tokenizer), **preset["model"])).set_stage(2).to(device)
            run = torch.compile(model) if compiled else model
            batch = get(0)
            step = train_step(run, lambda m: m(*batch, validate=False).loss, device, amp)
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            seconds = seconds_per_call(step, args.steps, device)
            synchronize(device)
            started = time.perf_counter()
            for k in range(args.steps):
                get(k)
            synchronize(device)
            data_seconds = (time.perf_counter() - started) / args.steps
            rows, length = batch[1].shape[0], batch[1].shape[1] - 1 + model.config.num_visual_tokens
            flops = llava_step_flops(model, len(batch[0]), rows, length)["total"]
            baseline = baseline or seconds
            mfu = f"{100 * flops / seconds / peak:.1f}%" if peak else "—"
            memory = f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}" if on_cuda else "—"
            print(f"| {name} | {precision} | {len(batch[0])} | {rows * length:,} | {flops / 1e9:,.1f} | "
                  f"{1000 * seconds:.1f} | {rows * length / seconds:,.0f} | {mfu} | {memory} | "
                  f"{baseline / seconds:.2f}x | {100 * data_seconds / (seconds + data_seconds):.1f}% |")


if __name__ == "__main__":
    main()
