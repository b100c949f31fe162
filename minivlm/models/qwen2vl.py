"""Qwen2-VL (Wang et al. 2024, arXiv 2409.12191): images at their own size into an LM with M-RoPE.

    images [(3, H_i, W_i)], each side a multiple of patch·merge pixels (any size, any aspect)
      -> process_images -> packed patches (N, 3·tps·p·p), grid_thw (n, 3)      dynamic_resolution.py
      -> DynamicResolutionViT (2D RoPE, packed, windowed or not) -> (N / m², D)  window_attention.py
    chat text "<user> <image> how many circles are there ? <assistant> two <eos>", in which each
    <image> becomes a run of that image's N_i / m² tokens (expand_image_tokens)
      -> embeddings, the run's embeddings replaced by the image's tokens in reading order
      -> the LM with M-RoPE: text ids count up in all three streams, an image's tokens get
         (t, row, col) of its merged grid (rope.mrope_position_ids) -> logits

    videos [(F_i, 3, H, W)], F_i even, frames sampled at a chosen rate (video_frames.py)
      -> process_videos -> packed tubelets, video_grid_thw (n, 3): t = F_i / 2, one 3D patch per 2 frames
      -> the same ViT (2D RoPE inside each temporal group) -> (t, h/m, w/m, D) per video
      -> optionally LLaVA-OneVision's per-frame bilinear pooling (video_pool_stride) -> fewer tokens
    a <video> run gets (t, row, col) ids too: t counts temporal groups (Qwen2-VL), or, given
    video_seconds_per_grid, absolute time, floor(t · seconds · tokens_per_second) (Qwen2.5-VL, arXiv 2502.13923)

The number of visual tokens follows each image: a 32×32 Shapes image with 8-px patches is 16 patches,
4 tokens; a 128×64 canvas 128 patches, 32 tokens. Several images of different sizes share one ViT
pass, packed, never padded. Qwen2-VL wraps each image in <|vision_start|> … <|vision_end|>
(expand_image_tokens does, given their ids); our prompts always put text between two images, which is
all that mrope_position_ids needs to tell the runs apart, so the course's tokenizer has no such token.
"""

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from ..checks import booleans, number, positive_ints, tensor
from ..dynamic_resolution import patchify_qwen2vl
from ..lm import LanguageModel, LMConfig, check_token_ids, next_token_loss
from ..rope import mrope_position_ids
from ..video_frames import pool_frame_tokens
from ..window_attention import DynamicResolutionViT, DynamicViTConfig
from .llava import VLMOutput, check_pixel_stats, check_special_ids


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
    positions: str = "mrope"             # "mrope": (t, row, col) ids; "1d": every token its index (the ablation's baseline)
    video_pool_stride: int = 1           # LLaVA-OneVision: shrink each temporal group's token map by this per side
    tokens_per_second: float = 2.0       # Qwen2.5-VL's absolute time: temporal ids per second of video
    rope_theta: float = 10000.0          # the LM's RoPE base (Qwen2-VL's LM: 1e6)
    mrope_section: tuple = None          # frequency pairs per (t, h, w) stream; None: Qwen2-VL's proportions

    def __post_init__(self):
        if not isinstance(self.vision, DynamicViTConfig):
            raise TypeError(f"vision must be a DynamicViTConfig, got {type(self.vision).__name__}")
        positive_ints(self, "vocab_size", "text_dim", "text_depth", "text_heads", "max_seq_len")
        booleans(self, "tie_embeddings")
        check_special_ids(self, "image_token_id", "video_token_id", "eos_token_id")
        check_pixel_stats(self)
        number("tokens_per_second", self.tokens_per_second, above=0)
        self.lm_config()                           # its own checks: heads, rope_theta, mrope_section
        if self.vision.out_dim != self.text_dim:
            raise ValueError(f"the ViT's out_dim ({self.vision.out_dim}) must be the LM's text_dim ({self.text_dim})")
        if self.positions not in ("mrope", "1d"):
            raise ValueError(f"positions must be 'mrope' or '1d', got {self.positions!r}")
        if isinstance(self.video_pool_stride, bool) or not isinstance(self.video_pool_stride, int) \
                or self.video_pool_stride < 1:
            raise ValueError(f"video_pool_stride must be a positive int (1: no pooling), got {self.video_pool_stride!r}")
        if not self.tokens_per_second > 0:
            raise ValueError(f"tokens_per_second must be > 0, got {self.tokens_per_second!r}")

    def lm_config(self):
        return LMConfig(vocab_size=self.vocab_size, dim=self.text_dim, depth=self.text_depth, heads=self.text_heads,
                        max_seq_len=self.max_seq_len, rope="mrope", rope_theta=self.rope_theta,
                        mrope_section=self.mrope_section, tie_embeddings=self.tie_embeddings)


def _patchify_all(clips, config, name, shape):
    """Standardise each (T, 3, H, W) clip and patchify it -> (patches (N, 3·tps·p·p), grid_thw (n, 3) long)."""
    if not clips:
        raise ValueError(f"{name} is empty: pass a list of {shape} tensors")
    v = config.vision
    parts = []
    for k, frames in enumerate(clips):
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"{name}[{k}] must be a {shape} tensor, got {tuple(getattr(frames, 'shape', ()))}")
        mean = torch.tensor(config.pixel_mean, device=frames.device)[:, None, None]
        std = torch.tensor(config.pixel_std, device=frames.device)[:, None, None]
        parts.append(patchify_qwen2vl((frames - mean) / std, v.patch_size, v.temporal_patch_size, v.merge_size))
    return torch.cat([p for p, _ in parts]), torch.stack([g for _, g in parts])


def process_images(images, config: Qwen2VLConfig):
    """[(3, H_i, W_i)] in [0, 1] -> (patches (N, 3·tps·p·p), grid_thw (n, 3) long): standardised, then patchified."""
    for k, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"images[{k}] must be a (3, H, W) tensor, got {tuple(getattr(image, 'shape', ()))}")
    return _patchify_all([image[None] for image in images], config, "images", "(3, H, W)")


def process_videos(videos, config: Qwen2VLConfig):
    """[(F_i, 3, H_i, W_i)] in [0, 1], F_i a multiple of temporal_patch_size -> (patches, video_grid_thw (n, 3)).

    Frames 2k and 2k + 1 share every 3D patch (temporal_patch_size = 2): t = F_i / 2 temporal groups."""
    tps = config.vision.temporal_patch_size
    for k, frames in enumerate(videos):
        if isinstance(frames, torch.Tensor) and frames.dim() == 4 and frames.shape[0] % tps:
            raise ValueError(f"videos[{k}] has {frames.shape[0]} frames: a video needs a multiple of "
                             f"temporal_patch_size={tps} (see video_frames.sample_frame_indices)")
    return _patchify_all(videos, config, "videos", "(F, 3, H, W)")


def pooled_grid_thw(video_grid_thw, merge_size=2, stride=1):
    """The grids (n, 3) of the video runs the LM reads after per-frame pooling: (t, ceil(h/m/s)·m, ceil(w/m/s)·m).

    Counted, like grid_thw, in patches before the merge, so mrope_position_ids and expand_image_tokens
    read them as they read any grid."""
    grid = torch.as_tensor(video_grid_thw).reshape(-1, 3).clone()
    if stride > 1:
        grid[:, 1:] = (grid[:, 1:] // merge_size + stride - 1) // stride * merge_size
    return grid


def expand_image_tokens(input_ids, attention_mask, labels, grid_thw, image_token_id, merge_size=2, pad_id=0,
                        vision_start_id=None, vision_end_id=None):
    """Each row's <image> ids -> runs of t·(h/m)·(w/m) of them, images in reading order over the batch.
    The same for videos: pass the <video> id and the grids the LM reads (pooled_grid_thw).

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

    def video_token_grid(self, video_grid_thw):
        """The grids of the <video> runs: the ViT's grids, shrunk by the per-frame pooling if any."""
        return pooled_grid_thw(video_grid_thw, self.config.vision.merge_size, self.config.video_pool_stride)

    def position_ids(self, input_ids, grid_thw, attention_mask=None, video_grid_thw=None, video_seconds_per_grid=None):
        """Position ids (3, B, L) of the expanded prompt: M-RoPE (rope.mrope_position_ids; reads values: data
        preparation), or with positions="1d" every real token's index, the same in the three streams."""
        c = self.config
        if c.positions == "1d":
            return self.lm.default_positions(*input_ids.shape, 0, attention_mask, input_ids.device)
        if video_grid_thw is not None:
            video_grid_thw = self.video_token_grid(video_grid_thw)
        return mrope_position_ids(input_ids, grid_thw, video_grid_thw, image_token_id=c.image_token_id,
                                  video_token_id=c.video_token_id, spatial_merge_size=c.vision.merge_size,
                                  attention_mask=attention_mask, video_seconds_per_grid=video_seconds_per_grid,
                                  tokens_per_second=c.tokens_per_second)[0]

    def encode_videos(self, video_patches, video_grid_thw):
        """Packed tubelets -> (Σ t·h'·w', D): the ViT's merged tokens of every video, pooled per temporal group
        (LLaVA-OneVision's get_2dPool, bilinear) when video_pool_stride > 1, in (t, row, col) order."""
        tokens = self.vision(video_patches, video_grid_thw)                       # (Σ t·h/m·w/m, D)
        stride, m = self.config.video_pool_stride, self.config.vision.merge_size
        if stride == 1:
            return tokens
        grids = torch.as_tensor(video_grid_thw).reshape(-1, 3).tolist()
        maps = tokens.split([t * (h // m) * (w // m) for t, h, w in grids])
        return torch.cat([pool_frame_tokens(x.reshape(t, h // m, w // m, -1), stride).flatten(0, 2)
                          for x, (t, h, w) in zip(maps, grids)])

    def embed(self, patches, grid_thw, input_ids, validate=True, video_patches=None, video_grid_thw=None):
        """Token embeddings (B, L, D): every <image> run replaced by its image's merged ViT tokens, every
        <video> run by its video's; patches and grid_thw may be None for a prompt without images."""
        check_token_ids(input_ids, self.config.vocab_size, read_values=validate)
        embeds = self.lm.tok_emb(input_ids)
        for kind, token_id, pixels, grid, encode in (
                ("image", self.config.image_token_id, patches, grid_thw, self.vision),
                ("video", self.config.video_token_id, video_patches, video_grid_thw, self.encode_videos)):
            slots = input_ids == token_id
            if pixels is None:
                if validate and bool(slots.any()):
                    raise ValueError(f"input_ids holds <{kind}> tokens but no {kind} patches were given")
                continue
            visual = encode(pixels, grid)                                          # (tokens, D)
            if validate and int(slots.sum()) != len(visual):
                raise ValueError(f"input_ids holds {int(slots.sum())} <{kind}> tokens but the {kind}s give "
                                 f"{len(visual)}: expand each <{kind}> with expand_image_tokens")
            embeds = embeds.masked_scatter(slots[..., None], visual.to(embeds.dtype))
        return embeds

    def forward(self, patches, grid_thw, input_ids, attention_mask=None, labels=None, position_ids=None,
                validate=True, *, video_patches=None, video_grid_thw=None, video_seconds_per_grid=None):
        check_token_ids(input_ids, self.config.vocab_size, read_values=False)
        if patches is not None:
            tensor("patches", patches, dims=2, kind="float", shape="(N, C·t·p·p), from process_images")
        if position_ids is None:
            position_ids = self.position_ids(input_ids, grid_thw, attention_mask, video_grid_thw,
                                             video_seconds_per_grid)
        embeds = self.embed(patches, grid_thw, input_ids, validate, video_patches, video_grid_thw)
        logits = self.lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids).logits
        return VLMOutput(logits, None if labels is None else next_token_loss(logits, labels), labels)

    @torch.no_grad()
    def generate(self, patches, grid_thw, input_ids, attention_mask=None, max_new_tokens=4, *, video_patches=None,
                 video_grid_thw=None, video_seconds_per_grid=None, **sampling):
        """Continue left-padded, expanded prompts with the LM's KV-cached loop: new ids (B, T_new).

        Each new token's id is the prompt's largest + 1 onwards, in all three streams: what Qwen2-VL's
        rope_deltas (mrope_position_ids) carry on after the prompt."""
        check_token_ids(input_ids, self.config.vocab_size, read_values=False)
        if patches is not None:
            tensor("patches", patches, dims=2, kind="float", shape="(N, C·t·p·p), from process_images")
        if attention_mask is not None and not attention_mask[:, -1].all():
            raise ValueError("prompts must be left-padded for generation (see left_pad)")
        position_ids = self.position_ids(input_ids, grid_thw, attention_mask, video_grid_thw, video_seconds_per_grid)
        embeds = self.embed(patches, grid_thw, input_ids, video_patches=video_patches, video_grid_thw=video_grid_thw)
        return self.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                max_new_tokens=max_new_tokens, eos_id=self.config.eos_token_id, **sampling)
