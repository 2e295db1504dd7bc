"""The hash-chained audit trail: tampering found at the right record, concurrent appends, CLI."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.sample_gateway.audit import (
    GENESIS,
    AuditLog,
    Verification,
    main,
    record_hash,
    verify,
)

ROOT = Path(__file__).resolve().parents[1]
N = 10


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    for n in range(1, N + 1):
        log.append({"actor": "anna", "project": "magi", "action": "search", "n": n,
                    "criteria": {"modality": "CT", "description": "thörax"}})
    return log.path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines(keepends=True)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="ascii")


# -- records -------------------------------------------------------------------------------

def test_record_hash_golden_and_ignores_its_own_hash() -> None:
    record = {"seq": 1, "time": "2024-01-02T03:04:05.678+00:00", "actor": "anna",
              "project": "magi", "action": "search", "prev": GENESIS}
    golden = "137ce7586a1645e688761209dd91076c64048faeb03f52d223fe5cc436980365"
    assert record_hash(record) == golden
    assert record_hash({**record, "hash": "anything"}) == golden
    assert record_hash(dict(reversed(list(record.items())))) == golden  # key order irrelevant
    assert record_hash({**record, "actor": "ånna"}) == (
        "5cb349331d9e27886c82c7a5cae4de2e8a3be2eb9a8c306e19a3edd1b66314b5"
    )


def test_appended_records_form_a_chain(chain: Path) -> None:
    records = AuditLog(chain).records()
    assert [r["seq"] for r in records] == list(range(1, N + 1))
    assert [r["n"] for r in records] == list(range(1, N + 1))
    assert records[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    for record in records:
        assert record["hash"] == record_hash(record)
        assert set(record) == {"seq", "time", "actor", "project", "action", "n", "criteria", "prev", "hash"}
        assert record["time"].endswith("+00:00")
    # one ASCII JSON object a line; non-ASCII text escaped
    assert all(line.endswith("\n") and json.loads(line) for line in lines_of(chain))
    assert "th\\u00f6rax" in chain.read_text(encoding="ascii")
    assert oct(chain.stat().st_mode & 0o777) == "0o600"
    assert oct(chain.parent.stat().st_mode & 0o777) == "0o700"


def test_append_returns_the_record_written(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    first = log.append({"action": "pull"})
    second = log.append({"action": "search"})
    assert log.records() == [first, second]
    assert (first["seq"], first["prev"], second["seq"], second["prev"]) == (1, GENESIS, 2, first["hash"])


@pytest.mark.parametrize("field", ["seq", "time", "prev", "hash"])
def test_events_cannot_set_the_chain_fields(tmp_path: Path, field: str) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.append({"action": "search"})
    with pytest.raises(ValueError, match=f"audit events cannot set {field}$"):
        log.append({"action": "pull", field: 99})
    log.append({"action": "pull"})
    assert verify(log.path) == Verification(True, 2)


def test_records_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "none.jsonl").records() == []


def test_long_records_beyond_one_read_block(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    for n in range(3):
        log.append({"study_keys": [f"2.25.{n}{i:040d}" for i in range(300)]})  # ~14 kB a line
    assert [r["seq"] for r in log.records()] == [1, 2, 3]
    assert verify(log.path) == Verification(True, 3)


# -- verification --------------------------------------------------------------------------

def test_intact_chain_verifies(chain: Path) -> None:
    result = verify(chain)
    assert result == Verification(True, N)
    assert str(result) == f"audit chain intact: {N} records"


def test_empty_file_verifies(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("")
    assert verify(tmp_path / "a.jsonl") == Verification(True, 0)


def test_edited_field_is_found_at_that_record(chain: Path) -> None:
    lines = lines_of(chain)
    record = json.loads(lines[4])
    record["actor"] = "mallory"
    lines[4] = json.dumps(record, sort_keys=True) + "\n"
    write_lines(chain, lines)
    result = verify(chain)
    assert result == Verification(False, 4, 5, "content changed after it was written")
    assert str(result) == "audit chain broken at record 5: content changed after it was written"


def test_edited_field_with_recomputed_hash_is_found_at_the_next_record(chain: Path) -> None:
    lines = lines_of(chain)
    record = json.loads(lines[4])
    record["actor"] = "mallory"
    record["hash"] = record_hash(record)
    lines[4] = json.dumps(record, sort_keys=True) + "\n"
    write_lines(chain, lines)
    assert verify(chain) == Verification(False, 5, 6, "does not follow the record before it")


def test_deleted_line_is_found(chain: Path) -> None:
    lines = lines_of(chain)
    del lines[3]
    write_lines(chain, lines)
    assert verify(chain) == Verification(
        False, 3, 4, "sequence 5 where 4 was expected (a record was removed or reordered)"
    )


def test_deleted_first_line_is_found(chain: Path) -> None:
    write_lines(chain, lines_of(chain)[1:])
    result = verify(chain)
    assert (result.ok, result.first_bad, result.records) == (False, 1, 0)


def test_reordered_lines_are_found(chain: Path) -> None:
    lines = lines_of(chain)
    lines[6], lines[7] = lines[7], lines[6]
    write_lines(chain, lines)
    assert verify(chain) == Verification(
        False, 6, 7, "sequence 8 where 7 was expected (a record was removed or reordered)"
    )


def test_inserted_forged_line_is_found(chain: Path) -> None:
    lines = lines_of(chain)
    before = json.loads(lines[2])
    forged = {"seq": 4, "time": before["time"], "actor": "anna", "project": "magi",
              "action": "pull", "prev": before["hash"]}
    forged["hash"] = record_hash(forged)  # a well-made forgery fits where it is put...
    write_lines(chain, lines[:3] + [json.dumps(forged) + "\n"] + lines[3:])
    # ...but the genuine record after it no longer does.
    assert verify(chain) == Verification(
        False, 4, 5, "sequence 4 where 5 was expected (a record was removed or reordered)"
    )


def test_inserted_copy_of_a_record_is_found(chain: Path) -> None:
    lines = lines_of(chain)
    write_lines(chain, lines[:5] + [lines[4]] + lines[5:])
    assert verify(chain).first_bad == 6


def test_renumbered_forgery_is_found_where_the_chain_breaks(chain: Path) -> None:
    lines = lines_of(chain)
    forged = {"seq": 3, "actor": "anna", "action": "pull", "prev": json.loads(lines[1])["hash"]}
    forged["hash"] = record_hash(forged)
    rest = []
    for line in lines[2:]:  # renumber what follows, keep its hashes
        record = json.loads(line)
        record["seq"] += 1
        rest.append(json.dumps(record) + "\n")
    write_lines(chain, lines[:2] + [json.dumps(forged) + "\n"] + rest)
    assert verify(chain) == Verification(False, 3, 4, "does not follow the record before it")


@pytest.mark.parametrize("garbage", ["not json\n", "[1, 2]\n", '"a string"\n', "42\n", "null\n", "{\"seq\": 1\n"])
def test_a_line_that_is_not_a_record_is_found(chain: Path, garbage: str) -> None:
    lines = lines_of(chain)
    write_lines(chain, lines[:2] + [garbage] + lines[2:])
    assert verify(chain) == Verification(False, 2, 3, "not a JSON record")


def test_blank_lines_are_skipped_and_line_numbers_reported(chain: Path) -> None:
    lines = lines_of(chain)
    lines.insert(2, "\n")
    write_lines(chain, lines)
    assert verify(chain) == Verification(True, N)
    del lines[5]  # record 5, on line 6 now
    write_lines(chain, lines)
    assert verify(chain).first_bad == 6


# -- concurrency ---------------------------------------------------------------------------

def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path))
    for n in range(count):
        log.append({"worker": worker, "n": n})


def test_concurrent_appends_from_threads_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads = [threading.Thread(target=_append_many, args=(str(path), w, 25)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert verify(path) == Verification(True, 150)
    records = AuditLog(path).records()
    assert sorted((r["worker"], r["n"]) for r in records) == [(w, n) for w in range(6) for n in range(25)]


def test_concurrent_appends_from_processes_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    processes = [context.Process(target=_append_many, args=(str(path), w, 25)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    assert verify(path) == Verification(True, 100)
    records = AuditLog(path).records()
    assert sorted((r["worker"], r["n"]) for r in records) == [(w, n) for w in range(4) for n in range(25)]
    # each worker's own records stay in its order
    for worker in range(4):
        assert [r["n"] for r in records if r["worker"] == worker] == list(range(25))


# -- command line --------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.sample_gateway.audit", *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_intact_exits_0(chain: Path) -> None:
    result = run_cli("verify", str(chain))
    assert result.returncode == 0
    assert result.stdout.startswith(f"audit chain intact: {N} records\nhead (record it as an anchor): {N}:")


def test_cli_broken_exits_1(chain: Path) -> None:
    lines = lines_of(chain)
    del lines[1]
    write_lines(chain, lines)
    result = run_cli("verify", str(chain))
    assert result.returncode == 1
    assert result.stdout == ("audit chain broken at record 2: sequence 3 where 2 was expected "
                             "(a record was removed or reordered)\n")


@pytest.mark.parametrize("args", [(), ("verify",), ("check", "x"), ("verify", "a", "b")])
def test_cli_usage_exits_2(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m services.sample_gateway.audit")


def test_main_missing_file_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cannot read the audit file: ") and "missing.jsonl" in err


def test_main_in_process(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(chain)]) == 0
    assert capsys.readouterr().out.startswith(f"audit chain intact: {N} records\n")


def test_anchors_catch_a_rewritten_or_shortened_chain(tmp_path: Path) -> None:
    from services.sample_gateway.audit import AuditLog, GENESIS, record_hash, verify

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    records = [log.append({"actor": "anna", "project": "magi", "action": "search", "n": i}) for i in range(5)]
    anchors = {3: records[2]["hash"], 5: records[4]["hash"]}
    assert verify(path, anchors).ok and verify(path).head == f"5:{records[4]['hash']}"
    # Shortened: cut back to 2 records; the plain chain still verifies, the anchors do not.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]))
    assert verify(path).ok
    result = verify(path, anchors)
    assert not result.ok and "cut short" in result.problem
    assert str(result) == ("audit chain broken: the file ends after record 2, but record 3 has an "
                           "anchor (the file was cut short)")
    # Rewritten: change record 2 and recompute every hash after it.
    path.write_text("".join(lines))
    rewritten, previous = [], GENESIS
    for line in lines:
        record = json.loads(line)
        if record["seq"] == 2:
            record["actor"] = "mallory"
        record["prev"] = previous
        record["hash"] = record_hash(record)
        previous = record["hash"]
        rewritten.append(json.dumps(record, sort_keys=True) + "\n")
    path.write_text("".join(rewritten))
    assert verify(path).ok
    result = verify(path, anchors)
    assert not result.ok and result.first_bad == 3 and "anchor" in result.problem


def test_an_anchor_needs_the_whole_hash(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shortened hash (as an example shows it) is refused as such, not reported as tampering."""
    from services.sample_gateway.audit import verify

    seq, digest = verify(chain).head.split(":")
    assert main(["verify", str(chain), "--anchor", f"{seq}:{digest[:8]}"]) == 2
    assert "64 hexadecimal digits" in capsys.readouterr().err
    assert main(["verify", str(chain), "--anchor", f"{seq}:{digest.upper()}"]) == 0


def test_a_duplicate_key_is_a_forged_line(tmp_path: Path) -> None:
    from services.sample_gateway.audit import AuditLog, verify

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"actor": "anna", "project": "magi", "action": "search"})
    line = path.read_text()
    path.write_text(line.replace('"actor": "anna"', '"actor": "bob", "actor": "anna"'))
    result = verify(path)
    assert not result.ok and "appears twice" in result.problem
