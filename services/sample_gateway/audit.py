"""Append-only, hash-chained audit trail of every search and pull.

Each line is a JSON record carrying the hash of the record before it, so removing, editing
or reordering a line breaks the chain at that point. Records hold who, which project, when,
the criteria, counts and pseudonymous study keys: never a patient name, ID or original UID.

``python -m services.sample_gateway.audit verify FILE`` checks the chain and names the first
record that does not fit.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GENESIS = "0" * 64


def record_hash(record: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the record without its own hash."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class AuditLog:
    """Appends records under an exclusive file lock (several gateway processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(event) & {"seq", "time", "prev", "hash"})
        if reserved:  # they would break the chain for every later record
            raise ValueError(f"audit events cannot set {', '.join(reserved)}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                last = _last_record(handle)
                record = {
                    "seq": (last["seq"] + 1) if last else 1,
                    "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                    **event,
                    "prev": last["hash"] if last else GENESIS,
                }
                record["hash"] = record_hash(record)
                line = json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n"
                handle.write(line.encode("ascii"))
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="ascii") as handle:
            return [json.loads(line) for line in handle if line.strip()]


def _last_record(handle: BinaryIO) -> dict[str, Any] | None:
    """The last line's record, read backwards in blocks (the file only grows)."""
    size = handle.seek(0, os.SEEK_END)
    block = 4096
    data = b""
    position = size
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
        lines = data.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or position == 0:
            return json.loads(lines[-1])
    return None


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    first_bad: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.records} records"
        return f"audit chain broken at record {self.first_bad}: {self.problem}"


def verify(path: Path) -> Verification:
    previous = GENESIS
    count = 0
    with open(path, encoding="ascii", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                return Verification(False, count, line_number, "not a JSON record")
            expected_seq = count + 1
            if record.get("seq") != expected_seq:
                return Verification(
                    False, count, line_number,
                    f"sequence {record.get('seq')!r} where {expected_seq} was expected "
                    "(a record was removed or reordered)",
                )
            if record.get("prev") != previous:
                return Verification(False, count, line_number, "does not follow the record before it")
            if record.get("hash") != record_hash(record):
                return Verification(False, count, line_number, "content changed after it was written")
            previous = record["hash"]
            count += 1
    return Verification(True, count)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "verify":
        print("usage: python -m services.sample_gateway.audit verify AUDIT_FILE", file=sys.stderr)
        return 2
    try:
        result = verify(Path(args[1]))
    except OSError as exc:
        print(f"cannot read the audit file: {exc}", file=sys.stderr)
        return 2
    print(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
