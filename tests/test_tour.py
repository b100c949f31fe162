import re

import pytest

from minivlm.cli import main


def test_tour_runs_end_to_end_and_ends_with_the_accuracy_line(tmp_path, capsys):
    figure = tmp_path / "tour.png"
    assert main(["tour", "--steps", "3", "--device", "cpu", "--out", str(figure)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"held-out accuracy: \d+\.\d% \(2000 questions\) in \d+ s on cpu", lines[-1])
    assert figure.stat().st_size > 0


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        main(["tour", "--steps", "0", "--device", "cpu", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit):
        main(["tour", "--no-such-flag"])


def test_exercises_subcommand_finds_exercises_up_to_date():
    assert main(["exercises", "--check"]) == 0
