"""BLIP-2 (Li et al. 2023, arXiv 2301.12597): a Q-Former between a frozen ViT and a frozen LM.

Stage 1 (§3.2, `Blip2Stage1`): the Q-Former learns to read the frozen ViT.

    images (B, 3, H, W), standardised as the ViT reads them -> frozen ViT -> patch tokens (B, N, Dv)
    captions "<bos> two red circles ." -> ids (B, T), mask (B, T)
    Q-Former(patch tokens, ids, mask of the objective) -> (B, Q + T, D), three times:

    ITC  "itc" mask   query outputs -> vision_proj -> (B, Q, E); the first text output -> text_proj
                      -> (B, E); logits = scale · max over queries of the cosine; CLIP's loss
    ITM  "itm" mask   B true pairs and 2B hard negatives (a text for each image, an image for
                      each text, drawn ∝ the ITC softmax, never one with the same caption);
                      itm_head on each query output, averaged over the queries -> (3B, 2);
                      cross-entropy, pair = 1
    ITG  "itg" mask   the text tokens predict the next one (lm_head), seeing all queries and the
                      text before them: the queries must carry what the caption needs

BLIP-2 starts the ITG text with a [DEC] token instead of ITC's [CLS]; here both start with
`<bos>`. The ViT gets no gradient; everything else trains.

Stage 2 (§3.3, `Blip2`): the query outputs (B, Q, D) -> one Linear -> Q soft visual tokens in
the LM's embedding space, put where the chat prompt's `<image>` is, in front of the question;
the LM is frozen, and the loss is on the answer only. It is LLaVA's model (models/llava.py)
with the projector replaced by Q-Former + Linear: the same chat template, merging, masks and
KV-cached generation, and always Q visual tokens, whatever the image's size.
"""

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blip2_objectives import hard_negatives, itc_logits
from ..contrastive import symmetric_cross_entropy
from ..checks import integer, number, tensor
from ..patching import check_images
from ..qformer import QFormer, QFormerConfig, qformer_attention_mask
from .llava import Llava, LlavaConfig


@dataclass
class Blip2Config:
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    embed_dim: int = 32                 # E, the shared space of ITC
    init_logit_scale: float = 1 / 0.07

    def __post_init__(self):
        if not isinstance(self.qformer, QFormerConfig):
            raise TypeError(f"qformer must be a QFormerConfig, got {type(self.qformer).__name__}")
        integer("embed_dim", self.embed_dim, low=1)
        number("init_logit_scale", self.init_logit_scale, above=0)


class Stage1Losses(NamedTuple):
    itc: torch.Tensor
    itm: torch.Tensor
    itg: torch.Tensor
    itc_logits: torch.Tensor            # (B, B), detached


class Blip2Stage1(nn.Module):
    """forward(images, text_ids, text_mask) -> Stage1Losses; `vision` (a ViT) is frozen."""

    def __init__(self, vision, config: Blip2Config):
        super().__init__()
        q = config.qformer
        if not q.vocab_size:
            raise ValueError("stage 1 reads captions: build the Q-Former with QFormerConfig(vocab_size=...)")
        if vision.config.dim != q.image_dim:
            raise ValueError(f"QFormerConfig.image_dim ({q.image_dim}) must be the ViT's width ({vision.config.dim})")
        self.config = config
        self.vision = vision.requires_grad_(False).eval()
        self.qformer = QFormer(q)
        self.vision_proj = nn.Linear(q.dim, config.embed_dim)
        self.text_proj = nn.Linear(q.dim, config.embed_dim)
        self.itm_head = nn.Linear(q.dim, 2)
        self.lm_head = nn.Linear(q.dim, q.vocab_size)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(config.init_logit_scale)))

    def train(self, mode=True):
        super().train(mode)
        self.vision.eval()                  # frozen, so always in inference mode
        return self

    def image_tokens(self, images):
        """(B, 3, H, W) -> the frozen ViT's patch tokens (B, N, Dv)."""
        with torch.no_grad():
            return self.vision(images).tokens

    def forward(self, images, text_ids, text_mask, generator=None):
        Q = self.config.qformer.num_queries
        check_images(images, self.vision.config.patch_size)
        tensor("text_ids", text_ids, dims=2, kind="int", shape="(B, T)")
        tensor("text_mask", text_mask, dims=2, shape="(B, T)")
        if text_ids.shape != text_mask.shape or text_ids.shape[0] != images.shape[0]:
            raise ValueError(f"text_ids and text_mask must both be (B, T) with B = {images.shape[0]} images, "
                             f"got {tuple(text_ids.shape)} and {tuple(text_mask.shape)}")
        tokens = self.image_tokens(images)
        scale = self.log_logit_scale.exp().clamp(max=100)

        # ITC: queries and text in one pass, blind to each other
        out = self.qformer(tokens, text_ids, qformer_attention_mask(Q, text_mask, "itc"))
        logits = itc_logits(self.vision_proj(out[:, :Q]), self.text_proj(out[:, Q]), scale)
        itc = symmetric_cross_entropy(logits)

        # ITM: true pairs, then a hard negative text for each image and a hard negative image for each text
        same_caption = (text_ids[:, None] == text_ids[None]).all(-1)                 # (B, B), padded alike
        negative_text, negative_image = hard_negatives(logits.detach(), generator, same_caption)
        pair_tokens = torch.cat([tokens, tokens, tokens[negative_image]])
        pair_ids = torch.cat([text_ids, text_ids[negative_text], text_ids])
        pair_mask = torch.cat([text_mask, text_mask[negative_text], text_mask])
        out = self.qformer(pair_tokens, pair_ids, qformer_attention_mask(Q, pair_mask, "itm"))
        match_logits = self.itm_head(out[:, :Q]).mean(dim=1)                         # (3B, 2)
        B = images.shape[0]
        is_pair = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(images.device)
        itm = F.cross_entropy(match_logits, is_pair)

        # ITG: each text token predicts the next, reading the queries and the text before it
        out = self.qformer(tokens, text_ids, qformer_attention_mask(Q, text_mask, "itg"))
        next_token_logits = self.lm_head(out[:, Q:-1])                              # (B, T-1, V)
        targets = text_ids[:, 1:].masked_fill(~text_mask[:, 1:], -100)
        itg = F.cross_entropy(next_token_logits.transpose(1, 2), targets, ignore_index=-100)
        return Stage1Losses(itc, itm, itg, logits.detach())

    def similarity(self, images, text_ids, text_mask):
        """ITC similarities of every image with every text, (B_img, B_txt): zero-shot retrieval."""
        queries = self.vision_proj(self.query_outputs(images))                      # (B_img, Q, E)
        texts = self.text_proj(self.qformer.encode_text(text_ids, text_mask)[:, 0])  # (B_txt, E)
        return itc_logits(queries, texts, self.log_logit_scale.exp().clamp(max=100))

    def query_outputs(self, images):
        """The Q-Former's query outputs alone (B, Q, D): what stage 2 hands to the language model."""
        return self.qformer(self.image_tokens(images))


class Blip2(Llava):
    """Stage 2: ViT (frozen) -> Q-Former -> Linear -> soft visual prompt -> LM (frozen); LLaVA's interface."""

    def __init__(self, config: LlavaConfig, qformer: QFormerConfig):
        super().__init__(config)
        if qformer.image_dim != config.vision_dim:
            raise ValueError(f"QFormerConfig.image_dim ({qformer.image_dim}) must be the ViT's width "
                             f"({config.vision_dim})")
        self.qformer = QFormer(qformer)
        self.projector = nn.Linear(qformer.dim, config.text_dim)     # replaces LLaVA's projector
        self.set_stage(2)

    def encode_images(self, images):
        """(B_img, 3, H, W) in [0, 1] -> Q soft visual tokens in the LM's space (B_img, Q, Dt)."""
        with torch.no_grad():
            tokens = self.vision(self.normalize(images)).tokens
        return self.projector(self.qformer(tokens))

    def set_stage(self, stage):
        """BLIP-2's stage 2 (the only one this model trains): Q-Former and projector; ViT and LM frozen."""
        if stage != 2:
            raise ValueError(f"Blip2 trains stage 2 only (stage 1 is Blip2Stage1), got stage={stage!r}")
        self.vision.requires_grad_(False)
        self.lm.requires_grad_(False)
        self.qformer.requires_grad_(True)
        for layer in self.qformer.layers:       # the text side is unused on queries alone (BLIP-2 drops it)
            layer.text_ffn.requires_grad_(False)
        self.projector.requires_grad_(True)
        return self

    def load_qformer(self, stage1):
        """Start from a stage-1 Q-Former (Blip2Stage1), as BLIP-2 does; without it, stage 2 starts from scratch.

        Its text embeddings are left behind when this Q-Former has no text side (vocab_size=0).
        """
        own = self.qformer.state_dict()
        try:
            self.qformer.load_state_dict({k: v for k, v in stage1.qformer.state_dict().items() if k in own})
        except RuntimeError as error:
            raise ValueError(f"the stage-1 Q-Former does not fit this model's {self.qformer.config}: "
                             f"{str(error).splitlines()[0]}") from None
        return self
