"""Writing a pull into the project workspace: all of it, or nothing.

Files go to a hidden ``.partial-<pull id>`` folder beside the final one; only when every
file and the manifest are written is the folder renamed into place (one atomic rename on
the same file system). A failed or interrupted pull leaves nothing a notebook could mistake
for data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.filewriter import dcmwrite

MANIFEST_FIELDS = (
    "file", "sha256", "bytes", "patient", "study_key", "study_date", "study_description",
    "series_uid", "series_description", "series_number", "modality", "sop_uid",
    "sop_class_uid", "instance_number", "transfer_syntax", "rows", "columns", "frames",
)


_SYNC_THREADS = 8
_UID = re.compile(r"[0-9]{1,64}(\.[0-9]{1,64}){0,63}")


@dataclass(frozen=True)
class ManifestRow:
    file: str
    sha256: str
    bytes: int
    patient: str
    study_key: str
    study_date: str
    study_description: str
    series_uid: str
    series_description: str
    series_number: str
    modality: str
    sop_uid: str
    sop_class_uid: str
    instance_number: str
    transfer_syntax: str
    rows: int
    columns: int
    frames: int


class PullWriter:
    def __init__(self, samples_dir: Path, pull_id: str) -> None:
        self.final = samples_dir / pull_id
        self.partial = samples_dir / f".partial-{pull_id}"
        self.rows: list[ManifestRow] = []
        samples_dir.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir()

    def write(self, ds: Dataset) -> ManifestRow:
        """Write one de-identified instance under <study key>/<series UID>/<SOP UID>.dcm."""
        return self.add(write_instance(self.partial, ds))

    def add(self, row: ManifestRow) -> ManifestRow:
        """Record an instance that :func:`write_instance` wrote into :attr:`partial`."""
        self.rows.append(row)
        return row

    def commit(self, header: dict[str, Any]) -> Path:
        """Write manifest.json and manifest.csv, then move the pull into place."""
        rows = sorted(self.rows, key=lambda r: (r.study_key, r.series_uid, _number(r.instance_number), r.sop_uid))
        manifest = {**header, "instances": [asdict(r) for r in rows]}
        (self.partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        with open(self.partial / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
        # Everything on disk before the rename makes the pull visible. The instances were
        # written without waiting for the disk; their syncs run side by side here, which on a
        # busy disk costs about one sync instead of one per file.
        files = [self.partial / r.file for r in rows]
        files += [self.partial / "manifest.json", self.partial / "manifest.csv"]
        folders = {self.partial}
        for path in files:
            folders.update(p for p in path.parents if p.is_relative_to(self.partial))
        with ThreadPoolExecutor(_SYNC_THREADS) as pool:
            list(pool.map(_fsync, files))
            list(pool.map(_fsync, folders))
        os.rename(self.partial, self.final)
        _fsync(self.final.parent)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def write_instance(partial: Path, ds: Dataset) -> ManifestRow:
    """Write one de-identified instance under ``partial``/<study key>/<series UID>/<SOP UID>.dcm
    and return its manifest row (runs in worker threads and processes; synced by commit)."""
    parts = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    if not all(_UID.fullmatch(part) for part in parts):  # they become file names
        raise ValueError("a de-identified object without valid UIDs")
    relative = Path(parts[0]) / parts[1] / f"{parts[2]}.dcm"
    target = partial / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return ManifestRow(
            file=str(relative),
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            patient=str(ds.get("PatientID", "")),
            study_key=str(ds.StudyInstanceUID),
            study_date=str(ds.get("StudyDate", "")),
            study_description=str(ds.get("StudyDescription", "")),
            series_uid=str(ds.SeriesInstanceUID),
            series_description=str(ds.get("SeriesDescription", "")),
            series_number=str(ds.get("SeriesNumber", "")),
            modality=str(ds.get("Modality", "")),
            sop_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            instance_number=str(ds.get("InstanceNumber", "")),
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


def remove_partials(samples_dir: Path) -> list[Path]:
    """Remove half-written pulls left by a crash; returns what was removed."""
    removed = []
    if samples_dir.is_dir():
        for entry in samples_dir.glob(".partial-*"):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
