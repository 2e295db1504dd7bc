"""Build a small, deterministic demo radiology archive from real DICOM files.

The sources are the test files shipped by the ``pydicom`` wheel and the ``pydicom-data``
package (nothing is downloaded). Every object is re-identified as an obviously fictitious
patient of "Demo Hospital":

- patients ``FICTIVE^ANNA`` ... with IDs ``DEMO-0001`` ..., birth dates and sex;
- two studies per patient (a baseline and a follow-up, so longitudinal linkage is testable),
  accession numbers ``DEMOACC0001`` ..., plausible study dates and descriptions;
- *all* instance UIDs regenerated (Study/Series/SOP Instance UID, the file meta
  MediaStorageSOPInstanceUID, FrameOfReferenceUID, and every UID referenced inside
  sequences). Several source files share UIDs across different patients, so nothing of the
  source UIDs is kept. Standard UIDs (SOP classes, transfer syntaxes, coding schemes) are
  kept as they are;
- names of staff become ``DEMO^DOCTOR`` / ``DEMO^STAFF``, dates become the study date.

Some identifying material is put back on purpose, so that a de-identifier has something
real to remove: ``ImageComments``, ``StudyComments`` and ``AdditionalPatientHistory`` name
the fictitious patient, a private block (group 0x0099, creator ``DEMO HOSPITAL RIPA``) holds
the patient's name and ID, and the vendors' own private tags of the sources are kept when
they do not carry a source identifier.

The archive holds CT, MR, US, CR and NM objects in nine transfer syntaxes (explicit and
implicit little endian, RLE, JPEG baseline, extended and lossless, JPEG-LS, JPEG 2000
lossless and lossy), single- and multi-frame objects (an Enhanced CT with per-frame
functional groups, Enhanced MR and an ultrasound cine loop), and one CT series of exactly
50 instances for benchmarks, built from ``CT_small.dcm`` with positions stepping 5 mm along
the slice normal. A build with the same seed is byte-for-byte identical.

``index.json`` in the output folder lists every file with its identifying values and UIDs;
:func:`load_archive` reads it back.

Command line: ``python -m demo.archive OUTDIR [--seed SEED] [--overwrite]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, RLELossless, generate_uid

__all__ = [
    "BENCHMARK_SERIES_DESCRIPTION",
    "BENCHMARK_SERIES_LENGTH",
    "FULL_SIZE_SERIES_DESCRIPTION",
    "INDEX_NAME",
    "ArchiveBuildError",
    "ArchiveEntry",
    "DemoArchive",
    "build_archive",
    "load_archive",
    "main",
]

INDEX_NAME = "index.json"
INDEX_FORMAT = 1
DEFAULT_SEED = "ripa-demo"
INSTITUTION = "Demo Hospital"
REFERRING_PHYSICIAN = "DEMO^DOCTOR"
STAFF_NAME = "DEMO^STAFF"
PRIVATE_GROUP = 0x0099
PRIVATE_CREATOR = "DEMO HOSPITAL RIPA"
BENCHMARK_SERIES_LENGTH = 50
BENCHMARK_SERIES_DESCRIPTION = "CT Thorax 5 mm (benchmark)"
FULL_SIZE_SERIES_DESCRIPTION = "CT Abdomen 512x512 5 mm (benchmark)"

# UIDs that name a standard thing rather than an instance: kept as they are.
_STANDARD_UID_ROOT = "1.2.840.10008."
_KEEP_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "PrivateInformationCreatorUID",
    }
)
# Identifying attributes dropped from the sources (the demo sets its own identity).
_DROP_KEYWORDS = (
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MilitaryRank",
    "IssuerOfPatientID",
    "InstitutionAddress",
    "MedicalRecordLocator",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "RequestingPhysician",
    "PerformedProcedureStepID",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "StudyID",
)
_WHOLE = "\x00"  # marks an identifying word that only counts as a whole value
_TEXT_VRS = frozenset({"AE", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UI"})


class ArchiveBuildError(RuntimeError):
    """The demo archive could not be built (a source file is missing, a check failed...)."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Patient:
    name: str
    patient_id: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class _Series:
    source: str
    description: str
    slices: int = 1  # >1: copies of a single-frame source stepped along the slice normal
    slice_step_mm: float = 5.0
    recode: str | None = None  # transfer syntax to re-encode to (pydicom's native encoders)


@dataclass(frozen=True)
class _Study:
    patient: _Patient
    accession: str
    study_date: str
    study_time: str
    description: str
    series: tuple[_Series, ...]


_ANNA = _Patient("FICTIVE^ANNA", "DEMO-0001", "19610412", "F")
_BENT = _Patient("FICTIVE^BENT", "DEMO-0002", "19481102", "M")
_CECILIE = _Patient("FICTIVE^CECILIE", "DEMO-0003", "19850723", "F")
_DAVID = _Patient("FICTIVE^DAVID", "DEMO-0004", "19720130", "M")

_PLAN: tuple[_Study, ...] = (
    _Study(_ANNA, "DEMOACC0001", "20230214", "091500", "CT THORAX", (
        _Series("CT_small.dcm", BENCHMARK_SERIES_DESCRIPTION, slices=BENCHMARK_SERIES_LENGTH),
        _Series("693_J2KR.dcm", "CT Head J2K lossless"),
    )),
    _Study(_ANNA, "DEMOACC0002", "20240220", "101000", "CT THORAX FOLLOW-UP", (
        _Series("CT_small.dcm", "CT Thorax 5 mm RLE", slices=20, recode=RLELossless),
        _Series("eCT_Supplemental.dcm", "CT Perfusion enhanced multi-frame"),
    )),
    _Study(_BENT, "DEMOACC0003", "20220905", "134500", "MR BRAIN", (
        _Series("emri_small.dcm", "MR T1 3D enhanced multi-frame"),
        _Series("MR_small_RLE.dcm", "MR T1 RLE"),
        _Series("MR_small_jpeg_ls_lossless.dcm", "MR T1 JPEG-LS lossless"),
    )),
    _Study(_BENT, "DEMOACC0004", "20230911", "083000", "MR BRAIN FOLLOW-UP", (
        _Series("emri_small_jpeg_2k_lossless.dcm", "MR T1 3D enhanced J2K lossless"),
        _Series("MR_small_implicit.dcm", "MR T1 implicit VR"),
        _Series("MR2_J2KI.dcm", "MR J2K lossy"),
    )),
    _Study(_CECILIE, "DEMOACC0005", "20230530", "111500", "US ABDOMEN", (
        _Series("examples_ybr_color.dcm", "US cine loop"),
        _Series("US1_J2KR.dcm", "US colour J2K lossless"),
        _Series("OBXXXX1A_rle.dcm", "US palette colour RLE"),
    )),
    _Study(_CECILIE, "DEMOACC0006", "20240603", "143000", "US ABDOMEN FOLLOW-UP", (
        _Series("JPGLosslessP14SV1_1s_1f_8b.dcm", "US JPEG lossless"),
    )),
    _Study(_DAVID, "DEMOACC0007", "20211118", "090000", "CR CHEST", (
        _Series("RG3_J2KI.dcm", "CR Chest PA J2K lossy"),
    )),
    _Study(_DAVID, "DEMOACC0008", "20220110", "100000", "NM BONE SCAN", (
        _Series("JPEG-LL.dcm", "NM whole body JPEG lossless"),
        _Series("JPGExtended.dcm", "NM whole body JPEG extended"),
    )),
)


# Only with ``build_archive(..., full_size_ct=True)`` (the gateway benchmark): the demo's CT
# slices are 128x128 (35 kB), a real CT slice is 512x512 (0.5 MB), and where a pull spends
# its time changes with the size (copies, reads and the filesystem sync grow with bytes).
_FULL_SIZE_STUDY = _Study(_DAVID, "DEMOACC0009", "20230301", "100000", "CT ABDOMEN", (
    _Series("693_UNCR.dcm", FULL_SIZE_SERIES_DESCRIPTION, slices=BENCHMARK_SERIES_LENGTH),
))


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class ArchiveEntry:
    """One file of the archive, as listed in ``index.json``. ``path`` is relative to the root."""

    path: str
    source: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_date: str
    study_description: str
    series_description: str
    series_number: int
    instance_number: int
    modality: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_of_reference_uid: str | None
    transfer_syntax_uid: str
    transfer_syntax_name: str
    compressed: bool
    number_of_frames: int
    rows: int
    columns: int


@dataclass(frozen=True)
class DemoArchive:
    """A built archive: its root folder, the seed it was built from and its files."""

    root: Path
    seed: str
    entries: tuple[ArchiveEntry, ...] = field(repr=False)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def paths(self) -> list[Path]:
        """Absolute paths of every DICOM file, in index order."""
        return [self.root / e.path for e in self.entries]

    def series(self) -> dict[str, list[ArchiveEntry]]:
        """Entries grouped by SeriesInstanceUID (in index order)."""
        out: dict[str, list[ArchiveEntry]] = {}
        for e in self.entries:
            out.setdefault(e.series_instance_uid, []).append(e)
        return out

    def series_dir(self, series_instance_uid: str) -> Path:
        """The folder that holds exactly the files of one series."""
        entries = self.series()[series_instance_uid]
        return (self.root / entries[0].path).parent

    def benchmark_series(self) -> list[ArchiveEntry]:
        """The 50-instance CT series meant for benchmarks."""
        for entries in self.series().values():
            if entries[0].series_description == BENCHMARK_SERIES_DESCRIPTION:
                return entries
        raise LookupError("the archive has no benchmark series")

    def full_size_series(self) -> list[ArchiveEntry]:
        """The 50-slice 512x512 CT series, in archives built with ``full_size_ct=True``."""
        for entries in self.series().values():
            if entries[0].series_description == FULL_SIZE_SERIES_DESCRIPTION:
                return entries
        raise LookupError("the archive has no full-size series (build it with full_size_ct=True)")

    def to_json(self) -> dict[str, Any]:
        patients: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            p = patients.setdefault(e.patient_id, {
                "patient_id": e.patient_id,
                "patient_name": e.patient_name,
                "patient_birth_date": e.patient_birth_date,
                "patient_sex": e.patient_sex,
                "studies": {},
            })
            p["studies"].setdefault(e.study_instance_uid, {
                "study_instance_uid": e.study_instance_uid,
                "accession_number": e.accession_number,
                "study_date": e.study_date,
                "study_description": e.study_description,
            })
        return {
            "format": INDEX_FORMAT,
            "generator": "demo.archive",
            "seed": self.seed,
            "institution": INSTITUTION,
            "patients": [
                {**p, "studies": list(p["studies"].values())} for p in patients.values()
            ],
            "files": [asdict(e) for e in self.entries],
        }


# --------------------------------------------------------------------------- helpers


def _uid(seed: str, *parts: object) -> UID:
    """A UID derived only from the seed and the parts (pydicom hashes them, SHA-512)."""
    return generate_uid(entropy_srcs=[seed, *map(str, parts)])


def _source_path(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    if not found:
        raise ArchiveBuildError(
            f"source file {name!r} not found: install the 'pydicom-data' package "
            "(pip install pydicom-data); the demo archive never downloads files"
        )
    return Path(str(found))


def _is_instance_uid(element: DataElement) -> bool:
    return element.VR == "UI" and element.keyword not in _KEEP_UID_KEYWORDS


def _source_identifiers(ds: Dataset) -> tuple[set[str], set[str]]:
    """Values of the source that must not survive: (UIDs, identifying strings).

    A patient's name or ID of six characters or more must not appear anywhere in a text
    value; shorter ones, and the institution, station and device names (which can be part
    of a manufacturer's name), must not be a whole value.
    """
    uids: set[str] = set()
    for elem in ds.iterall():
        if _is_instance_uid(elem) and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            uids.update(str(v) for v in values if v and not str(v).startswith(_STANDARD_UID_ROOT))
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        uids.add(str(meta.MediaStorageSOPInstanceUID))
    words: set[str] = set()
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "OtherPatientIDs"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            words.add(value)
    for keyword in ("InstitutionName", "StationName", "DeviceSerialNumber"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            words.add(_WHOLE + value)
    return uids, words


def _split_words(words: set[str]) -> tuple[set[str], set[str]]:
    """(words to find inside any value, words that only match a whole value)."""
    inside = {w for w in words if not w.startswith(_WHOLE) and len(w) >= 6}
    whole = {w.lstrip(_WHOLE) for w in words} - inside
    return inside, whole


def _age(birth: str, on: str) -> str:
    b = date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
    d = date(int(on[:4]), int(on[4:6]), int(on[6:]))
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return f"{years:03d}Y"


class _Reidentifier:
    """Rewrites one source dataset as an instance of the demo plan."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        # (accession, source UID) -> new UID: the same source UID in one study maps to one
        # new UID (a frame of reference shared by a series stays shared), in another study
        # to another one.
        self._map: dict[tuple[str, str], str] = {}

    def remap(self, study: _Study, old: str) -> str:
        if not old or old.startswith(_STANDARD_UID_ROOT):
            return old
        key = (study.accession, old)
        if key not in self._map:
            self._map[key] = str(_uid(self.seed, "remap", study.accession, old))
        return self._map[key]

    def pin(self, study: _Study, old: str, new: str) -> None:
        """Make ``old`` map to ``new`` in this study (a source's own study/series/SOP UIDs)."""
        if old:
            self._map[(study.accession, old)] = new

    def apply(self, ds: Dataset, study: _Study, forbidden_uids: set[str],
              forbidden_words: set[str]) -> None:
        patient = study.patient
        # Identity attributes of the plan
        for keyword in _DROP_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)
        ds.walk(lambda d, elem: self._rewrite_element(d, elem, study))
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.PatientBirthDate = patient.birth_date
        ds.PatientSex = patient.sex
        ds.PatientAge = _age(patient.birth_date, study.study_date)
        ds.AccessionNumber = study.accession
        ds.InstitutionName = INSTITUTION
        ds.ReferringPhysicianName = REFERRING_PHYSICIAN
        ds.StationName = f"DEMO-{ds.Modality}01"
        if "DeviceSerialNumber" in ds:
            ds.DeviceSerialNumber = "DEMO-SN-0001"
        if "InstitutionalDepartmentName" in ds:
            ds.InstitutionalDepartmentName = "Radiology"
        ds.StudyDate = ds.SeriesDate = study.study_date
        ds.StudyTime = ds.SeriesTime = study.study_time
        ds.StudyID = study.accession[-4:]
        ds.StudyDescription = study.description
        # Private vendor tags stay unless they carry a source identifier.
        self._drop_private_with(ds, forbidden_uids, forbidden_words)

    def _rewrite_element(self, ds: Dataset, elem: DataElement, study: _Study) -> None:
        if elem.VR == "UI" and _is_instance_uid(elem) and elem.value:
            if elem.VM > 1:
                elem.value = [self.remap(study, str(v)) for v in elem.value]
            else:
                elem.value = self.remap(study, str(elem.value))
        elif elem.VR == "PN" and elem.value:
            if elem.keyword not in ("PatientName", "ReferringPhysicianName"):
                elem.value = STAFF_NAME
        elif elem.VR == "DA" and elem.value and elem.keyword != "PatientBirthDate":
            elem.value = study.study_date
        elif elem.VR == "DT" and elem.value:
            elem.value = study.study_date + study.study_time
        elif elem.keyword == "AccessionNumber":
            elem.value = study.accession
        elif elem.keyword in ("PatientID", "InstitutionName") and elem.value:
            elem.value = study.patient.patient_id if elem.keyword == "PatientID" else INSTITUTION

    @staticmethod
    def _drop_private_with(ds: Dataset, uids: set[str], words: set[str]) -> None:
        inside, exact = _split_words(words)
        needles = inside | uids

        def carries(value: Any) -> bool:
            if isinstance(value, (bytes, bytearray)):
                text = bytes(value).decode("latin-1")
            elif isinstance(value, (list, tuple, MultiValue)):
                return any(carries(v) for v in value)
            else:
                text = str(value)
            return text.strip() in exact or any(n in text for n in needles)

        def visit(d: Dataset) -> None:
            for elem in list(d):
                if elem.VR == "SQ":
                    for item in elem.value:
                        visit(item)
                elif (elem.tag.is_private and not elem.tag.is_private_creator
                      and carries(elem.value)):
                    del d[elem.tag]

        visit(ds)


def _add_identifying_text(ds: Dataset, study: _Study) -> None:
    """Free text and a private block that name the (fictitious) patient, on purpose."""
    p = study.patient
    ds.ImageComments = (
        f"Image of {p.name} (ID {p.patient_id}), referred by {REFERRING_PHYSICIAN}"
    )
    ds.StudyComments = f"{p.name} born {p.birth_date}, {study.description.lower()}"
    ds.AdditionalPatientHistory = f"Patient {p.name} ({p.patient_id}) seen at {INSTITUTION}"
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", p.name.replace("^", " "))
    block.add_new(0x02, "LO", p.patient_id)
    block.add_new(0x03, "LT", f"Archived by RIPA demo for {p.name}, acc {study.accession}")


def _check_clean(ds: Dataset, uids: set[str], words: set[str], where: str) -> None:
    """Raise if any source UID or identifying word survived in a text element."""
    long_words, short_words = _split_words(words)
    for elem in ds.iterall():
        if elem.VR not in _TEXT_VRS or elem.value in (None, ""):
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        for v in values:
            text = str(v)
            if text in uids or text.strip() in short_words or any(w in text for w in long_words):
                raise ArchiveBuildError(
                    f"{where}: {elem.keyword or elem.tag} still holds a source value {text!r}"
                )


def _stepped_position(ds: Dataset, k: int, step_mm: float) -> list[float]:
    """ImagePositionPatient of slice ``k``: the source position moved -k*step along the normal."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient]) - k * step_mm * normal
    return [round(float(v), 6) for v in ipp]


def _write(ds: Dataset, path: Path) -> None:
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DEMO_ARCHIVE_1"
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID",
                    "PrivateInformation"):
        if keyword in meta:
            delattr(meta, keyword)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _entry(ds: Dataset, root: Path, path: Path, source: str, study: _Study) -> ArchiveEntry:
    ts = ds.file_meta.TransferSyntaxUID
    return ArchiveEntry(
        path=path.relative_to(root).as_posix(),
        source=source,
        patient_name=str(ds.PatientName),
        patient_id=str(ds.PatientID),
        patient_birth_date=str(ds.PatientBirthDate),
        patient_sex=str(ds.PatientSex),
        accession_number=str(ds.AccessionNumber),
        study_date=str(ds.StudyDate),
        study_description=str(ds.StudyDescription),
        series_description=str(ds.SeriesDescription),
        series_number=int(ds.SeriesNumber),
        instance_number=int(ds.InstanceNumber),
        modality=str(ds.Modality),
        sop_class_uid=str(ds.SOPClassUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        frame_of_reference_uid=str(ds.FrameOfReferenceUID) if ds.get("FrameOfReferenceUID") else None,
        transfer_syntax_uid=str(ts),
        transfer_syntax_name=ts.name,
        compressed=bool(ts.is_compressed),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
    )


# --------------------------------------------------------------------------- public API


def build_archive(
    outdir: str | os.PathLike[str],
    *,
    seed: str = DEFAULT_SEED,
    overwrite: bool = False,
    full_size_ct: bool = False,
) -> DemoArchive:
    """Write the demo archive into ``outdir`` and return its index.

    ``outdir`` must not exist or be empty. With ``overwrite=True`` an earlier demo archive
    there (a folder holding an ``index.json`` written by this module) is replaced; any other
    non-empty folder is refused, so a wrong path never loses data.

    The result depends only on ``seed`` and the installed source files: the same seed gives
    the same UIDs and the same bytes. Raises :class:`ArchiveBuildError` when a source file is
    missing or when a source identifier would survive re-identification.

    ``full_size_ct`` adds a ninth study (the fourth patient's) with 50 slices of 512x512 CT
    (26 MB), for benchmarks that need the size of a real series; the demo and tests leave it out.
    """
    root = Path(outdir)
    _prepare_outdir(root, overwrite)
    rid = _Reidentifier(seed)
    entries: list[ArchiveEntry] = []
    # Sources are read once; the same source used twice must be re-identified independently.
    sources: dict[str, Dataset] = {}
    for study in (*_PLAN, _FULL_SIZE_STUDY) if full_size_ct else _PLAN:
        study_uid = _uid(seed, "study", study.accession)
        study_dir = root / study.patient.patient_id / f"{study.study_date}_{study.accession}"
        for number, series in enumerate(study.series, start=1):
            if series.source not in sources:
                sources[series.source] = pydicom.dcmread(_source_path(series.source))
            source_ds = sources[series.source]
            uids, words = _source_identifiers(source_ds)
            template = copy.deepcopy(source_ds)
            plain_pixels = template.pixel_array if series.slices > 1 else None
            if series.recode is not None:
                template.compress(series.recode)
            series_uid = _uid(seed, "series", study.accession, number)
            for k in range(series.slices):
                ds = copy.deepcopy(template)
                sop_uid = _uid(seed, "sop", study.accession, number, k + 1)
                rid.pin(study, str(source_ds.get("StudyInstanceUID", "")), str(study_uid))
                rid.pin(study, str(source_ds.get("SeriesInstanceUID", "")), str(series_uid))
                rid.pin(study, str(source_ds.get("SOPInstanceUID", "")), str(sop_uid))
                rid.apply(ds, study, uids, words)
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.SOPInstanceUID = sop_uid
                ds.SeriesNumber = number
                ds.InstanceNumber = k + 1
                ds.SeriesDescription = series.description
                if plain_pixels is not None and k:
                    # One source image for every slice, but not the same pixels in each (as
                    # in a real series): the values shifted by the slice number.
                    shifted = (plain_pixels + np.asarray(k, plain_pixels.dtype)).astype(plain_pixels.dtype)
                    if series.recode is None:
                        ds.PixelData = shifted.tobytes()
                    else:
                        ds.compress(series.recode, shifted, generate_instance_uid=False)
                if series.slices > 1:
                    ipp = _stepped_position(source_ds, k, series.slice_step_mm)
                    ds.ImagePositionPatient = ipp
                    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
                    ds.SliceLocation = round(float(np.dot(ipp, np.cross(iop[:3], iop[3:]))), 6)
                    ds.SliceThickness = series.slice_step_mm
                    ds.SpacingBetweenSlices = series.slice_step_mm
                _add_identifying_text(ds, study)
                path = study_dir / f"S{number:02d}" / f"IM{k + 1:04d}.dcm"
                _check_clean(ds, uids, words, f"{path.relative_to(root)} (from {series.source})")
                _write(ds, path)
                entries.append(_entry(ds, root, path, series.source, study))
    archive = DemoArchive(root=root, seed=seed, entries=tuple(entries))
    _check_unique(archive)
    archive.index_path.write_text(json.dumps(archive.to_json(), indent=2) + "\n")
    return archive


def load_archive(root: str | os.PathLike[str]) -> DemoArchive:
    """Read back an archive written by :func:`build_archive` from its ``index.json``."""
    root = Path(root)
    try:
        data = json.loads((root / INDEX_NAME).read_text())
    except FileNotFoundError as exc:
        raise ArchiveBuildError(f"{root} holds no {INDEX_NAME}: not a demo archive") from exc
    if data.get("format") != INDEX_FORMAT:
        raise ArchiveBuildError(f"{root / INDEX_NAME}: unknown index format {data.get('format')!r}")
    entries = tuple(ArchiveEntry(**f) for f in data["files"])
    return DemoArchive(root=root, seed=data["seed"], entries=entries)


def _prepare_outdir(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise ArchiveBuildError(f"{root} is not empty (pass overwrite=True to replace a demo archive)")
        if not (root / INDEX_NAME).is_file():
            raise ArchiveBuildError(f"{root} is not empty and holds no {INDEX_NAME}: refusing to clear it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def _check_unique(archive: DemoArchive) -> None:
    sops = [e.sop_instance_uid for e in archive.entries]
    if len(set(sops)) != len(sops):
        raise ArchiveBuildError("duplicate SOPInstanceUID in the demo archive")
    owner: dict[str, str] = {}
    for e in archive.entries:
        for uid in (e.study_instance_uid, e.series_instance_uid):
            if owner.setdefault(uid, e.patient_id) != e.patient_id:
                raise ArchiveBuildError(f"UID {uid} is shared by two patients")


def _summary(archive: DemoArchive) -> Iterable[str]:
    yield f"demo archive in {archive.root} (seed {archive.seed!r}): {len(archive.entries)} files"
    for entries in archive.series().values():
        e = entries[0]
        frames = sum(x.number_of_frames for x in entries)
        yield (f"  {e.patient_id} {e.study_date} {e.modality:2s} {e.series_description:<36s}"
               f" {len(entries):3d} file(s) {frames:3d} frame(s)  {e.transfer_syntax_name}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m demo.archive OUTDIR``: build the archive and print a summary."""
    parser = argparse.ArgumentParser(prog="python -m demo.archive", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", help="folder to write (must be empty or a previous demo archive)")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="seed for the UIDs (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo archive")
    args = parser.parse_args(argv)
    try:
        archive = build_archive(args.outdir, seed=args.seed, overwrite=args.overwrite)
    except ArchiveBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in _summary(archive):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
