"""Train-step time and tokens/s of the chapter-05 VLM (ViT -> projector -> LM) on Shapes VQA.

    python benchmarks/bench_vlm.py [--steps 10] [--device cpu|cuda] [--threads 2]

One row per (model size, projector, precision): ms per training step (forward, backward,
AdamW; LLaVA stage 2 as in `minivlm tour`: projector and LM train, the ViT is frozen), images/s
and LM tokens/s (every position of every sequence, visual tokens included), and the ratio to
the first row of the same size, all measured in one run. The projector
column compares 16 visual tokens ("mlp", LLaVA-1.5) with 4 ("unshuffle", InternVL's 2×2
pixel unshuffle). On CUDA it adds bf16 autocast and bf16 + torch.compile rows.
"""

import argparse

import torch
from timing import seconds_per_call, train_step

from minivlm.data import ShapesGenerator, Tokenizer, WorldConfig, sample_vqa
from minivlm.evaluate import encode_vqa
from minivlm.models.llava import Llava, LlavaConfig
from minivlm.tour import settings_for
from minivlm.train import pick_device

SIZES = {
    "cpu": settings_for("cpu")["model"],                                                      # the tour's model
    "gpu": dict(patch_size=4, vision_dim=256, text_dim=256, vision_depth=6, text_depth=6, vision_heads=8, text_heads=8),
}


def make_batch(images_per_step, questions_per_image, device, tokenizer):
    scenes, images = ShapesGenerator(WorldConfig(), 32, "train", seed=0, device=device).batch(images_per_step)
    batch = encode_vqa(tokenizer, sample_vqa(scenes, questions_per_image, seed=0))
    return images, {key: value.to(device) for key, value in batch.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=None, help="images per step (default 32 on CPU, 256 on GPU)")
    parser.add_argument("--questions", type=int, default=4, help="questions per image")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    tokenizer = Tokenizer()
    images_per_step = args.images or (256 if on_gpu else settings_for("cpu")["images_per_step"])
    images, batch = make_batch(images_per_step, args.questions, device, tokenizer)
    text_tokens = int(batch["attention_mask"].sum())

    variants = [("fp32", False, False)]
    if on_gpu:
        variants += [("bf16", True, False), ("bf16+compile", True, True)]
    sizes = ["cpu", "gpu"] if on_gpu else ["cpu"]
    print(f"device {device} ({torch.get_num_threads()} threads), {images_per_step} images x "
          f"{args.questions} questions per step, {args.steps} timed steps")
    print(f"| size | projector | visual tokens | precision | ms/step | images/s | tokens/s | ratio |")
    print(f"|---|---|---|---|---:|---:|---:|---:|")
    for size in sizes:
        baseline = None
        for projector in ("mlp", "unshuffle"):
            for name, amp, compile_model in variants:
                torch.manual_seed(0)
                config = LlavaConfig(vocab_size=len(tokenizer), projector=projector, **SIZES[size])
                model = Llava(config).set_stage(2).to(device)
                run = torch.compile(model) if compile_model else model
                step = train_step(run, lambda m: m(images, batch["input_ids"], batch["attention_mask"],
                                                   batch["labels"], batch["image_index"], validate=False).loss,
                                  device, amp)
                seconds = seconds_per_call(step, args.steps, device)
                tokens = text_tokens + len(batch["input_ids"]) * (config.num_visual_tokens - 1)
                baseline = baseline or seconds
                print(f"| {size} | {projector} | {config.num_visual_tokens} | {name} | {1000 * seconds:.1f} | "
                      f"{images_per_step / seconds:,.0f} | {tokens / seconds:,.0f} | {baseline / seconds:.2f}x |")


if __name__ == "__main__":
    main()
