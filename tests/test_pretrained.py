"""The pretrained LM: trained on Shapes text, cached by config and seed, rebuilt when the cache is broken, frozen."""

import math
import warnings

import pytest
import torch

from minivlm import pretrained
from minivlm.data import Tokenizer, WorldConfig, caption, sample_scenes
from minivlm.lm import LMConfig
from minivlm.models.llava import Llava, LlavaConfig

SMALL = LMConfig(vocab_size=len(Tokenizer()), dim=16, depth=1, heads=2, max_seq_len=128, tie_embeddings=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory and a pretraining recipe of a few steps."""
    monkeypatch.setenv("MINIVLM_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrained, "PRETRAIN", {**pretrained.PRETRAIN, "steps": 30, "scenes": 200})
    return tmp_path


def test_the_cache_directory_honours_MINIVLM_CACHE(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIVLM_CACHE", str(tmp_path / "here"))
    assert pretrained.cache_dir() == str(tmp_path / "here")
    monkeypatch.delenv("MINIVLM_CACHE")
    assert pretrained.cache_dir().endswith(".cache/minivlm")


def test_the_cache_file_is_keyed_by_config_seed_recipe_and_version(cache, monkeypatch):
    path = pretrained.cache_path(SMALL, 0)
    assert path.startswith(str(cache))
    assert pretrained.cache_path(SMALL, 0) == path
    assert pretrained.cache_path(SMALL, 1) != path
    assert pretrained.cache_path(LMConfig(**{**SMALL.__dict__, "dim": 32}), 0) != path
    monkeypatch.setattr(pretrained, "__version__", "9.9.9")
    assert pretrained.cache_path(SMALL, 0) != path
    monkeypatch.setattr(pretrained, "PRETRAIN", {**pretrained.PRETRAIN, "steps": 31})
    assert pretrained.cache_path(SMALL, 0) != path


def test_pretraining_text_is_the_chat_template_with_the_caption_where_the_image_goes():
    scenes = sample_scenes(3, WorldConfig(), generator=torch.Generator().manual_seed(0))
    documents = pretrained.pretraining_text(scenes, seed=0, per_scene=2)
    assert len(documents) == 6
    first = documents[0]
    assert first.startswith("<user> " + caption(scenes, 0) + " ")
    assert "<image>" not in first and first.count("<assistant>") == 1
    question, answer = first[len("<user> " + caption(scenes, 0) + " "):].split(" <assistant> ")
    assert question.endswith("?") and answer and "?" not in answer
    Tokenizer().batch_encode(documents)      # every word is in the vocabulary


def test_language_model_trains_once_then_loads_the_same_weights_frozen(cache, monkeypatch):
    first = pretrained.language_model(SMALL, seed=0, device="cpu")
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    assert (cache / pretrained.cache_path(SMALL, 0).split("/")[-1]).is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was trained again")
    monkeypatch.setattr(pretrained, "pretrain_language_model", no_training)
    second = pretrained.language_model(SMALL, seed=0, device="cpu")
    assert second is not first
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_corrupted_cache_file_is_rebuilt_with_a_warning(cache):
    path = pretrained.cache_path(SMALL, 0)
    reference = pretrained.language_model(SMALL, seed=0, device="cpu")
    with open(path, "wb") as file:
        file.write(b"not a checkpoint")
    with pytest.warns(UserWarning, match="rebuilding the cached language model"):
        rebuilt = pretrained.language_model(SMALL, seed=0, device="cpu")
    for a, b in zip(reference.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)          # the same seed trains the same weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pretrained.language_model(SMALL, seed=0, device="cpu")   # and the rebuilt file loads quietly


def test_pretraining_learns_the_text(cache):
    model, history = pretrained.pretrain_language_model(SMALL, seed=0, device="cpu")
    assert len(history["loss"]) == 30
    assert history["loss"][0] > math.log(SMALL.vocab_size) - 0.3
    assert sum(history["loss"][-5:]) / 5 < history["loss"][0] - 0.4      # 30 steps of warmup: it has started


def test_a_llava_model_loads_the_pretrained_lm_and_refuses_another_shape(cache):
    lm = pretrained.language_model(SMALL, seed=0, device="cpu")
    config = LlavaConfig(vocab_size=SMALL.vocab_size, text_dim=16, text_depth=1, text_heads=2, vision_dim=16,
                         vision_heads=2)
    model = Llava(config).load_language_model(lm)
    assert torch.equal(model.lm.lm_head.weight, lm.lm_head.weight)
    assert model.lm.lm_head.weight.requires_grad          # a copy: the VLM's stage decides what trains
    with pytest.raises(ValueError, match="does not match"):
        Llava(LlavaConfig(vocab_size=SMALL.vocab_size, text_dim=32)).load_language_model(lm)


def test_the_vision_tower_trains_once_then_loads_frozen(cache, monkeypatch):
    from minivlm.vit import ViTConfig
    config = ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, heads=2)
    world = WorldConfig(max_objects=1)
    first = pretrained.vision_tower(config, world, pool=40, steps=3, batch_size=8)
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    def no_training(*args, **kwargs):
        raise RuntimeError("trained")

    monkeypatch.setattr(pretrained, "fit", no_training)
    again = pretrained.vision_tower(config, world, pool=40, steps=3, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    with pytest.raises(RuntimeError, match="trained"):                    # another recipe: another file, trained
        pretrained.vision_tower(config, world, pool=40, steps=4, batch_size=8)


def test_the_clip_tower_trains_on_a_fixed_number_of_cpu_threads_the_lm_on_those_it_is_given(cache, monkeypatch):
    """Threads add partial sums in another order; a fixed count gives every machine the same cached tower."""
    seen = []
    real_fit = pretrained.fit

    def fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)
    monkeypatch.setattr(pretrained, "fit", fit)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        pretrained.language_model(SMALL, device="cpu")
        pretrained.vision_tower(LlavaConfig(vocab_size=58, image_size=32, patch_size=8, vision_dim=16, vision_depth=1,
                                            vision_heads=2).vision_config(), pool=16, steps=2, batch_size=8)
        assert seen == [3, pretrained.CLIP_RECIPE["cpu_threads"]] == [3, 1]       # the LM: the threads it is given
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    with pretrained.cpu_threads("cpu", 1):
        with pytest.raises(RuntimeError):
            with pretrained.cpu_threads("cpu", 1):
                raise RuntimeError
        assert torch.get_num_threads() == 1
