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

Convention for authors: put solution regions inside function bodies, and call
the learner's functions only from check cells (`ch01.check_patchify(patchify)`,
see `minivlm.course.grading`). Then an exercise notebook runs top to bottom and every
check prints "not implemented yet" until the learner fills it in.

    python -m minivlm.course.exercises            # regenerate exercises/
    python -m minivlm.course.exercises --check    # exit 1 if exercises/ is stale (CI)
"""

import argparse
import copy
import hashlib
import io
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


def generate_exercises(solutions_dir="solutions", exercises_dir="exercises", check=False):
    """Regenerate exercises_dir/NAME.ipynb from each solutions_dir/NAME.ipynb; return the paths changed.

    Exercise notebooks without a solution are stale and deleted. With
    `check=True` nothing is written: the return value lists what would change.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    changed = []
    solution_paths = sorted(solutions_dir.glob("*.ipynb"))
    for solution_path in solution_paths:
        exercise_path = exercises_dir / solution_path.name
        text = _notebook_text(generate_exercise(_read(solution_path), name=str(solution_path)))
        if exercise_path.exists() and exercise_path.read_text(encoding="utf-8") == text:
            continue
        changed.append(exercise_path)
        if not check:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            with open(exercise_path, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
    solution_names = {path.name for path in solution_paths}
    for orphan in sorted(exercises_dir.glob("*.ipynb")):
        if orphan.name not in solution_names:
            changed.append(orphan)
            if not check:
                orphan.unlink()
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="minivlm exercises", description="Generate exercise notebooks from the solution notebooks.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises are out of date")
    parser.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    parser.add_argument("--exercises", default="exercises", help="folder of exercise notebooks (default: exercises)")
    args = parser.parse_args(argv)
    try:
        changed = generate_exercises(args.solutions, args.exercises, check=args.check)
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
        print(f"{args.exercises}/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
