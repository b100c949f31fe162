"""Speed of contrastive training: one dual-encoder step (forward, loss, backward, AdamW) per loss and batch size,
and the two losses alone on larger batches.

    python benchmarks/bench_clip.py            # chapter 03's sweep model on the picked device
    python benchmarks/bench_clip.py --dim 64 --depth 2

Ratios are measured in one run, so they hold on a busy machine better than the absolute times.
"""

import argparse

import torch
from timing import seconds_per_call, train_step

from minivlm import contrastive
from minivlm.data import Tokenizer, WorldConfig, caption, render, sample_scenes
from minivlm.models.clip import CLIP, CLIPConfig
from minivlm.train import pick_device
from minivlm.vit import ViTConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    tokenizer = Tokenizer()
    print(f"device {device.type}, threads {torch.get_num_threads()}, towers dim {args.dim} depth {args.depth}")

    print(f"\n{'batch':>6} {'loss':>7} {'ms / step':>10} {'ms / pair':>10}")
    for batch_size in (16, 64, 256):
        scenes = sample_scenes(batch_size, WorldConfig(max_objects=2), generator=torch.Generator().manual_seed(0))
        ids, mask = tokenizer.batch_encode([caption(scenes, i) for i in range(batch_size)], add_eos=True)
        batch = (render(scenes, 32).to(device), ids.to(device), mask.to(device))
        for loss_type in ("clip", "siglip"):
            vision = ViTConfig(image_size=32, patch_size=8, dim=args.dim, depth=args.depth, heads=4)
            model = CLIP(CLIPConfig(vision=vision, vocab_size=tokenizer.vocab_size, text_dim=args.dim,
                                    text_depth=args.depth, text_heads=4, text_causal=False, text_pool="mean",
                                    embed_dim=args.dim, loss=loss_type)).to(device)
            step = train_step(model, lambda m: contrastive.contrastive_loss(*m(*batch, validate=False)), device)
            seconds = seconds_per_call(step, args.repeats, device, warmup=1)
            print(f"{batch_size:>6} {loss_type:>7} {1000 * seconds:>10.1f} {1000 * seconds / batch_size:>10.3f}")

    print(f"\nthe losses alone, forward + backward, E = 64\n{'B':>6} {'clip ms':>9} {'siglip ms':>10} {'ratio':>7}")
    for B in (256, 1024, 4096):
        images = torch.randn(B, 64, device=device, requires_grad=True)
        texts = torch.randn(B, 64, device=device, requires_grad=True)
        clip_s = seconds_per_call(lambda: contrastive.clip_loss(images, texts, 10.0).backward(), args.repeats, device, 1)
        siglip_s = seconds_per_call(lambda: contrastive.siglip_loss(images, texts, 10.0, -10.0).backward(),
                                    args.repeats, device, 1)
        print(f"{B:>6} {1000 * clip_s:>9.2f} {1000 * siglip_s:>10.2f} {siglip_s / clip_s:>7.2f}")


if __name__ == "__main__":
    main()
