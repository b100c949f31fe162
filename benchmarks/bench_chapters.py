"""Wall time of every chapter and solution notebook, executed headless top to bottom.

    python benchmarks/bench_chapters.py                      # chapters/ and solutions/
    python benchmarks/bench_chapters.py chapters/05_*.ipynb  # some notebooks
    python benchmarks/bench_chapters.py --repeats 3          # min / median / max of 3 runs each
    python benchmarks/bench_chapters.py --store              # and write the (last) outputs back
    python benchmarks/bench_chapters.py --slowest 5          # and each notebook's 5 slowest cells

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


def execute_seconds(path, store=False, timeout=900, slowest=0):
    """Seconds to execute the notebook at `path` in a fresh kernel; with `store`, write its outputs back;
    with `slowest`, also print that many of its slowest cells."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    cell_started, cell_seconds = {}, {}

    def on_cell_start(cell, cell_index):
        cell_started[cell_index] = time.perf_counter()

    def on_cell_executed(cell, cell_index, execute_reply):
        cell_seconds[cell_index] = time.perf_counter() - cell_started[cell_index]

    client.on_cell_start, client.on_cell_executed = on_cell_start, on_cell_executed
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    for index, cell_time in sorted(cell_seconds.items(), key=lambda item: -item[1])[:slowest]:
        first_line = next((line for line in notebook.cells[index].source.splitlines()
                           if line.strip() and not line.startswith("#")), "")
        print(f"    cell {index:>3}: {cell_time:6.1f} s  {first_line[:70]}")
    if store:
        nbformat.write(notebook, path)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: chapters/*.ipynb and solutions/*.ipynb")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--store", action="store_true", help="write the executed notebooks back in place")
    parser.add_argument("--warm", action="store_true", help="use the user's model cache instead of a fresh one")
    parser.add_argument("--slowest", type=int, default=0, metavar="K", help="also print each notebook's K slowest cells")
    args = parser.parse_args(argv)
    if not args.warm:
        os.environ["MINIVLM_CACHE"] = tempfile.mkdtemp(prefix="minivlm-cache-")    # inherited by the kernels
    paths = args.notebooks or sorted(glob.glob(os.path.join(ROOT, "chapters", "*.ipynb"))) + sorted(
        glob.glob(os.path.join(ROOT, "solutions", "*.ipynb")))
    print(f"{'notebook':<48} {'min s':>7} {'median s':>9} {'max s':>7}  budget {BUDGET_S:.0f} s")
    over = 0
    for path in paths:
        times = [execute_seconds(path, store=args.store, slowest=args.slowest) for _ in range(args.repeats)]
        name = os.path.relpath(os.path.abspath(path), ROOT)
        flag = "" if max(times) <= BUDGET_S else "  OVER"
        over += bool(flag)
        print(f"{name:<48} {min(times):7.1f} {statistics.median(times):9.1f} {max(times):7.1f}{flag}", flush=True)
    print(f"{len(paths) - over}/{len(paths)} within {BUDGET_S:.0f} s"
          f" ({'warm' if args.warm else 'fresh'} model cache: {os.environ.get('MINIVLM_CACHE', 'default')})")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
