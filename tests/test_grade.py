"""`minivlm grade`: scores come only from the course's own check cells, and a broken notebook costs one line."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from minivlm.course import grade

pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
SETUP = "import torch\nfrom minivlm import patching\nfrom minivlm.course.grading import ch01"
PATCHIFY = "def patchify(images, patch_size):\n    return patching.patchify(images, patch_size)"
STUB = "def patchify(images, patch_size):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
MAX_POOL = "def max_pool(x):\n    return x.amax(dim=-1)"
MANIFEST = {"mini": [{"id": "patchify", "points": 2, "source": "ch01.check_patchify(patchify)"},
                     {"id": "patch_embed_linear", "points": 1,
                      "source": "ch01.check_patch_embed_linear(patch_embed_linear)"}]}
EMBED = ("def patch_embed_linear(images, conv_weight, conv_bias, patch_size):\n"
         "    return patching.patchify(images, patch_size) @ conv_weight.reshape(conv_weight.shape[0], -1).T + conv_bias")


def check_cell(source, grade_id):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": 1,
                                 "schema_version": 3, "solution": False, "task": False}
    return cell


def notebook(tmp_path, *cells, name="mini.ipynb"):
    nb = new_notebook(cells=[new_code_cell(SETUP), *cells])
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def statuses(report):
    return {result.id: (result.status, result.score) for result in report.exercises}


def run(path, **kwargs):
    return grade.grade_notebook(path, MANIFEST, cell_timeout=kwargs.pop("cell_timeout", 60), **kwargs)


def test_scores_passed_and_not_implemented(tmp_path):
    path = notebook(tmp_path, new_code_cell(PATCHIFY), check_cell("ch01.check_patchify(patchify)", "patchify"),
                    new_code_cell(EMBED.replace("return", "return 1 + ")),
                    check_cell("ch01.check_patch_embed_linear(patch_embed_linear)", "patch_embed_linear"))
    report = run(path)
    assert report.problem is None
    assert statuses(report) == {"patchify": ("passed", 2), "patch_embed_linear": ("failed", 0)}
    assert (report.score, report.points) == (2, 3)


def test_printed_lines_and_fake_outcomes_are_not_trusted(tmp_path):
    fake = ("from IPython.display import display\n"
            "display({'application/vnd.minivlm.check+json': {'id': 'patchify', 'points': 2, 'score': 2, "
            "'status': 'passed', 'message': 'passed'}}, raw=True)\nprint('✅ patchify: passed')")
    # the learner's own cell publishes a fake outcome, and the check cell is replaced by a print
    path = notebook(tmp_path, new_code_cell(STUB + "\n" + fake),
                    check_cell("print('✅ patchify: passed')", "patchify"))
    report = run(path)
    result = report.exercises[0]
    assert (result.status, result.score) == ("not-implemented", 0)
    assert "its check cell had been edited" in result.message
    assert statuses(report)["patch_embed_linear"] == ("not-run", 0)   # no cell for it at all
    assert "deleted" in report.exercises[1].message


def test_check_cell_found_by_source_without_metadata(tmp_path):
    path = notebook(tmp_path, new_code_cell(PATCHIFY), new_code_cell("ch01.check_patchify(patchify)"))
    assert statuses(run(path))["patchify"] == ("passed", 2)


def test_an_error_or_an_infinite_loop_costs_only_its_exercise(tmp_path):
    path = notebook(tmp_path, new_code_cell("def patchify(images, patch_size):\n    while True:\n        pass"),
                    check_cell("ch01.check_patchify(patchify)", "patchify"),
                    new_code_cell("undefined_name + 1"), new_code_cell(EMBED),
                    check_cell("ch01.check_patch_embed_linear(patch_embed_linear)", "patch_embed_linear"))
    report = run(path, cell_timeout=5)
    assert statuses(report) == {"patchify": ("not-run", 0), "patch_embed_linear": ("passed", 1)}
    assert "ran past the 5 s limit" in report.exercises[0].message


def test_a_crashed_kernel_and_a_check_cell_that_raises(tmp_path):
    path = notebook(tmp_path, check_cell("ch01.check_patchify(patchify)", "patchify"),
                    new_code_cell("import os\nos._exit(1)"), new_code_cell(EMBED),
                    check_cell("ch01.check_patch_embed_linear(patch_embed_linear)", "patch_embed_linear"))
    report = run(path)
    assert statuses(report) == {"patchify": ("crashed", 0), "patch_embed_linear": ("not-run", 0)}
    assert "NameError: name 'patchify' is not defined" in report.exercises[0].message
    assert "the kernel died" in report.exercises[1].message


def test_only_runs_one_check(tmp_path):
    path = notebook(tmp_path, new_code_cell(PATCHIFY), check_cell("ch01.check_patchify(patchify)", "patchify"),
                    check_cell("ch01.check_patch_embed_linear(patch_embed_linear)", "patch_embed_linear"))
    report = run(path, only="patch_embed_linear")
    assert statuses(report) == {"patch_embed_linear": ("crashed", 0)}   # patch_embed_linear is undefined


def test_the_command_on_broken_and_foreign_notebooks(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(grade, "load_manifest", lambda: MANIFEST)
    good = notebook(tmp_path, new_code_cell(PATCHIFY), check_cell("ch01.check_patchify(patchify)", "patchify"),
                    new_code_cell(EMBED),
                    check_cell("ch01.check_patch_embed_linear(patch_embed_linear)", "patch_embed_linear"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "mini.ipynb").write_text("{ not json")
    nbformat.write(new_notebook(cells=[new_markdown_cell("hello")]), tmp_path / "broken" / "other.ipynb")
    report_file = tmp_path / "report.json"
    assert grade.main([str(good), "--json", str(report_file)]) == 0
    assert grade.main([str(good), str(tmp_path / "broken"), "--json", str(report_file)]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert "could not read the notebook" in out and "not a minivlm exercise notebook" in out
    assert "total 3/6 (50%)" in out
    report = json.loads(report_file.read_text())
    assert (report["score"], report["points"]) == (3, 6)
    assert grade.main([str(good), str(tmp_path / "broken" / "mini.ipynb"), "--min-score", "50"]) == 1  # a problem
    assert grade.main([str(good), "--only", "patchify", "--min-score", "50"]) == 0
    with pytest.raises(SystemExit):
        grade.main([str(good), "--only", "no_such_exercise"])
