"""Flamingo (Alayrac et al. 2022, arXiv 2204.14198): a frozen ViT and a frozen LM, joined by new layers.

    images (B_img, 3, H, W) -> frozen ViT -> patch tokens (B_img, N, Dv)
    image_index (B, T): row b's t-th <image> is images[image_index[b, t]]  (-1: no image)
        -> (B, T, N, Dv) -> Perceiver resampler -> media (B, T, L, Dv)       L latents per image
    text with one <image> token per image, ids (B, S)
        -> the frozen LM, with a GatedCrossAttentionBlock(x, media, ids == <image>) before
           every `cross_attention_every`-th layer -> logits (B, S, V)

Only the Perceiver and the cross-attention blocks train (`set_stage`); the ViT and the LM,
`<image>` embedding included, stay frozen. The blocks' tanh gates start at 0, so before training
the model's logits are the frozen LM's, exactly. Training is the LM loss on interleaved
documents and few-shot episodes (data/documents.py). Generation runs the LM's KV-cached loop
(generation.py); the media's cross-attention keys and values are computed once per sequence.

`Idefics2` is the other way to use a Perceiver (Laurençon et al. 2024, arXiv 2405.02246): as a
pooling connector, its L latents per image projected into the LM's width and put **into the
input sequence** in place of each `<image>` (as LLaVA puts its visual tokens), no cross-attention;
the LM stays frozen here too (Idefics2 fine-tunes it with LoRA). A row with fewer images than
image_index's T is padded at its end; generation needs T images in every row, so that the merged
prompts stay left-padded.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..gated_xattn import GatedCrossAttentionBlock
from ..generation import generate
from ..lm import IGNORE_INDEX, LanguageModel, next_token_loss
from ..perceiver import PerceiverResampler
from ..vit import ViT
from ..checks import booleans, choice, positive_ints
from ..vit import POSITIONS
from .llava import Llava, LlavaConfig, VLMOutput, check_pixel_stats, check_special_ids, check_vlm_inputs


@dataclass
class FlamingoConfig:
    vocab_size: int = 58                 # len(data.Tokenizer())
    image_size: int = 32
    patch_size: int = 8
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vision_positions: str = "sincos"
    text_dim: int = 64                   # pretrained.default_config()'s LM
    text_depth: int = 2
    text_heads: int = 4
    max_seq_len: int = 128
    tie_embeddings: bool = False
    num_latents: int = 8                 # L: visual tokens per image
    perceiver_depth: int = 1
    perceiver_heads: int = 4
    perceiver_dim_head: int = 16
    max_images: int = 5                  # T at most: one learned time embedding each
    cross_attention_every: int = 1       # a gated block before LM layer i iff i % every == 0
    xattn_heads: int = 4
    xattn_dim_head: int = 16
    xattn_ff_mult: int = 2
    only_attend_immediate_media: bool = True
    image_token_id: int = 3              # data.Tokenizer().image_id
    eos_token_id: int = 2                # data.Tokenizer().eos_id, the end of a chunk
    pixel_mean: tuple = (0.27, 0.27, 0.25)
    pixel_std: tuple = (0.22, 0.19, 0.21)

    def __post_init__(self):
        positive_ints(self, "vocab_size", "image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads",
                      "text_dim", "text_depth", "text_heads", "max_seq_len", "num_latents", "perceiver_depth",
                      "perceiver_heads", "perceiver_dim_head", "max_images", "xattn_heads", "xattn_dim_head",
                      "xattn_ff_mult")
        booleans(self, "tie_embeddings", "only_attend_immediate_media")
        choice("vision_positions", self.vision_positions, POSITIONS)
        check_special_ids(self, "image_token_id", "eos_token_id")
        check_pixel_stats(self)
        self.vision_config(), self.lm_config()     # their own checks (divisibility, heads)
        if not isinstance(self.cross_attention_every, int) or isinstance(self.cross_attention_every, bool) \
                or self.cross_attention_every < 1:
            raise ValueError(f"cross_attention_every must be a positive int, got {self.cross_attention_every!r}")

    # the same fields as LlavaConfig's, so the same two builders
    vision_config = LlavaConfig.vision_config
    lm_config = LlavaConfig.lm_config


class PerceiverVLM(nn.Module):
    """What Flamingo and Idefics2 share: frozen ViT -> Perceiver -> media (B, T, L, Dv), a frozen LM."""

    # the ViT's input standardisation and the two loaders are LLaVA's (models/llava.py)
    normalize = Llava.normalize
    load_vision_tower = Llava.load_vision_tower
    load_language_model = Llava.load_language_model

    def __init__(self, config: FlamingoConfig = None):
        super().__init__()
        c = self.config = config or FlamingoConfig()
        self.vision = ViT(c.vision_config())
        self.perceiver = PerceiverResampler(c.vision_dim, c.perceiver_depth, c.perceiver_dim_head, c.perceiver_heads,
                                            c.num_latents, c.max_images, ff_mult=2)
        self.lm = LanguageModel(c.lm_config())

    def train(self, mode=True):
        super().train(mode)
        self.vision.eval()               # frozen: always in inference mode
        self.lm.eval()
        return self

    def set_stage(self, stage="connector"):
        """Flamingo's recipe, the only one here: ViT and LM frozen, everything else trains."""
        if stage != "connector":
            raise ValueError(f"this model trains its connector only (stage='connector'), got {stage!r}")
        self.requires_grad_(True)
        self.vision.requires_grad_(False)
        self.lm.requires_grad_(False)
        return self

    def encode_media(self, images, image_index):
        """images (B_img, 3, H, W) in [0, 1], image_index (B, T) -> media (B, T, L, Dv)."""
        with torch.no_grad():
            tokens = self.vision(self.normalize(images)).tokens                 # (B_img, N, Dv)
        return self.perceiver(tokens[image_index.clamp(min=0)])                  # (B, T, N, Dv) -> (B, T, L, Dv)

    def check_media(self, input_ids, image_index, num_images, validate):
        """image_index (B, T) long in [-1, num_images); with validate, no row has more <image> tokens than images."""
        B = input_ids.shape[0]
        if (not isinstance(image_index, torch.Tensor) or image_index.dim() != 2 or image_index.shape[0] != B
                or image_index.dtype != torch.long):
            raise ValueError(f"image_index must be a long tensor (B, T) with B = {B}, the image of each row's "
                             f"t-th <image> (-1: none), got {getattr(image_index, 'dtype', None)} "
                             f"{tuple(getattr(image_index, 'shape', ()))}")
        if image_index.shape[1] > self.config.max_images:
            raise ValueError(f"image_index has T = {image_index.shape[1]} images per row, more than "
                             f"max_images={self.config.max_images}")
        if validate:
            if image_index.numel() and not -1 <= image_index.min() <= image_index.max() < num_images:
                raise ValueError(f"image_index must lie in [-1, {num_images}) for {num_images} images")
            tokens = (input_ids == self.config.image_token_id).sum(1)
            given = (image_index >= 0).sum(1)
            if (tokens > given).any():
                row = int((tokens > given).nonzero()[0, 0])
                raise ValueError(f"row {row} of input_ids has {int(tokens[row])} <image> tokens but image_index "
                                 f"gives it {int(given[row])} images")


class Flamingo(PerceiverVLM):
    """forward(images, input_ids, ..., image_index (B, T)) -> VLMOutput(logits (B, S, V), loss, labels)."""

    def __init__(self, config: FlamingoConfig = None):
        super().__init__(config)
        c = self.config
        self.xattn_layers = [i for i in range(c.text_depth) if i % c.cross_attention_every == 0]
        self.xattn = nn.ModuleList(
            GatedCrossAttentionBlock(c.text_dim, c.xattn_dim_head, c.xattn_heads, c.xattn_ff_mult,
                                     c.only_attend_immediate_media, media_dim=c.vision_dim)
            for _ in self.xattn_layers)
        self.set_stage()

    def gates(self):
        """tanh of every (attn_gate, ff_gate), one row per block: (num_blocks, 2)."""
        return torch.stack([torch.cat([b.attn_gate, b.ff_gate]) for b in self.xattn]).tanh()

    def forward(self, images, input_ids, attention_mask=None, labels=None, image_index=None, validate=True):
        """images (B_img, 3, H, W) in [0, 1]; input_ids, attention_mask, labels (B, S); image_index (B, T).
        validate=False skips the checks that read tensor values (a GPU -> CPU sync each)."""
        check_vlm_inputs(images, input_ids, self.config.vocab_size, read_values=validate)
        self.check_media(input_ids, image_index, len(images), validate)
        media = self.encode_media(images, image_index)
        logits = self.language_model_with_media(media, input_ids == self.config.image_token_id,
                                                input_ids=input_ids, attention_mask=attention_mask)
        return VLMOutput(logits, None if labels is None else next_token_loss(logits, labels), labels)

    def language_model_with_media(self, media, media_locations, *, input_ids=None, inputs_embeds=None,
                                  attention_mask=None, position_ids=None, kv_cache=None, media_cache=None,
                                  images_before=None):
        """The frozen LM's forward (lm.py), a gated cross-attention block before each chosen layer -> logits."""
        lm = self.lm
        past_len = lm.check_inputs(input_ids, inputs_embeds, None, attention_mask, None, position_ids, kv_cache,
                                   validate=False)
        x = lm.tok_emb(input_ids) if inputs_embeds is None else inputs_embeds
        B, L, _ = x.shape
        if position_ids is None:
            position_ids = lm.default_positions(B, L, past_len, attention_mask, x.device)
        rope = lm.rotary(position_ids)
        mask = lm.attention_pattern(L, past_len + L, attention_mask, None, x.device)
        blocks = dict(zip(self.xattn_layers, self.xattn))
        for i, block in enumerate(lm.blocks):
            if i in blocks:
                x = blocks[i](x, media, media_locations, images_before=images_before, validate=False,
                              kv_cache=None if media_cache is None else media_cache[i])
            x = block(x, attn_mask=mask, rope=rope, kv_cache=None if kv_cache is None else kv_cache[i])
        return lm.lm_head(lm.norm(x))

    @torch.no_grad()
    def generate(self, images, input_ids, attention_mask=None, image_index=None, max_new_tokens=4, **sampling):
        """Continue left-padded prompts with the LM's KV-cached loop: new ids (B, T_new), stopping at <eos>."""
        check_vlm_inputs(images, input_ids, self.config.vocab_size)
        if attention_mask is not None and not attention_mask[:, -1].all():
            raise ValueError("prompts must be left-padded for generation (padding_side='left')")
        self.check_media(input_ids, image_index, len(images), validate=True)
        conditioned = MediaConditionedLM(self, self.encode_media(images, image_index),
                                         input_ids == self.config.image_token_id)
        return generate(conditioned, input_ids, max_new_tokens, attention_mask=attention_mask,
                        eos_id=self.config.eos_token_id, **sampling)


class MediaConditionedLM:
    """The LM with one batch's media bound, called as generation.generate calls a LanguageModel.

    generate feeds the prompt, then one new token at a time (or, without the cache, the whole
    sequence again); this tells each call which of its tokens are <image> and how many images the
    tokens before it held. New tokens are text: they read the prompt's latest image(s).
    """

    def __init__(self, model, media, prompt_locations):
        self.model, self.media, self.prompt_locations = model, media, prompt_locations
        lm = model.lm
        self.config, self.tok_emb, self.embed = lm.config, lm.tok_emb, lm.embed
        self.default_positions, self.new_cache = lm.default_positions, lm.new_cache
        self.media_cache = {i: {} for i in model.xattn_layers}     # the media's keys/values, computed once

    def __call__(self, inputs_embeds, attention_mask=None, attn_mask=None, position_ids=None, kv_cache=None):
        past = kv_cache[0]["k"].shape[2] if kv_cache is not None and "k" in kv_cache[0] else 0
        B, L = inputs_embeds.shape[:2]
        prompt = self.prompt_locations
        generated = prompt.new_zeros(B, max(0, past + L - prompt.shape[1]))
        locations = torch.cat([prompt, generated], dim=1)
        logits = self.model.language_model_with_media(
            self.media, locations[:, past:past + L], inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            position_ids=position_ids, kv_cache=kv_cache, media_cache=self.media_cache,
            images_before=locations[:, :past].sum(1))
        return VLMOutput(logits, None, None)


class Idefics2(PerceiverVLM):
    """The Perceiver as a pooling connector: L projected latents in place of each <image> -> VLMOutput."""

    def __init__(self, config: FlamingoConfig = None):
        super().__init__(config)
        self.projector = nn.Linear(self.config.vision_dim, self.config.text_dim)
        # start the visual tokens near the scale of word embeddings (the LM's init: std 0.02), so that a
        # prompt of several images does not drown the frozen LM's text at the first step
        nn.init.normal_(self.projector.weight, std=0.02)
        nn.init.zeros_(self.projector.bias)
        self.set_stage()

    def forward(self, images, input_ids, attention_mask=None, labels=None, image_index=None, validate=True):
        """As Flamingo.forward; the logits cover the merged sequence (B, S + n_images·(L - 1), V)."""
        embeds, attention_mask, labels = self.merge(images, input_ids, attention_mask, labels, image_index, validate)
        logits = self.lm(inputs_embeds=embeds, attention_mask=attention_mask).logits
        return VLMOutput(logits, None if labels is None else next_token_loss(logits, labels), labels)

    @torch.no_grad()
    def generate(self, images, input_ids, attention_mask=None, image_index=None, max_new_tokens=4, **sampling):
        check_vlm_inputs(images, input_ids, self.config.vocab_size)
        self.check_media(input_ids, image_index, len(images), validate=True)
        if attention_mask is not None and not attention_mask[:, -1].all():
            raise ValueError("prompts must be left-padded for generation (padding_side='left')")
        if not ((input_ids == self.config.image_token_id).sum(1) == image_index.shape[1]).all():
            raise ValueError(f"generation needs T = {image_index.shape[1]} <image> tokens in every row "
                             f"(image_index's T), so that the merged prompts stay left-padded")
        embeds, attention_mask, _ = self.merge(images, input_ids, attention_mask, None, image_index, True)
        return self.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                eos_id=self.config.eos_token_id, **sampling)

    def merge(self, images, input_ids, attention_mask, labels, image_index, validate):
        """Each <image> id -> its image's L projected latents: (embeds (B, S', D), attention_mask, labels)."""
        check_vlm_inputs(images, input_ids, self.config.vocab_size, read_values=validate)
        self.check_media(input_ids, image_index, len(images), validate)
        is_image = input_ids == self.config.image_token_id                      # (B, S)
        visual = self.projector(self.encode_media(images, image_index))          # (B, T, L, D)
        B, T, L, D = visual.shape
        S = input_ids.shape[1]
        # token s takes `width` output places, L for an image; output place p belongs to the token
        # whose places end after p, at `offset` places into it. A row with fewer than T images ends
        # early: its last places are padding (S + T·(L - 1) places in all, known without reading values).
        width = 1 + is_image.long() * (L - 1)                                    # (B, S)
        ends = width.cumsum(1)                                                   # (B, S)
        places = torch.arange(S + T * (L - 1), device=input_ids.device).expand(B, -1).contiguous()
        beyond = places >= ends[:, -1:]                                          # (B, S')
        token = torch.searchsorted(ends, places, right=True).clamp(max=S - 1)
        offset = places - (ends.gather(1, token) - width.gather(1, token))
        image_number = (is_image.long().cumsum(1) - 1).gather(1, token).clamp(min=0)
        from_image = is_image.gather(1, token) & ~beyond
        table = torch.cat([self.lm.tok_emb(input_ids), visual.reshape(B, T * L, D)], dim=1)
        source = torch.where(from_image, S + image_number * L + offset, token)
        embeds = table.gather(1, source[..., None].expand(-1, -1, D))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        attention_mask = attention_mask.bool().gather(1, token) & ~beyond
        if labels is not None:
            labels = labels.gather(1, token).masked_fill(from_image | beyond, IGNORE_INDEX)
        return embeds, attention_mask, labels
