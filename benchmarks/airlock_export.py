"""What the airlock costs on top of copying the files out.

    .venv/bin/python benchmarks/airlock_export.py [--mb 200] [--dicom 50] [--repeat 3]

One export of a results file of ``--mb`` MB plus ``--dicom`` de-identified CT slices (pydicom's
CT_small, de-identified by the sample gateway) goes through the whole airlock in one process:
request (staging copy with SHA-256), checks, review, delivery (copy, hash check, manifest),
three audit records. The baseline, measured in the same run on the same files, is what any
egress needs at least: two plain copies (into a holding area, then out). Medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402
import pydicom.data  # noqa: E402

from hub_config.loader import parse_config  # noqa: E402
from hub_config.storage import StorageLayout  # noqa: E402
from services.airlock.airlock import Airlock, Limits  # noqa: E402
from services.sample_gateway.deidentify import deidentify  # noqa: E402
from services.sample_gateway.pseudonyms import ProjectKeys  # noqa: E402

CONFIG = parse_config("""\
data_stewards: [stella]
profiles: [{slug: s, name: S, cpu: 1, memory: 1G}]
projects: [{id: magi, title: M, members: [anna], approval: {reference: R, expires: 2099-12-31}}]
""")


def prepare(root: Path, mb: int, slices: int) -> StorageLayout:
    storage = StorageLayout(root / "data")
    out = storage.project_dir("magi") / "export"
    (out / "ct").mkdir(parents=True)
    with open(out / "predictions.bin", "wb") as handle:
        chunk = bytes(range(256)) * 4096
        for _ in range(mb):
            handle.write(chunk)
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    clean = deidentify(ds, ProjectKeys(b"k" * 32, "magi")).dataset
    for i in range(slices):
        clean.save_as(out / "ct" / f"slice-{i:03d}.dcm", enforce_file_format=True)
    return storage


def airlock_once(storage: Path | StorageLayout, root: Path) -> float:
    airlock = Airlock(lambda: CONFIG, storage, root / "airlock", root / "egress",
                      limits=Limits(max_files=10_000, max_bytes=64 * 1024**3),
                      clock=lambda: dt.datetime.now(dt.timezone.utc))
    began = time.perf_counter()
    record = airlock.submit("anna", "magi", ["export"])
    assert record.status == "pending_review", record.findings
    done = airlock.review("stella", record.id, "approve", "benchmark")
    assert done.status == "exported"
    return time.perf_counter() - began


def baseline_once(storage: StorageLayout, root: Path) -> float:
    source = storage.project_dir("magi") / "export"
    began = time.perf_counter()
    shutil.copytree(source, root / "hold")
    shutil.copytree(root / "hold", root / "out")
    elapsed = time.perf_counter() - began
    shutil.rmtree(root / "hold")
    shutil.rmtree(root / "out")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--dicom", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        root = Path(tmp)
        storage = prepare(root, args.mb, args.dicom)
        ours, base = [], []
        for i in range(args.repeat):
            base.append(baseline_once(storage, root))
            ours.append(airlock_once(storage, root / f"run{i}"))
    o, b = statistics.median(ours), statistics.median(base)
    print(f"export of {args.mb} MB + {args.dicom} DICOM slices, median of {args.repeat}:")
    print(f"  airlock (stage+hash, checks, review, deliver+verify, audit): {o:.2f} s")
    print(f"  baseline (two plain copies):                               {b:.2f} s")
    print(f"  ratio airlock/baseline: {o / b:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
