"""Append-only, hash-chained audit trail of every search and pull.

Each line is a JSON record carrying the hash of the record before it, so removing, editing
or reordering a line breaks the chain at that point. Records hold who, which project, when,
the criteria, counts and pseudonymous study keys: never a patient name, ID or original UID.

``python -m services.sample_gateway.audit verify FILE`` checks the chain and names the first
record that does not fit.

A torn last line, and only that, is repaired. Appends are one ``write`` of a whole line
followed by ``fsync``; a line without its line end at the very end of the file is what a
crash, a full disk or a power cut in the middle of that write leaves, and nothing else
does. Refusing every later append would stop every search and pull of every project until
an admin edits the file by hand, which is the same repair done with less care. So the next
append cuts the file back to its last complete line and first writes an ``audit_repair``
record that carries the removed bytes (their length and SHA-256, the bytes themselves
base64-encoded, and a copy in ``<audit file>.torn-<time>``): nothing is lost, the chain
stays verifiable, and the repair is itself in the chain and in the gateway log. A torn line
that is a complete, correctly chained record missing only its line end is kept and ended.

What the chain does and does not prove: it catches any edit, removal or reordering made
without recomputing the hashes after it. Someone who can write the gateway's private folder
can rewrite the whole chain, or cut its end off, and it would still verify. Anchors catch
that: the gateway logs every record's sequence number and full hash (the region's log
shipping keeps them elsewhere), and ``verify --anchor SEQ:HASH`` (repeatable) checks the
file against them; ``verify`` prints the head to record after each check. Duplicate keys
in a record (which ``grep`` and a JSON parser read differently) are refused.

Anything else that is wrong (a complete last line that is not a record, a chain that does
not fit) cannot come from an interrupted write: appends then fail closed with
:class:`.errors.AuditUnavailable` (HTTP 503) and the gateway does nothing that would need an
audit record until an admin has looked (``verify`` names the line).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import AuditUnavailable

GENESIS = "0" * 64
MAX_EMBEDDED_TORN_BYTES = 65536  # larger torn tails are kept in the side file only

log = logging.getLogger("sample_gateway.audit")


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
                last = self._last_record_repairing(handle)
                record = _write(handle, last, event)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record

    def check(self) -> None:
        """Raise :class:`AuditUnavailable` now if appends would fail closed (a torn last line
        is fine: the next append repairs it)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                tail = _tail(handle)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        if tail.torn is None or _completes(tail):
            self._parse_last(tail)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="ascii") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    # -- the tail ---------------------------------------------------------------------------
    def _last_record_repairing(self, handle: BinaryIO) -> dict[str, Any] | None:
        tail = _tail(handle)
        if tail.torn is None:
            return self._parse_last(tail)
        if _completes(tail):  # a whole record that only lacks its line end
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            log.warning("audit file %s: the last record had no line end; added", self.path)
            return json.loads(tail.torn)
        last = self._parse_last(tail)
        torn = tail.torn
        side = self.path.with_name(
            f"{self.path.name}.torn-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        )
        side_fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(side_fd, "wb") as copy:
            copy.write(torn)
            copy.flush()
            os.fsync(copy.fileno())
        os.ftruncate(handle.fileno(), tail.complete_end)
        os.fsync(handle.fileno())
        note: dict[str, Any] = {
            "actor": "sample-gateway",
            "action": "audit_repair",
            "outcome": "repaired",
            "reason": "torn_last_line",
            "detail": "The last line had no line end: an append was interrupted (crash, full "
                      "disk or power cut). It was cut off and is kept here and in the side file.",
            "torn_bytes": len(torn),
            "torn_sha256": hashlib.sha256(torn).hexdigest(),
            "torn_file": side.name,
        }
        if len(torn) <= MAX_EMBEDDED_TORN_BYTES:
            note["torn_base64"] = base64.b64encode(torn).decode("ascii")
        repair = _write(handle, last, note)
        log.error("audit file %s: cut off a torn last line of %d bytes (kept in %s); audit "
                  "record #%s says so", self.path, len(torn), side.name, repair["seq"])
        return repair

    def _parse_last(self, tail: _Tail) -> dict[str, Any] | None:
        if tail.last is None:
            return None
        try:
            record = json.loads(tail.last)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("seq"), int) or not isinstance(
            record.get("hash"), str
        ):
            raise AuditUnavailable(
                log_message=f"audit file {self.path}: the last complete line is not an audit "
                "record; appends refused until an admin has checked the file "
                f"(python -m services.sample_gateway.audit verify {self.path})",
            )
        return record


@dataclass(frozen=True)
class _Tail:
    last: bytes | None  # the last complete line (without its line end), None if there is none
    complete_end: int  # file offset just after the last line end
    torn: bytes | None  # bytes after the last line end, None if the file ends with one


def _tail(handle: BinaryIO) -> _Tail:
    """The end of the file, read backwards in blocks (the file only grows)."""
    size = handle.seek(0, os.SEEK_END)
    data = b""
    position = size
    while True:
        ends = data.endswith(b"\n")
        cut = data.rfind(b"\n")
        if ends or cut >= 0 or position == 0:
            if ends or not data:
                complete, torn = data, None
            elif cut >= 0:
                complete, torn = data[: cut + 1], data[cut + 1 :]
            else:
                complete, torn = b"", data
            lines = complete.rstrip(b"\n")
            start = lines.rfind(b"\n")
            if start >= 0 or position == 0:
                return _Tail(lines[start + 1 :] or None, position + len(complete), torn)
        step = min(4096, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data


def _completes(tail: _Tail) -> bool:
    """Whether the torn bytes are a whole record that follows the last one."""
    if tail.torn is None:
        return False
    try:
        record = json.loads(tail.torn)
        previous = json.loads(tail.last) if tail.last else None
    except ValueError:
        return False
    if not isinstance(record, dict) or record.get("hash") != record_hash(record):
        return False
    expected_prev = previous.get("hash") if isinstance(previous, dict) else GENESIS
    expected_seq = (previous.get("seq", 0) + 1) if isinstance(previous, dict) else 1
    return record.get("prev") == expected_prev and record.get("seq") == expected_seq


def _write(handle: BinaryIO, last: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    record = {
        "seq": (last["seq"] + 1) if last else 1,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        **event,
        "prev": last["hash"] if last else GENESIS,
    }
    record["hash"] = record_hash(record)
    line = json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n"
    handle.write(line.encode("ascii"))
    handle.flush()
    os.fsync(handle.fileno())
    return record


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    first_bad: int | None = None
    problem: str = ""
    head: str = field(default="", compare=False)  # "SEQ:HASH" of the last record

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.records} records"
        if self.first_bad is None:
            return f"audit chain broken: {self.problem}"
        return f"audit chain broken at record {self.first_bad}: {self.problem}"


class _DuplicateKey(ValueError):
    pass


def _strict_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    record: dict[str, object] = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def verify(path: Path, anchors: dict[int, str] | None = None) -> Verification:
    """Check the chain; ``anchors`` maps sequence numbers to hashes recorded elsewhere."""
    anchors = dict(anchors or {})
    previous = GENESIS
    count = 0
    with open(path, encoding="ascii", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_strict_object)
            except _DuplicateKey as duplicate:
                return Verification(False, count, line_number,
                                    f"the key {duplicate} appears twice (a forged line)")
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                if not line.endswith("\n"):
                    return Verification(
                        False, count, line_number,
                        "the last line is incomplete (an append was interrupted); the gateway's "
                        "next append cuts it off and records that in an audit_repair record",
                    )
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
            expected_hash = anchors.pop(expected_seq, None)
            if expected_hash is not None and expected_hash != record["hash"]:
                return Verification(False, count, line_number,
                                    "does not match the anchor recorded for it (the chain was rewritten)")
            previous = record["hash"]
            count += 1
    if anchors:
        missing = min(anchors)
        return Verification(False, count, None,
                            f"the file ends after record {count}, but record {missing} has an anchor "
                            "(the file was cut short)")
    return Verification(True, count, head=f"{count}:{previous}")


_FULL_HASH = re.compile(r"[0-9a-f]{64}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.sample_gateway.audit",
        description="Verify the sample gateway's hash-chained audit file.",
    )
    parser.add_argument("command", choices=["verify"])
    parser.add_argument("audit_file", type=Path)
    parser.add_argument("--anchor", action="append", default=[], metavar="SEQ:HASH",
                        help="a record's hash as the gateway log recorded it (repeatable)")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        anchors = {}
        for anchor in args.anchor:
            seq, _, digest = anchor.strip().partition(":")
            if not (seq.isdigit() and _FULL_HASH.fullmatch(digest.lower())):
                raise ValueError(anchor)
            anchors[int(seq)] = digest.lower()
    except SystemExit:
        return 2
    except ValueError:
        print("an anchor is SEQ:HASH with the record's whole hash (64 hexadecimal digits) as the "
              "gateway log's 'audit anchor' line shows it; a shortened hash cannot be checked",
              file=sys.stderr)
        return 2
    try:
        result = verify(args.audit_file, anchors)
    except OSError as exc:
        print(f"cannot read the audit file: {exc}", file=sys.stderr)
        return 2
    print(result)
    if result.ok and result.head:
        print(f"head (record it as an anchor): {result.head}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    from hub_config.console import run_tool

    raise SystemExit(run_tool(main))
