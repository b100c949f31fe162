"""The frozen vision tower the experiment checks of chapters 05-07 build on, as their chapters do.

A CLIP (chapter 03) trained briefly on Shapes captions; its ViT is what a VLM then keeps frozen.
"""

from minivlm import contrastive
from minivlm.data import caption
from minivlm.models.clip import CLIP, CLIPConfig
from minivlm.train import TrainConfig, fit


def train_clip_vision(vision_config, tokenizer, scenes, images, normalize, steps):
    """A ViT of `vision_config`, trained for `steps` steps of 64 image-caption pairs as CLIP's image tower.

    images (B, 3, H, W) in [0, 1] are the renders of `scenes`; `normalize` standardises them as the VLM will.
    Returns the CLIP model; its `.vision` is the tower.
    """
    pool = len(scenes)
    captions = tokenizer.batch_encode([caption(scenes, i) for i in range(pool)], add_eos=True)
    clip = CLIP(CLIPConfig(vision=vision_config, vocab_size=len(tokenizer), text_dim=64, text_depth=2,
                           text_causal=False, text_pool="mean", embed_dim=64))

    def clip_batches(step, size=64):
        start = (step * size) % (pool - size + 1)
        ids, mask = (t[start:start + size] for t in captions)
        length = int(mask.sum(1).max())
        return normalize(images[start:start + size]), ids[:, :length], mask[:, :length]

    fit(clip, clip_batches, lambda m, b: contrastive.contrastive_loss(*m(*b)),
        TrainConfig(steps=steps, lr=3e-3, warmup_steps=min(40, steps), device="cpu", progress=False))
    return clip
