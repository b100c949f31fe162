"""nbgrader itself, on two solution notebooks: generate_assignment works, and autograde gives the
solution full marks, the untouched release 0, and one wrong exercise exactly its points less."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

nbgrader_api = pytest.importorskip("nbgrader.api")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_images_as_tokens", "03_contrastive"]
# the wrong submission: patchify flattens each patch in (P, P, C) order
WRONG_PATCHIFY = '''def patchify(images, patch_size):
    B, C, H, W = images.shape
    P = patch_size
    x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // P) * (W // P), C * P * P)'''
CONFIG = """c = get_config()
c.CourseDirectory.course_id = "minivlm"
c.CourseDirectory.db_assignments = [dict(name="ps1")]
c.CourseDirectory.db_students = [dict(id="solution"), dict(id="release"), dict(id="one_wrong")]
c.ExecutePreprocessor.timeout = 300
"""


def nbgrader(course, *args):
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def submit(course, student, folder, edit=None):
    target = course / "submitted" / student / "ps1"
    target.mkdir(parents=True)
    for name in NOTEBOOKS:
        nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
        if edit is not None:
            edit(name, nb)
        nbformat.write(nb, target / f"{name}.ipynb")


def break_patchify(name, nb):
    if name == "01_images_as_tokens":
        cell = next(c for c in nb.cells if (c.metadata.get("nbgrader") or {}).get("grade_id") == "answer_patchify")
        cell.source = WRONG_PATCHIFY


def test_nbgrader_generate_and_autograde(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG)
    for name in NOTEBOOKS:
        shutil.copy(REPO / "solutions" / f"{name}.ipynb", course / "source" / "ps1")
    nbgrader(course, "generate_assignment", "ps1")
    release = course / "release" / "ps1"
    for name in NOTEBOOKS:
        text = (release / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in text and re.search(r"raise NotImplementedError\(\)", text)

    submit(course, "solution", course / "source" / "ps1")
    submit(course, "release", release)
    submit(course, "one_wrong", course / "source" / "ps1", edit=break_patchify)
    nbgrader(course, "autograde", "ps1")

    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        def score(student):
            submission = gradebook.find_submission("ps1", student)
            return submission.score, submission.max_score
        patchify_points = gradebook.find_grade_cell("patchify", "01_images_as_tokens", "ps1").max_score
        full, maximum = score("solution")
        assert maximum > 0 and full == maximum
        assert score("release") == (0, maximum)
        assert score("one_wrong") == (maximum - patchify_points, maximum)
