"""Export requests as records on disk: one JSON file each, written atomically.

A request moves ``pending_review -> approved -> exported`` or ends ``refused`` (the checks
found identifying data) or ``rejected`` (a steward said no). ``approved`` is the only state
with work left: the files still have to be copied out. The service delivers right after the
approval and, at start, delivers any request left ``approved`` by a crash (a status and a
target, reconciled after a restart).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["refused", "pending_review", "approved", "rejected", "exported"]
FINAL: frozenset[str] = frozenset({"refused", "rejected", "exported"})


class ExportFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    size: int
    sha256: str


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str
    decision: Literal["approve", "reject"]
    reason: str
    at: str
    acknowledged_flags: bool = False


class Delivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str  # relative to the egress folder
    at: str
    manifest_sha256: str


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    project: str
    requester: str
    note: str = ""
    created: str
    status: Status
    files: list[ExportFile] = Field(default_factory=list)
    findings: list[dict[str, str]] = Field(default_factory=list)
    review: Review | None = None
    delivery: Delivery | None = None
    error: str | None = None

    @property
    def flagged(self) -> bool:
        return any(f.get("severity") == "flag" for f in self.findings)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["flagged"] = self.flagged
        data["total_bytes"] = self.total_bytes
        return data


class RequestStore:
    """``<root>/requests/<id>.json``; updates under one lock (threads and processes)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "requests"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = root / "requests.lock"
        self._thread_lock = threading.Lock()

    def path(self, request_id: str) -> Path:
        return self.dir / f"{request_id}.json"

    def get(self, request_id: str) -> ExportRequest | None:
        try:
            return ExportRequest.model_validate_json(self.path(request_id).read_text())
        except FileNotFoundError:
            return None

    def all(self) -> list[ExportRequest]:
        records = []
        for path in self.dir.glob("*.json"):
            try:
                records.append(ExportRequest.model_validate_json(path.read_text()))
            except (OSError, ValueError):
                continue  # a file an operator is editing; it is not lost
        return sorted(records, key=lambda r: r.created, reverse=True)

    def save(self, record: ExportRequest) -> None:
        target = self.path(record.id)
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
