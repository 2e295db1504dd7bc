"""The airlock against a researcher who tries to get around it (findings of an adversarial test).

* A folder swapped for a link between the path check and the copy must not export another
  project's file; neither may a hard link to it, nor may a FIFO hang the service.
* Identifying DICOM in disguise (a byte in front, no preamble, pickled, inside an .npz), a
  CPR number inside a Parquet file, and binary formats the airlock cannot read must be
  refused or flagged, never passed silently.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import pickle
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from hub_config.storage import StorageLayout
from services.airlock import checks
from services.airlock.airlock import Airlock, Limits
from services.airlock.errors import Invalid
from tests.test_airlock import CONFIG, _deidentified

SECRET = "kina-only 0102031234 row-level\n"


@pytest.fixture
def airlock(tmp_path: Path) -> Airlock:
    storage = StorageLayout(tmp_path / "data")
    magi, kina = storage.project_dir("magi"), storage.project_dir("kina")
    (magi / "out").mkdir(parents=True)
    (magi / "out" / "table.csv").write_text("metric,value\nauc,0.91\n")
    (kina / "out").mkdir(parents=True)
    (kina / "out" / "table.csv").write_text(SECRET)
    return Airlock(lambda: CONFIG, storage, tmp_path / "airlock", tmp_path / "egress",
                   limits=Limits(max_files=20, max_bytes=50 * 1024**2),
                   clock=lambda: dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc))


def _everything_under(*roots: Path) -> str:
    text = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                text.append(path.read_text(errors="replace"))
    return "".join(text)


def _swap_after_listing(monkeypatch: pytest.MonkeyPatch, swap) -> None:  # noqa: ANN001
    """Run ``swap`` right after the airlock has listed (and checked) the requested paths,
    before it copies them: the window the tester used."""
    listed = Airlock._expand

    def expand_then_swap(self: Airlock, *args: object, **kwargs: object):  # noqa: ANN202
        found = listed(self, *args, **kwargs)
        swap()
        return found

    monkeypatch.setattr(Airlock, "_expand", expand_then_swap)


# Finding 1: check-then-use --------------------------------------------------------------------
def test_folder_swapped_for_a_link_after_the_check_exports_nothing_of_another_project(
    airlock: Airlock, monkeypatch: pytest.MonkeyPatch
) -> None:
    magi, kina = airlock.storage.project_dir("magi"), airlock.storage.project_dir("kina")

    def swap() -> None:
        (magi / "out").rename(magi / "out.moved")
        (magi / "out").symlink_to(kina / "out", target_is_directory=True)

    _swap_after_listing(monkeypatch, swap)
    with pytest.raises(Invalid) as caught:
        airlock.submit("anna", "magi", ["out/table.csv"])
    assert caught.value.reason == "link"
    assert airlock.store.all() == []
    assert "kina-only" not in _everything_under(airlock.root, airlock.egress)


def test_folder_request_swapped_for_a_link_after_the_check(airlock: Airlock,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    magi, kina = airlock.storage.project_dir("magi"), airlock.storage.project_dir("kina")

    def swap() -> None:
        (magi / "out").rename(magi / "out.moved")
        (magi / "out").symlink_to(kina / "out", target_is_directory=True)

    _swap_after_listing(monkeypatch, swap)
    with pytest.raises(Invalid) as caught:
        airlock.submit("anna", "magi", ["out"])
    assert caught.value.reason == "link"
    assert "kina-only" not in _everything_under(airlock.root, airlock.egress)


@pytest.mark.parametrize("requested", [["out/hard.csv"], ["out"]])
def test_hard_link_to_another_projects_file_is_refused(airlock: Airlock, requested: list[str]) -> None:
    magi, kina = airlock.storage.project_dir("magi"), airlock.storage.project_dir("kina")
    os.link(kina / "out" / "table.csv", magi / "out" / "hard.csv")
    with pytest.raises(Invalid) as caught:
        airlock.submit("anna", "magi", requested)
    assert caught.value.reason == "hard_link"
    assert "out/hard.csv" in caught.value.message and "copy" in caught.value.message
    assert "kina-only" not in _everything_under(airlock.root, airlock.egress)


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging for ever when a step blocks (a FIFO opened for reading)."""
    def timeout(*_: object) -> None:
        raise TimeoutError("the airlock blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_file_swapped_for_a_fifo_after_the_check_is_refused_not_waited_on(
    airlock: Airlock, monkeypatch: pytest.MonkeyPatch, alarm: None
) -> None:
    table = airlock.storage.project_dir("magi") / "out" / "table.csv"

    def swap() -> None:
        table.unlink()
        os.mkfifo(table)

    _swap_after_listing(monkeypatch, swap)
    with pytest.raises(Invalid) as caught:
        airlock.submit("anna", "magi", ["out/table.csv"])
    assert caught.value.reason == "bad_path" and "regular files" in caught.value.message


def test_what_is_hashed_is_what_was_copied(airlock: Airlock) -> None:
    record = airlock.submit("anna", "magi", ["out"])
    staged = airlock.root / "staging" / record.id / "out" / "table.csv"
    import hashlib

    assert record.files[0].sha256 == hashlib.sha256(staged.read_bytes()).hexdigest()
    assert oct(staged.parent.stat().st_mode & 0o777) == "0o700"


# Finding 2: identifying content in disguise -----------------------------------------------------
CT = Path(pydicom.data.get_testdata_file("CT_small.dcm"))


def _raw_dataset(source: Path, **write: bool) -> bytes:
    """The dataset alone: no preamble, no 'DICM', no file meta (dcmread needs force=True)."""
    ds = pydicom.dcmread(source)
    del ds.file_meta
    ds.preamble = None
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False, little_endian=True,
               implicit_vr=write.get("implicit_vr", False))
    return out.getvalue()


def _codes(path: Path, name: str | None = None) -> set[tuple[str, str]]:
    return {(f.path, f.code) for f in checks.check_file(path, name or path.name)}


def test_identifying_ct_with_a_byte_in_front_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scan.bin").write_bytes(b"\x00" + CT.read_bytes())
    assert ("scan.bin", "identity_not_removed") in _codes(tmp_path / "scan.bin")
    assert ("scan.bin", "identifying_value") in _codes(tmp_path / "scan.bin")


@pytest.mark.parametrize("implicit_vr", [False, True])
def test_raw_dataset_without_preamble_is_refused(tmp_path: Path, implicit_vr: bool) -> None:
    (tmp_path / "scan.raw").write_bytes(_raw_dataset(CT, implicit_vr=implicit_vr))
    assert pydicom.dcmread(tmp_path / "scan.raw", force=True).PatientName  # what a reader does
    assert ("scan.raw", "identity_not_removed") in _codes(tmp_path / "scan.raw")


def test_pseudonymised_dicom_in_disguise_is_checked_not_refused(tmp_path: Path) -> None:
    clean = _deidentified("MR_small.dcm", tmp_path / "mr.dcm")
    (tmp_path / "mr.bin").write_bytes(b"\x00" + clean.read_bytes())
    assert _codes(tmp_path / "mr.bin") == set()


@pytest.mark.parametrize("name", ["scan.pkl", "scan.joblib", "scan.dat"])
def test_pickles_are_refused_whatever_their_name(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(pickle.dumps(pydicom.dcmread(CT)))
    found = checks.check_file(tmp_path / name, name)
    assert [(f.code, f.severity) for f in found] == [("pickle", "refuse")]
    assert "pickles can hold anything; export as CSV/Parquet/NIfTI" in found[0].message


def test_old_protocol_pickles_and_object_arrays_are_refused(tmp_path: Path) -> None:
    (tmp_path / "rows.dat").write_bytes(pickle.dumps({"cpr": "x"}, protocol=0))
    assert _codes(tmp_path / "rows.dat") == {("rows.dat", "pickle")}
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert _codes(tmp_path / "objects.npy") == {("objects.npy", "pickle")}
    np.save(tmp_path / "numbers.npy", np.arange(10.0))
    assert _codes(tmp_path / "numbers.npy") == set()


def test_npz_holding_a_dicom_file_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "arrays.npz", x=np.arange(4))
    with zipfile.ZipFile(tmp_path / "arrays.npz", "a") as bundle:
        bundle.write(CT, "scan.dcm")
    codes = _codes(tmp_path / "arrays.npz")
    assert ("arrays.npz:scan.dcm", "identity_not_removed") in codes
    np.savez_compressed(tmp_path / "clean.npz", x=np.arange(4), y=np.ones((2, 2)))
    assert _codes(tmp_path / "clean.npz") == set()


def test_office_files_are_opened_and_their_text_scanned(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "list.xlsx", "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/sharedStrings.xml", "<sst><si><t>0102031234</t></si></sst>")
    assert _codes(tmp_path / "list.xlsx") == {("list.xlsx:xl/sharedStrings.xml", "cpr_like")}


def test_archives_are_known_by_their_bytes_not_their_name(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "results.bin", "w") as bundle:
        bundle.writestr("table.csv", "a,b\n1,2\n")
    (tmp_path / "table.dat").write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert _codes(tmp_path / "results.bin") == {("results.bin", "archive")}
    assert _codes(tmp_path / "table.dat") == {("table.dat", "archive")}
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    assert _codes(tmp_path / "broken.npz") == {("broken.npz", "archive")}


def test_nesting_is_bounded(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as bundle:
        bundle.writestr("t.csv", "x\n")
    for _ in range(6):
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w") as bundle:
            bundle.writestr("deeper.npz", inner.getvalue())
        inner = outer
    (tmp_path / "deep.npz").write_bytes(inner.getvalue())
    found = checks.check_file(tmp_path / "deep.npz", "deep.npz")
    assert [f.code for f in found] == ["archive"] and "nested" in found[0].message


def _fake_parquet(*cells: bytes) -> bytes:
    """PLAIN-encoded values between Parquet's magic bytes (what a small, uncompressed
    string column looks like on disk); enough for the raw scan used without pyarrow."""
    body = b"".join(len(c).to_bytes(4, "little") + c for c in cells)
    return b"PAR1" + b"\x15\x00\x15" + body + b"\x00\x00\x00\x00" + b"PAR1"


def test_cpr_inside_parquet_is_flagged(tmp_path: Path) -> None:
    (tmp_path / "rows.parquet").write_bytes(_fake_parquet(b"ok", b"010203-1234", b"fine"))
    codes = _codes(tmp_path / "rows.parquet")
    assert ("rows.parquet", "cpr_like") in codes


def test_cpr_inside_real_parquet_is_flagged(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    pd.DataFrame({"id": ["a", "b"], "who": ["nobody", "0102031234"], "n": [1, 2]}).to_parquet(
        tmp_path / "rows.parquet", compression="snappy")
    found = checks.check_file(tmp_path / "rows.parquet", "rows.parquet")
    assert [(f.code, f.detail) for f in found] == [("cpr_like", "column who")]
    pd.DataFrame({"id": ["a"], "n": [1]}).to_parquet(tmp_path / "clean.parquet")
    assert _codes(tmp_path / "clean.parquet") == set()


def test_parquet_without_a_reader_goes_to_the_steward(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "_pyarrow_parquet", lambda: None)
    (tmp_path / "clean.parquet").write_bytes(_fake_parquet(b"ok"))
    found = checks.check_file(tmp_path / "clean.parquet", "clean.parquet")
    assert [(f.code, f.severity) for f in found] == [("unknown_format", "flag")]
    assert "pyarrow" in found[0].message


@pytest.mark.parametrize(
    ("text", "flagged"),
    [("id 010203-1234\n", True), ("id 2902001234\n", True),   # 29 Feb: leap years exist
     ("id 3102991234\n", False), ("id 0013001234\n", False),  # 31 Feb, month 13: no date
     ("order 12345678901\n", False)],
)
def test_cpr_numbers_have_a_valid_date(tmp_path: Path, text: str, flagged: bool) -> None:
    (tmp_path / "notes.txt").write_text(text)
    assert bool(_codes(tmp_path / "notes.txt")) is flagged


def test_hashes_and_uuids_in_a_manifest_are_not_cpr_numbers(tmp_path: Path) -> None:
    """A results manifest full of SHA-256 sums and run UUIDs (both hold DDMMYYXXXX-like digit
    runs by chance) is not flagged; a CPR number beside them still is."""
    digests = ["c3f1a0b2d4e6" "0101901234" + "ab" * 21,  # a real-date run inside a digest
               "7d2e" + "3112851234" + "f" * 50]
    run_ids = ["e4b1c2d3-0101-4a5b-8c9d-a01019012345", "9f8e7d6c-5b4a-4c3d-9e8f-ab3112851234"]
    manifest = "\n".join(f"{d}  results/part-{i}.csv" for i, d in enumerate(digests)) + "\n"
    manifest += "".join(f"run {r}\n" for r in run_ids)
    (tmp_path / "MANIFEST.txt").write_text(manifest)
    assert _codes(tmp_path / "MANIFEST.txt") == set()
    (tmp_path / "MANIFEST.txt").write_text(manifest + "patient 0101901234\n")
    assert _codes(tmp_path / "MANIFEST.txt") == {("MANIFEST.txt", "cpr_like")}


def test_unknown_formats_go_to_the_steward_text_is_scanned(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 64)
    found = checks.check_file(tmp_path / "blob.bin", "blob.bin")
    assert [(f.code, f.severity) for f in found] == [("unknown_format", "flag")]
    (tmp_path / "export.sql").write_text("insert into p values ('0102031234');\n")
    assert _codes(tmp_path / "export.sql") == {("export.sql", "cpr_like")}
    (tmp_path / "README").write_text("nothing to see\n")
    assert _codes(tmp_path / "README") == set()


def test_dicom_json_is_checked_as_dicom(tmp_path: Path) -> None:
    (tmp_path / "header.json").write_text(pydicom.dcmread(CT, stop_before_pixels=True).to_json())
    assert ("header.json", "identity_not_removed") in _codes(tmp_path / "header.json")


def test_disguised_dicom_through_a_request_is_refused(tmp_path: Path, airlock: Airlock) -> None:
    magi = airlock.storage.project_dir("magi")
    (magi / "out" / "scan.bin").write_bytes(b"\x00" + CT.read_bytes())
    (magi / "out" / "scan.pkl").write_bytes(pickle.dumps(pydicom.dcmread(CT)))
    record = airlock.submit("anna", "magi", ["out"])
    assert record.status == "refused"
    refused = {(f["path"], f["code"]) for f in record.findings if f["severity"] == "refuse"}
    assert {("out/scan.bin", "identity_not_removed"), ("out/scan.pkl", "pickle")} <= refused


def test_a_zip_bomb_is_refused_not_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "_MAX_UNPACKED_BYTES", 1024 * 1024)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("a.csv", "a" * 700_000)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("one.npz", inner.getvalue())
        bundle.writestr("two.npz", inner.getvalue())
    found = checks.check_file(tmp_path / "bomb.npz", "bomb.npz")
    assert [f.code for f in found] == ["archive"] and "unpacks to more than" in found[0].message
