"""The GitHub Classroom template: its workflow names one grading command per exercise, worth the
exercise's points, and each command exits 0 on the solution and non-zero on the release."""

import json
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "teaching" / "classroom"
MANIFEST = json.loads((REPO / "minivlm" / "course" / "checks.json").read_text())["notebooks"]


def workflow_steps():
    workflow = yaml.safe_load((TEMPLATE / ".github" / "workflows" / "classroom.yml").read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def grader_steps():
    return [step for step in workflow_steps() if step.get("uses", "").startswith(
        "classroom-resources/autograding-command-grader")]


def test_one_step_per_exercise_with_its_points():
    steps = grader_steps()
    expected = {(f"{notebook}.ipynb", check["id"]): check["points"]
                for notebook, checks in MANIFEST.items() for check in checks}
    named = {}
    for step in steps:
        command = shlex.split(step["with"]["command"])
        assert command[:3] == ["minivlm", "grade", "--only"], command
        named[(command[-1], command[3])] = step["with"]["max-score"]
        assert (TEMPLATE / command[-1]).exists()
        assert 0 < step["with"]["timeout"] <= 60
    assert named == expected
    reporter = workflow_steps()[-1]
    assert reporter["uses"].startswith("classroom-resources/autograding-grading-reporter")
    assert reporter["with"]["runners"].split(",") == [step["id"] for step in steps]
    for step in steps:
        assert reporter["env"][f"{step['id'].upper()}_RESULTS"] == f"${{{{steps.{step['id']}.outputs.result}}}}"
    install = "\n".join(step.get("run", "") for step in workflow_steps())
    assert "torch==" in install and "download.pytorch.org/whl/cpu" in install


def run_command(command, notebook_source, tmp_path):
    """Run a workflow command in a fresh folder holding `notebook_source` under the name it grades."""
    argv = shlex.split(command)
    folder = tmp_path / f"{argv[3]}-{notebook_source.parent.name}"
    folder.mkdir()
    shutil.copy(notebook_source, folder / argv[-1])
    executable = shutil.which("minivlm")
    argv = [executable, *argv[1:]] if executable else [sys.executable, "-m", "minivlm.cli", *argv[1:]]
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=900)
    return done.returncode, done.stdout[-1500:] + done.stderr[-1500:]


def test_every_command_passes_the_solution_and_fails_the_release(tmp_path):
    runs = []
    for step in grader_steps():
        command = step["with"]["command"]
        notebook = shlex.split(command)[-1]
        runs.append((command, REPO / "solutions" / notebook, True))
        runs.append((command, TEMPLATE / notebook, False))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda run: run_command(run[0], run[1], tmp_path), runs))
    for (command, source, should_pass), (code, output) in zip(runs, results):
        assert (code == 0) == should_pass, f"{command} on {source}: exit {code}\n{output}"
