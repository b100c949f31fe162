"""One training loop for every chapter.

    history = fit(model, get_batch, loss_fn, TrainConfig(steps=300, lr=3e-3), eval_fn=...)

- get_batch(step) returns the *global* batch for that step (a tensor, or a tuple/list/dict
  of tensors with the batch first). Making it a pure function of `step` (e.g. a generator
  seeded with seed + step) is what makes resuming exact.
- loss_fn(model, batch) returns a scalar loss. Call the model itself (its forward), not
  its submodules, so that DistributedDataParallel can synchronise gradients.
- AdamW (weight decay on matrices only), linear warmup then cosine decay, gradient
  clipping, bf16 autocast and optional torch.compile on CUDA, device auto-pick
  (cuda > mps > cpu), a text progress bar (tqdm, on stdout) with the loss (read from the
  device every 25 steps, not every step: each read is a GPU -> CPU sync), an eval
  callback, and a returned history for plotting.
- Checkpoints hold model, optimizer, step and history; they load with weights_only=True.
- Under `torchrun --nproc_per_node=N`, each rank takes its 1/N slice of the global batch
  and DDP averages gradients (gloo on CPU, nccl on GPU): the same update as one process
  on the whole batch.
"""

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .checks import booleans, integer, number
from .distributed import join, rebuild, shard


READ_LOSS_EVERY = 25    # steps between reads of the loss from the device (the progress bar's refresh)


@dataclass
class TrainConfig:
    steps: int = 500
    lr: float = 3e-3
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.95)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1          # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0             # 0 disables clipping
    device: str = None                 # None: cuda > mps > cpu
    amp: bool = True                   # bf16 autocast, on CUDA only
    compile: bool = False              # torch.compile, on CUDA only
    seed: int = 0
    eval_every: int = 0                # 0: evaluate once, at the end
    checkpoint_path: str = None
    checkpoint_every: int = 0          # 0: save once, at the end (if a path is set)
    progress: bool = True

    def __post_init__(self):
        integer("steps", self.steps, low=1)
        number("lr", self.lr, above=0)
        number("weight_decay", self.weight_decay, low=0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            number(f"betas[{i}]", beta, low=0, below=1)
        integer("warmup_steps", self.warmup_steps, low=0)
        number("min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        number("grad_clip", self.grad_clip, low=0)
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be None, a str like 'cuda' or a torch.device, got {self.device!r}")
        booleans(self, "amp", "compile", "progress")
        integer("seed", self.seed)
        integer("eval_every", self.eval_every, low=0)
        integer("checkpoint_every", self.checkpoint_every, low=0)
        if self.checkpoint_path is not None and not isinstance(self.checkpoint_path, (str, os.PathLike)):
            raise TypeError(f"checkpoint_path must be None or a path, got {self.checkpoint_path!r}")


def pick_device(override=None):
    """torch.device: the override if given, else cuda > mps > cpu."""
    if override is not None:
        return torch.device(override)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:
        pass


def lr_at(step, config):
    """Learning rate at `step`: linear warmup to config.lr, then cosine to lr * min_lr_ratio."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def make_optimizer(model, config):
    """AdamW; weight decay only on matrices (not on biases, norms or 1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def move_to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return rebuild(batch, [move_to(value, device) for value in batch])
    return batch


def save_checkpoint(path, model, optimizer=None, step=0, history=None, extra=None):
    """Write atomically (a temporary file, then rename), so a crash never leaves half a file."""
    state = {"model": model.state_dict(), "step": step, "history": history or {}, "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if os.path.isdir(path):
        raise IsADirectoryError(f"path must be a file, not a directory: {path}")
    tmp_path = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(state, tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def load_checkpoint(path, model=None, optimizer=None, map_location="cpu"):
    """Load a checkpoint saved by `save_checkpoint` (weights_only=True) into model/optimizer; returns it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint {path} is corrupted or not a minivlm checkpoint: {error}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"checkpoint {path} is not a minivlm checkpoint (no 'model' entry)")
    if model is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(f"checkpoint {path} does not fit this model: {error}") from None
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state


def fit(model, get_batch, loss_fn, config=None, eval_fn=None, resume_from=None):
    """Train `model` for config.steps steps; returns the history dict
    {"step", "loss", "lr", "eval": [{"step": s, **metrics}], "seconds", "device"}."""
    config = config or TrainConfig()
    device = pick_device(config.device)
    rank, world_size = join(device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    model.to(device)
    optimizer = make_optimizer(model, config)
    history = {"step": [], "loss": [], "lr": [], "eval": [], "seconds": 0.0, "device": str(device)}
    start_step = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, map_location=device)
        start_step, history = state["step"], state["history"]

    train_model = model
    if world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile and device.type == "cuda":
        train_model = torch.compile(train_model)
    use_amp = config.amp and device.type == "cuda"

    def evaluate(step):
        if eval_fn is None or rank != 0:
            return
        model.eval()
        metrics = eval_fn(model)
        model.train()
        history["eval"].append({"step": step, **metrics})

    def checkpoint(step):
        if config.checkpoint_path and rank == 0:
            save_checkpoint(config.checkpoint_path, model, optimizer, step, history, {"config": asdict(config)})

    model.train()
    # A text bar on stdout, not a notebook widget: a saved notebook keeps its final line
    # (a widget saved without its state shows "0/500" forever), and it writes nothing to stderr.
    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
               disable=not config.progress or rank != 0, desc="training", file=sys.stdout, ncols=100)
    pending = []    # the latest losses, still on the device: read in one go (one GPU -> CPU sync)

    def read_losses():
        # Read at the bar's refresh, eval and checkpoint points only; a NaN loss stops
        # training there, naming the step, instead of training on (no per-step sync).
        if pending:
            losses = torch.stack(pending).tolist()
            first = history["step"][-len(pending)]
            pending.clear()
            bad = [first + i for i, value in enumerate(losses) if not math.isfinite(value)]
            if bad:
                raise FloatingPointError(
                    f"the loss is not finite at step {bad[0]} (read back for steps {first}..{first + len(losses) - 1}): "
                    f"check the data and loss_fn, or lower lr")
            history["loss"].extend(losses)
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")

    started = time.perf_counter()
    for step in bar:
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = shard(move_to(get_batch(step), device), rank, world_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(train_model, batch)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                            f"{' of shape ' + str(tuple(loss.shape)) if isinstance(loss, torch.Tensor) else ''}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

        loss_value = loss.detach().float()
        if world_size > 1:                       # report the global mean loss
            dist.all_reduce(loss_value)
            loss_value /= world_size
        pending.append(loss_value)
        history["step"].append(step)
        history["lr"].append(lr)
        done = step + 1
        if done % READ_LOSS_EVERY == 0:
            read_losses()
        if config.eval_every and done % config.eval_every == 0 and done < config.steps:
            read_losses()
            evaluate(done)
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            read_losses()
            checkpoint(done)
    read_losses()
    bar.close()
    history["seconds"] += time.perf_counter() - started
    if not history["eval"] or history["eval"][-1]["step"] != config.steps:
        evaluate(config.steps)
    checkpoint(config.steps)
    return history
