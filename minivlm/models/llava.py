"""LLaVA (Liu et al. 2023, "Visual Instruction Tuning", arXiv 2304.08485): a ViT, a projector and a decoder LM.

    images (B_img, 3, H, W) -> ViT -> patch tokens (B_img, N, Dv)
        -> projector -> visual tokens (B_img, T, Dt)     T = N, or N/r² with InternVL's unshuffle
    chat text  "<bos> <user> <image> how many circles are there ? <assistant> two <eos>"
        -> ids (B, L); the one <image> id of each row is replaced by its image's T visual
        tokens -> embeddings (B, L - 1 + T, Dt) -> language model -> logits over words

The loss covers the answer tokens only (labels are -100 on the prompt and the image), so
the model learns to answer, not to predict questions. Each row names its image through
`image_index` (B,), so one encoded image can serve several questions in a batch.

`prefix="bidirectional"` lets the image and question tokens (everything up to and including
`<assistant>`) attend to each other in both directions, a prefix-LM (as in PaliGemma); the
answer stays causal. `prefix="causal"` is the plain LLaVA decoder.

Training in stages, as in LLaVA: stage 1 trains the projector alone (ViT and LM frozen) to
align visual tokens with word embeddings; stage 2 also unfreezes the LM (the ViT, from CLIP,
stays frozen); stage "all" trains everything.

Two details matter at toy scale. Images are standardised per channel before the ViT
(`normalize`, as CLIP's image processor does): raw Shapes images are mostly background, and
their content would otherwise drown under the ViT's position features. And the LM's input and
output embeddings are untied by default: the same words ("circle", "red") are what a question
looks for and what an answer says, and one matrix serving both learns much more slowly.

(A little over the course's ~250 lines a file: the model, its chat template and the decoding
of its answers are one concept, read together.)
"""

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from ..checks import booleans, choice, integer, positive_ints, tensor

from ..attention import causal_mask
from ..lm import IGNORE_INDEX, LanguageModel, LMConfig, check_token_ids, next_token_loss
from ..projector import PROJECTORS, build_projector, num_visual_tokens
from ..vit import POSITIONS, ViT, ViTConfig

STAGES = (1, 2, "all")


def check_vlm_inputs(images, input_ids, vocab_size, read_values=True):
    """The door of every image+text model: images a (B_img, 3, H, W) float tensor in [0, 1] on
    input_ids' device, input_ids as check_token_ids wants them (their range read only with read_values:
    a GPU -> CPU sync). Pixel values are never read, so float images in 0..255 are not caught: they
    run, and the model sees saturated pixels."""
    check_token_ids(input_ids, vocab_size, read_values)
    tensor("images", images, dims=4, kind="float", shape="(B_img, 3, H, W) in [0, 1]")     # uint8: says / 255
    if images.device != input_ids.device:
        raise ValueError(f"images ({images.device}) and input_ids ({input_ids.device}) must be on one device: "
                         f"move both with .to(device)")


def check_special_ids(config, *names):
    """Token-id fields are ints in [0, vocab_size)."""
    for name in names:
        integer(name, getattr(config, name), low=0, high=config.vocab_size - 1)


def check_pixel_stats(config):
    """pixel_mean and pixel_std: one number per channel, the std > 0."""
    for name in ("pixel_mean", "pixel_std"):
        values = getattr(config, name)
        if not isinstance(values, (tuple, list)) or len(values) != 3 \
                or not all(isinstance(v, (int, float)) and v == v for v in values) \
                or (name == "pixel_std" and not all(v > 0 for v in values)):
            raise ValueError(f"{name} must be 3 numbers (one per RGB channel{', > 0' if name == 'pixel_std' else ''}), "
                             f"got {values!r}")


@dataclass
class LlavaConfig:
    vocab_size: int = 58                 # len(data.Tokenizer())
    image_size: int = 32
    patch_size: int = 8                  # a 4x4 patch grid; 2x2 unshuffle: one visual token per cell
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vision_positions: str = "sincos"
    projector: str = "unshuffle"         # "linear", "mlp" or "unshuffle"
    unshuffle_factor: int = 2
    text_dim: int = 128
    text_depth: int = 2
    text_heads: int = 4
    max_seq_len: int = 128
    tie_embeddings: bool = False         # see the module docstring
    prefix: str = "bidirectional"        # attention over image + question: or "causal"
    image_token_id: int = 3              # data.Tokenizer().image_id
    assistant_token_id: int = 6          # data.Tokenizer().assistant_id
    eos_token_id: int = 2                # data.Tokenizer().eos_id
    pixel_mean: tuple = (0.27, 0.27, 0.25)   # per-channel statistics of Shapes images, used to
    pixel_std: tuple = (0.22, 0.19, 0.21)    # standardise them (as CLIP's image processor does)

    def __post_init__(self):
        positive_ints(self, "vocab_size", "image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads",
                      "unshuffle_factor", "text_dim", "text_depth", "text_heads", "max_seq_len")
        booleans(self, "tie_embeddings")
        choice("vision_positions", self.vision_positions, POSITIONS)
        check_special_ids(self, "image_token_id", "assistant_token_id", "eos_token_id")
        check_pixel_stats(self)
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if self.prefix not in ("bidirectional", "causal"):
            raise ValueError(f"prefix must be 'bidirectional' or 'causal', got {self.prefix!r}")
        grid = self.vision_config().grid_size
        if self.projector == "unshuffle" and grid % self.unshuffle_factor:
            raise ValueError(f"the {grid}x{grid} patch grid is not divisible by unshuffle_factor="
                             f"{self.unshuffle_factor}")

    def vision_config(self):
        return ViTConfig(image_size=self.image_size, patch_size=self.patch_size, dim=self.vision_dim,
                         depth=self.vision_depth, heads=self.vision_heads, positions=self.vision_positions)

    def lm_config(self):
        return LMConfig(vocab_size=self.vocab_size, dim=self.text_dim, depth=self.text_depth,
                        heads=self.text_heads, max_seq_len=self.max_seq_len, tie_embeddings=self.tie_embeddings)

    @property
    def num_visual_tokens(self):
        return num_visual_tokens(self.projector, self.vision_config().grid_size ** 2, self.unshuffle_factor)


def chat_prompt(question):
    """The chat template around one question; the tokenizer adds <bos>."""
    return f"<user> <image> {question} <assistant>"


def encode_chat(tokenizer, questions, answers=None, *, padding_side="right"):
    """Questions (and answers) -> {"input_ids", "attention_mask", "labels"}, each (B, L).

    labels are the answer and <eos> (or -100 everywhere without answers). Train and score
    right-padded; generate from left-padded prompts (answers=None, padding_side="left").
    """
    if answers is not None and len(answers) != len(questions):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    prompts = [chat_prompt(q) for q in questions]
    texts = prompts if answers is None else [f"{p} {a}" for p, a in zip(prompts, answers)]
    ids, mask = tokenizer.batch_encode(texts, add_bos=True, add_eos=answers is not None, padding_side=padding_side)
    is_assistant = ids == tokenizer.assistant_id
    after_prompt = (is_assistant.long().cumsum(1) - is_assistant.long()) > 0
    labels = ids.masked_fill(~(after_prompt & mask), IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class MergedInputs(NamedTuple):
    """The LM's input after the visual tokens are spliced in; S = L - 1 + T."""
    embeds: torch.Tensor                    # (B, S, D)
    attention_mask: Optional[torch.Tensor]  # (B, S) bool, or None
    labels: Optional[torch.Tensor]          # (B, S), -100 on prompt and image, or None
    prefix: torch.Tensor                    # (B, S) bool, True up to and including <assistant>


class VLMOutput(NamedTuple):
    logits: torch.Tensor                    # (B, S, V)
    loss: Optional[torch.Tensor]            # scalar, or None without labels
    labels: Optional[torch.Tensor]          # (B, S): the labels aligned with the logits, or None


class Llava(nn.Module):
    """forward(images, input_ids, ...) -> VLMOutput(logits (B, L - 1 + T, V), loss, labels)."""

    def __init__(self, config: LlavaConfig = None):
        super().__init__()
        c = self.config = config or LlavaConfig()
        self.vision = ViT(c.vision_config())
        self.projector = build_projector(c.projector, c.vision_dim, c.text_dim, c.unshuffle_factor)
        self.lm = LanguageModel(c.lm_config())

    def forward(self, images, input_ids, attention_mask=None, labels=None, image_index=None, validate=True):
        """images (B_img, 3, H, W) in [0, 1]; input_ids, attention_mask, labels (B, L); image_index (B,).
        validate=False skips the checks that read tensor values (a GPU -> CPU sync each)."""
        check_vlm_inputs(images, input_ids, self.config.vocab_size, read_values=validate)
        if validate:
            self.check_prompts(input_ids, image_index, len(images))
        merged = self.merge_image_tokens(input_ids, self.encode_images(images), attention_mask, labels, image_index)
        logits = self.lm(inputs_embeds=merged.embeds, attention_mask=merged.attention_mask,
                         attn_mask=self.prefix_attention(merged.prefix)).logits
        loss = None if labels is None else next_token_loss(logits, merged.labels)
        return VLMOutput(logits, loss, merged.labels)

    @torch.no_grad()
    def generate(self, images, input_ids, attention_mask=None, image_index=None, max_new_tokens=4, **sampling):
        """Answer left-padded prompts with the LM's KV-cached generation: new ids (B, T_new)."""
        check_vlm_inputs(images, input_ids, self.config.vocab_size)
        if attention_mask is not None and not attention_mask[:, -1].all():
            raise ValueError("prompts must be left-padded for generation (encode_chat(..., padding_side='left'))")
        self.check_prompts(input_ids, image_index, len(images))
        merged = self.merge_image_tokens(input_ids, self.encode_images(images), attention_mask, None, image_index)
        return self.lm.generate(inputs_embeds=merged.embeds, attention_mask=merged.attention_mask,
                                attn_mask=self.prefix_attention(merged.prefix), max_new_tokens=max_new_tokens,
                                eos_id=self.config.eos_token_id, **sampling)

    def normalize(self, images):
        """Images in [0, 1] -> standardised per channel, what the ViT reads (B, 3, H, W)."""
        c = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, c.image_size, c.image_size):
            raise ValueError(f"images must be (B, 3, {c.image_size}, {c.image_size}) for this model, "
                             f"got {tuple(images.shape)}")
        mean = torch.tensor(c.pixel_mean, device=images.device, dtype=images.dtype)[:, None, None]
        std = torch.tensor(c.pixel_std, device=images.device, dtype=images.dtype)[:, None, None]
        return (images - mean) / std

    def encode_images(self, images):
        """(B_img, 3, H, W) in [0, 1] -> visual tokens in the LM's space (B_img, T, Dt)."""
        return self.projector(self.vision(self.normalize(images)).tokens)

    def check_prompts(self, input_ids, image_index, num_images):
        """One <image> and an <assistant> per row, image_index in range (reads values; the ids are checked first)."""
        c = self.config
        images_per_row = (input_ids == c.image_token_id).sum(1)
        if not (images_per_row == 1).all():
            bad = int((images_per_row != 1).nonzero()[0, 0])
            raise ValueError(f"every prompt needs exactly one <image> placeholder (id {c.image_token_id}); "
                             f"row {bad} of input_ids has {int(images_per_row[bad])}")
        if not (input_ids == c.assistant_token_id).any(1).all():
            raise ValueError(f"every prompt needs an <assistant> token (id {c.assistant_token_id}) that "
                             f"ends the prompt: see chat_prompt()")
        B = input_ids.shape[0]
        if image_index is None and num_images != B:
            raise ValueError(f"got {num_images} images for {B} prompts: pass image_index (B,)")
        if image_index is not None and (image_index.shape != (B,) or not 0 <= image_index.min() <= image_index.max() < num_images):
            raise ValueError(f"image_index must be (B,) = ({B},) with values in [0, {num_images})")

    def merge_image_tokens(self, input_ids, image_embeds, attention_mask=None, labels=None, image_index=None):
        """Replace each row's <image> id by its image's T visual tokens -> MergedInputs.

        input_ids (B, L) with exactly one <image> per row (see check_prompts); image_embeds
        (B_img, T, D); image_index (B,) the image of each row (default: row b asks about image b).
        """
        c = self.config
        B, L = input_ids.shape
        T = image_embeds.shape[1]
        if image_index is not None:
            image_embeds = image_embeds[image_index]                               # (B, T, D)

        # Output position s takes text token s before the image, visual token s - p inside it,
        # and text token s - T + 1 after it (p = the <image> position of the row).
        image_at = (input_ids == c.image_token_id).int().argmax(1)[:, None]       # (B, 1)
        s = torch.arange(L - 1 + T, device=input_ids.device)[None]                # (1, S)
        offset = s - image_at                                                     # (B, S)
        is_visual = (offset >= 0) & (offset < T)
        text_source = torch.where(offset < 0, s, s - T + 1).clamp(0, L - 1)       # (B, S)
        text = self.lm.tok_emb(input_ids)
        table = torch.cat([text, image_embeds], dim=1)                           # (B, L + T, D)
        source = torch.where(is_visual, L + offset, text_source)
        embeds = table.gather(1, source[..., None].expand(-1, -1, table.shape[-1]))

        if attention_mask is not None:
            attention_mask = attention_mask.bool().gather(1, text_source) | is_visual
        if labels is not None:
            labels = labels.gather(1, text_source).masked_fill(is_visual, IGNORE_INDEX)
        is_assistant = input_ids.gather(1, text_source).masked_fill(is_visual, c.image_token_id) == c.assistant_token_id
        prefix = (is_assistant.long().cumsum(1) - is_assistant.long()) == 0
        return MergedInputs(embeds, attention_mask, labels, prefix)

    def prefix_attention(self, prefix):
        """(B, S, S) bool: causal, plus image and question tokens seeing each other."""
        S = prefix.shape[1]
        causal = causal_mask(S, S, prefix.device)
        if self.config.prefix == "causal":
            return causal.expand(prefix.shape[0], S, S)
        return causal | (prefix[:, :, None] & prefix[:, None, :])

    def set_stage(self, stage):
        """Which parts train: 1 = the projector alone, 2 = projector and LM, "all" = everything."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.vision.requires_grad_(stage == "all")
        self.projector.requires_grad_(True)
        self.lm.requires_grad_(stage != 1)
        return self

    def load_vision_tower(self, vit):
        """Initialise the ViT from another one with the same shape, e.g. a CLIP image tower (ch. 03)."""
        try:
            self.vision.load_state_dict(vit.state_dict())
        except RuntimeError as error:
            raise ValueError(f"the vision tower does not fit this model's ViT {self.config.vision_config()}: "
                             f"{str(error).splitlines()[0]}") from None
        return self

    def load_language_model(self, lm):
        """Initialise the LM from a pretrained one with the same config, e.g. minivlm.pretrained.language_model()."""
        if lm.config != self.config.lm_config():
            raise ValueError(f"the language model's config {lm.config} does not match this model's "
                             f"{self.config.lm_config()}")
        self.lm.load_state_dict(lm.state_dict())
        return self


@torch.no_grad()
def answer_questions(model, tokenizer, images, questions, image_index=None, max_new_tokens=4):
    """Greedy answers (list of str) to `questions` about `images`, generated with the KV cache."""
    device = next(model.parameters()).device
    batch = encode_chat(tokenizer, questions, padding_side="left")
    new = model.generate(images.to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device),
                         None if image_index is None else image_index.to(device), max_new_tokens)
    return decode_answers(tokenizer, new)


def decode_answers(tokenizer, new_ids):
    """Generated ids (B, T_new) -> one string per row, cut at the first <eos>."""
    rows = new_ids.tolist()
    return [tokenizer.decode(row[:row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row) for row in rows]

