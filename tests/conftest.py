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
