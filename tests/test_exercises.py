"""exercises/ is generated from solutions/, runs headless, and every check in it says "not implemented yet"."""

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from minivlm.course.exercises import MANIFEST, generate_exercise, generate_exercises, main

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"
NAMES = sorted(path.name for path in SOLUTIONS.glob("*.ipynb"))
# A check cell calls a `check_*` function, e.g. `ch01.check_patchify(patchify)`.
CHECK_CALL = re.compile(r"^(?!\s*(async\s+)?def\s).*\b(check_\w*|run_check)\s*\(", re.MULTILINE)


def solution_names():
    return pytest.mark.parametrize("name", NAMES or [pytest.param(None, id="no-solutions")])


def require(name):
    if name is None:
        pytest.skip("no solution notebooks in solutions/ yet")


def is_check_cell(cell):
    return cell.cell_type == "code" and CHECK_CALL.search(cell.source) is not None


def output_text(cell):
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)


# --- the committed notebooks ---------------------------------------------------------


@solution_names()
def test_exercise_is_regenerated_solution(name, tmp_path):
    require(name)
    generate_exercises(SOLUTIONS, tmp_path)
    committed = EXERCISES / name
    assert committed.exists(), f"exercises/{name} is missing: run `python -m minivlm.course.exercises`"
    assert json.loads(committed.read_text()) == json.loads((tmp_path / name).read_text()), (
        f"exercises/{name} is stale: run `python -m minivlm.course.exercises`")


def test_everything_generated_is_up_to_date():
    """exercises/, the solutions' nbgrader metadata, the check manifest and the Classroom template."""
    stale = generate_exercises(SOLUTIONS, EXERCISES, check=True, annotate=True, manifest=MANIFEST,
                               classroom_dir=REPO / "teaching" / "classroom")
    assert stale == [], "run `python -m minivlm.course.exercises`"


@solution_names()
def test_exercise_runs_and_every_check_is_not_implemented(name):
    """`minivlm grade` on an untouched exercise notebook: it runs top to bottom, every check says "not implemented"."""
    require(name)
    pytest.importorskip("nbclient")
    from minivlm.course.grade import grade_notebook, load_manifest
    report = grade_notebook(EXERCISES / name)
    assert report.problem is None and report.score == 0
    assert [result.id for result in report.exercises] == [check["id"] for check in load_manifest()[Path(name).stem]]
    for result in report.exercises:
        assert result.status == "not-implemented", f"{name}, {result.id}: {result.status} ({result.message})"


@solution_names()
def test_solution_checks_stored_as_passed(name):
    require(name)
    nb = nbformat.read(SOLUTIONS / name, as_version=4)
    checks = [(index, cell) for index, cell in enumerate(nb.cells) if is_check_cell(cell)]
    assert checks, f"{name} has no check cell"
    for index, cell in checks:
        text = output_text(cell)
        assert "passed" in text and "❌" not in text and "⏳" not in text, (
            f"{name}, cell {index}: stored output {text!r}; run the solution notebook and save it")


# --- the generator -------------------------------------------------------------------

SOLVED_CELL = '''\
def patchify(images, patch_size):
    """Split images into patches."""
    ### BEGIN SOLUTION
    B, C, H, W = images.shape
    return images
    ### END SOLUTION

class Stack:
    def push(self, x):
        if x is None:
            ### BEGIN SOLUTION
            return None
            ### END SOLUTION
        return x'''

EXERCISE_CELL = '''\
def patchify(images, patch_size):
    """Split images into patches."""
    # YOUR CODE HERE
    raise NotImplementedError()

class Stack:
    def push(self, x):
        if x is None:
            # YOUR CODE HERE
            raise NotImplementedError()
        return x'''


def solution_notebook():
    code = new_code_cell(SOLVED_CELL, execution_count=3, outputs=[nbformat.v4.new_output("stream", text="hi\n")])
    hidden = new_code_cell("check(patchify)\n### BEGIN HIDDEN TESTS\nassert secret()\n### END HIDDEN TESTS\nprint('done')")
    markdown = new_markdown_cell("Why patches?\n\n### BEGIN SOLUTION\nBecause attention is quadratic.\n### END SOLUTION")
    nb = new_notebook(cells=[markdown, code, hidden], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells[1].metadata["tags"] = ["exercise"]
    return nb


def test_generate_exercise_replaces_regions_and_clears_outputs():
    solution = solution_notebook()
    before = json.dumps(solution, sort_keys=True)
    exercise = generate_exercise(solution)
    assert json.dumps(solution, sort_keys=True) == before, "the input notebook must not change"
    markdown, code, hidden = exercise.cells
    assert markdown.source == "Why patches?\n\nYOUR ANSWER HERE"
    assert code.source == EXERCISE_CELL
    assert code.outputs == [] and code.execution_count is None
    assert code.metadata["tags"] == ["exercise"] and code.id == solution.cells[1].id
    assert hidden.source == "check(patchify)\nprint('done')"
    assert exercise.metadata == solution.metadata
    compile(code.source, "<exercise>", "exec")  # the stub keeps the function valid Python


@pytest.mark.parametrize("source, problem", [
    ("x = 1\n### BEGIN SOLUTION\ny = 2", "never closed"),
    ("### END SOLUTION", "without a matching"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside an open"),
    ("### BEGIN HIDDEN TESTS\n### END SOLUTION", "without a matching"),
])
def test_unbalanced_markers_raise(source, problem):
    nb = new_notebook(cells=[new_markdown_cell("intro"), new_code_cell(source)])
    with pytest.raises(ValueError, match=rf"01_demo.ipynb, cell 1: .*{problem}"):
        generate_exercise(nb, name="01_demo.ipynb")


def test_generate_exercises_deterministic_check_mode_and_cli(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    demo = solution_notebook()
    demo.cells = demo.cells[1:]       # no markdown answer: the command also writes nbgrader metadata, autograded only
    nbformat.write(demo, solutions / "01_demo.ipynb")
    assert generate_exercises(solutions, exercises, check=True) == [exercises / "01_demo.ipynb"]
    assert not exercises.exists(), "check mode writes nothing"
    assert generate_exercises(solutions, exercises) == [exercises / "01_demo.ipynb"]
    first = (exercises / "01_demo.ipynb").read_bytes()
    assert first.endswith(b"}\n") and nbformat.reads(first.decode(), as_version=4).nbformat == 4
    assert generate_exercises(solutions, exercises) == []
    assert (exercises / "01_demo.ipynb").read_bytes() == first

    (exercises / "99_orphan.ipynb").write_text(first.decode())
    args = ["--solutions", str(solutions), "--exercises", str(exercises),
            "--manifest", str(tmp_path / "checks.json"), "--classroom", str(tmp_path / "classroom")]
    assert main(["--check", *args]) == 1
    assert "99_orphan.ipynb" in capsys.readouterr().out
    assert main(args) == 0 and not (exercises / "99_orphan.ipynb").exists()
    assert main(["--check", *args]) == 0


def test_annotate_solution_sets_nbgrader_metadata():
    from minivlm.course.exercises import annotate_solution
    from minivlm.course.grading import ch01
    nb = new_notebook(cells=[
        new_markdown_cell("# Exercises"), new_code_cell("from minivlm.course.grading import ch01"),
        new_code_cell(SOLVED_CELL), new_code_cell("ch01.check_patchify(patchify)")])
    checks = annotate_solution(nb)
    meta = [cell.metadata["nbgrader"] for cell in nb.cells]
    assert checks == [{"id": "patchify", "points": ch01.check_patchify.points, "source": "ch01.check_patchify(patchify)"}]
    assert meta[2] == {"grade": False, "grade_id": "answer_patchify", "locked": False, "schema_version": 3,
                       "solution": True, "task": False}
    assert meta[3] == {"grade": True, "grade_id": "patchify", "locked": True, "points": ch01.check_patchify.points,
                       "schema_version": 3, "solution": False, "task": False}
    assert all(m["locked"] and not m["solution"] and not m["grade"] for m in meta[:2])


@pytest.mark.parametrize("cell, problem", [
    (new_markdown_cell("### BEGIN SOLUTION\nanswer\n### END SOLUTION"), "markdown cell can't be autograded"),
    (new_code_cell("x = 1\nch01.check_patchify(patchify)"), "exactly one call"),
    (new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"), "inside a function body"),
])
def test_annotate_solution_rejects_what_cannot_be_autograded(cell, problem):
    from minivlm.course.exercises import annotate_solution
    with pytest.raises(ValueError, match=problem):
        annotate_solution(new_notebook(cells=[cell]))


def test_teaching_lists_every_exercise_with_its_points():
    rows = re.findall(r"^\| (\d\d_\w+) \| `(\w+)` \| [^|]+ \| (\d+) \|", (REPO / "TEACHING.md").read_text(), re.MULTILINE)
    manifest = json.loads(MANIFEST.read_text())["notebooks"]
    assert rows == [(notebook, check["id"], str(check["points"])) for notebook, checks in manifest.items()
                    for check in checks]
