"""minivlm.course.grading: each outcome of a check prints one short block, never a traceback."""

import os
from pathlib import Path

import nbformat
import pytest
import torch

from minivlm.course.grading import (CheckFailed, Hint, check, expect_close, expect_equal, expect_known_mistakes,
                                    expect_shape, run_check, call_learner, check_rng, OUTCOME_MIME)

REPO = Path(__file__).resolve().parents[1]


# a tiny chapter module, as `minivlm/course/grading/chNN.py` would hold it
@check("double")
def check_double(double):
    x = torch.arange(6.0).reshape(2, 3)
    expect_close(double(x), 2 * x, "double(x)", hint="multiply every element by 2")


def double_solved(x):
    return x * 2


def double_stub(x):
    # YOUR CODE HERE
    raise NotImplementedError()


def double_wrong(x):
    return x + 2


def double_crashes(x):
    return x.view(4, 4)


def test_pass(capsys):
    assert check_double(double_solved)
    assert capsys.readouterr().out == "✅ double: passed\n"


def test_not_implemented(capsys):
    result = check_double(double_stub)
    assert not result
    out = capsys.readouterr().out
    assert out == "⏳ double: not implemented yet — replace `raise NotImplementedError()` with your code\n"


def test_not_implemented_deep_inside(capsys):
    assert not check_double(lambda x: double_stub(x) + 1)
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("learner", [double_stub, double_wrong, double_crashes])
def test_under_nbgrader_a_check_that_did_not_pass_raises_after_printing(learner, capsys, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(CheckFailed, match="double: did not pass"):
        check_double(learner)
    assert capsys.readouterr().out.startswith(("⏳ double", "❌ double"))     # the learner still sees the hint
    assert check_double(double_solved)                                     # a passing check does not raise


def test_hint(capsys):
    assert not check_double(double_wrong)
    out = capsys.readouterr().out
    assert out.startswith("❌ double: double(x) has the right shape but wrong values: max abs difference")
    assert out.rstrip().endswith("Hint: multiply every element by 2")
    assert out.count("\n") == 1 and "Traceback" not in out


def test_other_exception_names_type_and_location(capsys):
    assert not check_double(double_crashes)
    out = capsys.readouterr().out
    first, location = out.splitlines()
    assert first.startswith("❌ double: your code raised RuntimeError: shape '[4, 4]' is invalid")
    assert location.strip().startswith("at test_grading.py, line") and location.endswith("in double_crashes")
    assert "Traceback" not in out


def test_library_not_implemented_error_with_message_is_a_crash(capsys):
    def uses_missing_op(x):
        raise NotImplementedError("aten::foo is not implemented for the MPS backend")
    assert not check_double(uses_missing_op)
    assert "your code raised NotImplementedError: aten::foo" in capsys.readouterr().out


def test_bare_assert_and_run_check_returns_status_and_message(capsys):
    def fails():
        raise AssertionError()  # what a bare `assert` raises (pytest would add a message)
    assert run_check("bare", fails) == ("failed", "an assertion failed")
    out = capsys.readouterr().out
    assert out.startswith("❌ bare: an assertion failed\n   at test_grading.py")
    assert run_check("ok", lambda: None) == ("passed", "passed")


@pytest.mark.parametrize("learner, status, score", [
    (double_solved, "passed", 3), (double_stub, "not-implemented", 0), (double_wrong, "failed", 0),
    (double_crashes, "crashed", 0)])
def test_outcome_is_structured(learner, status, score, capsys):
    scored = check("double", points=3)(check_double.__wrapped__)
    outcome = scored(learner).outcome
    assert outcome["id"] == "double" and outcome["points"] == 3
    assert outcome["status"] == status and outcome["score"] == score
    assert outcome["message"] in capsys.readouterr().out


def test_call_learner_copies_and_names_a_modified_input():
    x = torch.ones(3)
    assert call_learner(lambda t: t * 2, x).tolist() == [2, 2, 2]
    def doubles_in_place(values, scale=1):
        values *= 2
        return values
    with pytest.raises(Hint, match="modified its input `values` in place"):
        call_learner(doubles_in_place, x)
    assert x.tolist() == [1, 1, 1]
    block = torch.nn.Linear(2, 2)
    def rescales(module):
        module.weight.data.mul_(2)
    with pytest.raises(Hint, match="`module`"):
        call_learner(rescales, block)


def test_check_rng_obeys_the_seed(monkeypatch):
    monkeypatch.setenv("MINIVLM_CHECK_SEED", "7")
    assert check_rng().random() == check_rng().random()
    monkeypatch.delenv("MINIVLM_CHECK_SEED", raising=False)
    assert check_rng().random() != check_rng().random()


def test_expect_messages():
    x = torch.zeros(2, 3)
    with pytest.raises(Hint, match=r"out has shape \(2, 3\), expected \(2, 4\)\."):
        expect_close(x, torch.zeros(2, 4), "out")
    with pytest.raises(Hint, match=r"out has dtype torch.float32, expected torch.float64"):
        expect_close(x, torch.zeros(2, 3, dtype=torch.float64), "out")
    with pytest.raises(Hint, match=r"out should be a torch.Tensor, got list"):
        expect_close([0.0], x, "out")
    with pytest.raises(Hint, match=r"max abs difference 0.5 at index \(1, 2\) \(got 0.5, expected 0\)"):
        expect_close(torch.tensor([[0, 0, 0], [0, 0, 0.5]]), x, "out")
    with pytest.raises(Hint, match=r"NaN"):
        expect_close(torch.full((2, 3), float("nan")), x, "out")
    expect_close(x + 1e-7, x, "out")
    expect_close(torch.tensor(0.25), 0.25, "loss")
    expect_shape(x, (2, None), "out")
    with pytest.raises(Hint, match=r"out has shape \(2, 3\), expected \(\*, 4\)\. Hint: rows"):
        expect_shape(x, (None, 4), "out", hint="rows")
    expect_equal(torch.tensor([1, 2]), torch.tensor([1, 2]), "ids")
    with pytest.raises(Hint, match=r"ids differs from the expected values at 1 of 2 positions"):
        expect_equal(torch.tensor([1, 3]), torch.tensor([1, 2]), "ids")
    with pytest.raises(Hint, match=r"count is 3, expected 4\."):
        expect_equal(3, 4, "count")


def test_expect_known_mistakes():
    x = torch.arange(6.0).reshape(2, 3)
    mistakes = [(x + 2, "multiply, don't add."), (x * x, "multiply by 2, not by x.")]
    expect_known_mistakes(2 * x + 1e-6, 2 * x, mistakes, "double(x)")
    for wrong, hint in mistakes:
        with pytest.raises(Hint) as error:
            expect_known_mistakes(wrong.clone(), 2 * x, mistakes, "double(x)")
        assert str(error.value) == f"double(x) has the wrong values. Hint: {hint}"
    with pytest.raises(Hint, match=r"wrong values: max abs difference .* Hint: multiply every element by 2$"):
        expect_known_mistakes(x + 1, 2 * x, mistakes, "double(x)", hint="multiply every element by 2")
    # a mistake that gives the right values on this input explains nothing, here not the wrong dtype
    with pytest.raises(Hint, match=r"^double\(x\) has dtype torch.float64, expected torch.float32\.$"):
        expect_known_mistakes((2 * x).double(), 2 * x, [(2 * x, "never shown")] + mistakes, "double(x)")


def test_expect_known_mistakes_exact():
    ids = torch.tensor([1, 2, 3])
    mistakes = [(ids.flip(0), "keep the order.")]
    expect_known_mistakes(ids.clone(), ids, mistakes, "ids", exact=True)
    with pytest.raises(Hint, match=r"^ids has the wrong values\. Hint: keep the order\.$"):
        expect_known_mistakes(ids.flip(0), ids, mistakes, "ids", exact=True)
    with pytest.raises(Hint, match=r"^ids has dtype torch.int32, expected torch.int64\.$"):
        expect_known_mistakes(ids.int(), ids, mistakes, "ids", exact=True)
    x = torch.tensor([0.5, 1.0])
    expect_known_mistakes(x + 1e-7, x, [], "out")
    with pytest.raises(Hint, match=r"^out differs from the expected values at 2 of 2 positions\.$"):
        expect_known_mistakes(x + 1e-7, x, [], "out", exact=True)


def test_in_a_real_kernel(monkeypatch):
    """In Jupyter: the location names the cell, and the check's return value is not displayed."""
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cells = [
        "import torch\nfrom minivlm.course.grading import check, expect_close\n"
        "@check('double')\ndef check_double(fn):\n    expect_close(fn(torch.ones(2)), torch.full((2,), 2.0), 'double(x)')",
        "def double(x):\n    return x.view(3)",
        "check_double(double)",
        "check_double(lambda x: 2 * x)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    crashed, passed = nb.cells[2].outputs, nb.cells[3].outputs
    # the printed line, then the structured outcome; no `Out[]: True`
    assert [o.output_type for o in crashed + passed] == ["stream", "display_data"] * 2
    assert crashed[1].data[OUTCOME_MIME]["status"] == "crashed" and crashed[1].data["text/plain"] == ""
    assert passed[1].data[OUTCOME_MIME] == {"id": "double", "points": 1, "score": 1, "status": "passed",
                                            "message": "passed"}
    assert crashed[0].text.splitlines()[1] == "   at Cell In[2], line 2, in double"
    assert passed[0].text == "✅ double: passed\n"
