"""A CLIP-style dual encoder (Radford et al. 2021, arXiv 2103.00020), trainable with the CLIP or SigLIP loss.

    images (B, 3, H, W) -> ViT -> pooled (B, D_img) -> linear -> L2-normalise -> (B, E)
    input_ids (B, L), attention_mask (B, L) -> token + position embeddings -> pre-norm blocks
        -> LayerNorm -> pool at <eos> (or mean of real tokens) -> linear -> L2-normalise -> (B, E)
The text tower is the same pre-norm block as the ViT (blocks.TransformerBlock: LayerNorm,
GELU MLP), with learned absolute positions and, by default, causal attention as in CLIP.

The two towers meet only in the shared E-dimensional space: after contrastive training a
caption lands next to its image, so a class can be named in words and found without any
classifier training ("zero-shot"): embed a prompt per class, pick the nearest to the image.

The model carries its loss type (`CLIPConfig.loss`):
    "clip"    one learnable temperature, stored as log(scale), init log(1/0.07); no bias
    "siglip"  a learnable scale (init 10, also stored as a log) and bias (init -10)
forward returns CLIPOutput(image_features, text_features, logit_scale, logit_bias), with
logit_bias None for CLIP, so `contrastive.contrastive_loss(*model(images, ids, mask))` is the
right loss for either.
The exponentiated scale is clamped at `max_logit_scale` (100, as in CLIP): beyond that the
logits get so sharp that training becomes unstable.
"""

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention import causal_mask
from ..blocks import TransformerBlock
from ..checks import booleans, integer, number, positive_ints, tensor
from ..vit import ViT, ViTConfig


@dataclass
class CLIPConfig:
    vision: ViTConfig = field(default_factory=ViTConfig)
    vocab_size: int = 58                 # len(data.Tokenizer())
    max_text_len: int = 64
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 4
    text_causal: bool = True             # CLIP's text tower is causal and pools at <eos>
    text_pool: str = "eos"               # "eos" or "mean" (over real tokens)
    eos_id: int = 2                      # data.Tokenizer().eos_id
    embed_dim: int = 64                  # E, the shared space
    loss: str = "clip"                   # "clip" or "siglip"
    init_logit_scale: float = None       # None: 1/0.07 for CLIP, 10 for SigLIP
    init_logit_bias: float = -10.0       # SigLIP only
    max_logit_scale: float = 100.0

    def __post_init__(self):
        if not isinstance(self.vision, ViTConfig):
            raise TypeError(f"vision must be a ViTConfig, got {type(self.vision).__name__}")
        positive_ints(self, "vocab_size", "max_text_len", "text_dim", "text_depth", "text_heads", "embed_dim")
        booleans(self, "text_causal")
        integer("eos_id", self.eos_id, low=0, high=self.vocab_size - 1)
        number("max_logit_scale", self.max_logit_scale, above=0)
        number("init_logit_bias", self.init_logit_bias)
        if self.init_logit_scale is not None:
            number("init_logit_scale", self.init_logit_scale, above=0)
        if self.loss not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {self.loss!r}")
        if self.text_pool not in ("eos", "mean"):
            raise ValueError(f"text_pool must be 'eos' or 'mean', got {self.text_pool!r}")
        if self.text_dim % self.text_heads:
            raise ValueError(f"text_dim={self.text_dim} must be divisible by text_heads={self.text_heads}")
        if self.init_logit_scale is None:
            self.init_logit_scale = 1 / 0.07 if self.loss == "clip" else 10.0
        if not 0 < self.init_logit_scale <= self.max_logit_scale:
            raise ValueError(f"init_logit_scale must be in (0, max_logit_scale={self.max_logit_scale}], "
                             f"got {self.init_logit_scale}")


class TextEncoder(nn.Module):
    """input_ids (B, L), attention_mask (B, L) bool -> pooled text vectors (B, text_dim)."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        c = self.config = config
        self.token_embed = nn.Embedding(c.vocab_size, c.text_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, c.max_text_len, c.text_dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(c.text_dim, c.text_heads, 4 * c.text_dim)
                                    for _ in range(c.text_depth))
        self.norm = nn.LayerNorm(c.text_dim)

    def forward(self, input_ids, attention_mask=None, validate=True):
        """validate=False skips the check that reads tensor values (a GPU -> CPU sync): <eos> in every row."""
        c = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a (B, L) long tensor, got "
                             f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else input_ids!r}")
        B, L = input_ids.shape
        if L > c.max_text_len:
            raise ValueError(f"input_ids has L = {L} tokens, more than max_text_len = {c.max_text_len}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask.shape != (B, L):
            raise ValueError(f"attention_mask must be (B, L) = ({B}, {L}), got {tuple(attention_mask.shape)}")
        real = attention_mask.bool()
        is_eos = (input_ids == c.eos_id) & real
        if validate and c.text_pool == "eos" and not is_eos.any(1).all():
            raise ValueError("every row of input_ids needs an <eos> token for text_pool='eos' "
                             "(encode with add_eos=True)")
        # Keys at padding are masked; a token may always see itself, so no row is ever empty.
        allowed = real[:, None, :] | torch.eye(L, dtype=torch.bool, device=real.device)   # (B, L, L)
        if c.text_causal:
            allowed = allowed & causal_mask(L, L, real.device)
        x = self.token_embed(input_ids) + self.pos_embed[:, :L]
        for block in self.blocks:
            x = block(x, attn_mask=allowed[:, None])
        x = self.norm(x)
        if c.text_pool == "eos":                 # with causal attention <eos> has read the whole text
            eos_position = is_eos.int().argmax(1)                                     # first <eos>
            return x[torch.arange(B, device=x.device), eos_position]
        weights = real.to(x.dtype)[..., None]
        return (x * weights).sum(1) / weights.sum(1)


class CLIPOutput(NamedTuple):
    image_features: torch.Tensor          # (B, E), unit length
    text_features: torch.Tensor           # (B, E), unit length
    logit_scale: torch.Tensor             # scalar
    logit_bias: Optional[torch.Tensor]    # scalar for SigLIP, None for CLIP


class CLIP(nn.Module):
    """forward(images, input_ids, attention_mask) -> CLIPOutput(image_features, text_features, scale, bias)."""

    def __init__(self, config: CLIPConfig = None):
        super().__init__()
        c = self.config = config or CLIPConfig()
        self.vision = ViT(c.vision)
        self.text = TextEncoder(c)
        self.image_projection = nn.Linear(c.vision.dim, c.embed_dim, bias=False)
        self.text_projection = nn.Linear(c.text_dim, c.embed_dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(c.init_logit_scale)))
        if c.loss == "siglip":
            self.logit_bias = nn.Parameter(torch.tensor(float(c.init_logit_bias)))

    def encode_image(self, images):
        """(B, 3, H, W) -> (B, E), unit length."""
        return F.normalize(self.image_projection(self.vision(images).pooled), dim=-1)

    def encode_text(self, input_ids, attention_mask=None, validate=True):
        """(B, L) ids and mask -> (B, E), unit length."""
        return F.normalize(self.text_projection(self.text(input_ids, attention_mask, validate)), dim=-1)

    def logit_scale(self):
        """exp(log scale), clamped to max_logit_scale (no gradient pushes it past the clamp)."""
        return self.log_logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def forward(self, images, input_ids, attention_mask=None, validate=True):
        tensor("images", images, dims=4, shape="(B, 3, H, W)")
        tensor("input_ids", input_ids, dims=2, kind="int", shape="(B, L)")
        if images.shape[0] != input_ids.shape[0]:
            raise ValueError(f"images and input_ids must hold the same number of pairs, "
                             f"got {images.shape[0]} and {input_ids.shape[0]}")
        return CLIPOutput(self.encode_image(images), self.encode_text(input_ids, attention_mask, validate),
                          self.logit_scale(), self.logit_bias if self.config.loss == "siglip" else None)


@torch.no_grad()
def zero_shot_weights(model, tokenizer, class_names, templates=("a {} .",)):
    """(K, E) class embeddings: each class's prompts embedded, averaged, re-normalised.

    Averaging several templates per class is CLIP's "prompt ensembling"; templates are format
    strings with one {} for the class name, e.g. "a {} shape ." with class_names ["red", ...].
    """
    if not class_names or not templates:
        raise ValueError("class_names and templates must be non-empty lists")
    device = next(model.parameters()).device
    weights = []
    for name in class_names:
        ids, mask = tokenizer.batch_encode([t.format(name) for t in templates], add_eos=True)
        prompts = model.encode_text(ids.to(device), mask.to(device))                # (T, E)
        weights.append(F.normalize(prompts.mean(0), dim=-1))
    return torch.stack(weights)


@torch.no_grad()
def zero_shot_classify(model, images, class_weights):
    """(B, 3, H, W), (K, E) -> predicted class index (B,): the nearest class embedding."""
    return (model.encode_image(images) @ class_weights.T).argmax(1)


@torch.no_grad()
def retrieval_recall(image_features, text_features, ks=(1, 5), same_text=None):
    """Recall@k for image->text and text->image retrieval over a batch of B true pairs.

    same_text (B, B) bool, optional: texts i and j are identical, so finding text j for image i
    also counts as a hit (a discrete world repeats captions). Returns {"i2t@1": ..., "t2i@1": ...}.
    """
    tensor("image_features", image_features, dims=2, kind="float", shape="(B, E)")
    tensor("text_features", text_features, dims=2, kind="float", shape="(B, E)")
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(f"image_features and text_features must both be (B, E), got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    similarity = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T   # (B, B)
    B = similarity.shape[0]
    correct = torch.eye(B, dtype=torch.bool, device=similarity.device)
    if same_text is not None:
        correct = correct | same_text.to(similarity.device)
    results = {}
    for direction, scores in (("i2t", similarity), ("t2i", similarity.T)):
        ranked = scores.topk(min(max(ks), B), dim=1).indices                            # (B, k_max)
        hits = correct.gather(1, ranked)               # correct is symmetric: hits[i, r] for row i
        for k in ks:
            results[f"{direction}@{k}"] = hits[:, :k].any(1).float().mean().item()
    return results
