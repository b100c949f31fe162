"""A decoder-only language model in the LLaMA style (Touvron et al. 2023, "LLaMA").

    input_ids (B, L) -> token embedding (B, L, D) -> depth × pre-norm decoder block
    -> final RMSNorm -> tied output head -> logits (B, L, V)

A decoder block is  x = x + attn(rmsnorm(x));  x = x + swiglu(rmsnorm(x)),  with causal
self-attention whose queries and keys are rotated by RoPE (rope.py); there is no position
vector added to the tokens. The pieces, each from its paper:
    RMSNorm  (Zhang & Sennrich 2019)  x / sqrt(mean(x²) + eps) · g, no mean, no bias
    SwiGLU   (Shazeer 2020)           w2(silu(w1 x) ⊙ w3 x), hidden width ≈ 8/3 · D
    RoPE     (Su et al. 2021)         "1d" positions, or "mrope" (Qwen2-VL): (t, h, w) streams
    tied head (Press & Wolf 2017)     the output matrix is the embedding matrix

Training: position t predicts token t+1, so the loss compares logits[:, :-1] with
labels[:, 1:]; label -100 is ignored (padding, prompts, image tokens).

Generation keeps a KV cache: the keys and values of every earlier token are stored per
layer, so each new token costs one query against the cache instead of re-running the whole
prefix. Batched prompts are LEFT-padded with an attention_mask, so every row's next token
sits in the same last column.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention, causal_mask
from . import rope as rope_lib

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

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {self.vocab_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if (self.dim // self.heads) % 2:
            raise ValueError(f"head_dim = dim/heads = {self.dim // self.heads} must be even for RoPE")
        if self.rope not in ("1d", "mrope"):
            raise ValueError(f"rope must be '1d' or 'mrope', got {self.rope!r}")
        if self.mlp_hidden is None:
            self.mlp_hidden = 8 * math.ceil(8 * self.dim / 3 / 8)
        half = self.dim // self.heads // 2
        if self.rope == "mrope":
            if self.mrope_section is None:     # Qwen2-VL's proportions: (16, 24, 24) of 64 pairs
                spatial = 3 * half // 8
                self.mrope_section = (half - 2 * spatial, spatial, spatial)
            self.mrope_section = tuple(self.mrope_section)
            if len(self.mrope_section) != 3 or sum(self.mrope_section) != half:
                raise ValueError(f"mrope_section must be 3 numbers (t, h, w) summing to head_dim/2 = {half}, "
                                 f"got {self.mrope_section}")

    @property
    def head_dim(self):
        return self.dim // self.heads


class RMSNorm(nn.Module):
    """x / sqrt(mean(x², last dim) + eps) · weight over (..., D)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x_float = x.float()
        normed = x_float * torch.rsqrt(x_float.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x): a gated MLP, (..., D) -> (..., D)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)   # gate
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)   # value
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)   # back to D

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention with RoPE, then SwiGLU, each added to the residual."""

    def __init__(self, dim, heads, mlp_hidden):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, bias=False)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)

    def forward(self, x, rope=None, kv_cache=None, **mask_kwargs):
        """x (B, L, D); mask_kwargs (attn_mask, key_padding_mask, is_causal) go to the attention."""
        x = x + self.attn(self.attn_norm(x), rope=rope, kv_cache=kv_cache, **mask_kwargs)
        return x + self.mlp(self.mlp_norm(x))


def own_position(query_len, key_len, device=None):
    """(L, S) bool, True where key j is query i itself: j == i + (S - L)."""
    offset = key_len - query_len
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(offset).triu(offset)


def sample_next_token(logits, temperature=0.0, top_k=None, generator=None):
    """Pick one token per row from logits (B, V): argmax at temperature 0, else sample from
    softmax(logits / temperature) restricted to the top_k most likely tokens. Returns (B,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class LanguageModel(nn.Module):
    """Decoder-only LM: input_ids (B, L) or inputs_embeds (B, L, D) -> logits (B, L, V)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = nn.ModuleList(DecoderBlock(c.dim, c.heads, c.mlp_hidden) for _ in range(c.depth))
        self.norm = RMSNorm(c.dim)
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

    def embed(self, input_ids):
        """Token embeddings (B, L, D); a VLM splices image tokens into these before `forward`."""
        self._check_ids(input_ids, "input_ids")
        return self.tok_emb(input_ids)

    def new_cache(self):
        """An empty KV cache: one dict per layer, filled in place by `forward`."""
        return [{} for _ in self.blocks]

    # -- input checks ---------------------------------------------------------------------
    def _check_ids(self, ids, name):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"{name} must be an integer tensor (B, L), got "
                             f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"{name} must lie in [0, vocab_size={self.config.vocab_size}), "
                             f"got values in [{ids.min().item()}, {ids.max().item()}]")

    def _check_inputs(self, input_ids, inputs_embeds):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, L) and inputs_embeds (B, L, D)")
        if input_ids is not None:
            return self.embed(input_ids)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.dim:
            raise ValueError(f"inputs_embeds must be (B, L, D={self.config.dim}), got {tuple(inputs_embeds.shape)}")
        return inputs_embeds

    def _check_cache(self, kv_cache):
        """Length of what the cache already holds (0 without a cache)."""
        if kv_cache is None:
            return 0
        if not isinstance(kv_cache, list) or len(kv_cache) != self.config.depth:
            raise ValueError(f"kv_cache must be the list returned by new_cache() ({self.config.depth} dicts)")
        return kv_cache[0]["k"].shape[2] if "k" in kv_cache[0] else 0

    def _check_forward_args(self, B, L, S, labels, attention_mask, attn_mask, position_ids):
        c = self.config
        if S > c.max_seq_len:
            raise ValueError(f"sequence length {S} (cached + new tokens) exceeds max_seq_len={c.max_seq_len}")
        shapes = {"labels": (labels, (B, L)), "attention_mask (over cached + new tokens)": (attention_mask, (B, S)),
                  "position_ids": (position_ids, (3, B, L) if c.rope == "mrope" else (B, L))}
        for name, (tensor, expected) in shapes.items():
            if tensor is not None and tuple(tensor.shape) != expected:
                raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")
        batch_ok = attn_mask is None or attn_mask.dim() == 2 or attn_mask.shape[0] in (1, B)
        if attn_mask is not None and (attn_mask.dtype != torch.bool or attn_mask.dim() not in (2, 3)
                                      or attn_mask.shape[-2:] != (L, S) or not batch_ok):
            raise ValueError(f"attn_mask must be a bool tensor (B, L, S) = ({B}, {L}, {S}), "
                             f"got {attn_mask.dtype} {tuple(attn_mask.shape)}")

    # -- positions and masks --------------------------------------------------------------
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
    def attention_pattern(B, L, S, attention_mask, attn_mask, device):
        """None when plain causal attention suffices, else a (B, 1, L, S) bool mask (True = may attend)."""
        if attention_mask is None and attn_mask is None:
            return None
        mask = causal_mask(L, S, device).expand(B, L, S) if attn_mask is None else attn_mask.expand(B, L, S)
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, :]
        # A left-padding query sees no key at all: its softmax would be NaN, and a NaN value
        # leaks into real tokens through 0 · NaN. Let such a row see itself; its output is unused.
        empty_rows = ~mask.any(dim=-1, keepdim=True)
        mask = mask | (empty_rows & own_position(L, S, device))
        return mask[:, None]

    # -- forward --------------------------------------------------------------------------
    def forward(self, input_ids=None, labels=None, *, inputs_embeds=None, attention_mask=None,
                attn_mask=None, position_ids=None, kv_cache=None):
        """Returns (logits (B, L, V), loss or None). See the module docstring for the shapes."""
        c = self.config
        x = self._check_inputs(input_ids, inputs_embeds)
        B, L, _ = x.shape
        past_len = self._check_cache(kv_cache)
        S = past_len + L
        self._check_forward_args(B, L, S, labels, attention_mask, attn_mask, position_ids)
        if position_ids is None:
            position_ids = self.default_positions(B, L, past_len, attention_mask, x.device)

        rope = self.rotary(position_ids)
        mask = self.attention_pattern(B, L, S, attention_mask, attn_mask, x.device)
        mask_kwargs = {"is_causal": True} if mask is None else {"attn_mask": mask}
        for i, block in enumerate(self.blocks):
            x = block(x, rope=rope, kv_cache=None if kv_cache is None else kv_cache[i], **mask_kwargs)
        logits = self.lm_head(self.norm(x))

        loss = None
        if labels is not None:   # position t predicts token t+1
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, c.vocab_size).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids=None, max_new_tokens=20, *, inputs_embeds=None, attention_mask=None,
                 attn_mask=None, position_ids=None, temperature=0.0, top_k=None, eos_id=None,
                 use_cache=True, generator=None):
        """Continue each prompt by up to max_new_tokens tokens; returns the new ids (B, T_new).

        Prompts are left-padded (attention_mask (B, L), True = real). attn_mask (B, L, L) and
        position_ids describe the prompt only; new tokens attend causally to every real token
        and continue the positions from the prompt's largest one + 1 (in all three M-RoPE streams).
        Rows that emitted eos_id keep emitting it; generation stops once every row has.
        """
        c = self.config
        prompt = self._check_inputs(input_ids, inputs_embeds)
        B, L, _ = prompt.shape
        device = prompt.device
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        if eos_id is not None and not 0 <= eos_id < c.vocab_size:
            raise ValueError(f"eos_id must lie in [0, vocab_size={c.vocab_size}), got {eos_id}")
        if L + max_new_tokens > c.max_seq_len:
            raise ValueError(f"prompt length {L} + max_new_tokens {max_new_tokens} exceeds "
                             f"max_seq_len={c.max_seq_len}")
        if position_ids is None:      # computed here, as the new tokens continue from them
            if attention_mask is not None and attention_mask.shape != (B, L):
                raise ValueError(f"attention_mask must have shape ({B}, {L}), got {tuple(attention_mask.shape)}")
            position_ids = self.default_positions(B, L, 0, attention_mask, device)
        cache = self.new_cache() if use_cache else None
        logits, _ = self(inputs_embeds=prompt, attention_mask=attention_mask, attn_mask=attn_mask,
                         position_ids=position_ids, kv_cache=cache)
        next_position = position_ids.reshape(-1, B, L).amax(dim=(0, 2)) + 1          # (B,)

        def step_positions(t):       # positions of the new tokens t = 0, 1, ...: (B, 1) or (3, B, 1)
            new = (next_position + t)[:, None]
            return new.expand(3, B, 1) if c.rope == "mrope" else new

        finished = torch.zeros(B, dtype=torch.bool, device=device)
        new_tokens = []
        sequence, positions = prompt, position_ids
        for t in range(max_new_tokens):
            token = sample_next_token(logits[:, -1], temperature, top_k, generator)
            if eos_id is not None:
                token = token.masked_fill(finished, eos_id)
                finished = finished | (token == eos_id)
            new_tokens.append(token)
            if t == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
                break
            token_embeds = self.tok_emb(token)[:, None]                             # (B, 1, D)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, 1)], dim=1)
            if use_cache:            # one new query against the cached keys and values
                logits, _ = self(inputs_embeds=token_embeds, attention_mask=attention_mask,
                                 position_ids=step_positions(t), kv_cache=cache)
            else:                    # recompute the whole sequence from scratch
                sequence = torch.cat([sequence, token_embeds], dim=1)
                positions = torch.cat([positions, step_positions(t)], dim=-1)
                full_mask = None
                if attn_mask is not None:   # the prompt keeps its pattern; new rows are causal
                    S = sequence.shape[1]
                    full_mask = causal_mask(S, S, device).repeat(B, 1, 1)
                    full_mask[:, :L, :L] = attn_mask
                logits, _ = self(inputs_embeds=sequence, attention_mask=attention_mask,
                                 attn_mask=full_mask, position_ids=positions)
        return torch.stack(new_tokens, dim=1)
