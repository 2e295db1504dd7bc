"""One object in, one de-identified file out: the per-instance work of a pull, in threads or
processes, and the shortcut it takes (dropping private elements first) changing nothing."""

from __future__ import annotations

import asyncio
import io
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.filewriter import dcmwrite

from services.sample_gateway.deidentify import DeidError, DeidPolicy, deidentify
from services.sample_gateway.delivery import PullWriter, encode_instance
from services.sample_gateway.pipeline import (
    Delivered,
    Refused,
    Workers,
    drop_private,
    process,
    unreadable,
)
from services.sample_gateway.pseudonyms import ProjectKeys

KEYS = ProjectKeys(b"p" * 32, "magi")
POLICY = DeidPolicy(allow_burned_in_annotation=True)


def corpus() -> list[Path]:
    root = Path(pydicom.data.__file__).parent
    files = sorted(p for p in (root / "test_files").rglob("*") if p.is_file() and p.suffix != ".py")
    return files + sorted(Path(p) for p in pydicom.data.get_charset_files())


def encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_dropping_private_elements_first_changes_no_output_byte() -> None:
    compared = dropped = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in corpus():
            try:
                plain, shortcut = pydicom.dcmread(path), pydicom.dcmread(path)
                expected = encoded(deidentify(plain, KEYS, POLICY).dataset)
            except (DeidError, Exception):  # noqa: BLE001, S112 - not DICOM, or refused either way
                continue
            dropped += drop_private(shortcut)
            assert encoded(deidentify(shortcut, KEYS, POLICY).dataset) == expected, path.name
            compared += 1
    assert compared > 150 and dropped > 500  # the shortcut was taken, on many files


def test_private_person_names_and_implicit_vr_privates_stay_for_deidentify() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    block = ds.private_block(0x0099, "TEST", create=True)
    block.add_new(0x01, "PN", "Doe^Jane")
    block.add_new(0x02, "LO", "gone")
    block.add_new(0x03, "UN", b"maybe a name")
    drop_private(ds)
    kept = {int(t) & 0xFF: ds[t].VR for t in ds.keys() if t.group == 0x0099}  # noqa: SIM118
    assert kept == {0x10: "LO", 0x01: "PN", 0x03: "UN"}  # the creator, the name, the unknown
    implicit = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small_implicit.dcm"))
    before = [t for t in implicit.keys() if t.is_private]  # noqa: SIM118
    drop_private(implicit)
    assert [t for t in implicit.keys() if t.is_private] == before  # noqa: SIM118 - VR unknown until converted


def source(name: str = "CT_small.dcm") -> tuple[bytes, str, str]:
    path = pydicom.data.get_testdata_file(name)
    ds = pydicom.dcmread(path)
    return Path(path).read_bytes(), f"application/dicom; transfer-syntax={ds.file_meta.TransferSyntaxUID}", \
        str(ds.StudyInstanceUID)


def test_process_writes_one_deidentified_file(tmp_path: Path) -> None:
    body, content_type, study = source()
    writer = PullWriter(tmp_path, "p")
    outcome = process(body, content_type, study, KEYS, POLICY, writer.target)
    assert isinstance(outcome, Delivered)
    written = pydicom.dcmread(writer.partial / outcome.row.file)
    assert written.PatientIdentityRemoved == "YES" and outcome.row.study_key == written.StudyInstanceUID
    assert not any(e.tag.is_private for e in written)


def test_process_refuses_an_object_of_another_study_and_burned_in_text(tmp_path: Path) -> None:
    body, content_type, _ = source()
    writer = PullWriter(tmp_path, "p")
    refused = process(body, content_type, "1.2.3.4", KEYS, POLICY, writer.target)
    assert refused == Refused("The archive sent an object from another study; it was not delivered.",
                              "unexpected_object")
    body, content_type, study = source("US1_J2KR.dcm")
    refused = process(body, content_type, study, KEYS, DeidPolicy(), writer.target)
    assert isinstance(refused, Refused) and refused.reason == "burned_in_annotation"
    assert list(writer.partial.iterdir()) == []


def test_process_refuses_an_object_it_cannot_read_naming_the_attribute_only(tmp_path: Path) -> None:
    writer = PullWriter(tmp_path, "p")
    refused = process(b"\0" * 10, "application/dicom", "1.2.3", KEYS, POLICY, writer.target)
    assert isinstance(refused, Refused) and refused.reason == "unreadable_object"
    assert refused.message == "An image could not be read because its content cannot be read; it was not delivered."
    body, content_type, study = source()
    first = process(body, content_type, study, KEYS, POLICY, writer.target)
    assert isinstance(first, Delivered)
    again = process(body, content_type, study, KEYS, POLICY, writer.target)  # the same object twice
    assert again == Refused("The archive sent the same image twice; it was delivered once.", "duplicate_object")


def test_an_unencodable_value_is_named_by_its_attribute(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds["Rows"].value = "Hansen"
    with pytest.raises(OSError, match="Hansen") as caught:  # pydicom's message holds the value
        encode_instance(ds)
    refused = unreadable("written", ds, caught.value)
    assert refused == Refused(
        "An image could not be written because its Rows attribute cannot be read; it was not delivered.",
        "unreadable_object", log_detail="OSError while it was written, at Rows")


@pytest.mark.parametrize("processes", [0, 1])
async def test_workers_in_a_thread_or_a_process(tmp_path: Path, processes: int) -> None:
    workers = Workers(processes)
    try:
        body, content_type, study = source()
        targets = [PullWriter(tmp_path, str(n)).target for n in range(3)]
        outcomes = await asyncio.gather(*(
            workers.run(process, body, content_type, study, KEYS, POLICY, target) for target in targets
        ))
        assert all(isinstance(o, Delivered) for o in outcomes)
        assert len({o.row.sha256 for o in outcomes}) == 1  # the same keys: the same file
    finally:
        workers.shutdown()
