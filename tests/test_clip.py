import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.contrastive import contrastive_loss
from minivlm.data import Tokenizer, WorldConfig, caption, render, sample_scenes
from minivlm.models.clip import (CLIP, CLIPConfig, TextEncoder, retrieval_recall, zero_shot_classify,
                                 zero_shot_weights)
from minivlm.train import TrainConfig, fit
from minivlm.vit import ViTConfig

TOKENIZER = Tokenizer()


def tiny_clip(loss="clip", seed=0, **text):
    torch.manual_seed(seed)
    vision = ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2)
    return CLIP(CLIPConfig(vision=vision, vocab_size=len(TOKENIZER), text_dim=16, text_depth=1, text_heads=2,
                           embed_dim=8, loss=loss, **text))


def shapes_batch(step, batch_size=8):
    """A global batch of (images, input_ids, attention_mask), a pure function of `step`."""
    scenes = sample_scenes(batch_size, WorldConfig(max_objects=2), generator=torch.Generator().manual_seed(step))
    ids, mask = TOKENIZER.batch_encode([caption(scenes, i) for i in range(batch_size)], add_eos=True)
    return render(scenes, 16), ids, mask


def test_forward_shapes_unit_features_and_loss_types():
    images, ids, mask = shapes_batch(0)
    image_features, text_features, scale, bias = tiny_clip("clip")(images, ids, mask)
    assert image_features.shape == text_features.shape == (8, 8)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5) and bias is None
    out = tiny_clip("siglip")(images, ids, mask)
    assert out.logit_scale.item() == pytest.approx(10.0) and out.logit_bias.item() == -10.0
    # the model's outputs call the right loss: SigLIP's, written out here over all 8 x 8 pairs
    logits = out.logit_scale * out.image_features @ out.text_features.T + out.logit_bias
    labels = 2 * torch.eye(8) - 1
    expected = -F.logsigmoid(labels * logits).sum() / 8
    torch.testing.assert_close(contrastive_loss(*out), expected)


def test_temperature_is_clamped_at_100():
    model = tiny_clip()
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(1000.0))
    scale = model.logit_scale()
    assert scale.item() == pytest.approx(100.0)
    scale.backward()
    assert model.log_logit_scale.grad.item() == 0.0      # nothing pushes it further up
    with pytest.raises(ValueError, match="init_logit_scale"):
        CLIPConfig(init_logit_scale=200.0)


def test_padding_does_not_change_text_features():
    """Extra <pad> tokens at the end leave every pooling and masking mode unchanged."""
    ids, mask = TOKENIZER.batch_encode(["a small red circle at the top left .", "a blue square ."], add_eos=True)
    padded_ids = F.pad(ids, (0, 5), value=TOKENIZER.pad_id)
    padded_mask = F.pad(mask, (0, 5), value=False)
    for pool, causal in (("eos", True), ("mean", False), ("mean", True)):
        model = tiny_clip(text_pool=pool, text_causal=causal).eval()
        short, long = model.encode_text(ids, mask), model.encode_text(padded_ids, padded_mask)
        assert torch.allclose(short, long, atol=1e-5), (pool, causal)
        alone = model.encode_text(*TOKENIZER.batch_encode(["a blue square ."], add_eos=True))
        assert torch.allclose(alone[0], short[1], atol=1e-5), (pool, causal)


def test_causal_eos_pooling_ignores_tokens_after_eos():
    model = tiny_clip().eval()
    ids, mask = TOKENIZER.batch_encode(["a red circle ."], add_eos=True)
    more_ids = torch.cat([ids, torch.tensor([[TOKENIZER.encode("blue")[0]]])], 1)
    assert torch.allclose(model.encode_text(ids, mask), model.encode_text(more_ids), atol=1e-5)


def test_bad_inputs():
    model = tiny_clip()
    images, ids, mask = shapes_batch(0)
    with pytest.raises(ValueError, match="<eos>"):
        model.encode_text(*TOKENIZER.batch_encode(["a red circle ."]))
    with pytest.raises(ValueError, match=r"input_ids must be a \(B, L\) long tensor"):
        model.encode_text(ids.float(), mask)
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, L\)"):
        model.encode_text(ids, mask[:, :-1])
    with pytest.raises(ValueError, match="max_text_len"):
        model.encode_text(torch.full((1, 100), TOKENIZER.eos_id))
    with pytest.raises(ValueError, match="same number of pairs"):
        model(images[:4], ids, mask)
    with pytest.raises(ValueError, match="loss must be"):
        CLIPConfig(loss="infonce")
    assert isinstance(model.text, TextEncoder)


def test_retrieval_recall_counts_identical_captions_as_hits():
    features = torch.eye(4)
    assert retrieval_recall(features, features) == {"i2t@1": 1.0, "i2t@5": 1.0, "t2i@1": 1.0, "t2i@5": 1.0}
    texts = features[[1, 0, 2, 3]]                   # pairs 0 and 1 swapped
    assert retrieval_recall(features, texts, ks=(1,)) == {"i2t@1": 0.5, "t2i@1": 0.5}
    same = torch.eye(4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True                    # ... but captions 0 and 1 are the same text
    assert retrieval_recall(features, texts, ks=(1,), same_text=same) == {"i2t@1": 1.0, "t2i@1": 1.0}


def test_zero_shot_classifier_averages_prompts():
    model = tiny_clip().eval()
    weights = zero_shot_weights(model, TOKENIZER, ["red", "blue"], ["a {} shape .", "a {} circle ."])
    assert weights.shape == (2, 8)
    assert torch.allclose(weights.norm(dim=-1), torch.ones(2), atol=1e-5)
    prompts = model.encode_text(*TOKENIZER.batch_encode(["a red shape .", "a red circle ."], add_eos=True))
    assert torch.allclose(weights[0], F.normalize(prompts.mean(0), dim=0), atol=1e-5)
    images = shapes_batch(0)[0]
    predictions = zero_shot_classify(model, images, weights)
    expected = (model.encode_image(images) @ weights.T).argmax(1)
    assert predictions.shape == (8,) and torch.equal(predictions, expected)


def test_a_few_steps_of_training_align_the_towers():
    model = tiny_clip()
    batch = shapes_batch(0, batch_size=16)
    history = fit(model, lambda step: batch, lambda m, b: contrastive_loss(*m(*b)),
                  TrainConfig(steps=40, lr=1e-2, warmup_steps=5, progress=False, device="cpu"))
    assert history["loss"][-1] < 0.5 * history["loss"][0]
