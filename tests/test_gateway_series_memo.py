"""The series memo (services/sample_gateway/series_memo.py): objects de-identified through what
an earlier object of the same series taught come out byte for byte as the ordinary way makes
them, and anything the memo cannot vouch for goes the ordinary way."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.uid import generate_uid

from demo.archive import DemoArchive
from services.sample_gateway.deidentify import DeidPolicy
from services.sample_gateway.pipeline import Refused, deidentified
from services.sample_gateway.pseudonyms import ProjectKeys
from services.sample_gateway.series_memo import (
    CONTEXT_TAGS,
    Fast,
    SeriesMemo,
    independent,
    split_part10,
)

KEYS = ProjectKeys(b"m" * 32, "memo")
POLICY = DeidPolicy(allow_burned_in_annotation=True)


def ordinary(body: bytes, study_uid: str, policy: DeidPolicy = POLICY) -> Fast | Refused:
    """The ordinary way: a fresh memo has learnt nothing."""
    return deidentified(body, "application/dicom", study_uid, KEYS, policy, SeriesMemo())


def same(a: Fast | Refused, b: Fast | Refused) -> bool:
    if isinstance(a, Refused) or isinstance(b, Refused):
        return a == b
    return a.data == b.data and a.row == b.row and a.warnings == b.warnings


def study_of(body: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True).get("StudyInstanceUID", "")).strip()


def encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def series(demo_archive: DemoArchive) -> dict[str, list[bytes]]:
    return {uid: [(demo_archive.root / e.path).read_bytes() for e in entries]
            for uid, entries in demo_archive.series().items()}


def test_every_demo_series_comes_out_as_the_ordinary_way_makes_it(series: dict[str, list[bytes]]) -> None:
    memo = SeriesMemo()
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bodies in series.values():
            for body in bodies:
                study = study_of(body)
                mine = deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
                assert same(mine, ordinary(body, study))
                compared += 1
    assert compared == 85
    # one ordinary object per series at most, and the second of a series may compare
    # element by element: the rest went the fast way
    assert memo.hits >= compared - 2 * len(series)


def test_a_changed_element_of_any_kind_gives_what_the_ordinary_way_gives(demo_archive: DemoArchive) -> None:
    """Teach the memo two slices of the CT series, then hand it a third slice changed one
    element at a time: names and IDs of the record in kept text, numbers, dates, UIDs,
    removed and added elements. Each must come out exactly as the ordinary way makes it."""
    paths = [demo_archive.root / e.path for e in demo_archive.benchmark_series()]
    first, second, third = (p.read_bytes() for p in paths[:3])
    study = study_of(first)
    base = pydicom.dcmread(io.BytesIO(third))
    family = str(base.PatientName).split("^")[0]
    patient_id = str(base.PatientID)
    variants: list[tuple[str, bytes]] = [("unchanged", third)]

    def variant(name: str, change) -> None:
        ds = pydicom.dcmread(io.BytesIO(third))
        change(ds)
        variants.append((name, encoded(ds)))

    variant("kernel names the patient", lambda ds: setattr(ds, "ConvolutionKernel", family))
    variant("kernel holds the patient ID", lambda ds: setattr(ds, "ConvolutionKernel", patient_id[:16]))
    variant("comments name the patient", lambda ds: setattr(ds, "ImageComments", f"seen by {family}"))
    birth = str(base.get("PatientBirthDate") or "") or "0304801234"
    variant("instance number is the birth date", lambda ds: setattr(ds, "InstanceNumber", birth))
    variant("instance number is CPR-like", lambda ds: setattr(ds, "InstanceNumber", "0304801234"))
    variant("slice location", lambda ds: setattr(ds, "SliceLocation", "-123.5"))
    variant("another instance UID", lambda ds: setattr(ds, "SOPInstanceUID", generate_uid()))
    variant("another patient", lambda ds: setattr(ds, "PatientID", "OTHER-0001"))
    variant("another name", lambda ds: setattr(ds, "PatientName", "Other^Person"))
    variant("another study date", lambda ds: setattr(ds, "StudyDate", "20010203"))
    variant("a content date", lambda ds: setattr(ds, "ContentDate", "20200101"))
    variant("another series", lambda ds: setattr(ds, "SeriesInstanceUID", generate_uid()))
    variant("burned-in annotation", lambda ds: setattr(ds, "BurnedInAnnotation", "YES"))
    variant("a private name", lambda ds: ds.private_block(0x0029, "MEMO", create=True).add_new(0x01, "PN", family))
    variant("a private number", lambda ds: ds.private_block(0x0029, "MEMO", create=True).add_new(0x02, "DS", "1.5"))
    variant("a code value", lambda ds: setattr(ds, "CodeValue", patient_id[:16]))
    variant("no rows", lambda ds: delattr(ds, "Rows"))
    variant("no instance UID", lambda ds: delattr(ds, "SOPInstanceUID"))
    variant("pixels", lambda ds: setattr(ds, "PixelData", bytes(len(ds.PixelData))))

    def as_bytes(keyword: str) -> Callable[[pydicom.Dataset], None]:
        def change(ds: pydicom.Dataset) -> None:  # the name as a byte string (explicit VR OB)
            tag = pydicom.datadict.tag_for_keyword(keyword)
            ds[tag] = pydicom.DataElement(tag, "OB", f"{family} {patient_id}".encode().ljust(32))
        return change

    variant("description written as OB", as_bytes("StudyDescription"))
    variant("manufacturer written as OB", as_bytes("Manufacturer"))
    variant("an HPGL document", lambda ds: setattr(ds, "HPGLDocument", f"LB{family};".encode().ljust(16)))
    for keyword in ("WindowCenter", "ImagePositionPatient", "AcquisitionTime", "KVP"):
        if keyword in base:
            variant(f"no {keyword}", lambda ds, k=keyword: delattr(ds, k))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, body in variants:
            memo = SeriesMemo()
            for taught in (first, second):
                deidentified(taught, "application/dicom", study, KEYS, POLICY, memo)
            mine = deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
            theirs = ordinary(body, study)
            assert same(mine, theirs), name
            if "OB" in name or "HPGL" in name:
                assert isinstance(mine, Fast) and family.encode() not in mine.data, name
        # and the fast way was taken where it could be
        memo = SeriesMemo()
        for body in (first, second, third, *(b for n, b in variants if n in ("slice location", "pixels"))):
            deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
        assert memo.hits == 4


def test_the_offline_corpus_as_series_of_three() -> None:
    """Every file of the leak check's corpus (pydicom's test and character set files,
    pydicom-data, deid-data) that can be written back, as a series of three (itself, then
    two copies with another instance UID and number): the memo's output is the ordinary
    way's, character sets, implicit VR, compressed syntaxes, sequences and refusals included;
    so the leak check's result holds for the fast way too."""
    from tests.test_deid_leak import corpus_files, corpus_inputs

    compared = fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _label, data in corpus_inputs(corpus_files()):
            try:
                body = data if isinstance(data, bytes) else data.read_bytes()
                ds = pydicom.dcmread(io.BytesIO(body))
                if "SOPInstanceUID" not in ds:
                    continue
                copies = []
                for number in (2, 3):
                    ds.SOPInstanceUID = generate_uid()
                    ds.InstanceNumber = number
                    copies.append(encoded(ds))
            except Exception:  # noqa: BLE001, S112 - not a file pydicom can read and write back
                continue
            study = str(ds.get("StudyInstanceUID", "")).strip()
            memo = SeriesMemo()
            for body_ in (body, *copies):
                mine = deidentified(body_, "application/dicom", study, KEYS, POLICY, memo)
                assert same(mine, ordinary(body_, study)), _label
                compared += 1
            fast += memo.hits
    print(f"series memo on the corpus: {compared} objects compared, {fast} through the fast way")
    assert compared > 600
    assert fast > 200  # the fast way served many of them


def test_what_one_pull_learnt_serves_only_that_pull(series: dict[str, list[bytes]]) -> None:
    bodies = next(b for b in series.values() if len(b) == 50)
    study = study_of(bodies[0])
    memo = SeriesMemo()
    for body in bodies[:3]:
        deidentified(body, "application/dicom", study, KEYS, POLICY, memo, scope="pull-1")
    assert memo.hits == 2
    deidentified(bodies[3], "application/dicom", study, KEYS, POLICY, memo, scope="pull-2")
    assert memo.hits == 2  # learnt again for pull-2
    other_keys = ProjectKeys(b"o" * 32, "memo")
    theirs = deidentified(bodies[4], "application/dicom", study, other_keys, POLICY, memo, scope="pull-1")
    assert memo.hits == 2  # another key: another project's rules
    assert same(theirs, deidentified(bodies[4], "application/dicom", study, other_keys, POLICY, SeriesMemo()))


def test_an_object_of_another_study_is_refused_the_fast_way_too(series: dict[str, list[bytes]]) -> None:
    bodies = next(b for b in series.values() if len(b) == 50)
    study = study_of(bodies[0])
    memo = SeriesMemo()
    for body in bodies[:3]:
        deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
    refused = deidentified(bodies[3], "application/dicom", "1.2.3.4", KEYS, POLICY, memo)
    assert isinstance(refused, Refused) and refused.reason == "unexpected_object"
    assert refused == ordinary(bodies[3], "1.2.3.4")


def test_a_policy_that_refuses_is_never_bypassed(series: dict[str, list[bytes]]) -> None:
    """Learnt under a policy that allows burned-in annotation; the same objects under one
    that does not are refused (ultrasound without the flag), not served from the memo."""
    us = next(b for b in series.values() if b"US" in pydicom.dcmread(io.BytesIO(b[0])).get("Modality", "").encode()
              and len(b) >= 1)
    study = study_of(us[0])
    memo = SeriesMemo()
    for body in us * 3:
        deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
    strict = DeidPolicy()
    refused = deidentified(us[0], "application/dicom", study, KEYS, strict, memo)
    assert isinstance(refused, Refused) and refused.reason == "burned_in_annotation"


def test_split_refuses_what_it_does_not_fully_understand(series: dict[str, list[bytes]]) -> None:
    body = next(b for b in series.values() if len(b) == 50)[0]
    split = split_part10(body)
    assert split is not None and split.elements[-1].end == len(body)
    assert split_part10(body[:-1]) is None  # pixel data running past the end
    assert split_part10(body[:100]) is None
    assert split_part10(b"\0" * 128 + b"DICN" + body[132:]) is None
    swapped = bytearray(body)
    first = split.elements[0]
    second = split.elements[1]
    swapped[first.start:second.end] = body[second.start:second.end] + body[first.start:first.end]
    assert split_part10(bytes(swapped)) is None  # tags out of order
    big_endian = pydicom.data.get_testdata_file("MR_small_bigendian.dcm")
    assert split_part10(Path(big_endian).read_bytes()) is None
    deflated = pydicom.data.get_testdata_file("image_dfl.dcm")
    assert split_part10(Path(deflated).read_bytes()) is None


@pytest.mark.parametrize(("keyword", "vr", "expected"), [
    ("SliceLocation", "DS", True),
    ("SOPInstanceUID", "UI", True),
    ("PixelData", "OW", True),
    ("ConvolutionKernel", "SH", True),
    ("SliceLocation", "LO", False),  # not the dictionary's VR
    ("PatientName", "PN", False),
    ("ReferringPhysicianName", "PN", False),
    ("ContentDate", "DA", False),
    ("ReferencedImageSequence", "SQ", False),
    ("InstitutionName", "LO", False),
    ("CodeValue", "SH", False),
    ("SpecificCharacterSet", "CS", False),
    ("PatientAge", "AS", False),
    ("SliceLocation", None, True),  # implicit VR: the dictionary's
    ("PixelData", None, True),
    ("LargestImagePixelValue", None, False),  # US or SS: depends on another element
    ("LargestImagePixelValue", "SS", True),  # ... unless read explicitly
    ("LargestImagePixelValue", "OW", False),
])
def test_independent_elements(keyword: str, vr: str | None, expected: bool) -> None:
    from pydicom.datadict import tag_for_keyword

    assert independent(int(tag_for_keyword(keyword)), vr) is expected


def test_private_elements_are_independent_only_when_their_vr_says_they_hold_no_name() -> None:
    assert independent(0x00291001, "LO") is True
    assert independent(0x00291001, "PN") is False
    assert independent(0x00291001, "UN") is False
    assert independent(0x00291001, None) is False  # implicit VR: its VR comes from its creator
    assert 0x00100010 in CONTEXT_TAGS and 0x00080050 in CONTEXT_TAGS


def test_big_objects_are_not_kept(series: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    from services.sample_gateway import series_memo

    bodies = next(b for b in series.values() if len(b) == 50)
    study = study_of(bodies[0])
    monkeypatch.setattr(series_memo, "MAX_LEARNT_BYTES", len(bodies[0]) - 1)
    memo = SeriesMemo()
    for body in bodies[:4]:
        mine = deidentified(body, "application/dicom", study, KEYS, POLICY, memo)
        assert same(mine, ordinary(body, study))
    assert memo.hits == 0 and memo.misses == 4


def test_only_the_last_signatures_are_kept(series: dict[str, list[bytes]]) -> None:
    """Each series is a signature; a memo for two keeps the last two."""
    memo = SeriesMemo(max_signatures=2)
    ct, rle = sorted((b for b in series.values() if len(b) >= 2), key=len, reverse=True)[:2]
    single = next(b for b in series.values() if len(b) == 1)
    for body in (ct[0], rle[0], single[0]):
        deidentified(body, "application/dicom", study_of(body), KEYS, POLICY, memo)
    deidentified(rle[1], "application/dicom", study_of(rle[1]), KEYS, POLICY, memo)
    assert memo.hits == 1  # still known
    deidentified(ct[1], "application/dicom", study_of(ct[1]), KEYS, POLICY, memo)
    assert memo.hits == 1  # forgotten: the oldest of three


def test_random_mutations_of_a_slice_give_what_the_ordinary_way_gives(series: dict[str, list[bytes]]) -> None:
    """Differential fuzzing, fixed seed: a slice of a taught series with one to four random
    changes (a byte of an independent element's value, a byte anywhere in the header,
    bytes inserted or deleted, bytes copied from the other slices, a small length) must
    come out exactly as the ordinary way makes it, whatever that is."""
    import logging
    import random

    rng = random.Random(20261203)
    candidates = [b for b in series.values() if len(b) >= 3]
    compared = fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            for _ in range(300):
                bodies = rng.choice(candidates)[:3]
                study = study_of(bodies[0])
                body = bytearray(bodies[2])
                for _ in range(rng.randint(1, 4)):
                    split = split_part10(bytes(body))
                    inside = [e for e in split.elements if independent(e.tag, e.vr)] if split else []
                    pos = rng.randrange(128, min(len(body), 2000))
                    kind = rng.random()
                    if kind < 0.6 and inside:
                        element = rng.choice(inside)
                        if element.value_end > element.value_start:
                            at = rng.randrange(element.value_start, element.value_end)
                            body[at] = rng.choice(b"0123456789.-+ ADEJNOS^\\\x00\xff\xfe\xe0\xdd")
                    elif kind < 0.7:
                        body[pos] = rng.randrange(256)
                    elif kind < 0.8:
                        del body[pos:pos + rng.randint(1, 8)]
                    elif kind < 0.9:
                        source = rng.choice(bodies[:2])
                        start = rng.randrange(128, min(len(source), 2000))
                        body[pos:pos + rng.randint(2, 40)] = source[start:start + rng.randint(2, 40)]
                    else:
                        body[pos:pos + 2] = bytes([rng.randrange(40), 0])
                memo = SeriesMemo()
                for taught in bodies[:rng.choice([1, 2])]:
                    deidentified(taught, "application/dicom", study, KEYS, POLICY, memo)
                before = memo.hits
                mine = deidentified(bytes(body), "application/dicom", study, KEYS, POLICY, memo)
                assert same(mine, ordinary(bytes(body), study))
                compared += 1
                fast += memo.hits - before
        finally:
            logging.disable(logging.NOTSET)
    print(f"series memo fuzzing: {compared} mutants, {fast} through the fast way")
    assert fast > 60
