"""A decoder-only language model in the LLaMA style (Touvron et al. 2023, "LLaMA", arXiv 2302.13971).

    input_ids (B, L) -> token embedding (B, L, D) -> depth × pre-norm decoder block
    -> final RMSNorm -> output head -> LMOutput(logits (B, L, V), loss)

A decoder block is blocks.TransformerBlock with RMSNorm and SwiGLU and no biases,
    x = x + attn(rmsnorm(x));  x = x + swiglu(rmsnorm(x)),
with causal self-attention whose queries and keys are rotated by RoPE (rope.py, Su et al.
2021, arXiv 2104.09864): "1d" positions, or "mrope" (Qwen2-VL): (t, h, w) streams. No
position vector is added to the tokens. The output head is tied to the embedding matrix by
default (Press & Wolf 2017, arXiv 1608.05859).

Training: position t predicts token t+1, so the loss compares logits[:, :-1] with
labels[:, 1:]; label -100 is ignored (padding, prompts, image tokens).

Generation (generation.py) keeps a KV cache: the keys and values of every earlier token are
stored per layer, so each new token costs one query against the cache instead of re-running
the whole prefix. Batched prompts are LEFT-padded with an attention_mask, so every row's next
token sits in the same last column.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rope as rope_lib
from .attention import causal_mask
from .blocks import RMSNorm, TransformerBlock
from .checks import booleans, integer, number, positive_ints, tensor
from .generation import generate

IGNORE_INDEX = -100


@dataclass
class LMConfig:
    vocab_size: int
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_hidden: int = None        # SwiGLU hidden width; None -> a multiple of 8 near 8/3·dim
    max_seq_len: int = 256
    rope: str = "1d"              # "1d" or "mrope"
    rope_theta: float = 10000.0
    mrope_section: tuple = None   # for rope="mrope": pairs per (t, h, w) stream, sums to head_dim/2
    tie_embeddings: bool = True
    kv_heads: int = None          # key/value heads; None -> heads; fewer: grouped-query attention (GQA)
    norm_eps: float = 1e-6        # RMSNorm's eps (LLaMA uses 1e-6, SmolLM2 1e-5)

    def __post_init__(self):
        positive_ints(self, "vocab_size", "dim", "depth", "heads", "max_seq_len")
        if self.mlp_hidden is not None:
            integer("mlp_hidden", self.mlp_hidden, low=1)
        number("rope_theta", self.rope_theta, above=0)
        booleans(self, "tie_embeddings")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if (self.dim // self.heads) % 2:
            raise ValueError(f"head_dim = dim/heads = {self.dim // self.heads} must be even for RoPE")
        number("norm_eps", self.norm_eps, above=0)
        if self.kv_heads is not None and self.heads % integer("kv_heads", self.kv_heads, low=1):
            raise ValueError(f"kv_heads={self.kv_heads} must be a positive divisor of heads={self.heads}")
        if self.rope not in ("1d", "mrope"):
            raise ValueError(f"rope must be '1d' or 'mrope', got {self.rope!r}")
        if self.mlp_hidden is None:
            self.mlp_hidden = 8 * math.ceil(8 * self.dim / 3 / 8)
        if self.rope == "mrope":
            if self.mrope_section is None:     # Qwen2-VL's proportions: (16, 24, 24) of 64 pairs
                half = self.head_dim // 2
                spatial = 3 * half // 8
                self.mrope_section = (half - 2 * spatial, spatial, spatial)
            self.mrope_section = tuple(rope_lib.check_mrope_section(self.mrope_section, self.head_dim))

    @property
    def head_dim(self):
        return self.dim // self.heads


class LMOutput(NamedTuple):
    logits: torch.Tensor              # (B, L, V)
    loss: Optional[torch.Tensor]      # scalar, or None without labels


def next_token_loss(logits, labels):
    """Cross-entropy of position t's logits (B, L, V) against token t+1 of labels (B, L); labels -100 are ignored."""
    tensor("logits", logits, dims=3, kind="float", shape="(B, L, V)")
    tensor("labels", labels, dims=2, kind="int", shape="(B, L)")
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits (B, L, V) and labels (B, L) must agree on (B, L), "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def check_token_ids(input_ids, vocab_size, read_values=True):
    """ValueError unless input_ids is an integer (B, L) tensor with values in [0, vocab_size).
    The range is checked only with read_values (it reads the tensor: a GPU -> CPU sync)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor (B, L), got {shape}")
    if read_values and input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, vocab_size={vocab_size}), "
                         f"got values in [{input_ids.min().item()}, {input_ids.max().item()}]")


def own_position(query_len, key_len, device=None):
    """(L, S) bool, True where key j is query i itself: j == i + (S - L)."""
    offset = key_len - query_len
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(offset).triu(offset)


class LanguageModel(nn.Module):
    """Decoder-only LM: input_ids (B, L) or inputs_embeds (B, L, D) -> LMOutput(logits (B, L, V), loss)."""

    generate = generate

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads, c.mlp_hidden, norm="rmsnorm", mlp="swiglu",
                                                     bias=False, kv_heads=c.kv_heads, norm_eps=c.norm_eps)
                                    for _ in range(c.depth))
        self.norm = RMSNorm(c.dim, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        for block in self.blocks:   # GPT-2: shrink the residual writes so the stream's variance stays ~1
            for linear in (block.attn.out_proj, block.mlp.w2):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * c.depth))
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, input_ids=None, labels=None, *, inputs_embeds=None, attention_mask=None,
                attn_mask=None, position_ids=None, kv_cache=None, validate=True):
        """input_ids (B, L) or inputs_embeds (B, L, D); labels (B, L); attention_mask (B, S), True at
        real tokens, S = cached + new; attn_mask (B, L, S) bool, replacing the causal pattern;
        position_ids (B, L), or (3, B, L) for M-RoPE; kv_cache from new_cache(), filled in place.
        validate=False skips the checks that read tensor values (a GPU -> CPU sync): token ids in range."""
        past_len = self.check_inputs(input_ids, inputs_embeds, labels, attention_mask, attn_mask, position_ids,
                                     kv_cache, validate)
        x = self.tok_emb(input_ids) if inputs_embeds is None else inputs_embeds
        logits = self.lm_head(self.hidden_states(x, attention_mask, attn_mask, position_ids, kv_cache, past_len))
        return LMOutput(logits, None if labels is None else next_token_loss(logits, labels))

    def hidden_states(self, x, attention_mask=None, attn_mask=None, position_ids=None, kv_cache=None, past_len=0):
        """The final normed states (B, L, D) of embeddings x (B, L, D), what lm_head reads (inputs as forward's,
        unchecked: forward checks them). A probe reads these instead of the vocabulary logits."""
        B, L, _ = x.shape
        if position_ids is None:
            position_ids = self.default_positions(B, L, past_len, attention_mask, x.device)
        rope = self.rotary(position_ids)
        mask = self.attention_pattern(L, past_len + L, attention_mask, attn_mask, x.device)
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask=mask, rope=rope, kv_cache=None if kv_cache is None else kv_cache[i])
        return self.norm(x)

    def embed(self, input_ids, validate=True):
        """Token embeddings (B, L, D); a VLM splices image tokens into these before `forward`."""
        check_token_ids(input_ids, self.config.vocab_size, read_values=validate)
        return self.tok_emb(input_ids)

    def new_cache(self):
        """An empty KV cache: one dict per layer, filled in place by `forward`."""
        return [{} for _ in self.blocks]

    def check_inputs(self, input_ids, inputs_embeds, labels, attention_mask, attn_mask, position_ids, kv_cache,
                     validate=True):
        """Shapes, and the token ids' range only with validate; returns the length the KV cache already holds."""
        c = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, L) and inputs_embeds (B, L, D)")
        if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != c.dim):
            raise ValueError(f"inputs_embeds must be (B, L, D={c.dim}), got {tuple(inputs_embeds.shape)}")
        if kv_cache is not None and (not isinstance(kv_cache, list) or len(kv_cache) != c.depth):
            raise ValueError(f"kv_cache must be the list returned by new_cache() ({c.depth} dicts)")
        past_len = kv_cache[0]["k"].shape[2] if kv_cache is not None and "k" in kv_cache[0] else 0
        if input_ids is not None:
            check_token_ids(input_ids, c.vocab_size, read_values=validate)
        B, L = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        S = past_len + L
        if S > c.max_seq_len:
            raise ValueError(f"sequence length {S} (cached + new tokens) exceeds max_seq_len={c.max_seq_len}")
        shapes = {"labels": (labels, (B, L)), "attention_mask (over cached + new tokens)": (attention_mask, (B, S)),
                  "position_ids": (position_ids, (3, B, L) if c.rope == "mrope" else (B, L))}
        for name, (value, expected) in shapes.items():
            if value is not None and tuple(value.shape) != expected:
                raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
        if attn_mask is not None and (attn_mask.dtype != torch.bool or attn_mask.dim() not in (2, 3)
                                      or attn_mask.shape[-2:] != (L, S)
                                      or (attn_mask.dim() == 3 and attn_mask.shape[0] not in (1, B))):
            raise ValueError(f"attn_mask must be a bool tensor (B, L, S) = ({B}, {L}, {S}), "
                             f"got {attn_mask.dtype} {tuple(attn_mask.shape)}")
        return past_len

    def default_positions(self, B, L, past_len, attention_mask, device):
        """past_len + arange(L); with a (left-)padding mask, the count of real tokens before
        each one (cumsum - 1, as HF does), so every row's first real token sits at 0.
        Shape (B, L), or (3, B, L) for M-RoPE (text: the same position in t, h and w)."""
        if attention_mask is not None:
            positions = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)[:, -L:]
        else:
            positions = torch.arange(past_len, past_len + L, device=device).expand(B, L)
        if self.config.rope == "mrope":
            positions = positions.unsqueeze(0).expand(3, B, L)
        return positions

    def rotary(self, position_ids):
        """(cos, sin), each (B, L, head_dim), for (B, L) or (3, B, L) positions."""
        c = self.config
        if c.rope == "mrope":
            return rope_lib.mrope_cos_sin(position_ids, c.head_dim, c.mrope_section, c.rope_theta)
        return rope_lib.rope_cos_sin(position_ids, c.head_dim, c.rope_theta)

    @staticmethod
    def attention_pattern(L, S, attention_mask, attn_mask, device):
        """Who may attend whom, one bool mask: (L, S) causal, or (B, 1, L, S) with padding or attn_mask."""
        if attention_mask is None and attn_mask is None:
            return causal_mask(L, S, device)
        mask = causal_mask(L, S, device) if attn_mask is None else attn_mask
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, :]                       # (B, L, S)
        # A left-padding query sees no key at all: its softmax would be NaN, and a NaN value
        # leaks into real tokens through 0 · NaN. Let such a row see itself; its output is unused.
        empty_rows = ~mask.any(dim=-1, keepdim=True)
        mask = mask | (empty_rows & own_position(L, S, device))
        return mask[:, None] if mask.dim() == 3 else mask
