"""`minivlm tour` and `minivlm ask` end to end at a tiny scale, and their handling of bad input."""

import os
import re

import pytest
import torch

from minivlm import cli, tour
from minivlm.train import save_checkpoint

ACCURACY_LINE = re.compile(r"^held-out accuracy: \d+\.\d% \(\d+ questions\) in \d+ s on cpu$")


@pytest.fixture(scope="module")
def toured(tmp_path_factory):
    """One tiny tour (3 steps): its output, figure and checkpoint."""
    folder = tmp_path_factory.mktemp("tour")
    figure, checkpoint = folder / "tour.png", folder / "ckpt" / "tour.pt"
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("builtins.print", lambda *args, **kwargs: lines.append(" ".join(map(str, args))))
    try:
        status = cli.main(["tour", "--steps", "3", "--seed", "1", "--device", "cpu", "--quiet",
                           "--out", str(figure), "--checkpoint", str(checkpoint)])
    finally:
        capture.undo()
    return status, "\n".join(lines).splitlines(), figure, checkpoint


def run(argv, capsys):
    """(exit status, stdout, error message): errors end the command with SystemExit(message)."""
    try:
        status, error = cli.main(argv), ""
    except SystemExit as exit:
        status, error = 2, str(exit.code)
    return status, capsys.readouterr().out, error


def test_tour_prints_answers_saves_figure_and_checkpoint_and_ends_with_accuracy(toured):
    status, lines, figure, checkpoint = toured
    assert status == 0
    assert ACCURACY_LINE.match(lines[-1]), lines[-1]
    assert "(2000 questions)" in lines[-1]
    assert any(line.startswith("held-out accuracy per question type: count") for line in lines)
    assert sum(line.lstrip().startswith(("✓", "✗")) for line in lines) == 8
    assert figure.stat().st_size > 1000 and figure.read_bytes()[:4] == b"\x89PNG"
    state = torch.load(checkpoint, weights_only=True)
    assert state["extra"]["kind"] == tour.CHECKPOINT_KIND and state["step"] == 3
    assert not [p for p in os.listdir(figure.parent) if ".tmp" in p]


def test_ask_answers_about_a_fresh_scene(toured, tmp_path, capsys):
    checkpoint = toured[3]
    out = tmp_path / "ask.png"
    status, text, _ = run(["ask", "--checkpoint", str(checkpoint), "--question", "how many red shapes are there ?",
                           "--seed", "3", "--out", str(out), "--device", "cpu"], capsys)
    assert status == 0
    assert re.search(r"^answer: ", text, re.MULTILINE) and "question: how many red shapes are there ?" in text
    assert re.search(r"^image:    a .* \.$", text, re.MULTILINE)        # the scene's caption, to check by eye
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_ask_reads_an_image_file_and_resizes_on_request(toured, tmp_path, capsys):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    checkpoint = toured[3]
    image_path = tmp_path / "scene.png"
    plt.imsave(image_path, torch.rand(64, 64, 3).numpy())
    out = tmp_path / "ask.png"
    argv = ["ask", "--checkpoint", str(checkpoint), "--question", "is there a red circle ?",
            "--image", str(image_path), "--out", str(out), "--device", "cpu"]
    status, _, err = run(argv, capsys)
    assert status == 2 and "64x64" in err and "32x32" in err and "--resize" in err
    assert not out.exists()
    status, text, _ = run(argv + ["--resize"], capsys)
    assert status == 0 and "answer:" in text and out.exists()


@pytest.mark.parametrize("question, message", [
    ("how many dragons are there ?", "unknown word 'dragons'"),
    ("<user> how many shapes are there ? <assistant>", "no <image> placeholder"),
    ("<user> <image> how many shapes are there ?", "must end with <assistant>"),
])
def test_ask_rejects_bad_questions(toured, tmp_path, capsys, question, message):
    out = tmp_path / "ask.png"
    status, _, err = run(["ask", "--checkpoint", str(toured[3]), "--question", question, "--out", str(out)], capsys)
    assert status == 2 and message in err and err.startswith("minivlm ask: --question")
    assert not out.exists()


def test_ask_rejects_bad_checkpoints(tmp_path, capsys):
    out = tmp_path / "ask.png"
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(os.urandom(2000))
    other = tmp_path / "other.pt"
    save_checkpoint(str(other), torch.nn.Linear(3, 4))
    for path, message in [(tmp_path / "missing.pt", "not found"), (corrupted, "corrupted"),
                          (other, "not a minivlm VLM checkpoint")]:
        status, _, err = run(["ask", "--checkpoint", str(path), "--question", "how many shapes are there ?",
                              "--out", str(out)], capsys)
        assert status == 2 and message in err and err.startswith("minivlm ask: --checkpoint"), err
    assert not out.exists()


def test_ask_rejects_a_checkpoint_whose_weights_do_not_fit(toured, tmp_path, capsys):
    state = torch.load(toured[3], weights_only=True)
    state["extra"]["llava_config"]["text_dim"] = 32
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    status, _, err = run(["ask", "--checkpoint", str(broken), "--question", "how many shapes are there ?",
                          "--out", str(tmp_path / "ask.png")], capsys)
    assert status == 2 and "does not fit" in err


def test_tour_rejects_bad_arguments_before_training(tmp_path, capsys):
    status, _, err = run(["tour", "--steps", "0", "--out", str(tmp_path / "t.png"),
                          "--checkpoint", str(tmp_path / "t.pt")], capsys)
    assert status == 2 and "--steps" in err
    status, _, err = run(["tour", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "t.pt")], capsys)
    assert status == 2 and "is a directory" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["ask", "--question", "how many shapes are there ?", "--device", "gpu"], "--device must be cpu, cuda"),
    (["ask", "--question", "how many shapes are there ?", "--device", "cuda:7"], "no such device"),
    (["ask", "--question", "how many shapes are there ?", "--out", "{file}/ask.png"], "is a file, not a directory"),
    (["ask", "--question", "how many shapes are there ?", "--out", "/proc/ask.png"], "cannot write to /proc/ask.png"),
    (["ask", "--question", ""], "--question is empty"),
    (["ask", "--question", "  "], "--question is empty"),
    (["ask", "--question", "how many shapes are there ?", "--seed", "-1"], "--seed must be >= 0"),
    (["tour", "--threads", "0"], "--threads must be >= 1"),
    (["tour", "--device", "cuda:7"], "no such device"),
    (["tour", "--checkpoint", "{file}/t.pt"], "--checkpoint: cannot write"),
    (["capstone", "--seeds", "-1"], "--seeds must be >= 0"),
    (["capstone", "--steps", "0"], "--steps must be >= 1"),
    (["capstone", "--out", "{file}"], "is a file"),
    (["capstone", "--out", "{file}/sub"], "is a file, not a directory"),
])
def test_user_mistakes_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    if "--out" not in argv and argv[0] != "capstone":
        argv += ["--out", str(tmp_path / "out.png")]
    if argv[0] == "tour" and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(tmp_path / "t.pt")]
    if argv[0] == "capstone" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "capstone")]
    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    status, _, err = run(argv, capsys)
    assert status == 2 and message in err and err.startswith(f"minivlm {argv[0]}: ") and "\n" not in err, err
    assert os.listdir(tmp_path) == ["file"]


def test_exercises_subcommand_is_forwarded(tmp_path, capsys):
    status, text, _ = run(["exercises", "--check", "--solutions", str(tmp_path), "--exercises", str(tmp_path)], capsys)
    assert status == 0 and text == ""


def test_grade_subcommand_is_forwarded(tmp_path, capsys):
    status, text, _ = run(["grade", str(tmp_path / "missing.ipynb")], capsys)
    assert status == 1 and "could not read the notebook" in text and "total 0/0" in text
