"""Generating text with a decoder LM: greedy or sampled, with a KV cache (chapter 04).

    new_ids = model.generate(input_ids, max_new_tokens=20, temperature=0.8, top_k=10)   # (B, T_new)

Each step feeds only the newest token: its query attends to the keys and values that every
earlier token left in the cache (one dict per layer), so a step costs O(L) instead of
re-running the whole O(L²) prefix; `use_cache=False` recomputes everything, the reference
the cache is tested against. Sampling draws from softmax(logits / temperature), restricted
to the top_k most likely tokens (Fan et al. 2018, arXiv 1805.04833); temperature 0 is argmax.
"""

import torch

from .attention import causal_mask
from .checks import tensor


def sample_next_token(logits, temperature=0.0, top_k=None, generator=None):
    """Pick one token per row from logits (B, V): argmax at temperature 0, else sample from
    softmax(logits / temperature) restricted to the top_k most likely tokens. Returns (B,)."""
    tensor("logits", logits, dims=2, kind="float", shape="(B, V)")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_generate_args(model, B, L, max_new_tokens, temperature, top_k, eos_id, attention_mask):
    c = model.config
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if eos_id is not None and not 0 <= eos_id < c.vocab_size:
        raise ValueError(f"eos_id must lie in [0, vocab_size={c.vocab_size}), got {eos_id}")
    if L + max_new_tokens > c.max_seq_len:
        raise ValueError(f"prompt length {L} + max_new_tokens {max_new_tokens} exceeds max_seq_len={c.max_seq_len}")
    if attention_mask is not None and attention_mask.shape != (B, L):
        raise ValueError(f"attention_mask must have shape ({B}, {L}), got {tuple(attention_mask.shape)}")


@torch.no_grad()
def generate(model, input_ids=None, max_new_tokens=20, *, inputs_embeds=None, attention_mask=None,
             attn_mask=None, position_ids=None, temperature=0.0, top_k=None, eos_id=None,
             use_cache=True, generator=None):
    """Continue each prompt by up to max_new_tokens tokens; returns the new ids (B, T_new).

    `model` is a lm.LanguageModel (this is its `generate` method). Prompts are left-padded
    (attention_mask (B, L), True = real). attn_mask (B, L, L) and position_ids describe the
    prompt only; new tokens attend causally to every real token and continue the positions
    from the prompt's largest one + 1 (in all three M-RoPE streams). Rows that emitted eos_id
    keep emitting it; generation stops once every row has.
    """
    prompt = model.embed(input_ids) if inputs_embeds is None else inputs_embeds
    B, L, _ = prompt.shape
    device = prompt.device
    check_generate_args(model, B, L, max_new_tokens, temperature, top_k, eos_id, attention_mask)
    if position_ids is None:      # computed here, as the new tokens continue from them
        position_ids = model.default_positions(B, L, 0, attention_mask, device)
    mrope = model.config.rope == "mrope"
    cache = model.new_cache() if use_cache else None
    logits = model(inputs_embeds=prompt, attention_mask=attention_mask, attn_mask=attn_mask,
                   position_ids=position_ids, kv_cache=cache).logits
    next_position = position_ids.reshape(-1, B, L).amax(dim=(0, 2)) + 1          # (B,)

    def step_positions(t):       # positions of the new tokens t = 0, 1, ...: (B, 1) or (3, B, 1)
        new = (next_position + t)[:, None]
        return new.expand(3, B, 1) if mrope else new

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
        token_embeds = model.tok_emb(token)[:, None]                             # (B, 1, D)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, 1)], dim=1)
        if use_cache:            # one new query against the cached keys and values
            logits = model(inputs_embeds=token_embeds, attention_mask=attention_mask,
                           position_ids=step_positions(t), kv_cache=cache).logits
        else:                    # recompute the whole sequence from scratch
            sequence = torch.cat([sequence, token_embeds], dim=1)
            positions = torch.cat([positions, step_positions(t)], dim=-1)
            full_mask = None
            if attn_mask is not None:   # the prompt keeps its pattern; new rows are causal
                S = sequence.shape[1]
                full_mask = causal_mask(S, S, device).repeat(B, 1, 1)
                full_mask[:, :L, :L] = attn_mask
            logits = model(inputs_embeds=sequence, attention_mask=attention_mask,
                           attn_mask=full_mask, position_ids=positions).logits
    return torch.stack(new_tokens, dim=1)
