"""Wall time of every chapter and solution notebook, executed headless top to bottom.

    python benchmarks/bench_chapters.py                      # chapters/ and solutions/
    python benchmarks/bench_chapters.py chapters/05_*.ipynb  # some notebooks
    python benchmarks/bench_chapters.py --repeats 3          # min / median / max of 3 runs each
    python benchmarks/bench_chapters.py --store              # and write the (last) outputs back

Each notebook runs in a fresh kernel (nbclient, the engine behind `jupyter nbconvert
--execute`); the stored outputs are left alone unless --store. Streams are coalesced, so a
progress bar is stored as its final line. The pretrained models of minivlm.pretrained are
cached between notebooks, as in CI: by default in a fresh, empty cache directory for the
whole run (the first notebook that needs one pays for its training); --warm uses the
user's cache ($MINIVLM_CACHE or ~/.cache/minivlm) as it is. The course's budget
is 60 s a chapter on a 2-core CPU in default settings; the table marks any over it.
Time a quiet machine: a second busy process on two cores doubles every figure.
"""

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

BUDGET_S = 60.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def execute_seconds(path, store=False, timeout=900):
    """Seconds to execute the notebook at `path` in a fresh kernel; with `store`, write its outputs back."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    if store:
        nbformat.write(notebook, path)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: chapters/*.ipynb and solutions/*.ipynb")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--store", action="store_true", help="write the executed notebooks back in place")
    parser.add_argument("--warm", action="store_true", help="use the user's model cache instead of a fresh one")
    args = parser.parse_args(argv)
    if not args.warm:
        os.environ["MINIVLM_CACHE"] = tempfile.mkdtemp(prefix="minivlm-cache-")    # inherited by the kernels
    paths = args.notebooks or sorted(glob.glob(os.path.join(ROOT, "chapters", "*.ipynb"))) + sorted(
        glob.glob(os.path.join(ROOT, "solutions", "*.ipynb")))
    print(f"{'notebook':<48} {'min s':>7} {'median s':>9} {'max s':>7}  budget {BUDGET_S:.0f} s")
    over = 0
    for path in paths:
        times = [execute_seconds(path, store=args.store) for _ in range(args.repeats)]
        name = os.path.relpath(os.path.abspath(path), ROOT)
        flag = "" if max(times) <= BUDGET_S else "  OVER"
        over += bool(flag)
        print(f"{name:<48} {min(times):7.1f} {statistics.median(times):9.1f} {max(times):7.1f}{flag}", flush=True)
    print(f"{len(paths) - over}/{len(paths)} within {BUDGET_S:.0f} s"
          f" ({'warm' if args.warm else 'fresh'} model cache: {os.environ.get('MINIVLM_CACHE', 'default')})")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
