"""Leak check: de-identify every DICOM file shipped offline and look for originals.

The corpus is every file of pydicom's test data (``test_files`` and the character
set files ``charset_files``), of pydicom-data (``data_store/data``) and of deid-data
(its four datasets, the zipped cine loops opened in memory).  Files that are not
DICOM (READMEs, JSON, ICC profiles, a gzip stream ...) are skipped and counted; a
gzip or zip member that is DICOM counts as a file.

For each file the identifying values of the original are collected, the file is
de-identified with burned-in annotation allowed (the check is about the header),
written with ``dcmwrite(..., enforce_file_format=True)``, and searched twice:

* the output bytes, for each value encoded in the file's own character set (through
  pydicom's charset encoding, ISO 2022 escapes included), in UTF-8, and as the raw
  bytes the original file held;
* the output's values (every element at any depth but binary ones, and the file
  meta), compared in a normalised form: NFKC, case folded, accents stripped.  A name
  that survives as ``QUUXLEY`` in a code string, or decomposed, or without its
  accents, is found here.

Which values are checked (the rules):

* every PN element at any depth, private ones included: the whole value and each
  name component and word of three characters or more;
* at any depth: PatientID, OtherPatientIDs, IssuerOfPatientID, AccessionNumber,
  StudyID, AdmissionID, MedicalRecordLocator, the procedure step and request IDs,
  InstitutionName, InstitutionAddress, InstitutionalDepartmentName, StationName,
  DeviceSerialNumber, PatientAddress, PatientTelephoneNumbers: whole values of
  three characters or more;
* every DA value and the date of every DT value (all dates are shifted, the birth
  date is emptied, so no original date may remain);
* every UID of a UI element that is not well known (exactly an entry of pydicom's UID
  dictionary or of the de-identifier's documented class and coding-scheme UIDs),
  whatever the attribute: a class UID that is not well known is remapped too.

False positives that are not leaks, and are counted but not failed:

* values shorter than three characters;
* values contained (case-insensitively) in one of the constant strings the
  de-identifier writes itself (DUMMY_TEXT, the method names and code meanings),
  e.g. a PatientName of "ANON";
* values that are words of the standard's vocabulary for code strings
  (CODE_STRING_VOCABULARY), which the de-identifier keeps whatever the record holds,
  e.g. a test patient called "Text" and an SR ValueType TEXT;
* hits inside binary values (pixel data, ICC profiles, ...) carried unchanged
  from the input: pixel data is not changed by the header profile, and text in
  pixels is the burned-in annotation rule's concern.  Such a hit is a leak only
  when the output holds more occurrences than its binary values do.

Values match as whole words: numbers, dates and UIDs with no digit or dot on
either side (a UID "1.2.3" does not match inside another UID), text with no ASCII
letter or digit on either side ("MARY" does not match inside "PRIMARY").

DICOMDIR files are refused by the de-identifier (their Referenced File IDs are
paths that can hold patient IDs) and counted as refused.

Counts and the time taken go to ``test-artifacts/deid-leak.json`` and are printed
(``pytest -s``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import time
import unicodedata
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom import charset as dicom_charset
from pydicom.dataelem import DataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from services.sample_gateway import annex_e
from services.sample_gateway.deidentify import (
    CODE_STRING_VOCABULARY,
    DUMMY_TEXT,
    DeidPolicy,
    UnsupportedObject,
    deidentify,
    is_well_known_uid,
)
from services.sample_gateway.pseudonyms import ProjectKeys

data_store = pytest.importorskip("data_store", reason="pydicom-data is not installed")
deid_data_module = pytest.importorskip("deid_data.data", reason="deid-data is not installed")

ARTIFACT = Path(__file__).resolve().parent.parent / "test-artifacts" / "deid-leak.json"
KEYS = ProjectKeys(b"leak-check-key-0123456789abcdef!", "LEAKCHECK")
POLICY = DeidPolicy(allow_burned_in_annotation=True)

MIN_LENGTH = 3
WHOLE_VALUE_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "MedicalRecordLocator",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "PatientAddress",
        "PatientTelephoneNumbers",
    }
)
# Markers that tell pydicom's forced read of a non-DICOM file from a real dataset.
DICOM_MARKERS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "PatientID",
                 "PatientName", "Modality", "PixelData", "DirectoryRecordSequence")
FIXED_STRINGS = [
    DUMMY_TEXT,
    *POLICY.method_values(),
    annex_e.BASIC_PROFILE_CODE[2],
    annex_e.MODIFIED_DATES_CODE[2],
    annex_e.CLEAN_DESCRIPTORS_CODE[2],
    annex_e.PATIENT_CHARACTERISTICS_CODE[2],
    "YES",
    "MODIFIED",
]
_DIGITS_AND_DOTS = re.compile(rb"^[0-9.]+$")
_VOCABULARY = frozenset(word.casefold() for word in CODE_STRING_VOCABULARY)
_BINARY_VRS = ("OB", "OW", "OD", "OF", "OL", "OV", "UN")


# ---------------------------------------------------------------------------
# The corpus


def corpus_roots() -> list[Path]:
    pydicom_data = Path(pydicom.data.__file__).parent
    roots = [pydicom_data / "test_files", Path(pydicom.data.get_charset_files()[0]).parent,
             Path(data_store.__file__).parent / "data"]
    roots += [Path(deid_data_module.get_dataset(name))
              for name in ("dicom-cookies", "animals", "humans", "ultrasounds")]
    return roots


def corpus_files() -> list[Path]:
    seen: set[Path] = set()
    files = []
    for root in corpus_roots():
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            for name in sorted(names):
                path = Path(directory, name).resolve()
                if path not in seen:
                    seen.add(path)
                    files.append(path)
    return files


def corpus_inputs(files: list[Path]) -> Iterator[tuple[str, bytes | Path]]:
    """(label, data) for each file; archive members come out as bytes."""
    for path in files:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    yield f"{path}!{member}", archive.read(member)
        elif path.suffix == ".gz":
            with gzip.open(path) as stream:
                yield f"{path}!gunzip", stream.read()
        else:
            yield str(path), path


def read_dicom(data: bytes | Path) -> Dataset | None:
    """The dataset, or None when `data` is not DICOM."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(source)
        except InvalidDicomError:
            pass
        except Exception:  # noqa: BLE001 - a broken test file counts as unreadable
            return None
        if isinstance(source, io.BytesIO):
            source.seek(0)
        try:
            ds = pydicom.dcmread(source, force=True)
            if not any(marker in ds for marker in DICOM_MARKERS):
                return None
            for _ in ds.iterall():  # a forced read of garbage fails here
                pass
            return ds
        except Exception:  # noqa: BLE001
            return None


# ---------------------------------------------------------------------------
# What to look for


@dataclass
class Needle:
    kind: str
    text: str
    variants: set[bytes] = field(default_factory=set)
    numeric: bool = False  # digits and dots: no digit or dot may touch either end


def _values(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, MultiValue)):
        return [v for v in value if v is not None]
    return [value]


def _walk(ds: Dataset, encodings: list[str]) -> Iterator[tuple[DataElement, bytes | None, list[str]]]:
    """(element, raw value bytes or None, encodings) at any depth, private included."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        raw_bytes = raw.value if not isinstance(raw, DataElement) and isinstance(raw.value, bytes) else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                elem = raw if isinstance(raw, DataElement) else convert_raw_data_element(
                    raw, encoding=encodings, ds=ds)
            except Exception:  # noqa: BLE001
                continue
        if elem.tag == 0x00080005 and elem.value:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    encodings = dicom_charset.convert_encodings(list(_values(elem.value)))
                except LookupError:
                    pass
        yield elem, raw_bytes, encodings
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _walk(item, encodings)


def _encodings_of(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dicom_charset.convert_encodings(list(_values(value)) or [""])
        except LookupError:
            return [dicom_charset.default_encoding]


def _encode(text: str, encodings: list[str], person_name: bool = False) -> set[bytes]:
    """`text` in the file's character set (as a string and, for names, as a PN value,
    which escapes each component group on its own) and in UTF-8."""
    out = set()
    encoders = [lambda: dicom_charset.encode_string(text, encodings)]
    if person_name:
        encoders.append(lambda: PersonName(text).encode(encodings))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for encoder in encoders:
            try:
                out.add(encoder())
            except Exception:  # noqa: BLE001 - not representable in that charset
                pass
    out.add(text.encode("utf-8"))
    return out


class Collector:
    def __init__(self) -> None:
        self.needles: dict[tuple[str, str], Needle] = {}
        self.skipped = Counter()

    def add(self, kind: str, text: str, encodings: list[str], raw: bytes | None = None,
            numeric: bool = False) -> None:
        text = text.strip().strip("\x00").strip()
        if not text:
            return
        if len(text) < MIN_LENGTH:
            self.skipped["too_short"] += 1
            return
        if any(text.casefold() in fixed.casefold() for fixed in FIXED_STRINGS):
            self.skipped["deidentifier_constant"] += 1
            return
        if text.casefold() in _VOCABULARY:
            self.skipped["standard_vocabulary"] += 1
            return
        numeric = numeric or bool(_DIGITS_AND_DOTS.match(text.encode("utf-8")))
        needle = self.needles.setdefault((kind, text), Needle(kind, text, numeric=numeric))
        needle.variants |= _encode(text, encodings, person_name=kind.startswith("PN"))
        if raw:
            needle.variants.add(raw)


def collect(ds: Dataset) -> tuple[list[Needle], Counter]:
    """The identifying values of `ds`, and how many were not checked, by reason."""
    collector = Collector()
    for elem, raw, encodings in _walk(ds, _encodings_of(ds)):
        if elem.tag.is_private and elem.VR != "PN":
            continue  # a private PN is a name like any other
        keyword = elem.keyword
        if elem.VR == "PN":
            for value in _values(elem.value):
                text = str(value)
                collector.add("PN", text, encodings)
                for part in re.split(r"[\^=]", text):
                    collector.add("PN component", part, encodings)
                    for word in part.split():
                        if word != part.strip():
                            collector.add("PN word", word, encodings)
            if raw and len(_values(elem.value)) == 1:
                raw_text = raw.rstrip(b" \x00")
                if len(raw_text) >= MIN_LENGTH:
                    collector.needles.get(("PN", str(elem.value).strip()),
                                          Needle("PN", "")).variants.add(raw_text)
        elif keyword in WHOLE_VALUE_KEYWORDS:
            for value in _values(elem.value):
                raw_value = raw.rstrip(b" \x00") if raw and len(_values(elem.value)) == 1 else None
                collector.add(keyword, str(value), encodings, raw=raw_value)
        elif elem.VR in ("DA", "DT"):
            for value in _values(elem.value):
                date = str(value).strip()[:8]
                if len(date) == 8 and date.isdigit():
                    collector.add("date", date, encodings, numeric=True)
        elif elem.VR == "UI":
            for value in _values(elem.value):
                uid = str(value).strip().rstrip("\x00")
                if uid and not is_well_known_uid(uid):
                    collector.add("UID", uid, ["iso8859"], numeric=True)
    return list(collector.needles.values()), collector.skipped


def _count(haystack: bytes, variant: bytes, numeric: bool) -> int:
    edge = rb"0-9." if numeric else rb"A-Za-z0-9"
    pattern = rb"(?<![" + edge + rb"])" + re.escape(variant) + rb"(?![" + edge + rb"])"
    return len(re.findall(pattern, haystack))


def binary_values(ds: Dataset) -> list[bytes]:
    values = []
    for elem in ds.iterall():
        if elem.VR in _BINARY_VRS and isinstance(elem.value, bytes):
            values.append(elem.value)
    return values


def normalised(text: str) -> str:
    """NFKC, case folded, accents stripped: the form values are compared in."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def normalised_values(ds: Dataset) -> str:
    """Every non-binary value of `ds` at any depth and of its file meta, normalised,
    one a line."""
    elements = list(ds.iterall()) + list(getattr(ds, "file_meta", None) or ())
    lines = []
    for elem in elements:
        if elem.VR == "SQ" or elem.VR in _BINARY_VRS:
            continue
        lines.extend(normalised(str(v)) for v in _values(elem.value))
    return "\n".join(lines)


def normalised_leaks(values: str, needles: list[Needle]) -> list[str]:
    """Needles found, as whole words, in the normalised values (see :func:`normalised`)."""
    found = []
    for needle in needles:
        key = normalised(needle.text)
        if len(key) < MIN_LENGTH or key not in values:
            continue
        edge = r"[\d.]" if needle.numeric else r"[^\W_]"
        if re.search(rf"(?<!{edge}){re.escape(key)}(?!{edge})", values):
            found.append(f"{needle.kind} {needle.text!r} (in a value, normalised)")
    return found


def leaks_in(output: bytes, out_ds: Dataset, needles: list[Needle]) -> list[str]:
    found = []
    bulk: list[bytes] | None = None
    for needle in needles:
        for variant in needle.variants:
            if output.find(variant) == -1:
                continue
            total = _count(output, variant, needle.numeric)
            if total == 0:
                continue
            if bulk is None:
                bulk = binary_values(out_ds)
            in_bulk = sum(_count(value, variant, needle.numeric) for value in bulk)
            if total > in_bulk:
                found.append(f"{needle.kind} {needle.text!r} ({total - in_bulk} time(s))")
                break
    return found


# ---------------------------------------------------------------------------
# The test


def test_no_identifying_value_survives_in_the_offline_corpus() -> None:
    started = time.monotonic()
    files = corpus_files()
    counts = Counter()
    skipped_reasons = Counter()
    skipped_files: list[str] = []
    failures: dict[str, list[str]] = {}
    refusals_without_allowance = 0
    for label, data in corpus_inputs(files):
        ds = read_dicom(data)
        if ds is None:
            counts["skipped_not_dicom"] += 1
            skipped_files.append(label)
            continue
        counts["files_read"] += 1
        if label.count("!"):
            counts["archive_members_read"] += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    result = deidentify(ds, KEYS, POLICY)
                except UnsupportedObject:
                    counts["refused_dicomdir"] += 1
                    continue
                buffer = io.BytesIO()
                # A fragment without SOP Class/Instance UID cannot be a DICOM file:
                # it is checked as a bare dataset.
                as_file = "MediaStorageSOPClassUID" in result.dataset.file_meta
                counts["written_as_file" if as_file else "written_as_bare_dataset"] += 1
                pydicom.dcmwrite(buffer, result.dataset, enforce_file_format=as_file)
        except Exception as error:  # noqa: BLE001 - report every file that fails
            failures[label] = [f"not written: {type(error).__name__}: {error}"]
            continue
        if any("burned-in" in w for w in result.report.warnings):
            refusals_without_allowance += 1
        counts["files_deidentified"] += 1
        needles, skipped = collect(ds)
        counts["values_checked"] += len(needles)
        counts["encoded_variants_checked"] += sum(len(n.variants) for n in needles)
        for needle in needles:
            counts[f"values_checked_{needle.kind.replace(' ', '_')}"] += 1
        skipped_reasons.update(skipped)
        output = buffer.getvalue()
        counts["output_bytes"] += len(output)
        if "PixelData" in ds:
            if result.dataset.get("PixelData") == ds.PixelData:
                counts["pixel_data_unchanged"] += 1
            else:
                failures.setdefault(label, []).append("pixel data changed")
        leaks = leaks_in(output, result.dataset, needles)
        leaks += normalised_leaks(normalised_values(result.dataset), needles)
        if leaks:
            failures.setdefault(label, []).extend(leaks)
    elapsed = time.monotonic() - started
    summary = {
        "files_in_corpus": len(files),
        "files_read_as_dicom": counts["files_read"],
        "archive_members_read": counts["archive_members_read"],
        "files_deidentified_and_checked": counts["files_deidentified"],
        "skipped_not_dicom": counts["skipped_not_dicom"],
        "skipped_files": [os.path.relpath(s.split("!")[0], Path(pydicom.__file__).parent.parent)
                          + ("!" + s.split("!")[1] if "!" in s else "") for s in skipped_files],
        "identifying_values_checked": counts["values_checked"],
        "encoded_variants_checked": counts["encoded_variants_checked"],
        "values_checked_by_kind": {k.removeprefix("values_checked_"): v for k, v in sorted(counts.items())
                                   if k.startswith("values_checked_")},
        "values_not_checked": dict(skipped_reasons),
        "refused_dicomdir": counts["refused_dicomdir"],
        "written_as_file": counts["written_as_file"],
        "written_as_bare_dataset": counts["written_as_bare_dataset"],
        "burned_in_risk_delivered_under_allowance": refusals_without_allowance,
        "pixel_data_unchanged": counts["pixel_data_unchanged"],
        "output_bytes": counts["output_bytes"],
        "failures": failures,
        "seconds": round(elapsed, 2),
    }
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(summary, indent=2) + "\n")
    print("\nde-identification leak check:", json.dumps(
        {k: v for k, v in summary.items() if k not in ("skipped_files", "failures")}, indent=2))
    assert counts["files_deidentified"] >= 250, "the offline corpus is smaller than expected"
    assert not failures, json.dumps(failures, indent=2)


# ---------------------------------------------------------------------------
# The checker itself finds leaks (negative controls)


def test_whole_word_matching() -> None:
    assert _count(b"ORIGINAL\\PRIMARY", b"MARY", numeric=False) == 0
    assert _count(b"DOWNTIME^MARY^^", b"MARY", numeric=False) == 1
    assert _count(b"2.25.1234280", b"428", numeric=True) == 0
    assert _count(b"\x00428\x00", b"428", numeric=True) == 1
    assert _count(b"1.2.3.4", b"1.2.3", numeric=True) == 0


def test_checker_finds_planted_leaks() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    needles, _ = collect(ds)
    result = deidentify(ds, KEYS, POLICY)
    clean = io.BytesIO()
    pydicom.dcmwrite(clean, result.dataset, enforce_file_format=True)
    assert leaks_in(clean.getvalue(), result.dataset, needles) == []
    assert normalised_leaks(normalised_values(result.dataset), needles) == []
    planted = result.dataset
    planted.Manufacturer = "CompressedSamples scanner"
    planted.ManufacturerModelName = ds.SOPInstanceUID
    planted.SoftwareVersions = ds.StudyDate
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, planted, enforce_file_format=True)
    found = " ".join(leaks_in(buffer.getvalue(), planted, needles))
    assert "'CompressedSamples'" in found
    assert ds.SOPInstanceUID in found
    assert ds.StudyDate in found


@pytest.mark.parametrize("name", ["chrGerm.dcm", "chrH31.dcm", "chrRuss.dcm", "chrKoreanMulti.dcm"])
def test_checker_encodes_names_in_the_file_character_set(name: str) -> None:
    path = next(p for p in pydicom.data.get_charset_files() if p.endswith(name))
    ds = pydicom.dcmread(path)
    original = Path(path).read_bytes()
    needles, _ = collect(ds)
    names = [n for n in needles if n.kind.startswith("PN") and not n.text.isascii()]
    assert names, "the file should hold a non-ASCII name"
    for needle in names:  # found through the charset encoding, not UTF-8 or raw bytes
        encoded = _encode(needle.text, _encodings_of(ds), person_name=True)
        encoded.discard(needle.text.encode("utf-8"))
        assert any(variant in original for variant in encoded), needle.text
    assert leaks_in(original, ds, needles), "the unmodified file must count as a leak"


def test_checker_finds_names_in_another_unicode_form_or_case() -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    ds.PatientName = "Quuxley^Jérôme"
    needles, _ = collect(ds)
    planted = deidentify(ds, KEYS, POLICY).dataset
    assert normalised_leaks(normalised_values(planted), needles) == []
    planted.ImageType = ["DERIVED", "SECONDARY", "QUUXLEY"]  # upper case, as CS has it
    planted.ConvolutionKernel = unicodedata.normalize("NFD", "Jérôme")
    planted.SeriesDescription = "thorax jerome"  # accents dropped
    found = " ".join(normalised_leaks(normalised_values(planted), needles))
    assert "'Quuxley'" in found and "'Jérôme'" in found
    assert found.count("Jérôme") == 1  # one finding per needle
