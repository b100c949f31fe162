"""Train-step time and trainable parameters of the connectors of chapters 05-06, in front of one LM.

    python benchmarks/bench_connectors.py [--steps 10] [--device cpu|cuda] [--threads 2] [--images 16]

One row per (model size, connector, precision): the visual tokens each image becomes, the
parameters that train, ms per training step (forward, backward, AdamW) on Shapes VQA, and the
ratio to the first row of the same size, all measured in one run. The connectors:
    LLaVA stage 2    2×2 unshuffle projector + the LM train (chapter 05, `minivlm tour`)
    LLaVA stage 1    the projector alone, LM frozen
    BLIP-2 stage 2   Q-Former (Q queries) + Linear, LM frozen (chapter 06), Q = 4, 16, 32
The ViT is frozen in every row. A frozen LM still runs its backward pass (the gradient must reach
the visual tokens), so freezing it saves its weight gradients and optimizer state, not its
backward. On CUDA it adds bf16 autocast and bf16 + torch.compile rows.
"""

import argparse

import torch
from timing import seconds_per_call, train_step

from minivlm.data import ShapesGenerator, Tokenizer, WorldConfig, sample_vqa
from minivlm.evaluate import encode_vqa
from minivlm.models.blip2 import Blip2
from minivlm.models.llava import Llava, LlavaConfig
from minivlm.qformer import QFormerConfig
from minivlm.train import pick_device

SIZES = {   # (LlavaConfig fields, Q-Former width / depth)
    "cpu": (dict(patch_size=8, vision_dim=64, text_dim=64, text_depth=2), dict(dim=64, depth=2, mlp_hidden=128)),
    "gpu": (dict(patch_size=4, vision_dim=256, vision_depth=6, vision_heads=8, text_dim=256, text_depth=6,
                 text_heads=8), dict(dim=256, depth=6, heads=8, mlp_hidden=1024)),
}


def connectors(tokenizer, size):
    """(name, a function building the model in its training state) for one model size."""
    llava_fields, qformer_fields = SIZES[size]
    config = LlavaConfig(vocab_size=len(tokenizer), prefix="causal", **llava_fields)
    rows = [("LLaVA stage 2 (projector + LM)", lambda: Llava(config).set_stage(2)),
            ("LLaVA stage 1 (projector)", lambda: Llava(config).set_stage(1))]
    for queries in (4, 16, 32):
        qformer = QFormerConfig(image_dim=config.vision_dim, num_queries=queries, **qformer_fields)
        rows.append((f"BLIP-2 stage 2 (Q-Former, Q={queries})", lambda q=qformer: Blip2(config, q)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=None, help="images per step (default 16 on CPU, 128 on GPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    tokenizer = Tokenizer()
    images_per_step = args.images or (128 if on_gpu else 16)
    scenes, images = ShapesGenerator(WorldConfig(), 32, "train", seed=0, device=device).batch(images_per_step)
    batch = {k: v.to(device) for k, v in encode_vqa(tokenizer, sample_vqa(scenes, 4, seed=0)).items()}

    variants = [("fp32", False, False)] + ([("bf16", True, False), ("bf16+compile", True, True)] if on_gpu else [])
    print(f"device {device} ({torch.get_num_threads()} threads), {images_per_step} images x 4 questions per step, "
          f"{args.steps} timed steps")
    print("| size | connector | visual tokens | trainable | precision | ms/step | ratio |")
    print("|---|---|---:|---:|---|---:|---:|")
    for size in (["cpu", "gpu"] if on_gpu else ["cpu"]):
        baseline = None
        for name, build in connectors(tokenizer, size):
            for precision, amp, compile_model in variants:
                torch.manual_seed(0)
                model = build().to(device)
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                tokens = model.encode_images(images[:1]).shape[1]
                run = torch.compile(model) if compile_model else model
                step = train_step(run, lambda m: m(images, batch["input_ids"], batch["attention_mask"],
                                                   batch["labels"], batch["image_index"], validate=False).loss,
                                  device, amp)
                seconds = seconds_per_call(step, args.steps, device)
                baseline = baseline or seconds
                print(f"| {size} | {name} | {tokens} | {trainable:,} | {precision} | {1000 * seconds:.1f} | "
                      f"{baseline / seconds:.2f}x |")


if __name__ == "__main__":
    main()
