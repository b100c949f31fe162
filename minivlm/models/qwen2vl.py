"""Qwen2-VL (Wang et al. 2024, arXiv 2409.12191): images at their own size into an LM with M-RoPE.

    images [(3, H_i, W_i)], each side a multiple of patch·merge pixels (any size, any aspect)
      -> process_images -> packed patches (N, 3·tps·p·p), grid_thw (n, 3)      dynamic_resolution.py
      -> DynamicResolutionViT (2D RoPE, packed, windowed or not) -> (N / m², D)  window_attention.py
    chat text "<user> <image> how many circles are there ? <assistant> two <eos>", in which each
    <image> becomes a run of that image's N_i / m² tokens (expand_image_tokens)
      -> embeddings, the run's embeddings replaced by the image's tokens in reading order
      -> the LM with M-RoPE: text ids count up in all three streams, an image's tokens get
         (t, row, col) of its merged grid (rope.mrope_position_ids) -> logits

The number of visual tokens follows each image: a 32×32 Shapes image with 8-px patches is 16 patches,
4 tokens; a 128×64 canvas 128 patches, 32 tokens. Several images of different sizes share one ViT
pass, packed, never padded. Qwen2-VL wraps each image in <|vision_start|> … <|vision_end|>
(expand_image_tokens does, given their ids); our prompts always put text between two images, which is
all that mrope_position_ids needs to tell the runs apart, so the course's tokenizer has no such token.
"""

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from ..dynamic_resolution import patchify_qwen2vl
from ..lm import LanguageModel, LMConfig, check_token_ids, next_token_loss
from ..rope import mrope_position_ids
from ..window_attention import DynamicResolutionViT, DynamicViTConfig
from .llava import VLMOutput


def shapes_vit_config():
    """A small ViT for Shapes: 8-px patches, 2x2 merge (a 16x16-px window per visual token), full attention."""
    return DynamicViTConfig(dim=64, depth=2, heads=4, mlp_ratio=2, patch_size=8, out_dim=64, window_size=None,
                            full_attention_layers=())


@dataclass
class Qwen2VLConfig:
    vocab_size: int = 58                 # len(data.Tokenizer())
    vision: DynamicViTConfig = field(default_factory=shapes_vit_config)
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 4
    max_seq_len: int = 256
    tie_embeddings: bool = False
    image_token_id: int = 3              # data.Tokenizer().image_id
    video_token_id: int = 4              # data.Tokenizer().video_id
    eos_token_id: int = 2
    pixel_mean: tuple = (0.27, 0.27, 0.25)
    pixel_std: tuple = (0.22, 0.19, 0.21)

    def __post_init__(self):
        if self.vision.out_dim != self.text_dim:
            raise ValueError(f"the ViT's out_dim ({self.vision.out_dim}) must be the LM's text_dim ({self.text_dim})")

    def lm_config(self):
        return LMConfig(vocab_size=self.vocab_size, dim=self.text_dim, depth=self.text_depth, heads=self.text_heads,
                        max_seq_len=self.max_seq_len, rope="mrope", tie_embeddings=self.tie_embeddings)


def process_images(images, config: Qwen2VLConfig):
    """[(3, H_i, W_i)] in [0, 1] -> (patches (N, 3·tps·p·p), grid_thw (n, 3) long): standardised, then patchified."""
    if not images:
        raise ValueError("images is empty: pass a list of (3, H, W) tensors")
    v = config.vision
    parts = []
    for k, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{k}] must be a (3, H, W) tensor, got {tuple(getattr(image, 'shape', ()))}")
        mean = torch.tensor(config.pixel_mean, device=image.device)[:, None, None]
        std = torch.tensor(config.pixel_std, device=image.device)[:, None, None]
        parts.append(patchify_qwen2vl(((image - mean) / std)[None], v.patch_size, v.temporal_patch_size, v.merge_size))
    return torch.cat([p for p, _ in parts]), torch.stack([g for _, g in parts])


def expand_image_tokens(input_ids, attention_mask, labels, grid_thw, image_token_id, merge_size=2, pad_id=0,
                        vision_start_id=None, vision_end_id=None):
    """Each row's <image> ids -> runs of t·(h/m)·(w/m) of them, images in reading order over the batch.

    input_ids, attention_mask, labels (B, L), right-padded -> the same three (B, L'), right-padded again;
    labels are -100 on the runs. Prompts for generation are left-padded after: see `left_pad`.
    vision_start_id, vision_end_id: Qwen2-VL's <|vision_start|> / <|vision_end|>, put around every
    run when given (labels -100 on them too); the course's tokenizer has neither, and needs neither as
    long as text separates two images.
    """
    if (vision_start_id is None) != (vision_end_id is None):
        raise ValueError("give both vision_start_id and vision_end_id, or neither")
    start = [] if vision_start_id is None else [vision_start_id]
    end = [] if vision_end_id is None else [vision_end_id]
    counts = (grid_thw[:, 0] * (grid_thw[:, 1] // merge_size) * (grid_thw[:, 2] // merge_size)).tolist()
    rows, image = [], 0
    for b in range(input_ids.shape[0]):
        ids = input_ids[b][attention_mask[b].bool()].tolist()
        lab = labels[b][attention_mask[b].bool()].tolist() if labels is not None else [-100] * len(ids)
        new_ids, new_labels = [], []
        for token, label in zip(ids, lab):
            if token == image_token_id:
                if image >= len(counts):
                    raise ValueError(f"input_ids holds more <image> tokens than grid_thw has images ({len(counts)})")
                new_ids += start + [image_token_id] * counts[image] + end
                new_labels += [-100] * (len(start) + counts[image] + len(end))
                image += 1
            else:
                new_ids.append(token)
                new_labels.append(label)
        rows.append((new_ids, new_labels))
    if image != len(counts):
        raise ValueError(f"grid_thw has {len(counts)} images but input_ids only {image} <image> tokens")
    length = max(len(ids) for ids, _ in rows)
    out_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    out_labels = torch.full((len(rows), length), -100, dtype=torch.long)
    out_mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, (ids, lab) in enumerate(rows):
        out_ids[b, :len(ids)], out_labels[b, :len(ids)], out_mask[b, :len(ids)] = (
            torch.tensor(ids), torch.tensor(lab), True)
    device = input_ids.device
    return out_ids.to(device), out_mask.to(device), (out_labels.to(device) if labels is not None else None)


def left_pad(input_ids, attention_mask, pad_id=0):
    """Right-padded (B, L) rows -> left-padded, for generation (every row's last token in the last column)."""
    lengths = attention_mask.sum(1, keepdim=True)
    L = input_ids.shape[1]
    source = (torch.arange(L, device=input_ids.device)[None] + lengths) % L     # roll each row by its length
    mask = attention_mask.gather(1, source)
    return input_ids.gather(1, source).masked_fill(~mask, pad_id), mask


class Qwen2VL(nn.Module):
    """forward(patches, grid_thw, input_ids (runs of <image> expanded), ...) -> VLMOutput(logits (B, L, V), loss, labels)."""

    def __init__(self, config: Qwen2VLConfig = None):
        super().__init__()
        self.config = c = config or Qwen2VLConfig()
        self.vision = DynamicResolutionViT(c.vision)
        self.lm = LanguageModel(c.lm_config())

    def load_language_model(self, lm):
        """Initialise the LM from a pretrained one, e.g. minivlm.pretrained.language_model(), 1D RoPE or M-RoPE.

        On text the three M-RoPE streams carry the same id, and every pair then turns by id·θ_i as in
        1D RoPE: a 1D-RoPE LM's weights compute the same logits here, and images add rows and columns.
        """
        def besides_rope(config):
            return {k: v for k, v in asdict(config).items() if k not in ("rope", "mrope_section")}

        own = self.lm.config
        if besides_rope(lm.config) != besides_rope(own):
            raise ValueError(f"the language model's config {lm.config} does not match this model's {own} "
                             f"(up to the kind of RoPE)")
        self.lm.load_state_dict(lm.state_dict())
        return self

    def position_ids(self, input_ids, grid_thw, attention_mask=None):
        """M-RoPE ids (3, B, L) of the expanded prompt (rope.mrope_position_ids; reads values: data preparation)."""
        return mrope_position_ids(input_ids, grid_thw, image_token_id=self.config.image_token_id,
                                  video_token_id=self.config.video_token_id,
                                  spatial_merge_size=self.config.vision.merge_size, attention_mask=attention_mask)[0]

    def embed(self, patches, grid_thw, input_ids, validate=True):
        """Token embeddings (B, L, D) with every <image> run replaced by its image's merged ViT tokens."""
        check_token_ids(input_ids, self.config.vocab_size, read_values=validate)
        visual = self.vision(patches, grid_thw)                                   # (N / m², D)
        is_image = input_ids == self.config.image_token_id
        if validate and int(is_image.sum()) != len(visual):
            raise ValueError(f"input_ids holds {int(is_image.sum())} <image> tokens but the images give "
                             f"{len(visual)}: expand each <image> with expand_image_tokens")
        embeds = self.lm.tok_emb(input_ids)
        return embeds.masked_scatter(is_image[..., None], visual.to(embeds.dtype))

    def forward(self, patches, grid_thw, input_ids, attention_mask=None, labels=None, position_ids=None,
                validate=True):
        if position_ids is None:
            position_ids = self.position_ids(input_ids, grid_thw, attention_mask)
        embeds = self.embed(patches, grid_thw, input_ids, validate)
        logits = self.lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids).logits
        return VLMOutput(logits, None if labels is None else next_token_loss(logits, labels), labels)

    @torch.no_grad()
    def generate(self, patches, grid_thw, input_ids, attention_mask=None, max_new_tokens=4, **sampling):
        """Continue left-padded, expanded prompts with the LM's KV-cached loop: new ids (B, T_new)."""
        if attention_mask is not None and not attention_mask[:, -1].all():
            raise ValueError("prompts must be left-padded for generation (see left_pad)")
        position_ids = self.position_ids(input_ids, grid_thw, attention_mask)
        return self.lm.generate(inputs_embeds=self.embed(patches, grid_thw, input_ids), attention_mask=attention_mask,
                                position_ids=position_ids, max_new_tokens=max_new_tokens,
                                eos_id=self.config.eos_token_id, **sampling)
