"""Fixtures shared by the test files."""

import pytest


@pytest.fixture
def grade(capsys):
    """grade(check, learner_fn) -> (passed, what the check printed): how a check cell reacts to an answer."""
    def run(check, learner_fn):
        passed = bool(check(learner_fn))
        return passed, capsys.readouterr().out
    return run


@pytest.fixture(autouse=True)
def fixed_check_seed(monkeypatch):
    """Checks draw random sizes (minivlm.course.grading.check_rng); tests pin the draw. A test may set its own."""
    monkeypatch.setenv("MINIVLM_CHECK_SEED", "0")


@pytest.fixture
def lm_cache(tmp_path, monkeypatch):
    """An empty model cache holding an untrained stand-in for the pretrained LM (no 30 s of pretraining in a test)."""
    import torch

    from minivlm import pretrained
    from minivlm.lm import LanguageModel
    from minivlm.train import save_checkpoint

    monkeypatch.setenv("MINIVLM_CACHE", str(tmp_path))
    config = pretrained.default_config()
    torch.manual_seed(0)
    save_checkpoint(pretrained.cache_path(config, 0), LanguageModel(config))
    return tmp_path
