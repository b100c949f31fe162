"""The `minivlm` command line.

    minivlm tour [--recipe v2] [--steps N] [--seed S] [--device D] [--out tour.png] [--checkpoint checkpoints/tour.pt]
        trains a small LLaVA-style VLM on Shapes VQA, end to end, and reports its accuracy on
        held-out scenes: a ViT pretrained with CLIP's contrastive loss on captions (chapter 03),
        then an InternVL pixel-unshuffle projector and a language model trained to answer
        (chapter 05; the recipe is `minivlm/tour.py`)
    minivlm ask --checkpoint PATH --question "how many red shapes are there ?" [--image FILE | --seed S]
        answers a question about a freshly rendered scene (or an image file) with a saved model
    minivlm capstone [--seeds 0 1 2] [--connectors linear mlp ...] [--steps N] [--workers 2] [--out capstone] [--mixed]
        trains every connector of the course (linear, MLP, pixel unshuffle, Q-Former, Perceiver,
        gated cross-attention) on the same data from the same frozen ViT and LM, for the same steps,
        and writes the table (capstone.csv, capstone.json) and the Pareto plot (capstone.png) to --out
        (chapter 11; the experiment is `minivlm/capstone.py`); with --mixed, also InternVL3's mixed
        text / image / video stream against text first (`minivlm/native_multimodal.py`: mixed.json, mixed.csv)
    minivlm exercises [--check]
        regenerates exercises/ from solutions/ (see minivlm/course/exercises.py)
    minivlm grade PATH... [--only ID] [--json FILE] [--min-score PERCENT] [--timeout S]
        executes learner notebooks in fresh kernels and scores them with the course's checks
        (see minivlm/course/grade.py); exits 0 iff the score reaches --min-score (default 100)

Bad input (a wrong image size, an unknown word, a prompt without <image>, a file that is not a
tour checkpoint) stops with one clear line, before anything is written.
"""

import argparse
import os
import sys
import time


class CLIError(Exception):
    """A problem with the user's input: reported as one line, nothing written."""


# ----------------------------------------------------------------------------- tour

def tour(args):
    """Train the VLM of `minivlm.tour`, test it on held-out scenes, show some answers, save figure and model."""
    import random

    import torch
    from .data import QUESTION_KINDS
    from .models.llava import answer_questions
    from .tour import held_out_test, save_vlm, train_vlm
    from .viz import answer_figure

    started = time.perf_counter()
    if args.steps is not None:
        _check_at_least(args.steps, "--steps", 1)
    _check_at_least(args.seed, "--seed", 0)
    if args.threads is not None:
        _check_at_least(args.threads, "--threads", 1)
    _check_writable(args.out, "--out")
    _check_writable(args.checkpoint, "--checkpoint")
    device = _device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)

    run = train_vlm(args.seed, args.steps, device, progress=not args.quiet, recipe=args.recipe)
    model, tokenizer = run["model"], run["tokenizer"]
    results, test_images, test_pairs = held_out_test(model, tokenizer, args.seed)
    print("held-out accuracy per question type: " +
          ", ".join(f"{kind} {100 * results[kind]:.1f}%" for kind in QUESTION_KINDS if kind in results))
    shown = random.Random(args.seed).sample(test_pairs, 8)
    questions, truths = [qa.question for _, qa in shown], [qa.answer for _, qa in shown]
    index = torch.tensor([i for i, _ in shown], device=device)
    answers = answer_questions(model, tokenizer, test_images, questions, index)
    for question, answer, truth in zip(questions, answers, truths):
        print(f"  {'✓' if answer == truth else '✗'} {question:<46} {answer}" + ("" if answer == truth else f" (true: {truth})"))
    _save_figure(answer_figure(test_images[index], questions, answers, truths), args.out)
    save_vlm(args.checkpoint, run, results)
    print(f"saved the figure to {args.out} and the model to {args.checkpoint}")
    print(f"held-out accuracy: {100 * results['all']:.1f}% ({results['n']} questions) "
          f"in {time.perf_counter() - started:.0f} s on {device.type}")
    return 0


# ----------------------------------------------------------------------------- ask

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
    from .models.llava import decode_answers
    from .tour import load_vlm
    from .viz import answer_figure

    if not args.question.strip():
        raise CLIError("--question is empty: ask e.g. \"how many red shapes are there ?\"")
    _check_at_least(args.seed, "--seed", 0)
    device = _device(args.device)
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
    new = model.generate(image.to(device), torch.tensor([ids], device=device), max_new_tokens=4)
    answer = decode_answers(tokenizer, new)[0]
    print(f"image:    {description}")
    print(f"question: {args.question}")
    print(f"answer:   {answer}")
    figure = answer_figure(image, [args.question], [answer], ncols=1, size=3.0)
    _save_figure(figure, args.out, close=not args.show)
    if args.show:
        import matplotlib.pyplot as plt
        plt.show()
    print(f"saved the image and the answer to {args.out}")
    return 0


# ----------------------------------------------------------------------------- capstone

def capstone(args):
    """Train every connector under one budget, print the table, write capstone.{json,csv,png} to --out."""
    from .capstone import CONNECTORS, SCALES, format_table, run_connectors, summarize, write_results

    started = time.perf_counter()
    settings = dict(SCALES[args.scale])
    if settings["device"] == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CLIError(f"--scale {args.scale} trains on a CUDA device, and there is none here; try --scale cpu")
    if args.steps is not None:
        _check_at_least(args.steps, "--steps", 1)
        settings["steps"] = args.steps
    if args.workers < 0:
        raise CLIError(f"--workers must be >= 0 (0: run here), got {args.workers}")
    if args.mixed_steps is not None and (args.mixed_steps < 1 or not args.mixed):
        raise CLIError(f"--mixed-steps must be >= 1 and goes with --mixed, got {args.mixed_steps}")
    for seed in args.seeds:
        _check_at_least(seed, "--seeds", 0)
    if len(set(args.seeds)) != len(args.seeds):
        raise CLIError(f"--seeds must be distinct, got {args.seeds}")
    unknown = [c for c in args.connectors if c not in CONNECTORS]
    if unknown:
        raise CLIError(f"--connectors must be among {', '.join(CONNECTORS)}; got {', '.join(unknown)}")
    if os.path.isfile(args.out):
        raise CLIError(f"--out {args.out} is a file; give a directory")
    _check_writable(os.path.join(args.out, "capstone.json"), "--out")
    print(f"{len(args.connectors)} connectors x {len(args.seeds)} seeds, {settings['steps']} steps each "
          f"({args.scale} scale, {args.workers or 'no'} worker processes)", flush=True)
    results = run_connectors(tuple(args.seeds), tuple(args.connectors), settings, args.workers, progress=not args.quiet)
    print(format_table(summarize(results)))
    paths = list(write_results(results, args.out, settings).values())
    if args.mixed:
        from . import native_multimodal as mixed
        mixed_settings = dict(mixed.TINY if args.scale == "tiny" else mixed.SETTINGS)
        if args.mixed_steps is not None:
            mixed_settings["steps"] = args.mixed_steps
        print(f"one model for every scenario: mixed vs staged, {len(args.seeds)} seeds, {mixed_settings['steps']} "
              f"steps each", flush=True)
        mixed_results = mixed.run_recipes(tuple(args.seeds), settings=mixed_settings, workers=args.workers)
        print(mixed.format_table(mixed.summarize(mixed_results), mixed.majority_baseline(mixed_settings)))
        paths += list(mixed.write_results(mixed_results, args.out, mixed_settings).values())
    print(f"wrote {', '.join(paths)} in {time.perf_counter() - started:.0f} s")
    return 0


# ----------------------------------------------------------------------------- helpers

def _check_at_least(value, flag, low):
    if value < low:
        raise CLIError(f"{flag} must be >= {low}, got {value}")


def _device(name):
    """--device: None (the best here), or cpu / cuda[:i] / mps where there is one."""
    import torch
    from .train import pick_device

    if name is None:
        return pick_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}") from None
    there = {"cpu": lambda: True,
             "cuda": lambda: torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
             "mps": lambda: getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if device.type not in there:
        raise CLIError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}")
    if not there[device.type]():
        raise CLIError(f"--device {name}: there is no such device here (leave --device out for the best one)")
    return device


def _check_writable(path, flag):
    """Fail before any work when `path` cannot be written: a directory, under a file, or a read-only place."""
    import tempfile

    if os.path.isdir(path):
        raise CLIError(f"{flag} {path} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(directory):
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise CLIError(f"{flag}: cannot write to {path}: {directory} is a file, not a directory")
    try:                                   # os.access says yes to root even on /proc: try it
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise CLIError(f"{flag}: cannot write to {path}: {directory} is not writable ({error.strerror or error})") from None


def _save_figure(figure, path, close=True):
    """Write, then rename: there is never half a file at `path`."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, extension = os.path.splitext(path)
    tmp_path = f"{root}.tmp{os.getpid()}{extension or '.png'}"
    try:
        figure.savefig(tmp_path, dpi=120, format=extension[1:] or "png")
        os.replace(tmp_path, path)
    except (ValueError, OSError) as error:
        raise CLIError(f"cannot save the figure to {path}: {error}") from None
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        if close:
            plt.close(figure)


def main(argv=None):
    from .tour import DEFAULT_RECIPE, RECIPES

    parser = argparse.ArgumentParser(prog="minivlm", description="minivlm: a from-scratch course on VLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    tour_parser = commands.add_parser("tour", help="train a small VLM on Shapes VQA and report held-out accuracy")
    tour_parser.add_argument("--steps", type=int, default=None, help="VQA training steps (default: per device)")
    tour_parser.add_argument("--seed", type=int, default=0)
    tour_parser.add_argument("--recipe", default=DEFAULT_RECIPE, choices=tuple(RECIPES),
                             help=f"the training recipe (default: {DEFAULT_RECIPE}; see minivlm/tour.py)")
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
    from .capstone import CONNECTORS, SCALES
    capstone_parser = commands.add_parser("capstone", help="every connector under one budget: table and Pareto plot")
    capstone_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    capstone_parser.add_argument("--connectors", nargs="+", default=list(CONNECTORS), metavar="NAME",
                                 help=f"some of {', '.join(CONNECTORS)} (default: all)")
    capstone_parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the scale's)")
    capstone_parser.add_argument("--scale", default="cpu", choices=tuple(SCALES),
                                 help="cpu (default: about a minute on 2 cores), gpu (the full world, larger "
                                      "models, on CUDA) or tiny (seconds, a smoke test)")
    capstone_parser.add_argument("--workers", type=int, default=2, help="processes, one thread each (0: run here)")
    capstone_parser.add_argument("--out", default="capstone", help="directory for capstone.json/.csv/.png")
    capstone_parser.add_argument("--quiet", action="store_true", help="no line per finished run")
    capstone_parser.add_argument("--mixed", action="store_true",
                                 help="also one model for every scenario: InternVL3's mixed stream vs text first "
                                      "(minivlm/native_multimodal.py), written to mixed.json/.csv")
    capstone_parser.add_argument("--mixed-steps", type=int, default=None, help="steps of each --mixed run (default 600)")
    commands.add_parser("exercises", help="regenerate exercises/ from solutions/", add_help=False)
    commands.add_parser("grade", help="execute learner notebooks and grade them with the course's checks",
                        add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "exercises":
        from .course.exercises import main as exercises_main
        return exercises_main(rest)
    if args.command == "grade":
        from .course.grade import main as grade_main
        return grade_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return {"tour": tour, "ask": ask, "capstone": capstone}[args.command](args)
    except CLIError as error:
        raise SystemExit(f"minivlm {args.command}: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
