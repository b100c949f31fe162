"""Every benchmark script still runs and prints its table (at the smallest settings: a smoke test, no timings checked)."""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.mark.parametrize("script, args, expected", [
    ("bench_vlm.py", ["--steps", "1", "--images", "4", "--device", "cpu"], "| cpu | unshuffle | 4 | fp32 |"),
    ("bench_connectors.py", ["--steps", "1", "--images", "2", "--device", "cpu"], "| cpu | BLIP-2 stage 2 (Q-Former, Q=32) | 32 |"),
    ("bench_lm.py", ["--lengths", "4", "--repeats", "1", "--device", "cpu"], "True"),
    ("bench_clip.py", ["--repeats", "1", "--device", "cpu"], "siglip"),
    ("bench_render.py", ["--seconds", "0.01"], "render img/s"),
    ("bench_window_attention.py", ["--sizes", "112", "--repeats", "1", "--device", "cpu"], "| cpu | 112 | 64 |"),
    ("bench_tour.py", ["--recipes", "v1", "v2", "--seeds", "0", "--steps", "2"], "| v2 | 0 |"),
    # no CUDA here: the CPU row runs, the bf16 and compile rows skip cleanly, MFU is not guessed
    ("bench_gpu.py", ["--steps", "1", "--images", "2", "--device", "cpu"],
     ("| cpu | fp32 | 2 |", "| cpu | bf16 | skipped: needs a CUDA device", "| cpu | bf16+compile | skipped",
      "MFU not computed")),
    # chapter 00 runs in ~6 s (no model to train): its 60-s budget holds even on a busy machine
    ("bench_chapters.py", [os.path.join(os.path.dirname(BENCHMARKS), "chapters", "00_shapes_world.ipynb"),
                           "--slowest", "1"], "1/1 within 60 s"),
])
def test_benchmark_runs_and_prints_its_table(script, args, expected):
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for text in (expected,) if isinstance(expected, str) else expected:
        assert text in result.stdout, result.stdout
