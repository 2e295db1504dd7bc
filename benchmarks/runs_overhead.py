"""Overhead of the run machinery (extensions/runs) over plain papermill, same notebook, one run each.

    .venv/bin/python benchmarks/runs_overhead.py [--data-mb 10] [--work-seconds 0] [--kernel python3]

The notebook (in a fresh git repository, so the code version is taken for real) has a
parameters cell, reads a data file given as a parameter (``--data-mb``, hashed as input data by
the machinery), records two outputs, and optionally computes for ``--work-seconds``. After one
warm-up kernel start (not counted), it is executed once with ``papermill.execute_notebook`` and
once with ``extensions.runs.execute.run`` (parameter check, code version, kernel environment,
the tracking engine, input and output hashes, record writes), with the same parameters and
kernel, in the same process. Prints both wall times, the ratio, and the machinery's own steps
timed separately, so the difference can be read (``--repeat N``: N pairs and their median
ratio, since one pair on a shared machine varies by a few tenths of a second). The kernel's package list is cached between
runs (until the interpreter's paths change); ``--cold-environment`` measures a run without that
cache (the first run after an install), where a second interpreter lists the packages while the
kernel starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from extensions.runs import execute, provenance
from extensions.runs.parameters import check_parameters, declared_parameters

PARAMETERS = 'data_file = ""\nwork_seconds = 0.0\nn: int = 1000\n'
CELLS = [
    ("import hashlib, time\nwith open(data_file, 'rb') as handle:\n    data = handle.read()\n"
    "print(len(data), 'bytes read')"),
    ("deadline = time.perf_counter() + work_seconds\ntotal = 0\nwhile time.perf_counter() < deadline:\n"
    "    total += sum(range(n))\nprint('worked')"),
    ("from extensions.runs import record_output\nrecord_output('bytes', len(data))\n"
    "record_output('digest', hashlib.md5(data[:1000]).hexdigest())"),
]


def build(work: Path, data_mb: int, kernel: str) -> tuple[Path, Path]:
    repo = work / "repo"
    repo.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    cell = nbformat.v4.new_code_cell(PARAMETERS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, *(nbformat.v4.new_code_cell(c) for c in CELLS)]
    path = repo / "bench.ipynb"
    nbformat.write(nb, str(path))
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.org", "-c", "commit.gpgsign=false", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)
    data = work / "workspace" / "data.bin"
    data.parent.mkdir()
    data.write_bytes(os.urandom(data_mb * 1024 * 1024))
    return path, data


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-mb", type=int, default=10)
    parser.add_argument("--work-seconds", type=float, default=0.0)
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of runs (plain, then machinery); the median ratio is printed too")
    parser.add_argument("--cold-environment", action="store_true",
                        help="empty package-list cache, as on the first run after an install")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wb-runs-bench-"))
    notebook, data = build(work, args.data_mb, args.kernel)
    parameters = {"data_file": str(data), "work_seconds": args.work_seconds}

    papermill.execute_notebook(str(notebook), str(work / "warmup.ipynb"), parameters=parameters,
                               kernel_name=args.kernel, progress_bar=False)  # warm caches, not counted
    if not args.cold_environment:
        provenance.environment(args.kernel)  # the cached package list a second run finds

    pairs = []
    for _ in range(args.repeat):
        if args.cold_environment:
            os.environ["XDG_CACHE_HOME"] = str(work / f"empty-cache-{time.time_ns()}")
        plain, _ = timed(papermill.execute_notebook, str(notebook), str(work / "plain.ipynb"),
                         parameters=parameters, kernel_name=args.kernel, progress_bar=False,
                         cwd=str(notebook.parent))
        request = execute.RunRequest(notebook, parameters, project="bench", workspace=data.parent,
                                     kernel=args.kernel)
        machinery, record = timed(execute.run, request)
        assert record.status == "succeeded", record.message
        pairs.append((plain, machinery, record))

    steps = {
        "parameter check": timed(lambda: check_parameters(declared_parameters(notebook), parameters))[0],
        "code version (git)": timed(provenance.code_version, notebook)[0],
        "kernel environment": timed(provenance.environment, args.kernel)[0],
        "  the same, uncached": timed(provenance.environment_for, provenance.kernel_launch(args.kernel),
                                      work / f"cold-{time.time_ns()}")[0],
        f"input hash ({args.data_mb} MB)": timed(provenance.parameter_inputs, parameters,
                                                  notebook.parent, data.parent)[0],
    }
    print(f"notebook: {len(CELLS) + 1} code cells, {args.data_mb} MB input, "
          f"{args.work_seconds:g} s of work, kernel {args.kernel}, package list "
          f"{'uncached' if args.cold_environment else 'cached'}; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    for plain, machinery, record in pairs:
        print(f"plain papermill {plain:6.3f} s   run machinery {machinery:6.3f} s   "
              f"overhead {machinery - plain:6.3f} s   ratio {machinery / plain:.2f}   (record {record.id})")
    if len(pairs) > 1:
        ratios = sorted(m / p for p, m, _ in pairs)
        print(f"median ratio of {len(pairs)} pairs: {ratios[len(ratios) // 2]:.2f} "
              f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})")
    for name, seconds in steps.items():
        print(f"  {name:<22}{seconds:7.3f} s")


if __name__ == "__main__":
    main()
