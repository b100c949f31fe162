"""Generate the exercise notebooks in exercises/ from the solved ones in solutions/.

Solution notebooks mark what the learner writes with nbgrader's delimiters, so
nbgrader works on them unchanged, and this module does the same job without it:

    def patchify(images, patch_size):
        \"\"\"Split (B, C, H, W) images into (B, N, C*P*P) patches.\"\"\"
        ### BEGIN SOLUTION
        B, C, H, W = images.shape
        ...
        ### END SOLUTION

In a code cell a solution region becomes nbgrader's stub at the region's
indentation (`# YOUR CODE HERE` then `raise NotImplementedError()`); in a
markdown cell it becomes `YOUR ANSWER HERE`. `### BEGIN HIDDEN TESTS` /
`### END HIDDEN TESTS` regions are removed. Outputs and execution counts are
cleared; notebook and cell metadata are kept.

The generator also keeps three things in step with the solutions, so that there is
one source of truth (the solution notebook and the `@check(name, points)` decorators):

- the solution notebooks' nbgrader cell metadata (schema 3): a cell with a solution
  region is a solution cell (`grade_id` "answer_<function>"); a check cell — one call
  `chNN.check_NAME(...)` — is a locked, autograded cell with `grade_id` NAME and the
  check's points; every other cell is locked, so nbgrader restores it when grading;
- `minivlm/course/checks.json`, the manifest `minivlm grade` trusts: for each notebook,
  every check cell's id, points and exact source;
- `teaching/classroom/`, the GitHub Classroom template (see minivlm/course/classroom.py).

Convention for authors: put solution regions inside function bodies, and call
the learner's functions only from check cells (`ch01.check_patchify(patchify)`,
see `minivlm.course.grading`). Then an exercise notebook runs top to bottom and every
check prints "not implemented yet" until the learner fills it in.

    python -m minivlm.course.exercises            # regenerate exercises/
    python -m minivlm.course.exercises --check    # exit 1 if anything generated is stale (CI)
"""

import argparse
import copy
import hashlib
import importlib
import io
import json
import re
import sys
from pathlib import Path

import nbformat

CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = ["YOUR ANSWER HERE"]
# nbgrader matches its delimiters anywhere in a line; so do we.
BEGIN = {"solution": "BEGIN SOLUTION", "hidden tests": "BEGIN HIDDEN TESTS"}
END = {"solution": "END SOLUTION", "hidden tests": "END HIDDEN TESTS"}


def _marker(line):
    """('begin'|'end', region kind) if the line holds a delimiter, else None."""
    for kind in BEGIN:
        if BEGIN[kind] in line:
            return "begin", kind
        if END[kind] in line:
            return "end", kind
    return None


def _clear_regions(source, stub, where):
    """Replace solution regions of `source` by `stub` and drop hidden-test regions."""
    lines = source.split("\n")
    kept, open_kind = [], None
    for line in lines:
        marker = _marker(line)
        if marker is None:
            if open_kind is None:
                kept.append(line)
            continue
        edge, kind = marker
        if edge == "begin":
            if open_kind is not None:
                raise ValueError(f"{where}: '{BEGIN[kind]}' inside an open '{BEGIN[open_kind]}' region")
            open_kind = kind
            if kind == "solution":
                indent = re.match(r"\s*", line).group(0)
                kept.extend(indent + stub_line for stub_line in stub)
        else:
            if open_kind != kind:
                raise ValueError(f"{where}: '{END[kind]}' without a matching '{BEGIN[kind]}'")
            open_kind = None
    if open_kind is not None:
        raise ValueError(f"{where}: '{BEGIN[open_kind]}' is never closed by '{END[open_kind]}'")
    return "\n".join(kept)


# A check cell is exactly one call of a chapter check: `ch01.check_patchify(patchify)`.
CHECK_CELL = re.compile(r"^\s*(ch\d\d)\.check_(\w+)\((.*)\)\s*$", re.DOTALL)
DEFINED_FUNCTION = re.compile(r"^\s*def\s+(\w+)\s*\(", re.MULTILINE)
MANIFEST = Path(__file__).with_name("checks.json")
NBGRADER_SCHEMA = 3


def check_of_cell(source):
    """The `@check` function a check cell calls (it carries .exercise_id and .points), else None."""
    match = CHECK_CELL.match(source)
    if match is None:
        return None
    module = importlib.import_module(f"minivlm.course.grading.{match.group(1)}")
    check_fn = getattr(module, f"check_{match.group(2)}", None)
    return check_fn if hasattr(check_fn, "exercise_id") else None


def _nbgrader(grade_id, *, solution=False, grade=False, locked=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": NBGRADER_SCHEMA,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def annotate_solution(solution_nb, name="notebook"):
    """Set nbgrader metadata on every cell of a solution notebook (in place); return its check cells.

    Returns a list of {"id", "points", "source"} in notebook order.
    """
    checks, seen = [], set()
    for index, cell in enumerate(solution_nb.cells):
        where = f"{name}, cell {index}"
        has_solution = any(_marker(line) == ("begin", "solution") for line in cell.source.split("\n"))
        check_fn = check_of_cell(cell.source) if cell.cell_type == "code" else None
        if has_solution and cell.cell_type != "code":
            raise ValueError(f"{where}: a solution region in a markdown cell can't be autograded; "
                             "ask for the answer as a function that returns it")
        if has_solution:
            functions = DEFINED_FUNCTION.findall(cell.source)
            if not functions:
                raise ValueError(f"{where}: put the solution region inside a function body")
            grade_id = f"answer_{functions[0]}"
            meta = _nbgrader(grade_id, solution=True)
        elif check_fn is not None:
            grade_id, points = check_fn.exercise_id, check_fn.points
            meta = _nbgrader(grade_id, grade=True, locked=True, points=points)
            checks.append({"id": grade_id, "points": points, "source": cell.source})
        else:
            if cell.cell_type == "code" and re.search(r"\bcheck_\w+\s*\(", cell.source):
                raise ValueError(f"{where}: a check cell must be exactly one call `chNN.check_NAME(...)`")
            grade_id = f"cell_{cell.get('id') or index}"
            meta = _nbgrader(grade_id, locked=True)
        if grade_id in seen:
            raise ValueError(f"{where}: grade_id {grade_id!r} is used twice")
        seen.add(grade_id)
        cell.metadata["nbgrader"] = meta
    return checks


def generate_exercise(solution_nb, name="notebook"):
    """The exercise version of a solution notebook (a new NotebookNode; the input is untouched)."""
    exercise = copy.deepcopy(solution_nb)
    for index, cell in enumerate(exercise.cells):
        where = f"{name}, cell {index}"
        if cell.cell_type == "code":
            cell.source = _clear_regions(cell.source, CODE_STUB, where)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)  # run timestamps written by nbclient
        elif cell.cell_type == "markdown":
            cell.source = _clear_regions(cell.source, MARKDOWN_STUB, where)
        if "id" not in cell and (exercise.nbformat, exercise.nbformat_minor) >= (4, 5):
            # nbformat would invent a random id on write; derive a stable one instead
            cell.id = hashlib.sha1(f"{index}\n{cell.source}".encode()).hexdigest()[:8]
    return exercise


def _read(path):
    # Not nbformat.read: its validation fills missing cell ids with random ones.
    nb = nbformat.reader.reads(Path(path).read_text(encoding="utf-8"))
    return nb if nb.nbformat == 4 else nbformat.convert(nb, 4)


def _notebook_text(nb):
    buffer = io.StringIO()
    nbformat.write(nb, buffer, version=4)
    return buffer.getvalue()


def _update(path, text, changed, check):
    """Write `text` to `path` unless it already holds it; record the path in `changed`."""
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    changed.append(path)
    if not check:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def generate_exercises(solutions_dir="solutions", exercises_dir="exercises", check=False,
                       annotate=False, manifest=None, classroom_dir=None):
    """Regenerate exercises_dir/ from solutions_dir/*.ipynb; return the paths changed.

    The exercises are made from the solutions with their nbgrader metadata set (annotate_solution).
    Also, if given: `annotate` writes that metadata back into the solution notebooks, `manifest`
    (a path) writes the check manifest, `classroom_dir` (a folder) the GitHub Classroom template.
    Exercise notebooks without a solution are stale and deleted. With `check=True` nothing is
    written: the return value lists what would change.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    changed, checks, exercise_texts = [], {}, {}
    solution_paths = sorted(solutions_dir.glob("*.ipynb"))
    for solution_path in solution_paths:
        solution = _read(solution_path)
        checks[solution_path.stem] = annotate_solution(solution, name=str(solution_path))
        if annotate:
            _update(solution_path, _notebook_text(solution), changed, check)
        exercise_texts[solution_path.stem] = _notebook_text(generate_exercise(solution, name=str(solution_path)))
        _update(exercises_dir / solution_path.name, exercise_texts[solution_path.stem], changed, check)
    solution_names = {path.name for path in solution_paths}
    for orphan in sorted(exercises_dir.glob("*.ipynb")):
        if orphan.name not in solution_names:
            changed.append(orphan)
            if not check:
                orphan.unlink()
    if manifest is not None:
        text = json.dumps({"version": 1, "notebooks": checks}, indent=1, ensure_ascii=False) + "\n"
        _update(manifest, text, changed, check)
    if classroom_dir is not None:
        from .classroom import template_files
        for relative, text in template_files(checks, exercise_texts).items():
            _update(Path(classroom_dir) / relative, text, changed, check)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="minivlm exercises", description="Generate exercise notebooks from the solution notebooks.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises are out of date")
    parser.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    parser.add_argument("--exercises", default="exercises", help="folder of exercise notebooks (default: exercises)")
    parser.add_argument("--classroom", default=None,
                        help="folder of the GitHub Classroom template (default: teaching/classroom, "
                             "written only for the default --solutions)")
    parser.add_argument("--manifest", default=None,
                        help="the check manifest `minivlm grade` reads (default: minivlm/course/checks.json, "
                             "written only for the default --solutions)")
    args = parser.parse_args(argv)
    if args.solutions == "solutions":  # the course's own notebooks: keep the manifest and template in step
        args.manifest = args.manifest or str(MANIFEST)
        args.classroom = args.classroom or "teaching/classroom"
    try:
        changed = generate_exercises(args.solutions, args.exercises, check=args.check, annotate=True,
                                     manifest=args.manifest, classroom_dir=args.classroom)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        for path in changed:
            print(f"out of date: {path}")
        if changed:
            print("run `python -m minivlm.course.exercises` to regenerate", file=sys.stderr)
        return 1 if changed else 0
    for path in changed:
        print(f"{'wrote' if path.exists() else 'deleted'} {path}")
    if not changed:
        print("solutions/ metadata, exercises/, the check manifest and the Classroom template are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
