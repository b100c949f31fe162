import pytest
import torch
import torch.nn.functional as F

from minivlm.generation import sample_next_token
from minivlm.lm import LanguageModel, LMConfig, own_position

V = 30


def make_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    config = LMConfig(vocab_size=V, dim=32, depth=2, heads=4, max_seq_len=64, **overrides)
    return LanguageModel(config).eval()


def random_ids(B, L, seed=1):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


def left_padding(lengths, L):
    """(B, L) bool mask, True on the last `length` columns of each row."""
    return torch.stack([torch.arange(L) >= L - n for n in lengths])


# --- the pieces -----------------------------------------------------------------------

def test_config_defaults_and_bad_values():
    config = LMConfig(vocab_size=10, dim=64, heads=4)
    assert config.mlp_hidden % 8 == 0 and abs(config.mlp_hidden - 8 * 64 / 3) < 8
    assert LMConfig(vocab_size=10, dim=128, heads=1, rope="mrope").mrope_section == (16, 24, 24)  # Qwen2-VL's
    with pytest.raises(ValueError, match="divisible"):
        LMConfig(vocab_size=10, dim=30, heads=4)
    with pytest.raises(ValueError, match="rope"):
        LMConfig(vocab_size=10, rope="2d")
    with pytest.raises(ValueError, match="mrope_section"):
        LMConfig(vocab_size=10, dim=64, heads=4, rope="mrope", mrope_section=(2, 2, 2))


def test_parameter_count_and_tied_head():
    model = make_lm()
    # embedding 30x32; per layer: q, k, v, o 4x32x32, two RMSNorm 2x32, SwiGLU 3x32x88; final norm 32
    assert model.config.mlp_hidden == 88
    assert sum(p.numel() for p in model.parameters()) == V * 32 + 2 * (4 * 32 * 32 + 2 * 32 + 3 * 32 * 88) + 32
    assert model.lm_head.weight is model.tok_emb.weight
    untied = make_lm(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in untied.parameters()) - V * 32


def test_own_position_is_the_shifted_diagonal():
    assert own_position(2, 4).tolist() == [[False, False, True, False], [False, False, False, True]]


# --- forward: shapes, loss, causality, masks ------------------------------------------

def test_forward_shapes_and_loss_matches_hand_computed_cross_entropy():
    model = make_lm()
    ids = random_ids(2, 7)
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, 5] = -100
    logits, loss = model(ids, labels=labels)
    assert logits.shape == (2, 7, V)
    terms = [-(logits[b, t].log_softmax(-1)[labels[b, t + 1]]) for b in range(2) for t in range(6)
             if labels[b, t + 1] != -100]
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    assert model(ids).loss is None


def test_causality_future_tokens_never_change_earlier_logits():
    model = make_lm()
    ids = random_ids(1, 10)
    logits, _ = model(ids)
    for t in (0, 4, 9):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % V
        new_logits, _ = model(changed)
        torch.testing.assert_close(new_logits[:, :t], logits[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(new_logits[:, t], logits[:, t])


def test_bidirectional_attn_mask_overrides_the_causal_pattern():
    model = make_lm()
    ids = random_ids(1, 6)
    prefix = torch.ones(6, 6, dtype=torch.bool).tril()
    prefix[:3, :3] = True                       # the first 3 tokens see each other
    logits, _ = model(ids, attn_mask=prefix[None])
    changed = ids.clone()
    changed[0, 2] = (changed[0, 2] + 1) % V
    new_logits, _ = model(changed, attn_mask=prefix[None])
    assert not torch.allclose(new_logits[:, 0], logits[:, 0])      # token 0 now sees token 2
    causal = torch.ones(1, 6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(model(ids, attn_mask=causal).logits, model(ids).logits)


def test_left_padding_gives_the_unpadded_logits():
    model = make_lm()
    ids = random_ids(2, 8)
    mask = left_padding([5, 8], 8)
    padded_logits, _ = model(ids, attention_mask=mask)
    alone, _ = model(ids[:1, 3:])
    assert torch.isfinite(padded_logits).all()
    torch.testing.assert_close(padded_logits[:1, 3:], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded_logits[1:], model(ids[1:]).logits, rtol=1e-5, atol=1e-5)


def test_kv_cache_chunks_give_the_full_forward_logits():
    model = make_lm()
    ids = random_ids(2, 12)
    full, _ = model(ids)
    cache = model.new_cache()
    pieces = [model(ids[:, a:b], kv_cache=cache).logits for a, b in ((0, 5), (5, 6), (6, 12))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache[0]["k"].shape == (2, 4, 12, 8)


def test_mrope_with_equal_streams_is_1d_rope():
    one_d, mrope = make_lm(), make_lm(rope="mrope", rope_theta=10000.0)
    ids = random_ids(2, 6)
    positions = torch.arange(6).expand(2, 6)
    torch.testing.assert_close(mrope(ids, position_ids=positions.expand(3, 2, 6)).logits, one_d(ids).logits)
    torch.testing.assert_close(mrope(ids).logits, one_d(ids).logits)


# --- generation -----------------------------------------------------------------------

def test_cached_generation_equals_full_recompute_logits_and_tokens():
    model = make_lm()
    ids = random_ids(3, 6)
    tokens = model.generate(ids, max_new_tokens=10)
    slow = model.generate(ids, max_new_tokens=10, use_cache=False)
    assert tokens.shape == (3, 10) and torch.equal(tokens, slow)
    # the logits of each greedy step equal one forward over the whole sequence
    full, _ = model(torch.cat([ids, tokens], dim=1))
    torch.testing.assert_close(full[:, 5:-1].argmax(-1), tokens)
    cache = model.new_cache()
    step_logits = [model(ids, kv_cache=cache).logits[:, -1]]
    for t in range(9):
        step_logits.append(model(tokens[:, t:t + 1], kv_cache=cache).logits[:, -1])
    torch.testing.assert_close(torch.stack(step_logits, dim=1), full[:, 5:-1], rtol=1e-5, atol=1e-5)


def test_cached_generation_with_left_padding_equals_recompute_and_single_prompts():
    model = make_lm()
    ids = random_ids(3, 7)
    mask = left_padding([3, 7, 5], 7)
    tokens = model.generate(ids, 8, attention_mask=mask)
    assert torch.equal(tokens, model.generate(ids, 8, attention_mask=mask, use_cache=False))
    for b, n in enumerate([3, 7, 5]):
        assert torch.equal(tokens[b:b + 1], model.generate(ids[b:b + 1, 7 - n:], 8))


def test_generation_with_prefix_mask_and_mrope_positions():
    model = make_lm(rope="mrope")
    ids = random_ids(2, 6)
    prefix = torch.ones(2, 6, 6, dtype=torch.bool)
    positions = torch.stack([torch.zeros(2, 6, dtype=torch.long), torch.arange(6).expand(2, 6) % 3,
                             torch.arange(6).expand(2, 6) // 3])
    kwargs = dict(attn_mask=prefix, position_ids=positions)
    tokens = model.generate(ids, 6, **kwargs)
    assert torch.equal(tokens, model.generate(ids, 6, use_cache=False, **kwargs))
    # the first new token continues every stream from max + 1 = 3 (rope_deltas semantics)
    full_positions = torch.cat([positions, torch.arange(3, 9).expand(3, 2, 6)], dim=-1)
    full_mask = torch.ones(12, 12, dtype=torch.bool).tril().repeat(2, 1, 1)
    full_mask[:, :6, :6] = True
    full, _ = model(torch.cat([ids, tokens], 1), attn_mask=full_mask, position_ids=full_positions)
    assert torch.equal(full[:, 5:-1].argmax(-1), tokens)


def test_inputs_embeds_generation_matches_input_ids():
    model = make_lm()
    ids = random_ids(2, 5)
    assert torch.equal(model.generate(inputs_embeds=model.embed(ids), max_new_tokens=5),
                       model.generate(ids, 5))
    assert torch.equal(model.generate(inputs_embeds=model.embed(ids), max_new_tokens=5, use_cache=False),
                       model.generate(ids, 5))


def test_eos_stops_and_pads_finished_rows():
    model = make_lm()
    with torch.no_grad():   # large random weights: an untrained model that does not repeat one token
        for p in model.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    ids = random_ids(3, 4)
    free = model.generate(ids, 12)
    assert free[0, 0] == 10 and (free[1:] != 10).all() and (free[:, :3] == 21).any(dim=1).all()
    # one row finishes at once: it is padded with eos while the others run to the end
    tokens = model.generate(ids, 12, eos_id=10)
    assert tokens.shape == (3, 12) and (tokens[0] == 10).all() and torch.equal(tokens[1:], free[1:])
    # every row has produced 21 by step 2: generation stops there
    tokens = model.generate(ids, 12, eos_id=21)
    assert torch.equal(tokens, torch.tensor([[10, 23, 21], [21, 21, 21], [12, 13, 21]]))
    assert torch.equal(tokens, model.generate(ids, 12, eos_id=21, use_cache=False))


def test_sampling_greedy_topk_and_seeded():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]]).repeat(500, 1)
    assert (sample_next_token(logits) == 1).all()
    drawn = sample_next_token(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 3}
    hot = sample_next_token(logits, temperature=100.0, generator=torch.Generator().manual_seed(0))
    assert set(hot.tolist()) == {0, 1, 2, 3}
    model = make_lm()
    ids = random_ids(2, 4)
    runs = [model.generate(ids, 8, temperature=1.0, top_k=5, use_cache=cached,
                           generator=torch.Generator().manual_seed(3)) for cached in (True, False, True)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda m: m(torch.randn(2, 5)), "input_ids"),
    (lambda m: m(torch.full((1, 3), V)), "vocab_size"),
    (lambda m: m(), "exactly one"),
    (lambda m: m(random_ids(1, 3), inputs_embeds=torch.randn(1, 3, 32)), "exactly one"),
    (lambda m: m(inputs_embeds=torch.randn(1, 3, 16)), "inputs_embeds"),
    (lambda m: m(random_ids(2, 3), labels=random_ids(2, 4)), "labels"),
    (lambda m: m(random_ids(2, 3), attention_mask=torch.ones(2, 4)), "attention_mask"),
    (lambda m: m(random_ids(2, 3), attn_mask=torch.ones(2, 3, 3)), "attn_mask"),
    (lambda m: m(random_ids(2, 3), attn_mask=torch.ones(2, 3, 4, dtype=torch.bool)), "attn_mask"),
    (lambda m: m(random_ids(2, 3), attn_mask=torch.ones(3, 3, 3, dtype=torch.bool)), "attn_mask"),
    (lambda m: m(random_ids(2, 3), position_ids=torch.zeros(3, 2, 3, dtype=torch.long)), "position_ids"),
    (lambda m: m(random_ids(1, 65)), "max_seq_len"),
    (lambda m: m(random_ids(1, 3), kv_cache=[{}]), "kv_cache"),
    (lambda m: m.generate(random_ids(1, 3), 0), "max_new_tokens"),
    (lambda m: m.generate(random_ids(1, 3), 5, temperature=-1.0), "temperature"),
    (lambda m: m.generate(random_ids(1, 3), 5, top_k=0), "top_k"),
    (lambda m: m.generate(random_ids(1, 3), 5, eos_id=V), "eos_id"),
    (lambda m: m.generate(random_ids(1, 60), 10), "max_seq_len"),
    (lambda m: m.generate(random_ids(2, 3), 5, attention_mask=torch.ones(2, 4)), "attention_mask"),
])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_lm())
