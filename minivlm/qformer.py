"""The Q-Former: a fixed set of learned queries that read a frozen image encoder (BLIP-2).

BLIP-2 (Li et al. 2023, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
Encoders and Large Language Models", arXiv 2301.12597) puts a small BERT-style transformer
between a frozen ViT and a frozen LLM. Its input is Q learned query vectors, optionally
followed by T text tokens; its output is Q (+ T) vectors of width D:

    queries (1, Q, D), N(0, 0.02)  ─┐
    text ids (B, T) -> word + position embeddings ─┴─ concat -> LayerNorm (eps 1e-12)
    for layer i:
        x = LN(x + SelfAttn(x, mask))                     queries and text together, under `mask`
        q = LN(q + CrossAttn(q, image_features))          queries only, iff i % cross_attention_every == 0
        q = LN(q + FFN_query(q)),  t = LN(t + FFN_text(t))    separate feed-forward weights
    -> (B, Q + T, D)

Every sub-layer is post-LN (BERT's: add, then normalise), the FFN is Linear -> exact (erf)
GELU -> Linear, and the cross-attention's keys and values are projected from the image
features' own width. On queries alone this is what transformers' `Blip2QFormerModel` computes
on `query_embeds`. Who sees whom is set by the mask of the stage-1 objective (BLIP-2's
Figure 2), see `qformer_attention_mask`:

    "itc"  unimodal:       queries see queries, text sees text
    "itm"  bidirectional:  everyone sees everyone
    "itg"  multimodal causal: queries see queries; text sees all queries and earlier text

Padding keys (text_mask False) are never attended.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import integer, number, positive_ints, tensor

OBJECTIVES = ("itc", "itm", "itg")


@dataclass
class QFormerConfig:
    dim: int = 64                   # D, the Q-Former's width
    depth: int = 2
    heads: int = 4
    mlp_hidden: int = 256
    image_dim: int = 64             # width of the frozen image features the cross-attention reads
    num_queries: int = 8            # Q (BLIP-2: 32)
    cross_attention_every: int = 2  # BLIP-2: "inserted every other block"
    vocab_size: int = 0             # 0: no text side (queries only)
    max_text_len: int = 64
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        positive_ints(self, "dim", "depth", "heads", "mlp_hidden", "image_dim", "num_queries", "cross_attention_every",
                      "max_text_len")
        integer("vocab_size", self.vocab_size, low=0)
        number("layer_norm_eps", self.layer_norm_eps, above=0)
        if self.num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {self.num_queries}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.cross_attention_every < 1:
            raise ValueError(f"cross_attention_every must be >= 1, got {self.cross_attention_every}")


def qformer_attention_mask(num_queries, text_mask, objective):
    """(B, Q+T, Q+T) bool, True where a row (query or text token) may attend a column.

    text_mask: (B, T) bool, True at real text tokens and False at padding.
    """
    if not isinstance(num_queries, int) or num_queries < 1:
        raise ValueError(f"num_queries must be an int >= 1, got {num_queries!r}")
    if not isinstance(text_mask, torch.Tensor) or text_mask.dim() != 2 or text_mask.dtype != torch.bool:
        got = tuple(text_mask.shape) if isinstance(text_mask, torch.Tensor) else type(text_mask).__name__
        raise ValueError(f"text_mask must be a (B, T) bool tensor, got {got}"
                         + (f" of {text_mask.dtype}" if isinstance(text_mask, torch.Tensor) else ""))
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    B, T = text_mask.shape
    Q, device = num_queries, text_mask.device
    is_query = torch.arange(Q + T, device=device) < Q                     # (Q+T,)
    row_query, col_query = is_query[:, None], is_query[None, :]
    if objective == "itc":
        allowed = row_query == col_query                                  # each side sees only itself
    elif objective == "itm":
        allowed = torch.ones(Q + T, Q + T, dtype=torch.bool, device=device)
    else:  # itg: queries see queries; text sees every query and the text up to itself
        causal = torch.ones(Q + T, Q + T, dtype=torch.bool, device=device).tril()
        allowed = (row_query & col_query) | (~row_query & (col_query | causal))
    keys = torch.cat([torch.ones(B, Q, dtype=torch.bool, device=device), text_mask], dim=1)   # (B, Q+T)
    return allowed[None] & keys[:, None, :]


class PostNormAttention(nn.Module):
    """BERT's attention sub-layer: x = LayerNorm(x + W_o · MultiHead(x W_q, kv W_k, kv W_v))."""

    def __init__(self, dim, heads, eps, kv_dim=None):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim or dim, dim)
        self.value = nn.Linear(kv_dim or dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, kv, mask=None):
        B, L, D = x.shape
        S = kv.shape[1]
        q = self.query(x).reshape(B, L, self.heads, -1).transpose(1, 2)      # (B, H, L, d)
        k = self.key(kv).reshape(B, S, self.heads, -1).transpose(1, 2)       # (B, H, S, d)
        v = self.value(kv).reshape(B, S, self.heads, -1).transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None]                 # (B, 1, L, S)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.norm(x + self.out(context.transpose(1, 2).reshape(B, L, D)))


class PostNormFFN(nn.Module):
    """BERT's feed-forward sub-layer: x = LayerNorm(x + W_2 · GELU(W_1 x)), exact GELU."""

    def __init__(self, dim, hidden, eps):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(x + self.fc2(F.gelu(self.fc1(x))))


class QFormerLayer(nn.Module):
    """Self-attention over queries and text; cross-attention to the image (queries only, if any); two FFNs."""

    def __init__(self, config, has_cross_attention):
        super().__init__()
        c = config
        self.self_attn = PostNormAttention(c.dim, c.heads, c.layer_norm_eps)
        self.cross_attn = (PostNormAttention(c.dim, c.heads, c.layer_norm_eps, kv_dim=c.image_dim)
                           if has_cross_attention else None)
        self.query_ffn = PostNormFFN(c.dim, c.mlp_hidden, c.layer_norm_eps)
        self.text_ffn = PostNormFFN(c.dim, c.mlp_hidden, c.layer_norm_eps)

    def forward(self, x, num_queries, image_features, mask=None):
        x = self.self_attn(x, x, mask)
        queries, text = x[:, :num_queries], x[:, num_queries:]
        if self.cross_attn is not None:
            queries = self.cross_attn(queries, image_features)             # every image token is visible
        queries = self.query_ffn(queries)
        if text.shape[1] == 0:
            return queries
        return torch.cat([queries, self.text_ffn(text)], dim=1)


class QFormer(nn.Module):
    """(B, N, image_dim) frozen image features [+ (B, T) text ids] -> (B, Q [+ T], D)."""

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.query_tokens = nn.Parameter(torch.randn(1, c.num_queries, c.dim) * 0.02)
        if c.vocab_size:
            self.token_embedding = nn.Embedding(c.vocab_size, c.dim)
            self.position_embedding = nn.Embedding(c.max_text_len, c.dim)
        self.embed_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(QFormerLayer(c, has_cross_attention=i % c.cross_attention_every == 0)
                                    for i in range(c.depth))

    def forward(self, image_features, text_ids=None, attention_mask=None, query_embeds=None):
        """Queries (and text) after every layer: (B, Q + T, D).

        attention_mask: (B, Q+T, Q+T) bool (see qformer_attention_mask); None lets everyone see everyone.
        query_embeds: (B, Q, D) to use instead of the learned queries.
        """
        tensor("image_features", image_features, dims=3, kind="float", shape="(B, N, image_dim)")
        c = self.config
        if image_features.dim() != 3 or image_features.shape[-1] != c.image_dim:
            raise ValueError(f"image_features must be (B, N, {c.image_dim}), got {tuple(image_features.shape)}")
        B = image_features.shape[0]
        queries = self.query_tokens.expand(B, -1, -1) if query_embeds is None else query_embeds
        if queries.shape != (B, c.num_queries, c.dim):
            raise ValueError(f"query_embeds must be ({B}, {c.num_queries}, {c.dim}), got {tuple(queries.shape)}")
        x = queries
        if text_ids is not None:
            x = torch.cat([queries, self.embed_text(text_ids, B)], dim=1)
        x = self.embed_norm(x)
        L = x.shape[1]
        if attention_mask is not None and attention_mask.shape != (B, L, L):
            raise ValueError(f"attention_mask must be ({B}, {L}, {L}), got {tuple(attention_mask.shape)}")
        for layer in self.layers:
            x = layer(x, c.num_queries, image_features, attention_mask)
        return x

    def encode_text(self, text_ids, text_mask):
        """The text alone (B, T) -> (B, T, D): BERT's text-only pass, no queries, no image.

        Under the "itc" mask the text never sees a query, so this equals the text half of
        forward(..., qformer_attention_mask(Q, text_mask, "itc")): retrieval encodes captions once.
        """
        if text_mask.shape != text_ids.shape or text_mask.dtype != torch.bool:
            raise ValueError(f"text_mask must be a bool tensor shaped like text_ids {tuple(text_ids.shape)}, "
                             f"got {tuple(text_mask.shape)} of {text_mask.dtype}")
        x = self.embed_norm(self.embed_text(text_ids, text_ids.shape[0]))
        keys = text_mask[:, None, :].expand(-1, text_ids.shape[1], -1)          # (B, T, T)
        for layer in self.layers:
            x = layer.text_ffn(layer.self_attn(x, x, keys))
        return x

    def embed_text(self, text_ids, batch):
        """(B, T) ids -> (B, T, D) word + position embeddings (normalised with the queries in forward)."""
        c = self.config
        if not c.vocab_size:
            raise ValueError("this Q-Former has no text side: build it with QFormerConfig(vocab_size=...)")
        if text_ids.dim() != 2 or text_ids.shape[0] != batch or text_ids.shape[1] > c.max_text_len:
            raise ValueError(f"text_ids must be ({batch}, T) with T <= {c.max_text_len}, got {tuple(text_ids.shape)}")
        positions = torch.arange(text_ids.shape[1], device=text_ids.device)
        return self.token_embedding(text_ids) + self.position_embedding(positions)
