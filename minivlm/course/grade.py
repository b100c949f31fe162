"""`minivlm grade`: run learner notebooks headless and score them from the checks' structured outcomes.

    minivlm grade exercises/                         # every notebook in a folder
    minivlm grade 01_images_as_tokens.ipynb --only patchify
    minivlm grade submissions/ --json report.json --min-score 60

For each notebook the grader

1. finds which assignment it is (its file name, else the nbgrader grade_ids it holds) and
   looks up that assignment's check cells in `minivlm/course/checks.json`, the manifest
   written from the solution notebooks by `minivlm exercises`;
2. finds each check cell by its nbgrader `grade_id` (else by its exact source) and puts the
   course's own source back if the learner edited it (nbgrader does the same with locked cells);
3. executes the notebook top to bottom in a fresh kernel of this Python, with a time limit
   per cell: a cell that errors does not stop the run, a cell that runs past the limit is
   interrupted, and a dead kernel ends the run;
4. reads, from each check cell's outputs only, the outcome the check published
   (`minivlm.course.OUTCOME_MIME`): printed lines and stored outputs are never trusted.
   A check cell that never ran, raised before its check did, or timed out scores 0, with the reason.

It exits 0 iff the score reaches --min-score (default: 100%, every graded exercise passed).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .exercises import MANIFEST
from . import OUTCOME_MIME

DEFAULT_CELL_TIMEOUT = 120


@dataclass
class ExerciseResult:
    id: str
    points: float
    score: float
    status: str        # passed / failed / not-implemented / crashed / not-run
    message: str


@dataclass
class NotebookReport:
    path: str
    assignment: str | None
    exercises: list = field(default_factory=list)
    problem: str | None = None      # one line when (part of) the notebook could not be graded
    seconds: float = 0.0

    @property
    def score(self):
        return sum(result.score for result in self.exercises)

    @property
    def points(self):
        return sum(result.points for result in self.exercises)


def load_manifest(path=MANIFEST):
    """{assignment name: [{"id", "points", "source"}, ...]} as `minivlm exercises` wrote it."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["notebooks"]


def _same_source(a, b):
    return a.strip() == b.strip()


def _grade_id(cell):
    return (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")


def _assignment_of(path, nb, manifest):
    """The manifest entry this notebook is: by file name, else by the most check grade_ids in common."""
    if path.stem in manifest:
        return path.stem
    ids = {_grade_id(cell) for cell in nb.cells} if nb is not None else set()
    overlap = {name: len(ids & {check["id"] for check in checks}) for name, checks in manifest.items()}
    best = max(overlap, key=overlap.get, default=None)
    return best if best is not None and overlap[best] > 0 else None


def _locate_check_cells(nb, checks):
    """{check id: cell index} for the check cells found (by grade_id, else by source), course source restored."""
    found, edited = {}, []
    for check in checks:
        index = next((i for i, cell in enumerate(nb.cells)
                      if cell.cell_type == "code" and _grade_id(cell) == check["id"]), None)
        if index is None:
            index = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                          and i not in found.values() and _same_source(cell.source, check["source"])), None)
        if index is None:
            continue
        if not _same_source(nb.cells[index].source, check["source"]):
            edited.append(check["id"])
            nb.cells[index].source = check["source"]
        found[check["id"]] = index
    return found, edited


def _outcome(cell, exercise_id):
    """The outcome the check `exercise_id` published in this cell's outputs, or None."""
    outcomes = [output["data"][OUTCOME_MIME] for output in cell.get("outputs", [])
                if output.get("output_type") == "display_data" and OUTCOME_MIME in output.get("data", {})]
    outcomes = [outcome for outcome in outcomes if isinstance(outcome, dict) and outcome.get("id") == exercise_id]
    return outcomes[-1] if outcomes else None


def _cell_error(cell):
    """'NameError: name 'x' is not defined' if the cell raised, else None."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            value = str(output.get("evalue", "")).strip().splitlines()
            return f"{output.get('ename', 'Error')}" + (f": {value[0][:200]}" if value else "")
    return None


def _kernel_manager():
    """A kernel manager that starts ipykernel with this very Python (not whatever `python3` kernel is installed)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    manager = AsyncKernelManager()
    manager._kernel_spec = KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="minivlm grade", language="python")
    return manager


def _execute(nb, workdir, cell_timeout, skip):
    """Run the code cells of `nb` in order (except indices in `skip`); {cell index: why it did not run}.

    A cell that runs past `cell_timeout` is interrupted (KeyboardInterrupt in the kernel) and gets
    a TimeoutError output; the run goes on, unless the next cell times out too (the kernel is stuck).
    """
    import nbclient
    from nbclient.exceptions import DeadKernelError

    env = {key: value for key, value in os.environ.items() if key != "NBGRADER_EXECUTION"}
    client = nbclient.NotebookClient(
        nb, timeout=cell_timeout, allow_errors=True, interrupt_on_timeout=True, km=_kernel_manager(),
        error_on_timeout={"ename": "TimeoutError", "evalue": "", "traceback": []},
        resources={"metadata": {"path": str(workdir)}})
    not_run, timed_out_before = {}, False
    code_cells = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and i not in skip]
    # the kernel's own log (e.g. ipykernel's warnings about its transport) is not the learner's business
    with client.setup_kernel(env=env, cwd=str(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cleanup_kc=True):
        for position, index in enumerate(code_cells):
            started = time.perf_counter()
            try:
                client.execute_cell(nb.cells[index], index)
            except DeadKernelError:
                why = f"the kernel died while running cell {index}"
                not_run.update({later: why for later in code_cells[position:]})
                break
            if time.perf_counter() - started < cell_timeout:
                timed_out_before = False
                continue
            nb.cells[index].outputs = [{"output_type": "error", "ename": "TimeoutError", "traceback": [],
                                        "evalue": f"cell {index} ran past the {cell_timeout} s limit and was interrupted"}]
            if timed_out_before:  # the kernel did not come back from the interrupt
                why = f"cell {index} ran past the time limit and the kernel stayed busy"
                not_run.update({later: why for later in code_cells[position + 1:]})
                break
            timed_out_before = True
    return not_run


def grade_notebook(path, manifest=None, only=None, cell_timeout=DEFAULT_CELL_TIMEOUT):
    """Execute the learner notebook at `path` and score it; never raises for a broken notebook."""
    import nbformat

    manifest = load_manifest() if manifest is None else manifest
    path = Path(path)
    started = time.perf_counter()
    try:
        nb = nbformat.reader.reads(path.read_text(encoding="utf-8"))
        nb = nbformat.convert(nb, 4) if nb.nbformat != 4 else nb
        problem = None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, nbformat.reader.NotJSONError) as error:
        nb, problem = None, f"could not read the notebook ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
    assignment = _assignment_of(path, nb, manifest)
    report = NotebookReport(str(path), assignment, problem=problem)
    if assignment is None:
        report.problem = problem or "not a minivlm exercise notebook (no check cell of the course found)"
        return report
    checks = [check for check in manifest[assignment] if only is None or check["id"] == only]
    if nb is None:
        report.exercises = [ExerciseResult(c["id"], c["points"], 0, "not-run", "the notebook could not be read")
                            for c in checks]
        return report

    found, edited = _locate_check_cells(nb, manifest[assignment])
    skip = {index for check_id, index in found.items() if only is not None and check_id != only}
    try:
        not_run = _execute(nb, path.parent, cell_timeout, skip)
    except Exception as error:  # e.g. the kernel could not start
        report.problem = f"could not run the notebook ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
        not_run = {index: "the notebook could not be run" for index in range(len(nb.cells))}

    for check in checks:
        index = found.get(check["id"])
        if index is None:
            result = ExerciseResult(check["id"], check["points"], 0, "not-run", "its check cell was deleted")
        elif index in not_run:
            result = ExerciseResult(check["id"], check["points"], 0, "not-run", not_run[index])
        else:
            outcome = _outcome(nb.cells[index], check["id"])
            if outcome is None:
                error = _cell_error(nb.cells[index])
                message = f"the check cell raised {error}" if error else "the check cell published no outcome"
                status = "not-run" if error and error.startswith("TimeoutError") else "crashed"
                result = ExerciseResult(check["id"], check["points"], 0, status, message)
            else:
                passed = outcome.get("status") == "passed"
                result = ExerciseResult(check["id"], check["points"], check["points"] if passed else 0,
                                        str(outcome.get("status")), str(outcome.get("message", ""))[:300])
        if check["id"] in edited:
            result.message += " (its check cell had been edited; the course's version was run)"
        report.exercises.append(result)
    report.seconds = time.perf_counter() - started
    return report


def notebook_paths(paths):
    """The .ipynb files named or inside the folders named, in order (checkpoints skipped); missing paths kept."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


# ----------------------------------------------------------------------------- the command

STATUS_TEXT = {"passed": "✅ passed", "failed": "❌ failed", "not-implemented": "⏳ not implemented",
               "crashed": "❌ crashed", "not-run": "❌ not run"}


def print_report(report, out=None):
    out = out or sys.stdout
    print(f"{report.path}" + (f"  ({report.assignment})" if report.assignment and
                                Path(report.path).stem != report.assignment else ""), file=out)
    if report.problem:
        print(f"  ⚠ {report.problem}", file=out)
    width = max([len(result.id) for result in report.exercises] + [8])
    for result in report.exercises:
        quiet = result.status in ("passed", "not-implemented") and "edited" not in result.message
        message = "" if quiet else result.message
        print(f"  {result.id:<{width}}  {_number(result.score):>3}/{_number(result.points):<3} "
              f"{STATUS_TEXT.get(result.status, result.status):<19} {message}".rstrip(), file=out)
    print(f"  score {_number(report.score)}/{_number(report.points)}  ({report.seconds:.0f} s)", file=out)


def _number(value):
    return f"{value:g}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="minivlm grade",
        description="Execute learner notebooks in fresh kernels and grade them with the course's checks.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, or folders of notebooks")
    parser.add_argument("--only", metavar="ID", help="grade one exercise (its check id, e.g. patchify)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--min-score", type=float, default=100.0, metavar="PERCENT",
                        help="exit 0 iff the total score is at least this percentage (default: 100)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT, metavar="S",
                        help=f"time limit per cell in seconds (default: {DEFAULT_CELL_TIMEOUT})")
    args = parser.parse_args(argv)
    if not 0 <= args.min_score <= 100:
        parser.error(f"--min-score must be a percentage in [0, 100], got {args.min_score:g}")
    if args.timeout < 1:
        parser.error(f"--timeout must be >= 1 second, got {args.timeout}")

    manifest = load_manifest()
    if args.only is not None and not any(c["id"] == args.only for checks in manifest.values() for c in checks):
        known = ", ".join(sorted({c["id"] for checks in manifest.values() for c in checks}))
        parser.error(f"--only: no exercise {args.only!r}; the exercises are: {known}")
    paths = notebook_paths(args.paths)
    if not paths:
        parser.error("no notebooks found in " + ", ".join(args.paths))

    reports = []
    for path in paths:
        report = grade_notebook(path, manifest, only=args.only, cell_timeout=args.timeout)
        if args.only is not None and not report.exercises and report.problem is None:
            continue  # this notebook has no exercise `--only`
        reports.append(report)
        print_report(report)
    if not reports:
        print(f"no notebook among {', '.join(map(str, paths))} has the exercise {args.only!r}")
        return 1
    score, points = sum(r.score for r in reports), sum(r.points for r in reports)
    percent = 100.0 * score / points if points else 0.0
    print(f"total {_number(score)}/{_number(points)} ({percent:.0f}%) over {len(reports)} notebook(s)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "score": score, "points": points, "percent": percent,
            "notebooks": [{**{k: v for k, v in asdict(r).items() if k != "exercises"},
                           "score": r.score, "points": r.points,
                           "exercises": [asdict(e) for e in r.exercises]} for r in reports],
        }, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    graded_ok = all(r.problem is None for r in reports) and points > 0
    return 0 if graded_ok and percent >= args.min_score - 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
