"""minivlm.interop: HF models converted into the course's modules compute the same numbers (fp32, 1e-4)."""

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="interop tests need transformers: pip install -e '.[interop]'")

from minivlm import interop  # noqa: E402
from minivlm.pixel_unshuffle import internvl_pixel_shuffle, pixel_unshuffle, tokens_to_grid  # noqa: E402

TOL = dict(atol=1e-4, rtol=1e-4)


def llama_config(**overrides):
    settings = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=100, max_position_embeddings=64, rms_norm_eps=1e-5,
                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    settings.update(overrides)
    return transformers.LlamaConfig(**settings)


def vision_settings(**overrides):
    settings = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8, layer_norm_eps=1e-6)
    settings.update(overrides)
    return settings


def llama(seed=0, **overrides):
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(llama_config(**overrides)).eval()


@pytest.mark.parametrize("tied, kv_heads", [(False, 2), (True, 4), (False, 1)])
def test_llama_logits_match(tied, kv_heads):
    hf = llama(tie_word_embeddings=tied, num_key_value_heads=kv_heads)
    ours = interop.language_model_from_llama(hf)
    assert ours.config.norm_eps == 1e-5 and (ours.config.kv_heads or 4) == kv_heads
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)


def test_llama_from_state_dict_and_rope_theta():
    hf = llama(rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    ours = interop.language_model_from_llama(hf.state_dict(), config=hf.config)
    assert ours.config.rope_theta == 500.0
    ids = torch.randint(0, 100, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)


def test_llama_greedy_generation_matches():
    hf = llama(seed=1)
    ours = interop.language_model_from_llama(hf)
    ids = torch.randint(3, 100, (1, 6))
    with torch.no_grad():
        hf.generation_config.eos_token_id = None
        theirs = hf.generate(ids, max_new_tokens=10, do_sample=False)[:, 6:]
        mine = ours.generate(ids, max_new_tokens=10)
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize("overrides, words", [
    (dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}), "rope scaling"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(head_dim=8), "head_dim"),
])
def test_llama_refuses_what_it_cannot_convert(overrides, words):
    with pytest.raises(ValueError, match=words):
        interop.lm_config_from_llama(llama_config(**overrides))


def test_state_dict_without_config_is_refused():
    with pytest.raises(ValueError, match="config="):
        interop.language_model_from_llama(llama().state_dict())


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu"])
def test_siglip_tokens_match(act):
    torch.manual_seed(0)
    hf = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision_settings(hidden_act=act))).eval()
    ours = interop.vision_tower_from_siglip(hf)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(images).tokens, hf(pixel_values=images).last_hidden_state, **TOL)


def test_siglip_refuses_an_unknown_activation():
    with pytest.raises(ValueError, match="hidden_act"):
        interop.vit_config_from_siglip(transformers.SiglipVisionConfig(**vision_settings(hidden_act="relu")))


def idefics3(seed=0):
    torch.manual_seed(seed)
    config = transformers.Idefics3Config(
        vision_config=vision_settings(), scale_factor=2, image_token_id=99,
        text_config=llama_config().to_dict())
    return transformers.Idefics3ForConditionalGeneration(config).eval()


def test_idefics3_pixel_shuffle_is_internvl_order():
    hf = idefics3()
    tokens = torch.randn(2, 16, 32)
    theirs = hf.model.connector.pixel_shuffle(tokens, 2)
    ours = pixel_unshuffle(tokens_to_grid(tokens), 2, order="internvl").reshape(2, 4, 128)
    assert torch.equal(ours, theirs)
    assert torch.equal(internvl_pixel_shuffle(tokens_to_grid(tokens), 0.5).reshape(2, 4, 128), theirs)


def test_idefics3_parts_match():
    hf = idefics3()
    vit = interop.vision_tower_from_siglip(hf)
    connector = interop.connector_from_idefics3(hf.model.connector, config=hf.config)
    lm = interop.language_model_from_llama(hf.state_dict(), config=hf.config.text_config)
    images = torch.randn(1, 3, 32, 32)
    ids = torch.randint(3, 99, (1, 8))
    with torch.no_grad():
        hidden = hf.model.vision_model(pixel_values=images).last_hidden_state
        torch.testing.assert_close(vit(images).tokens, hidden, **TOL)
        torch.testing.assert_close(connector(hidden), hf.model.connector(hidden), **TOL)
        torch.testing.assert_close(lm(ids).logits, hf(input_ids=ids).logits, **TOL)
    with pytest.raises(ValueError, match="config="):
        interop.connector_from_idefics3(hf.model.connector)


def test_idefics3_whole_model_matches_one_image():
    hf = idefics3(seed=2)
    ours = interop.llava_from_idefics3(hf)
    T = ours.config.num_visual_tokens
    assert T == 4
    images = torch.rand(2, 3, 32, 32)
    ids = torch.randint(3, 99, (2, 7))
    ids[:, 2] = 99                                                  # the one <image> of each prompt
    hf_ids = torch.cat([ids[:, :2], torch.full((2, T), 99), ids[:, 3:]], dim=1)
    with torch.no_grad():
        mine = ours(images, ids).logits
        theirs = hf(input_ids=hf_ids, pixel_values=((images - 0.5) / 0.5)[:, None]).logits
        torch.testing.assert_close(mine, theirs, **TOL)


def test_llava_from_idefics3_refuses_other_models():
    with pytest.raises(ValueError, match="Idefics3ForConditionalGeneration"):
        interop.llava_from_idefics3(llama())


def test_idefics3_greedy_generation_matches():
    hf = idefics3(seed=3)
    hf.generation_config.eos_token_id = None
    ours = interop.llava_from_idefics3(hf)
    ours.config.eos_token_id = None
    images = torch.rand(1, 3, 32, 32)
    ids = torch.tensor([[1, 5, 99, 7, 8, 9]])
    hf_ids = torch.cat([ids[:, :2], torch.full((1, 4), 99), ids[:, 3:]], dim=1)
    with torch.no_grad():
        mine = ours.generate(images, ids, max_new_tokens=8)
        theirs = hf.generate(input_ids=hf_ids, pixel_values=((images - 0.5) / 0.5)[:, None], max_new_tokens=8,
                             do_sample=False)[:, hf_ids.shape[1]:]
    assert torch.equal(mine, theirs)


def test_sliding_window_is_refused():
    config = transformers.MistralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100, sliding_window=16)
    with pytest.raises(ValueError, match="sliding_window"):
        interop.lm_config_from_llama(config)


def test_gqa_cache_holds_the_kv_heads():
    lm = interop.language_model_from_llama(llama())
    cache = lm.new_cache()
    lm(torch.randint(0, 100, (1, 5)), kv_cache=cache)
    assert tuple(cache[0]["k"].shape) == (1, 2, 5, 16)
