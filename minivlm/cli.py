"""The `minivlm` command line.

    minivlm tour [--steps N] [--seed S] [--device D] [--out tour.png] [--checkpoint checkpoints/tour.pt]
        trains a small LLaVA-style VLM on Shapes VQA, end to end, and reports its accuracy on
        held-out scenes: a ViT pretrained with CLIP's contrastive loss on captions (chapter 03),
        then an InternVL pixel-unshuffle projector and a language model trained to answer (05)
    minivlm ask --checkpoint PATH --question "how many red shapes are there ?" [--image FILE | --seed S]
        answers a question about a freshly rendered scene (or an image file) with a saved model
    minivlm exercises [--check]
        regenerates exercises/ from solutions/ (see minivlm/exercises.py)

Bad input (a wrong image size, an unknown word, a prompt without <image>, a file that is not a
tour checkpoint) stops with one clear line, before anything is written.
"""

import argparse
import os
import sys
import time
from dataclasses import asdict

CHECKPOINT_KIND = "minivlm-llava"
# The recipe per device: sizes and fixed step counts (not a time budget, so a seed gives the
# same run everywhere). "cpu" takes 80-100 s on a 2-core laptop.
TOUR_SETTINGS = {
    "cpu": dict(model=dict(patch_size=8, vision_dim=64, vision_depth=2, text_dim=128, text_depth=2),
                clip_steps=300, clip_batch=64, steps=1100, images_per_step=32, pool=12_000, lr=3e-3),
    "gpu": dict(model=dict(patch_size=4, vision_dim=128, vision_depth=4, text_dim=256, text_depth=4, text_heads=8),
                clip_steps=1000, clip_batch=256, steps=3000, images_per_step=128, pool=100_000, lr=2e-3),
}
QUESTIONS_PER_IMAGE = 4
TEST_QUESTIONS = 2000


class CLIError(Exception):
    """A problem with the user's input: reported as one line, nothing written."""


# ----------------------------------------------------------------------------- tour

def tour(args):
    """Stage 0: CLIP-pretrain a ViT on captions. Then LLaVA: ViT (frozen) -> unshuffle projector -> LM on VQA."""
    import random

    import torch
    from .contrastive import contrastive_loss
    from .data import QUESTION_KINDS, ShapesGenerator, Tokenizer, WorldConfig, caption
    from .evaluate import encode_vqa, sample_vqa, vqa_accuracy
    from .models.clip import CLIP, CLIPConfig
    from .models.llava import Llava, LlavaConfig, answer_questions
    from .train import TrainConfig, fit, pick_device, save_checkpoint, seed_everything

    started = time.perf_counter()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    settings = TOUR_SETTINGS["cpu" if device.type == "cpu" else "gpu"]
    steps = settings["steps"] if args.steps is None else args.steps
    if steps < 1:
        raise CLIError(f"--steps must be >= 1, got {steps}")
    _check_writable(args.out, "--out")
    _check_writable(args.checkpoint, "--checkpoint")
    seed_everything(args.seed)
    tokenizer, world = Tokenizer(), WorldConfig()
    config = LlavaConfig(vocab_size=len(tokenizer), **settings["model"])
    model = Llava(config)

    # The data, made once: training scenes, each with its caption and 4 questions of different kinds.
    per_step, clip_batch = settings["images_per_step"], settings["clip_batch"]
    clip_steps = max(1, round(settings["clip_steps"] * min(1.0, steps / settings["steps"])))
    pool = max(per_step, clip_batch, min(settings["pool"], steps * per_step))
    scenes, images = ShapesGenerator(world, config.image_size, "train", seed=args.seed, device=device).batch(pool)
    captions = [t.to(device) for t in tokenizer.batch_encode([caption(scenes, i) for i in range(pool)], add_eos=True)]
    vqa = encode_vqa(tokenizer, sample_vqa(scenes, QUESTIONS_PER_IMAGE, seed=args.seed))
    vqa = {key: value.to(device) for key, value in vqa.items()}
    first_row = torch.searchsorted(vqa["image_index"], torch.arange(pool + 1, device=device))

    # Stage 0, as LLaVA starts from CLIP's vision tower: contrastive image-caption pretraining.
    clip = CLIP(CLIPConfig(vision=config.vision_config(), vocab_size=len(tokenizer), text_dim=64, text_depth=2,
                           text_causal=False, text_pool="mean", embed_dim=64))

    def clip_batches(step):
        start = (step * clip_batch) % (pool - clip_batch + 1)
        ids, mask = (t[start:start + clip_batch] for t in captions)
        length = int(mask.sum(1).max())
        return model.normalize(images[start:start + clip_batch]), ids[:, :length], mask[:, :length]

    print(f"stage 0: CLIP pretraining of the vision tower on {pool} captioned scenes ({clip_steps} steps, {device.type})")
    fit(clip, clip_batches, lambda m, batch: contrastive_loss(*m(*batch)),
        TrainConfig(steps=clip_steps, lr=3e-3, warmup_steps=min(40, clip_steps), device=str(device),
                    seed=args.seed, progress=not args.quiet))
    model.load_vision_tower(clip.vision)

    # LLaVA's stage 2: the projector and the LM learn to answer; the vision tower stays frozen.
    def vqa_batches(step):
        start = (step * per_step) % (pool - per_step + 1)
        rows = slice(int(first_row[start]), int(first_row[start + per_step]))
        length = int(vqa["attention_mask"][rows].sum(1).max())
        return (images[start:start + per_step], vqa["input_ids"][rows, :length], vqa["attention_mask"][rows, :length],
                vqa["labels"][rows, :length], vqa["image_index"][rows] - start)

    model.set_stage(2)
    print(f"stage 2: {len(vqa['input_ids'])} questions train the projector and the LM "
          f"({config.num_visual_tokens} visual tokens per image, {steps} steps)")
    history = fit(model, vqa_batches, lambda m, batch: m(*batch)[1],
                  TrainConfig(steps=steps, lr=settings["lr"], warmup_steps=min(50, steps), device=str(device),
                              seed=args.seed, progress=not args.quiet))
    model.set_stage("all")

    # Held-out evaluation: test-split scenes, never seen in training, 2000 questions.
    test_scenes, test_images = ShapesGenerator(world, config.image_size, "test", seed=10_000 + args.seed,
                                               device=device).batch(TEST_QUESTIONS // 3)
    test_pairs = sample_vqa(test_scenes, QUESTIONS_PER_IMAGE, seed=10_000 + args.seed)[:TEST_QUESTIONS]
    results = vqa_accuracy(model, tokenizer, test_images, test_pairs)
    print("held-out accuracy per question type: " +
          ", ".join(f"{kind} {100 * results[kind]:.1f}%" for kind in QUESTION_KINDS if kind in results))
    shown = random.Random(args.seed).sample(test_pairs, 8)
    index = torch.tensor([i for i, _ in shown], device=device)
    answers = answer_questions(model, tokenizer, test_images, [qa.question for _, qa in shown], index)
    for (_, qa), answer in zip(shown, answers):
        print(f"  {'✓' if answer == qa.answer else '✗'} {qa.question:<46} {answer}"
              + ("" if answer == qa.answer else f" (true: {qa.answer})"))
    _save_answer_figure(test_images[index], [qa.question for _, qa in shown], answers,
                        [qa.answer for _, qa in shown], args.out)
    save_checkpoint(args.checkpoint, model, step=steps, history=history,
                    extra={"kind": CHECKPOINT_KIND, "llava_config": asdict(config), "vocab": tokenizer.vocab,
                           "seed": args.seed, "accuracy": results})
    print(f"saved the figure to {args.out} and the model to {args.checkpoint}")
    print(f"held-out accuracy: {100 * results['all']:.1f}% ({results['n']} questions) "
          f"in {time.perf_counter() - started:.0f} s on {device.type}")
    return 0


# ----------------------------------------------------------------------------- ask

def load_vlm(path, device="cpu"):
    """(model, tokenizer) from a checkpoint written by `minivlm tour`; ValueError if it is not one."""
    from .data import SPECIAL_TOKENS, Tokenizer
    from .models.llava import Llava, LlavaConfig
    from .train import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    extra = state.get("extra") or {}
    if extra.get("kind") != CHECKPOINT_KIND or "llava_config" not in extra or "vocab" not in extra:
        raise ValueError(f"checkpoint {path} is not a minivlm VLM checkpoint (made by `minivlm tour`)")
    vocab = list(extra["vocab"])
    if tuple(vocab[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"checkpoint {path} has a vocabulary without the special tokens {SPECIAL_TOKENS}")
    try:
        model = Llava(LlavaConfig(**extra["llava_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"checkpoint {path} does not fit its own model config: {str(error).splitlines()[0]}") from None
    return model.to(device).eval(), Tokenizer(vocab[len(SPECIAL_TOKENS):])


def load_image(path, image_size, resize=False):
    """An image file -> (1, 3, S, S) float in [0, 1]; resized only when `resize` is set."""
    import matplotlib.image
    import torch
    import torch.nn.functional as F

    if not os.path.isfile(path):
        raise CLIError(f"--image: no such file: {path}")
    try:
        array = matplotlib.image.imread(path)
    except Exception as error:
        raise CLIError(f"--image: cannot read {path} as an image: {error}") from None
    image = torch.as_tensor(array.copy()).float()
    if array.dtype.kind in "ui":
        image = image / 255.0
    if image.dim() == 2:
        image = image[..., None].expand(-1, -1, 3)
    image = image[..., :3].permute(2, 0, 1)[None]          # drop alpha: (1, 3, H, W)
    H, W = image.shape[-2:]
    if (H, W) != (image_size, image_size):
        if not resize:
            raise CLIError(f"--image is {H}x{W} but this model reads {image_size}x{image_size} images: "
                           f"pass --resize to resize it")
        image = F.interpolate(image, size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
    return image


def build_prompt(tokenizer, text):
    """Plain questions get the chat template; text with special tokens is taken as the whole prompt."""
    from .models.llava import chat_prompt

    if "<" not in text:
        prompt = chat_prompt(text)
    elif "<image>" not in text:
        raise CLIError("--question: this prompt has no <image> placeholder for the image, "
                       "e.g. '<user> <image> how many shapes are there ? <assistant>'")
    else:
        prompt = text
    try:
        tokenizer.encode(text)                 # unknown words are reported in the user's own text
        ids = tokenizer.encode(prompt, add_bos=True)
    except ValueError as error:
        raise CLIError(f"--question: {error}") from None
    if ids.count(tokenizer.image_id) != 1 or ids.count(tokenizer.assistant_id) != 1 or ids[-1] != tokenizer.assistant_id:
        raise CLIError("--question: a prompt needs exactly one <image> and must end with <assistant>")
    return ids


def ask(args):
    import torch
    from .data import ShapesGenerator, WorldConfig, caption
    from .train import pick_device

    device = pick_device(args.device)
    _check_writable(args.out, "--out")
    try:
        model, tokenizer = load_vlm(args.checkpoint, device)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(f"--checkpoint: {error}") from None
    ids = build_prompt(tokenizer, args.question)
    size = model.config.image_size
    if args.image:
        image, description = load_image(args.image, size, args.resize), args.image
    else:
        scenes, image = ShapesGenerator(WorldConfig(), size, "test", seed=args.seed).batch(1)
        description = caption(scenes, 0)
    new = model.generate(image.to(device), torch.tensor([ids], device=device), max_new_tokens=4)[0].tolist()
    answer = tokenizer.decode(new[:new.index(tokenizer.eos_id)] if tokenizer.eos_id in new else new)
    print(f"image:    {description}")
    print(f"question: {args.question}")
    print(f"answer:   {answer}")
    _save_answer_figure(image, [args.question], [answer], None, args.out, show=args.show)
    print(f"saved the image and the answer to {args.out}")
    return 0


# ----------------------------------------------------------------------------- helpers

def _check_writable(path, flag):
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    if not os.access(directory, os.W_OK):
        raise CLIError(f"{flag}: cannot write to {path}")


def _save_answer_figure(images, questions, answers, truths, path, show=False):
    """Images titled with question and answer (green/red when the truth is known), written atomically."""
    import matplotlib
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(images))
    rows = (len(images) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.0 * rows), squeeze=False)
    for k, axis in enumerate(axes.flat):
        axis.axis("off")
        if k < len(images):
            wrong = truths is not None and answers[k] != truths[k]
            axis.imshow(images[k].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title(_wrap(questions[k].replace(" ?", "?")) + f"\n→ {answers[k]}" + (f" (true: {truths[k]})" if wrong else ""),
                           fontsize=8, color="black" if truths is None else ("tab:red" if wrong else "tab:green"))
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, extension = os.path.splitext(path)
    tmp_path = f"{root}.tmp{os.getpid()}{extension or '.png'}"
    try:                                   # write, then rename: never half a file at `path`
        figure.savefig(tmp_path, dpi=120, format=extension[1:] or "png")
        os.replace(tmp_path, path)
    except ValueError as error:
        raise CLIError(f"cannot save the figure to {path}: {error}") from None
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    if show:
        plt.show()
    plt.close(figure)


def _wrap(text, width=30):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minivlm", description="minivlm: a from-scratch course on VLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    tour_parser = commands.add_parser("tour", help="train a small VLM on Shapes VQA and report held-out accuracy")
    tour_parser.add_argument("--steps", type=int, default=None, help="VQA training steps (default: per device)")
    tour_parser.add_argument("--seed", type=int, default=0)
    tour_parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    tour_parser.add_argument("--out", default="tour.png", help="where to save the figure (default: tour.png)")
    tour_parser.add_argument("--checkpoint", default=os.path.join("checkpoints", "tour.pt"),
                             help="where to save the model (default: checkpoints/tour.pt)")
    tour_parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    tour_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    ask_parser = commands.add_parser("ask", help="ask the VLM saved by the tour a question about an image")
    ask_parser.add_argument("--checkpoint", default=os.path.join("checkpoints", "tour.pt"))
    ask_parser.add_argument("--question", required=True, help='e.g. "how many red shapes are there ?"')
    ask_parser.add_argument("--image", default=None, help="an image file (default: render a fresh scene)")
    ask_parser.add_argument("--resize", action="store_true", help="resize --image to the model's image size")
    ask_parser.add_argument("--seed", type=int, default=0, help="which fresh scene to render")
    ask_parser.add_argument("--device", default=None)
    ask_parser.add_argument("--out", default="ask.png", help="where to save the image and answer (default: ask.png)")
    ask_parser.add_argument("--show", action="store_true", help="also open the figure in a window")
    commands.add_parser("exercises", help="regenerate exercises/ from solutions/", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "exercises":
        from .exercises import main as exercises_main
        return exercises_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return tour(args) if args.command == "tour" else ask(args)
    except CLIError as error:
        raise SystemExit(f"minivlm {args.command}: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
