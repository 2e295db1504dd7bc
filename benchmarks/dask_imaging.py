"""The imaging job (per-slice statistics and a Gaussian filter of every slice) three ways.

* sequential: plain pydicom + NumPy/SciPy, one slice after the other (the baseline);
* Dask on a LocalCluster of 1 worker (1 thread) and of 2 workers (1 thread each), reading
  the series lazily with ``open_series(chunks=1)``: one task per slice read, stats and filter.

The series is the demo archive's 50-slice CT (128 x 128, from pydicom's CT_small.dcm), and,
with ``--size N``, the same slices upsampled to N x N and written as uncompressed DICOM (so
each slice carries enough work for parallelism to matter). Cluster start-up is measured
apart from the job. Figures are medians of ``--repeat`` runs, all in this one process.

    .venv/bin/python benchmarks/dask_imaging.py --repeat 3 --size 512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.archive import build_archive
from extensions.imaging import sequential_job, slice_stats, smooth_slices
from extensions.loading import open_series


def upsampled_series(source: Path, size: int, out: Path) -> Path:
    """The series with every slice upsampled to size x size, uncompressed (new UIDs kept apart)."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        factor = max(1, size // int(ds.Rows))
        pixels = np.kron(ds.pixel_array, np.ones((factor, factor), dtype=ds.pixel_array.dtype))
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelSpacing = [float(v) / factor for v in ds.PixelSpacing]
        ds.PixelData = pixels.tobytes()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / path.name, enforce_file_format=True)
    return out


def time_it(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def dask_job(series: Path, sigma: float):
    import dask

    volume = open_series(series, chunks=1)
    stats = slice_stats(volume)
    smoothed_means = smooth_slices(volume, sigma).mean(dim=("y", "x"))
    return dask.compute(stats, smoothed_means)


def run(series: Path, repeat: int, sigma: float) -> dict[str, float]:
    from distributed import Client, LocalCluster

    files = [str(p) for p in sorted(series.iterdir()) if p.is_file()]
    figures: dict[str, float] = {}
    figures["sequential"], (base_stats, _) = time_it(lambda: sequential_job(files, sigma), repeat)
    for workers in (1, 2):
        start = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit="1GiB",
                               dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
        figures[f"startup_{workers}w"] = time.perf_counter() - start
        dask_job(series, sigma)  # warm the workers (imports) before timing
        figures[f"dask_{workers}w"], (stats, _) = time_it(lambda: dask_job(series, sigma), repeat)
        assert np.allclose(np.sort(stats.values[:, 2]), np.sort(base_stats[:, 2]), rtol=1e-5)
        client.close()
        cluster.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=0, help="also run on slices upsampled to SIZE x SIZE")
    parser.add_argument("--sigma", type=float, default=2.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dask-imaging-"))
    archive = build_archive(work / "archive")
    series = (archive.root / archive.benchmark_series()[0].path).parent
    cases = [("50 x 128 x 128 (demo archive)", series)]
    if args.size:
        cases.append((f"50 x {args.size} x {args.size} (upsampled)", upsampled_series(series, args.size, work / "big")))
    for label, folder in cases:
        f = run(folder, args.repeat, args.sigma)
        print(f"\n{label}: median of {args.repeat}")
        print(f"  sequential pydicom+numpy  {f['sequential']:.3f} s")
        print(f"  dask, 1 worker            {f['dask_1w']:.3f} s   (cluster start {f['startup_1w']:.2f} s)")
        print(f"  dask, 2 workers           {f['dask_2w']:.3f} s   (cluster start {f['startup_2w']:.2f} s)")
        print(f"  speed-up 1 -> 2 workers   {f['dask_1w'] / f['dask_2w']:.2f}x")
        print(f"  sequential / dask 1w      {f['sequential'] / f['dask_1w']:.2f}x")
        print(f"  sequential / dask 2w      {f['sequential'] / f['dask_2w']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
