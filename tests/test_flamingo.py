"""Flamingo and the Idefics2 variant: gate-0 identity, frozen weights, the merge, the cache, bad input."""

import pytest
import torch

from minivlm.data import Tokenizer, WorldConfig, encode_interleaved, few_shot_episodes, interleaved_documents, render, sample_scenes
from minivlm.lm import LanguageModel
from minivlm.models.flamingo import Flamingo, FlamingoConfig, Idefics2
from minivlm.train import TrainConfig, fit

TOKENIZER = Tokenizer()
CONFIG = FlamingoConfig(vision_dim=32, vision_depth=1, text_dim=32, text_depth=2, num_latents=3, perceiver_heads=2,
                        xattn_heads=2, perceiver_dim_head=8, xattn_dim_head=8)
SCENES = sample_scenes(40, WorldConfig(max_objects=1), generator=torch.Generator().manual_seed(0))
IMAGES = render(SCENES, 32)


def batch(shots=2, n=4, **kwargs):
    return encode_interleaved(TOKENIZER, few_shot_episodes(SCENES, n, shots, seed=shots), **kwargs)


def model(cls=Flamingo, open_gates=False, **changes):
    torch.manual_seed(0)
    m = cls(FlamingoConfig(**{**CONFIG.__dict__, **changes}))
    if open_gates:
        with torch.no_grad():
            for block in m.xattn:
                block.attn_gate.fill_(0.8)
                block.ff_gate.fill_(0.5)
    return m.eval()


def call(m, b):
    return m(IMAGES, b["input_ids"], b["attention_mask"], b["labels"], b["image_index"])


def test_gate_zero_logits_equal_the_frozen_lm_exactly():
    m, b = model(), batch()
    assert torch.equal(call(m, b).logits, m.lm(b["input_ids"], attention_mask=b["attention_mask"]).logits)
    assert not torch.equal(call(model(open_gates=True), b).logits, call(m, b).logits)


def test_gated_blocks_sit_before_every_kth_layer():
    assert model(text_depth=4, cross_attention_every=2).xattn_layers == [0, 2]
    assert len(model(text_depth=3).xattn) == 3
    with pytest.raises(ValueError, match="cross_attention_every"):
        FlamingoConfig(cross_attention_every=0)


def test_only_connector_trains_and_frozen_weights_stay_bit_identical():
    for cls in (Flamingo, Idefics2):
        m = model(cls).train()
        frozen = {k: v.clone() for k, v in {**m.lm.state_dict(), **{f"v.{k}": v for k, v in m.vision.state_dict().items()}}.items()}
        trainable = {n for n, p in m.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith(("perceiver.", "xattn.", "projector.")) for n in trainable)
        b = batch(n=8)
        before = m.gates().detach().clone() if cls is Flamingo else None
        fit(m, lambda step: (IMAGES, b["input_ids"], b["attention_mask"], b["labels"], b["image_index"]),
            lambda m, x: m(*x).loss, TrainConfig(steps=3, lr=1e-2, warmup_steps=1, progress=False))
        after = {**m.lm.state_dict(), **{f"v.{k}": v for k, v in m.vision.state_dict().items()}}
        assert all(torch.equal(frozen[k], after[k]) for k in frozen)
        if cls is Flamingo:
            assert not torch.equal(m.gates(), before)


def test_immediate_media_token_reads_only_its_own_image():
    m, b = model(open_gates=True), batch(shots=1, n=1)
    out = call(m, b).logits
    changed = IMAGES.clone()
    changed[b["image_index"][0, 1]] = 1 - changed[b["image_index"][0, 1]]       # the query's image
    moved = m(changed, b["input_ids"], b["attention_mask"], None, b["image_index"]).logits
    second_image_at = int((b["input_ids"][0] == TOKENIZER.image_id).nonzero()[1, 0])
    torch.testing.assert_close(moved[:, :second_image_at], out[:, :second_image_at])
    assert not torch.allclose(moved[:, second_image_at:], out[:, second_image_at:])


@pytest.mark.parametrize("cls", [Flamingo, Idefics2])
@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_with_cache_equals_without(cls, use_cache):
    m = model(cls, open_gates=cls is Flamingo)
    p = batch(shots=2, n=4, with_answers=False, padding_side="left")
    args = (IMAGES, p["input_ids"], p["attention_mask"], p["image_index"])
    new = m.generate(*args, max_new_tokens=5, use_cache=use_cache)
    # the reference: greedy decoding by re-running the full forward pass each step
    ids, mask = p["input_ids"], p["attention_mask"]
    for t in range(new.shape[1]):
        logits = m(IMAGES, ids, mask, None, p["image_index"]).logits[:, -1]
        token = logits.argmax(-1)
        assert torch.equal(token, new[:, t]) or (new[:, :t] == TOKENIZER.eos_id).any(1).all()
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(len(ids), 1)], 1)


def test_idefics2_merge_puts_L_latents_in_place_of_each_image():
    m, b = model(Idefics2), batch(shots=1, n=3)
    embeds, mask, labels = m.merge(IMAGES, b["input_ids"], b["attention_mask"], b["labels"], b["image_index"], True)
    visual = m.projector(m.encode_media(IMAGES, b["image_index"]))            # (B, T, L, D)
    for row in range(3):
        parts, expected_labels = [], []
        for k, token in enumerate(b["input_ids"][row].tolist()):
            if token == TOKENIZER.image_id:
                parts.append(visual[row, len([p for p in parts if p.shape[0] == 3])])
                expected_labels += [-100] * 3
            else:
                parts.append(m.lm.tok_emb.weight[token][None])
                expected_labels.append(int(b["labels"][row, k]))
        reference = torch.cat(parts)
        assert torch.equal(embeds[row, :len(reference)], reference)
        assert labels[row, :len(reference)].tolist() == expected_labels
    assert embeds.shape[1] == b["input_ids"].shape[1] + 2 * (3 - 1)
    out = call(m, b)
    assert out.logits.shape[:2] == out.labels.shape


def test_idefics2_pads_rows_with_fewer_images_at_the_end():
    m = model(Idefics2)
    items = few_shot_episodes(SCENES, 1, 2, seed=0) + few_shot_episodes(SCENES, 1, 0, seed=0)
    b = encode_interleaved(TOKENIZER, items)
    _, mask, labels = m.merge(IMAGES, b["input_ids"], b["attention_mask"], b["labels"], b["image_index"], True)
    assert mask[0].all() and mask[1].sum() == b["attention_mask"][1].sum() + 1 * (3 - 1)
    assert (labels[1][~mask[1]] == -100).all()


def test_documents_train_on_captions():
    docs = interleaved_documents(SCENES, 3)
    b = encode_interleaved(TOKENIZER, docs[:2])
    assert b["image_index"].shape == (2, 3) and torch.isfinite(call(model(open_gates=True), b).loss)


def test_loaders_check_shapes():
    m = model()
    with pytest.raises(ValueError, match="does not match"):
        m.load_language_model(LanguageModel(FlamingoConfig().lm_config()))


@pytest.mark.parametrize("change, message", [
    (dict(image_index=torch.zeros(4, 3)), "image_index must be a long tensor"),
    (dict(image_index=torch.zeros(4, 1, dtype=torch.long)), "row 0 of input_ids has 3 <image> tokens but image_index gives it 1"),
    (dict(image_index=torch.full((4, 3), 99)), r"image_index must lie in \[-1, 40\)"),
    (dict(image_index=torch.zeros(4, 6, dtype=torch.long)), "max_images=5"),
    (dict(images=torch.rand(40, 3, 16, 16)), r"images must be \(B, 3, 32, 32\)"),
])
@pytest.mark.parametrize("cls", [Flamingo, Idefics2])
def test_bad_input_is_named(cls, change, message):
    b = batch()
    args = {"images": IMAGES, "input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
            "labels": b["labels"], "image_index": b["image_index"], **change}
    with pytest.raises(ValueError, match=message):
        model(cls)(**args)


def test_generation_needs_left_padding():
    items = few_shot_episodes(SCENES, 1, 2, seed=0) + few_shot_episodes(SCENES, 1, 1, seed=0)
    p = encode_interleaved(TOKENIZER, items, with_answers=False)          # right-padded
    with pytest.raises(ValueError, match="left-padded"):
        model().generate(IMAGES, p["input_ids"], p["attention_mask"], p["image_index"])
