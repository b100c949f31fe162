"""Datasets of the Shapes world: scenes, their images (3, H, W) and their text, ready for training.

    ShapesDataset(split, length)[i]  -> {"image": (3, H, W), "caption": str, "qa": list[QA], "index": i}
    collate_examples(examples)       -> {"image": (B, 3, H, W), "caption", "qa", "index": (B,)}
    ShapesGenerator(...).batch(B)    -> (SceneBatch of (B, N) tensors, images (B, 3, H, W)), an endless seeded stream
    image_row_batches(batch, k, seed) -> get(step, images): k random images and all their chat rows, for `fit`
"""

import random

import torch

from .render import render
from .text import caption, questions
from .world import SPLITS, WorldConfig, sample_scenes


class ShapesDataset(torch.utils.data.Dataset):
    """A fixed, seeded set of `length` scenes of one split: {"image": (3, H, W), "caption", "qa", "index"}."""

    def __init__(self, split="train", length=1000, config=WorldConfig(), image_size=32, seed=0):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        self.split, self.config, self.image_size, self.seed = split, config, image_size, seed
        self.scenes = sample_scenes(length, config, generator=torch.Generator().manual_seed(seed), split=split)
        self.images = None
        if length * 3 * image_size**2 * 4 <= 256 * 2**20:  # render eagerly when it fits in 256 MB
            self.images = torch.cat([render(self.scenes[k:k + 4096], image_size) for k in range(0, length, 4096)])

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} scenes")
        i = i % len(self)
        image = self.images[i] if self.images is not None else render(self.scenes[i], self.image_size)[0]
        rng = random.Random(self.seed * 1_000_003 + i)
        return {"image": image, "caption": caption(self.scenes, i),
                "qa": questions(self.scenes, i, rng=rng), "index": i}


def collate_examples(examples):
    """Stack images to (B, 3, H, W); keep captions and QA lists as Python lists."""
    return {"image": torch.stack([e["image"] for e in examples]),
            "caption": [e["caption"] for e in examples],
            "qa": [e["qa"] for e in examples],
            "index": torch.tensor([e["index"] for e in examples])}


class ShapesGenerator:
    """An endless, seeded stream of (scenes, images (B, 3, H, W)) made on `device`."""

    def __init__(self, config=WorldConfig(), image_size=32, split="train", seed=0, device="cpu"):
        if split not in (*SPLITS, None):
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.config, self.image_size, self.split, self.device = config, image_size, split, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def batch(self, batch_size):
        scenes = sample_scenes(batch_size, self.config, generator=self.generator, device=self.device, split=self.split)
        return scenes, render(scenes, self.image_size)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def image_row_batches(batch, images_per_step, seed):
    """get(step, images) -> (images (k, 3, H, W), input_ids, attention_mask, labels, image_index (rows,)): k random
    images of a pool and every row of `batch` about them, cut to the longest real row; a pure function of the step.

    batch: chat tensors {"input_ids", "attention_mask", "labels", "image_index"} (rows, L), each image's rows
    together (image_index sorted), as models/llava.py's encode_chat + an image index make them."""
    image_index = batch["image_index"]
    if len(image_index) > 1 and bool((image_index[1:] < image_index[:-1]).any()):
        raise ValueError("batch['image_index'] must be sorted: each image's rows together")
    first = torch.searchsorted(image_index, torch.arange(int(image_index.max()) + 2)).tolist()
    lengths = batch["attention_mask"].sum(1)

    def get(step, images):
        order = torch.Generator().manual_seed(seed * 100_003 + step)
        chosen = torch.randperm(len(first) - 1, generator=order)[:images_per_step]
        rows = torch.cat([torch.arange(first[i], first[i + 1]) for i in chosen.tolist()])
        length = int(lengths[rows].max())
        remap = torch.empty(len(first) - 1, dtype=torch.long)
        remap[chosen] = torch.arange(len(chosen))
        return (images[chosen], batch["input_ids"][rows, :length], batch["attention_mask"][rows, :length],
                batch["labels"][rows, :length], remap[image_index[rows]])
    return get
