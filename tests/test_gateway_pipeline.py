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
from pydicom.dataelem import RawDataElement
from pydicom.filewriter import dcmwrite

from services.sample_gateway.deidentify import DeidError, DeidPolicy, deidentify
from services.sample_gateway.delivery import PullWriter, encode_instance
from services.sample_gateway.encoding import plain_encoding, part10_bytes
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


def test_part10_bytes_are_the_bytes_dcmwrite_writes_on_the_corpus() -> None:
    compared = fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in corpus():
            try:
                ds = pydicom.dcmread(path)
                drop_private(ds)
                out = deidentify(ds, KEYS, POLICY).dataset
                as_read = sum(isinstance(out.get_item(t), RawDataElement) for t in out.keys())  # noqa: SIM118
                expected = encoded(out)
            except (DeidError, Exception):  # noqa: BLE001, S112 - not DICOM, or refused either way
                continue
            assert part10_bytes(out) == expected, path.name
            compared += 1
            fast += as_read > 0 and plain_encoding(out.file_meta.TransferSyntaxUID) is not None
    assert compared > 150 and fast > 75  # the direct way was taken, on many files


def reread(ds: pydicom.Dataset) -> pydicom.Dataset:
    """`ds` as the gateway gets it: encoded, then read back (its elements undecoded)."""
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return pydicom.dcmread(io.BytesIO(encoded(ds)))


def test_only_values_kept_unchanged_in_printable_ascii_go_out_as_read() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Quuxley^Jens"
    ds.Manufacturer = "ACME Scanners"  # kept as it is
    ds.ManufacturerModelName = "Sømand 3000"  # kept, but not ASCII: encoded again
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDescription = "CT Quuxley follow-up"  # a kept descriptor that loses the name
    ds.SoftwareVersions = "Quuxley build"  # kept text that loses the name
    ds.SeriesNumber = "7"  # a number kept as it is
    ds.Rows = 128  # binary numbers: kept as read
    source_ds = reread(ds)
    out = deidentify(source_ds, KEYS, POLICY).dataset
    def as_read(keyword: str) -> bool:
        return isinstance(out.get_item(keyword), RawDataElement)
    assert as_read("Manufacturer") and as_read("SeriesNumber") and as_read("Rows")
    assert not as_read("ManufacturerModelName") and not as_read("StudyDescription")
    assert not as_read("SoftwareVersions") and not as_read("StudyInstanceUID")
    data = part10_bytes(out)
    assert b"QUUXLEY" not in data.upper() and b"JENS" not in data.upper()
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.Manufacturer == "ACME Scanners" and back.ManufacturerModelName == "Sømand 3000"
    assert back.Rows == 128 and back.SeriesNumber == 7 and back.StudyDescription == "CT follow-up"


def test_binary_values_with_an_unexpected_vr_or_length_take_the_ordinary_way() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 128, 128
    data = encoded(ds)
    rows, columns = b"\x28\x00\x10\x00US\x02\x00\x80\x00", b"\x28\x00\x11\x00US\x02\x00\x80\x00"
    assert data.count(rows) == data.count(columns) == 1
    data = data.replace(rows, b"\x28\x00\x10\x00SS\x02\x00\x80\x00")  # Rows with another VR
    data = data.replace(columns, b"\x28\x00\x11\x00US\x01\x00\x80")  # half a number
    out = deidentify(pydicom.dcmread(io.BytesIO(data)), KEYS, POLICY).dataset
    rows = out.get_item(0x00280010)
    assert rows is not None and not isinstance(rows, RawDataElement)  # kept, the ordinary way
    assert out.Rows == 128  # US written as SS: binary numbers either way (a second trial)
    assert not isinstance(out.get_item(0x00280011), RawDataElement)
    assert isinstance(out.get_item("BitsAllocated"), RawDataElement)


async def test_a_worker_that_died_while_idle_costs_no_work(tmp_path: Path) -> None:
    """Killed between pulls (out of memory, an admin): the next pull gets a fresh pool
    rather than failing before it handed anything over (an adversarial trial)."""
    import os
    import signal

    import psutil

    workers = Workers(2)
    try:
        workers.warm_up()
        pids = {await workers.run(os.getpid) for _ in range(8)}
        victim = psutil.Process(next(iter(pids)))
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(5)
        await asyncio.sleep(0.5)  # the pool's manager thread notices the death
        body, content_type, study = source()
        outcome = await workers.run(process, body, content_type, study, KEYS, POLICY,
                                    PullWriter(tmp_path, "after").target)
        assert isinstance(outcome, Delivered)
        assert victim.pid not in {await workers.run(os.getpid) for _ in range(8)}
    finally:
        workers.shutdown()
