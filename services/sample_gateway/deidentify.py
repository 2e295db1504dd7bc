"""De-identify one DICOM dataset for delivery to a research project.

DICOM PS3.15 Annex E: the Basic Application Level Confidentiality Profile, with the
Retain Longitudinal Temporal Information with Modified Dates Option, the Clean
Descriptors Option (for a small, named set of descriptors) and the Retain Patient
Characteristics Option (age, sex, size, weight; on by default).  The table itself
is data in :mod:`.annex_e`; pseudonyms come from :mod:`.pseudonyms`.

Rules, in the order they apply to every element at every depth:

1. group lengths, command (0000) and stray file meta (0002) elements: removed;
2. private elements (odd groups): removed, with their sequences;
3. curve (50xx) and overlay (60xx) groups: removed (Annex E removes Overlay Data);
   so is, unread, a public attribute pydicom's dictionary does not know and a byte
   string (OB) outside Table E.1-1 but the ICC profile (an HPGL drawing's labels, a
   record key: formats of their own that can carry text); and an element whose VR as
   read is not one its attribute allows (a name written as OB or FD would otherwise be
   kept as binary numbers; VRs screened alike, LO and SH, IS and DS, US and SS, stand for
   each other);
4. PatientID and PatientName: the patient pseudonym; AccessionNumber: a keyed
   accession pseudonym; PatientBirthDate: emptied;
5. an attribute listed in Table E.1-1: its action, options applied
   (:func:`.annex_e.resolve_action`); ``C`` means "shift" for dates (DA, DT; a TM
   is kept, whole-day shifts leave it unchanged) and "clean" for the kept
   descriptors;
6. any other element by its VR: SQ processed item by item; UI remapped unless it
   is exactly a UID of pydicom's dictionary or of :data:`DOCUMENTED_UIDS` (a class,
   transfer syntax, coding scheme ...) and does not name an instance (instance UIDs
   are always remapped); DA/DT shifted; a text VR (LO, SH, ST, LT, UT, UC, PN, AE,
   UR, UN) removed unless it is on :data:`SAFE_TEXT_KEYWORDS` or a kept descriptor
   (fail closed: unknown, retired or new text attributes cannot leak); anything
   else (code strings, numbers, pixel data) kept;
7. every value kept by rules 5 and 6, at any depth, loses what identifies someone
   (:class:`IdentifyingScreen`: the record's names, IDs and institution words, in
   any Unicode form, and dates, CPR-like numbers, e-mail addresses, IDs): text is
   cleaned; a code string value (CS) is emptied, a number (IS, DS, TM) emptied, a
   URL removed, an age (AS) that is not three digits and a unit emptied, rather than
   edited into another valid-looking value; a code of the
   standard (pydicom's concept dictionary) stays whole, any other code value,
   designator or version is removed when it identifies.

Then PatientIdentityRemoved, LongitudinalTemporalInformationModified,
DeidentificationMethod and DeidentificationMethodCodeSequence are set, PatientAge is
computed when absent, and new file meta is built (MediaStorageSOPInstanceUID
remapped).  The input dataset is read through ``Dataset.get_item`` and never
modified; each element is decoded once.  An element kept exactly as read goes into
the output undecoded (pydicom's ``RawDataElement``), so :mod:`.encoding` writes its
bytes as they came: binary numbers that rule 6 keeps whatever they hold (decided by
tag, the VR and length as read checked against the dictionary), and values that the
rules above kept unchanged and whose bytes are printable ASCII.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom import charset as _charset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    UID_dictionary,
)

from . import annex_e
from .annex_e import CODE_STRING_VOCABULARY, DOCUMENTED_UIDS
from .pseudonyms import ProjectKeys, shift_date

__all__ = [
    "CODE_STRING_VOCABULARY",
    "DEFAULT_KEEP_DESCRIPTORS",
    "DOCUMENTED_UIDS",
    "SAFE_TEXT_KEYWORDS",
    "BurnedInAnnotationRefused",
    "DeidError",
    "DeidPolicy",
    "DeidReport",
    "DeidResult",
    "ElementRules",
    "IdentifyingScreen",
    "UnsupportedObject",
    "burned_in_risk",
    "clean_descriptor",
    "deidentify",
    "deidentify_with_rules",
    "fold",
    "identifying_terms",
    "is_instance_uid_keyword",
    "is_well_known_uid",
]

METHOD_NAME = "research-workbench sample gateway"
METHOD_VERSION = "1.0"

#: Descriptors kept after cleaning (Clean Descriptors Option) unless a policy says
#: otherwise.  Every other descriptor of Table E.1-1 is removed.
DEFAULT_KEEP_DESCRIPTORS = frozenset(
    {
        "StudyDescription", "SeriesDescription", "ProtocolName", "BodyPartExamined",
        "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
    }
)

#: Text-valued attributes that are not in Table E.1-1 and describe equipment,
#: technique or codes, not people: the only ones that pass the fail-closed rule.
SAFE_TEXT_KEYWORDS = frozenset(
    {
        # equipment and software
        "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
        "DetectorManufacturerName", "DetectorManufacturerModelName",
        "SecondaryCaptureDeviceManufacturer",
        "SecondaryCaptureDeviceManufacturerModelName",
        "SecondaryCaptureDeviceSoftwareVersions", "DigitalImageFormatAcquired",
        "VideoImageFormatAcquired",
        # acquisition technique
        "ConvolutionKernel", "SequenceName", "PulseSequenceName", "ReceiveCoilName",
        "TransmitCoilName", "ImagedNucleus", "ContrastBolusRoute", "FilterType",
        "CollimatorGridName", "PlateType", "PhosphorType", "TransducerData",
        "ProcessingFunction", "Radiopharmaceutical", "ReconstructionMethod",
        "AttenuationCorrectionMethod", "ScatterCorrectionMethod", "EnergyWindowName",
        # pixel value interpretation
        "WindowCenterWidthExplanation", "ModalityLUTType", "LUTExplanation",
        "LUTLabel", "RescaleType", "DimensionDescriptionLabel",
        "PositionReferenceIndicator", "SegmentLabel", "SegmentAlgorithmName",
        # codes (Code Sequence Macro and coding scheme identification)
        "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
        "LongCodeValue", "URNCodeValue", "MappingResourceName", "CodingSchemeName",
        "CodingSchemeRegistry", "CodingSchemeExternalID",
        "CodingSchemeResponsibleOrganization",
        # veterinary subjects
        "PatientSpeciesDescription", "PatientBreedDescription", "StrainDescription",
    }
)

#: UI attributes whose values name a class, a syntax or a scheme, never an
#: instance.  Their values are kept when well known (:func:`is_well_known_uid`) and
#: remapped otherwise, like those of any other UI attribute that is not an instance's.
CLASS_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID",
        "AffectedSOPClassUID", "RequestedSOPClassUID", "ReferencedSOPClassUIDInFile",
        "TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile",
        "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
        "CodingSchemeUID", "ContextUID", "MappingResourceUID",
        "ImplementationClassUID",
    }
)

_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "UR", "UN"})
_CLEANED_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_AGE = re.compile(r"\d{3}[DWMY]")
_MAX_LENGTH = {"SH": 16, "LO": 64, "CS": 16, "AE": 16, "ST": 1024, "LT": 10240, "PN": 64}
DUMMY_TEXT = "ANONYMIZED"

_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_ISSUER_OF_PATIENT_ID = 0x00100021
_PATIENT_BIRTH_DATE = 0x00100030
_ACCESSION_NUMBER = 0x00080050
_SPECIFIC_CHARACTER_SET = 0x00080005
_STUDY_INSTANCE_UID = 0x0020000D
_SOP_INSTANCE_UID = 0x00080018
_DEID_SUPPLEMENT = frozenset(
    {
        0x00120062,  # PatientIdentityRemoved
        0x00120063,  # DeidentificationMethod
        0x00120064,  # DeidentificationMethodCodeSequence
        0x00280303,  # LongitudinalTemporalInformationModified
    }
)


# ---------------------------------------------------------------------------
# Errors, policy, result


class DeidError(Exception):
    """A refusal with a message that is safe to show the researcher (no patient data).

    Same shape as the gateway's other errors: ``message``, ``reason``, ``status``
    (HTTP), ``log_message``.
    """

    status = 422
    reason = "deidentification_refused"

    def __init__(self, message: str, *, reason: str | None = None,
                 log_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.reason
        self.log_message = log_message or message

    def to_json(self) -> dict[str, object]:
        return {"error": {"message": self.message, "reason": self.reason}}


class BurnedInAnnotationRefused(DeidError):
    """The pixels may show identifying text and the project may not receive such images."""

    reason = "burned_in_annotation"


class UnsupportedObject(DeidError):
    """An object the gateway does not deliver (a DICOMDIR: its file paths hold IDs)."""

    reason = "unsupported_object"


class ModalityNotApproved(DeidError):
    """The object's modality is not one the project's approval covers (or it has none)."""

    reason = "modality_not_approved"


@dataclass(frozen=True)
class DeidPolicy:
    """What a project's approval allows.

    ``keep_descriptors``: keywords kept after cleaning; each must be a descriptor of
    Table E.1-1 with the Clean Descriptors Option, or an attribute the table does not
    list.  ``retain_patient_characteristics``: keep PatientAge, PatientSex, size,
    weight and the like (the Retain Patient Characteristics Option, declared in the
    method code sequence).  ``use_issuer_of_patient_id``: key pseudonyms on
    (IssuerOfPatientID, PatientID) instead of PatientID alone; off by default, as
    one archive whose records do not always carry the issuer would otherwise split
    a patient in two.
    """

    allow_burned_in_annotation: bool = False
    #: The modalities the approval covers (None: any). Checked on each object, not only on
    #: the archive's series records, which may lack a modality or disagree with the objects.
    modalities: frozenset[str] | None = None
    keep_descriptors: frozenset[str] = DEFAULT_KEEP_DESCRIPTORS
    retain_patient_characteristics: bool = True
    use_issuer_of_patient_id: bool = False
    method_name: str = METHOD_NAME
    method_version: str = METHOD_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_descriptors", frozenset(self.keep_descriptors))
        if self.modalities is not None:
            object.__setattr__(self, "modalities", frozenset(self.modalities))
        for keyword in self.keep_descriptors:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"keep_descriptors: {keyword!r} is not a DICOM keyword")
            if dictionary_VR(tag) not in _TEXT_VRS - {"PN", "UN"} | {"CS"}:
                raise ValueError(f"keep_descriptors: {keyword} is not a text attribute")
            row = annex_e.BASIC_PROFILE.get(int(tag))
            if row is not None and annex_e.FLAG_CLEAN_DESCRIPTORS not in row.flags:
                raise ValueError(
                    f"keep_descriptors: {keyword} is an identifying attribute of "
                    "PS3.15 Table E.1-1 that the Clean Descriptors Option does not cover"
                )
        if len(self.method_label) > 64:
            raise ValueError("method_name and method_version must fit 64 characters together")

    @property
    def method_label(self) -> str:
        return f"{self.method_name} {self.method_version}".strip()

    def method_values(self) -> list[str]:
        """The DeidentificationMethod values written (LO, 64 characters each)."""
        values = [self.method_label, "DICOM PS3.15 Annex E Basic Profile",
                  "Retain Longitudinal Temporal Info Modified Dates"]
        if self.keep_descriptors:
            values.append("Clean Descriptors")
        if self.retain_patient_characteristics:
            values.append("Retain Patient Characteristics")
        return values

    def method_description(self) -> str:
        """One line naming the method, profile and options, e.g. for a manifest."""
        return f"{self.method_label}: " + "; ".join(self.method_values()[1:])

    @property
    def options(self) -> annex_e.Options:
        return annex_e.Options(
            modified_dates=True,
            clean_descriptors=bool(self.keep_descriptors),
            patient_characteristics=self.retain_patient_characteristics,
        )


@dataclass
class DeidReport:
    """What was done, without any value: safe for the audit record.

    ``counts`` per outcome (``removed``, ``emptied``, ``dummy``, ``pseudonymised``,
    ``uid_remapped``, ``date_shifted``, ``date_dropped``, ``private_removed``,
    ``fail_closed_removed``, ``descriptor_cleaned``, ``repeating_group_removed``,
    ``unreadable_removed``, and for kept values that held something identifying
    ``kept_text_cleaned``, ``code_string_emptied``, ``number_emptied``,
    ``identifying_value_removed``); ``removed``: keywords (or tags) removed;
    ``cleaned``: kept attributes (descriptors included) that lost content.
    """

    counts: Counter[str] = field(default_factory=Counter)
    removed: set[str] = field(default_factory=set)
    cleaned: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    patient_pseudonym: str = ""
    study_key: str | None = None
    age_computed: bool = False

    def count(self, outcome: str, name: str | None = None) -> None:
        self.counts[outcome] += 1
        if name is not None and outcome.endswith("removed"):
            self.removed.add(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "removed": sorted(self.removed),
            "cleaned": sorted(self.cleaned),
            "warnings": list(self.warnings),
            "patient_pseudonym": self.patient_pseudonym,
            "study_key": self.study_key,
            "age_computed": self.age_computed,
        }


@dataclass(frozen=True)
class DeidResult:
    dataset: Dataset
    report: DeidReport


# ---------------------------------------------------------------------------
# Burned-in annotation

_BURNED_IN_MODALITIES = {
    "US": "ultrasound images usually carry text in their pixels",
    "IVUS": "ultrasound images usually carry text in their pixels",
    "OT": "'other' images are often screenshots with text",
    "SC": "secondary captures are often screenshots with text",
    "DOC": "scanned documents show text",
    "XC": "photographs may show faces or labels",
    "ES": "endoscopy video frames usually carry text",
    "GM": "microscopy images may show labels",
}
_BURNED_IN_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image (Retired)",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image (Retired)",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image",
}


def _plain(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def burned_in_risk(ds: Dataset) -> str | None:
    """Why the pixels of `ds` may show identifying text or features, or None.

    A reason when BurnedInAnnotation or RecognizableVisualFeatures is YES, when the
    image is a slide label, or when BurnedInAnnotation is absent and the modality or
    SOP class is one that usually carries text in its pixels (ultrasound, secondary
    capture, ...).  A BurnedInAnnotation of NO is trusted.
    """
    flag = _plain(ds, "BurnedInAnnotation").upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES: the pixels show identifying text"
    if _plain(ds, "RecognizableVisualFeatures").upper() == "YES":
        return "RecognizableVisualFeatures is YES: the image may show a face"
    image_type = _plain(ds, "ImageType").upper().split("\\")
    if "LABEL" in image_type:
        return "a slide label image shows the label's text"
    if flag == "NO":
        return None
    sop_class = _plain(ds, "SOPClassUID")
    if sop_class in _BURNED_IN_SOP_CLASSES:
        return (
            f"{_BURNED_IN_SOP_CLASSES[sop_class]} objects often show text in their "
            "pixels and BurnedInAnnotation is absent"
        )
    modality = _plain(ds, "Modality").upper()
    if modality in _BURNED_IN_MODALITIES:
        return f"{_BURNED_IN_MODALITIES[modality]} and BurnedInAnnotation is absent"
    return None


# ---------------------------------------------------------------------------
# UIDs


def is_well_known_uid(uid: str) -> bool:
    """A UID kept as it is: exactly an entry of pydicom's UID dictionary (SOP classes,
    transfer syntaxes, coding schemes ... of the standard) or of :data:`DOCUMENTED_UIDS`.

    A UID that merely starts with the DICOM root ``1.2.840.10008.`` is not well known:
    anyone can write one, digits of a CPR number included.
    """
    uid = uid.strip().rstrip("\x00")
    return uid in UID_dictionary or uid in DOCUMENTED_UIDS


def is_instance_uid_keyword(keyword: str) -> bool:
    """A UI attribute that names an instance (an SOP instance, a study, a series, a frame
    of reference, a reference to one of these): always remapped, whatever its value."""
    return "InstanceUID" in keyword or keyword.endswith("FrameOfReferenceUID")


# ---------------------------------------------------------------------------
# Identifying content in the values the profile keeps

#: Letters that NFKD leaves whole, folded as accent stripping folds the others.
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "đ": "d", "ð": "d", "þ": "th",
                       "ł": "l", "ħ": "h", "ŧ": "t", "ı": "i"})
#: How Danish and German names are written without their letters (Søgaard: Soegaard).
_TRANSLITERATE = str.maketrans({"ø": "oe", "æ": "ae", "å": "aa", "ä": "ae", "ö": "oe",
                                "ü": "ue"})

_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(?:1[89]|20)\d{2}[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])(?!\d)"),
    # not inside a longer dotted number: "1.7.1.24" is a version, not 7 January 2024
    re.compile(r"(?<!\d)(?<!\d[-./])(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|[12]\d|3[01])"
               r"[-./](?:\d{4}|\d{2})(?![-./]?\d)"),
    re.compile(r"(?<!\d)\d{6}-\d{4}(?!\d)"),  # Danish CPR number with a dash
)
#: A Danish CPR number: DDMMYY and four digits, with or without the dash.
_CPR = re.compile(r"(?<!\d)(?:0[1-9]|[12]\d|3[01])(?:0[1-9]|1[0-2])\d{2}-?\d{4}(?!\d)")
_EMAIL = re.compile(r"\S+@\S+")
_SHAPES = (*_DATE_PATTERNS, _CPR, _EMAIL)
_TOKEN = re.compile(r"[^\W_]+")
#: Scripts written without spaces between words (Han, kana, and Hangul, whose names take
#: honorifics and particles without a space): a name in them has no word boundary to find.
_UNSPACED = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
                       "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]")
_DIGITS = re.compile(r"\d+")
_SEPARATORS = " \t-_,;:/|^.+"
_LONG_DIGITS = 5


def normalise_term(text: str) -> str:
    """NFKC, case folded: the form :func:`identifying_terms` returns."""
    return unicodedata.normalize("NFKC", text).casefold()


def fold(text: str) -> str:
    """The form values and terms are compared in: NFKC, case folded, accents and format
    characters (zero-width spaces, soft hyphens) removed, ``ø``/``æ``/... folded."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    kept = (ch for ch in text
            if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf")
    return "".join(kept).translate(_FOLD)


def _folded_with_owners(text: str) -> tuple[str, list[int] | None]:
    """`text` folded, and for each folded character the index of its source character
    (None when folding is lower-casing: ASCII)."""
    if text.isascii():
        return text.lower(), None
    parts, owners = [], []
    for index, char in enumerate(text):
        folded = fold(char)
        parts.append(folded)
        owners.extend([index] * len(folded))
    return "".join(parts), owners


def _term_pattern(folded_term: str) -> str | None:
    """A term as a whole word: a letter may not touch a letter at either end, a digit
    may not touch a digit; an end in a script written without spaces (Han, kana, Hangul)
    may touch anything ("胸部CT王小东").  Its words (two characters or more each) may be separated
    by any separators ("Jens Peter", "Jens-Peter"); a term with a one-character word
    ("1,0", "S. R.") matches only as written."""
    words = [w for w in re.split(r"[\W_]+", folded_term) if w]
    if not words:
        return None
    first, last = words[0][0], words[-1][-1]
    before = r"(?<!\d)" if first.isdigit() else "" if _UNSPACED.match(first) else r"(?<![^\W\d_])"
    after = r"(?!\d)" if last.isdigit() else "" if _UNSPACED.match(last) else r"(?![^\W\d_])"
    if min(len(w) for w in words) >= 2:
        body = r"[\W_]+".join(re.escape(w) for w in words)
    else:
        start = folded_term.index(words[0])
        end = folded_term.rindex(words[-1]) + len(words[-1])
        body = re.escape(folded_term[start:end])
    return before + body + after


class IdentifyingScreen:
    """Finds what identifies someone in a value the profile keeps.

    Two kinds of content.  The record's own terms (names, IDs, institution words: see
    :func:`identifying_terms`), matched as whole words after NFKC normalisation, case
    folding and accent stripping, on both sides, so ``Jérôme`` (composed or decomposed),
    ``JÉRÔME``, ``Jerome`` and ``Ｊｅｒｏｍｅ`` all match, and ``Søgaard`` matches
    ``Soegaard``.  And shapes that identify whatever the record: dates, CPR-like numbers,
    e-mail addresses, and runs of letters and digits with five digits or more (IDs).

    ``numbers``: digit strings (the record's dates, say) that a number value may not hold;
    the terms that are numbers (``0304801234``, ``030480-1234``) are added.
    """

    def __init__(self, terms: Iterable[str] = (), numbers: Iterable[str] = ()) -> None:
        patterns = set()
        digits = {n for n in numbers if n.isdigit()}
        for term in terms:
            term = normalise_term(term)
            for variant in {fold(term), fold(term.translate(_TRANSLITERATE))}:
                pattern = _term_pattern(variant)
                if pattern:
                    patterns.add(pattern)
            if re.fullmatch(r"[\d\W_]+", term):
                digits.add("".join(ch for ch in fold(term) if ch.isdigit()))
        ordered = sorted(patterns, key=lambda p: (-len(p), p))  # longest first
        self._terms = re.compile("|".join(ordered)) if ordered else None
        self._numbers = frozenset(
            n.lstrip("0") for n in digits if len(n.lstrip("0")) >= _LONG_DIGITS
        )

    def _spans(self, folded: str, *, long_digits: bool) -> list[tuple[int, int]]:
        spans = [m.span() for pattern in _SHAPES for m in pattern.finditer(folded)]
        if long_digits:
            spans += [m.span() for m in _TOKEN.finditer(folded)
                      if sum(ch.isdigit() for ch in m.group()) >= _LONG_DIGITS]
        if self._terms is not None:
            spans += [m.span() for m in self._terms.finditer(folded)]
        return spans

    def hits(self, text: str, *, long_digits: bool = True) -> bool:
        """Whether `text` holds anything identifying (``long_digits=False``: runs of
        digits are not IDs by themselves, as in the codes of numeric coding schemes)."""
        folded, _ = _folded_with_owners(text)
        return bool(self._spans(folded, long_digits=long_digits))

    def clean(self, text: str) -> str:
        """`text` without what identifies (Clean Descriptors); unchanged, padding aside,
        when nothing does."""
        folded, owners = _folded_with_owners(text)
        spans = self._spans(folded, long_digits=True)
        if not spans:
            return text.strip()
        removed = [False] * len(text)
        for start, end in spans:
            if owners is not None:
                start, end = owners[start], owners[end - 1] + 1
                while end < len(text) and not fold(text[end]):  # a trailing accent
                    end += 1
            removed[start:end] = [True] * (end - start)
        kept = "".join(" " if gone else char for char, gone in zip(text, removed))
        kept = re.sub(r"\s+", " ", kept)
        # separators left dangling at either end by a removal
        return kept.strip(_SEPARATORS + "(").rstrip(_SEPARATORS) if kept.strip() else ""

    def number_hits(self, text: str) -> bool:
        """Whether a number (IS, DS, TM) holds one of the record's numbers, or an integer
        part shaped like a CPR number."""
        folded = unicodedata.normalize("NFKC", text)
        for match in _DIGITS.finditer(folded):
            run = match.group()
            if run.lstrip("0") in self._numbers:
                return True
            integer_part = match.start() == 0 or folded[match.start() - 1] != "."
            if integer_part and len(run) == 10 and _CPR.fullmatch(run):
                return True
        return False


def clean_descriptor(text: str, terms: Iterable[str] = ()) -> str:
    """Remove identifying content from a descriptor (Clean Descriptors Option).

    Removes dates (``2021-03-04``, ``04.03.21``, ``20210304``), CPR-like numbers,
    e-mail addresses, ID-like tokens (any run of letters and digits with five or
    more digits) and every whole-word occurrence of `terms` (names, IDs and
    institution words of the patient's own record, see :func:`identifying_terms`),
    in any Unicode form (see :class:`IdentifyingScreen`).
    """
    return IdentifyingScreen(terms).clean(text)


#: Code Sequence Macro attributes that are parts of a code: kept whole or removed,
#: never edited (an edited code is another code).
_CODE_KEYWORDS = frozenset(
    {"CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator",
     "CodingSchemeVersion"}
)
_CODE_VALUE_KEYWORDS = frozenset({"CodeValue", "LongCodeValue", "URNCodeValue"})
_CODING_SCHEME_DESIGNATOR = 0x00080102


@lru_cache(maxsize=1)
def _standard_codes() -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """(coding scheme designators, (designator, code value) pairs) of the standard:
    pydicom's concept dictionary (the codes of PS3.16's context groups) and its SNOMED
    RT to CT map.  Empty if pydicom no longer ships them: every code is then screened."""
    try:
        from pydicom.sr._concepts_dict import concepts
        from pydicom.sr._snomed_dict import mapping
    except ImportError:  # pragma: no cover - fail closed
        return annex_e.MORE_CODING_SCHEMES, frozenset()
    codes = {(scheme, code) for scheme, names in concepts.items()
             for by_code in names.values() for code in by_code}
    for scheme in ("SCT", "SRT"):
        codes.update((scheme, code) for code in mapping.get(scheme, ()))
    return frozenset(concepts) | annex_e.MORE_CODING_SCHEMES, frozenset(codes)


_TERM_KEYWORDS_WHOLE = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "AdmissionID",
    "MedicalRecordLocator",
    "StudyID",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepID",
    "DeviceSerialNumber",
    "PatientTelephoneNumbers",
    "InsurancePlanIdentification",
)
_TERM_KEYWORDS_WORDS = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "PatientAddress",
)
#: Words of institution, station and address values that name no place by themselves
#: (the whole value still counts): "Philips Medical Systems" keeps "Medical Systems"
#: at a "... Medical Center".
_GENERIC_WORDS = frozenset(
    {"medical", "medicine", "center", "centre", "hospital", "hospitals", "hospitalet",
     "clinic", "clinics", "clinical", "klinik", "university", "universitet",
     "universitetshospital", "imaging", "radiology", "radiologi", "department",
     "afdeling", "systems", "system", "health", "healthcare", "institute", "general",
     "regional", "region", "national", "sygehus", "diagnostic", "diagnostics",
     "services", "service", "street", "road", "gade", "allé"}
)
_TERM_TAGS_WHOLE = frozenset(int(tag_for_keyword(k)) for k in _TERM_KEYWORDS_WHOLE)
_TERM_TAGS_WORDS = frozenset(int(tag_for_keyword(k)) for k in _TERM_KEYWORDS_WORDS)


def identifying_terms(ds: Dataset) -> frozenset[str]:
    """Strings of `ds` (NFKC, case folded) that must not survive in a kept value.

    Every name component of every PN element, private ones included, and each of its
    words (split at spaces, hyphens and other punctuation; two or more characters),
    the IDs of the patient and the study (whole values, two or more characters), and
    the whole values and the words (four or more characters, generic ones such as
    "Medical" aside) of institution, station and address values, at any depth.
    """
    return _record_identifiers(ds)[0]


def _record_identifiers(ds: Dataset, convert: _Converter | None = None) -> tuple[frozenset[str], frozenset[str]]:
    """:func:`identifying_terms`, and the record's dates as ``YYYYMMDD`` (DA and DT
    values at any depth), in one walk (``convert``: how an element is converted, by
    default :func:`_convert`; the de-identifier passes its cache)."""
    terms: set[str] = set()
    dates: set[str] = set()
    whole, words = _TERM_TAGS_WHOLE, _TERM_TAGS_WORDS
    for elem in _iter_converted(ds, convert or _convert, skip=_TERM_TAGS_WHOLE | _TERM_TAGS_WORDS):
        if elem.VR == "PN":
            for value in _values(elem.value):
                text = normalise_term(str(value))
                for part in re.split(r"[\^=]", text):
                    part = part.strip()
                    if len(part) >= 2:
                        terms.add(part)
                    terms.update(w for w in _TOKEN.findall(part) if len(w) >= 2)
                for group in text.split("="):  # 山田^太郎 is written 山田太郎
                    joined = "".join(c.strip() for c in group.split("^")[:2])
                    if len(joined) >= 2 and _UNSPACED.search(joined):
                        terms.add(joined)
        elif elem.VR in ("DA", "DT"):
            dates.update(d for d in (str(v).strip()[:8] for v in _values(elem.value))
                         if len(d) == 8 and d.isdigit())
        elif int(elem.tag) in whole:
            terms.update(normalise_term(str(v).strip()) for v in _values(elem.value)
                         if len(str(v).strip()) >= 2)
        elif int(elem.tag) in words:
            for value in _values(elem.value):
                text = normalise_term(str(value).strip())
                if len(text) >= 2:
                    terms.add(text)
                terms.update(w for w in _TOKEN.findall(text)
                             if len(w) >= 4 and w not in _GENERIC_WORDS)
    return frozenset(terms), frozenset(dates)


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, MultiValue)):
        return [v for v in value if v is not None]
    return [value]


def _iter_converted(ds: Dataset, convert: _Converter, skip: frozenset[int]) -> Iterator[DataElement]:
    """All elements at any depth, converted without touching `ds`'s own cache, but those
    that can only hold binary numbers (:func:`_plain_binary`) and whose tag is not in
    ``skip``: neither a name, nor a date, nor one of the identifying attributes."""
    encodings = _ResolvedCharset.of(ds).encodings
    stack: list[tuple[Dataset, list[str]]] = [(ds, encodings)]
    while stack:
        item, enc = stack.pop()
        for tag in list(item.keys()):
            if tag not in skip and _plain_binary(item.get_item(tag)):
                continue
            try:
                elem = convert(item, tag, enc)
            except Exception:  # noqa: BLE001 - unparseable: deidentify() drops it
                continue
            if elem is None or (BaseTag(tag).is_private and elem.VR != "PN"):
                continue  # a private PN is still somebody's name
            yield elem
            if elem.VR == "SQ":
                for child in elem.value or ():
                    stack.append((child, _ResolvedCharset.of(child, enc).encodings))


def _convert(ds: Dataset, tag: int, encodings: list[str]) -> DataElement | None:
    raw = ds.get_item(tag)
    if raw is None or isinstance(raw, DataElement):
        return raw
    return convert_raw_data_element(raw, encoding=encodings, ds=ds)


_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")

_Converter = Callable[[Dataset, int, list[str]], "DataElement | None"]

#: VRs that are all screened the same way, so one written as another is read as written:
#: text that is cleaned, numbers as text, binary numbers (Rows written as SS loads as well).
_INTERCHANGEABLE_VRS = (frozenset({"LO", "SH", "ST", "LT", "UT", "UC"}), frozenset({"IS", "DS"}),
                        frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}))

#: Public byte-string (OB) attributes outside Table E.1-1 that are kept: the ICC colour
#: profile (needed to show colour right). Any other holds bytes of its own format that can
#: carry text (an HPGL drawing's labels, a record key, encrypted content): removed.
_KEPT_BYTE_STRINGS = frozenset({0x00282000})  # ICCProfile


@lru_cache(maxsize=4096)
def _opaque(tag: int) -> bool:
    """A public attribute the profile cannot judge, removed unread (fail closed): one that
    pydicom's dictionary does not know, or a byte string (:data:`_KEPT_BYTE_STRINGS`)."""
    if BaseTag(tag).is_private:
        return False
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return True
    return vr == "OB" and tag not in _KEPT_BYTE_STRINGS and annex_e.lookup(tag) is None


@lru_cache(maxsize=4096)
def _vr_fits(tag: int, vr: str) -> bool:
    """Whether a VR as read is one the dictionary allows the attribute (or screened the
    same way as one it allows)."""
    try:
        expected = dictionary_VR(tag)
    except KeyError:
        return True  # private: its rules are elsewhere
    allowed = set(expected.split(" or "))
    if vr == expected or vr in allowed:
        return True
    return any(vr in same and allowed <= same for same in _INTERCHANGEABLE_VRS)

#: VRs whose value is binary numbers, never text, with the size of one number: such a
#: value is kept by the profile as it is (rule 6, "anything else ... kept") unless its
#: attribute is listed in Table E.1-1.
_PLAIN_BINARY_VRS = {"AT": 4, "FL": 4, "FD": 8, "OB": 2, "OD": 8, "OF": 4, "OL": 4,
                     "OV": 8, "OW": 2, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}


@lru_cache(maxsize=4096)
def _plain_binary_vr(tag: int) -> str | None:
    """The dictionary VR of a public, non-repeating-group attribute when it is one of
    :data:`_PLAIN_BINARY_VRS` (an ambiguous VR such as ``US or SS`` is not), else None."""
    tag = BaseTag(tag)
    if tag.is_private or tag.element == 0 or annex_e.is_repeating_group(tag):
        return None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if vr in _PLAIN_BINARY_VRS else None


def _plain_binary(raw: Any) -> bool:
    """Whether `raw` is a still undecoded element whose value is binary numbers by the
    dictionary and as read: its explicit VR (if any) is the dictionary's, its length a
    whole, even number of values, not undefined."""
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return False
    vr = _plain_binary_vr(raw.tag)
    if vr is None or (raw.VR is not None and raw.VR != vr):
        return False
    return raw.length == len(raw.value) and len(raw.value) % _PLAIN_BINARY_VRS[vr] == 0


# ---------------------------------------------------------------------------
# Character sets


@dataclass(frozen=True)
class _ResolvedCharset:
    """Python encodings for a SpecificCharacterSet, and the value to write back."""

    encodings: list[str]
    output_value: Any
    problem: str | None = None

    @classmethod
    def of(cls, ds: Dataset, inherited: list[str] | None = None) -> _ResolvedCharset:
        raw = ds.get_item(_SPECIFIC_CHARACTER_SET)
        if raw is None:
            return cls(inherited or [_charset.default_encoding], None)
        value = raw.value
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
            terms: list[str] = [v.strip() for v in value.split("\\")]
        else:
            terms = [str(v).strip() for v in _values(value)] if value else []
        if not terms or terms == [""]:
            return cls([_charset.default_encoding], None)
        # Checked here rather than by catching pydicom's warnings: warnings filters
        # are process-wide and deidentify() runs in worker threads.
        bad = [t for t in terms if t and t not in _charset.python_encoding]
        if bad:
            try:  # pydicom corrects common misspellings ("ISO IR 100"), with a warning
                encodings = _charset.convert_encodings(list(terms))
            except LookupError:
                encodings = [_charset.default_encoding]
            return cls(
                encodings,
                "ISO_IR 192",
                f"invalid SpecificCharacterSet {'/'.join(terms)!r}: decoded with "
                f"{'/'.join(encodings)}, written as ISO_IR 192 (UTF-8)",
            )
        encodings = _charset.convert_encodings(list(terms))
        return cls(encodings, terms if len(terms) > 1 else terms[0])


# ---------------------------------------------------------------------------
# The walk


class _Deidentifier:
    def __init__(self, source: Dataset, keys: ProjectKeys, policy: DeidPolicy) -> None:
        self.source = source
        self.keys = keys
        self.policy = policy
        self.options = policy.options
        self.report = DeidReport()
        self.charset = _ResolvedCharset.of(source)
        # Each element is converted once, for the identifiers and for the walk.
        self._converted: dict[tuple[int, int, tuple[str, ...]], DataElement | None] = {}
        # The encoding written: raw elements read in it can be written as they are.
        self.encoding = _transfer_syntax(source)[1]
        terms, dates = _record_identifiers(source, self._convert)
        self.screen = IdentifyingScreen(terms, numbers=dates)
        if self.charset.problem:
            problem = self.charset.problem
            if self.screen.hits(problem, long_digits=False):  # never echo a name
                problem = "invalid SpecificCharacterSet: written as ISO_IR 192 (UTF-8)"
            self.report.warnings.append(problem)
            warnings.warn(problem, stacklevel=3)
        patient_key, issuer, source_of_key = self._patient_identity(source)
        if source_of_key != "PatientID":
            self.report.warnings.append(
                f"no PatientID: the pseudonym and date offset are keyed on {source_of_key}"
            )
        self.keyed_on = source_of_key
        self.patient_pseudonym = keys.patient_pseudonym(patient_key, issuer)
        # Keyed on the pseudonym: whatever shares a pseudonym shares the date offset.
        self.offset = keys.date_offset_days(self.patient_pseudonym)
        self.report.patient_pseudonym = self.patient_pseudonym

    # -- identity -------------------------------------------------------------

    def _convert(self, ds: Dataset, tag: int, encodings: list[str]) -> DataElement | None:
        """:func:`_convert`, once per element (a failure is not kept: it raises again)."""
        key = (id(ds), int(tag), tuple(encodings))
        try:
            return self._converted[key]
        except KeyError:
            elem = self._converted[key] = _convert(ds, tag, encodings)
            return elem

    def _text(self, ds: Dataset, tag: int, encodings: list[str] | None = None) -> str:
        elem = self._convert(ds, tag, encodings or self.charset.encodings)
        if elem is None or elem.value is None:
            return ""
        return "\\".join(str(v) for v in _values(elem.value)).strip()

    def _issuer(self, ds: Dataset, encodings: list[str] | None = None) -> str:
        if not self.policy.use_issuer_of_patient_id:
            return ""
        return self._text(ds, _ISSUER_OF_PATIENT_ID, encodings)

    def _patient_identity(self, ds: Dataset) -> tuple[str, str, str]:
        patient_id = self._text(ds, _PATIENT_ID)
        if patient_id:
            return patient_id, self._issuer(ds), "PatientID"
        for tag, name in (
            (_PATIENT_NAME, "PatientName"),
            (_STUDY_INSTANCE_UID, "StudyInstanceUID"),
            (_SOP_INSTANCE_UID, "SOPInstanceUID"),
        ):
            value = self._text(ds, tag)
            if value:
                return f"{name}:{value}", "", name
        return "", "", "nothing (empty patient)"

    # -- datasets -------------------------------------------------------------

    def dataset(self, source: Dataset, encodings: list[str], depth: int) -> Dataset:
        out = Dataset()
        for tag in sorted(source.keys()):
            kept = self.output(source, tag, encodings, depth, self._convert)
            if kept is not None:
                out[tag] = kept
        return out

    def output(self, source: Dataset, tag: BaseTag, encodings: list[str], depth: int,
               convert: _Converter) -> RawDataElement | DataElement | None:
        """What becomes of one element of `source`: removed (None), kept as read (the raw
        element itself) or a new element."""
        if self._removed_by_tag(tag):
            return None
        raw = source.get_item(tag)
        if self._kept_as_read(raw):
            return raw  # rule 6: binary numbers are kept; the bytes as read
        try:
            elem = convert(source, tag, encodings)
        except Exception:  # noqa: BLE001 - a value pydicom cannot parse: fail closed
            self.report.count("unreadable_removed", _name(tag))
            return None
        if elem is None:
            return None
        if not _vr_fits(int(tag), elem.VR):
            # A name written as OB, a description as FD: the rules for the VR as read would
            # keep it unread. Fail closed: the value is not what its attribute holds.
            self.report.count("unexpected_vr_removed", _name(tag))
            return None
        new = self.element(elem, source, encodings, depth)
        if new is None:
            return None
        if self._unchanged_as_read(new, elem, raw):
            return raw  # what the rules kept, exactly as read: no need to encode it
        return new

    def _removed_by_tag(self, tag: BaseTag) -> bool:
        """Rules 1 to 3, which need no value: group lengths, command and file meta
        elements, private elements, curves and overlays are removed unread."""
        if tag.element == 0 or tag.group in (0x0000, 0x0002):
            self.report.count("group_length_removed" if tag.element == 0 else "removed", _name(tag))
            return True
        if tag.is_private:
            self.report.count("private_removed", "private")
            return True
        if annex_e.is_repeating_group(tag):
            self.report.count("repeating_group_removed", f"{tag.group:04X}xxxx")
            return True
        if _opaque(int(tag)):
            self.report.count("opaque_removed", _name(tag))
            return True
        return False

    def _kept_as_read(self, raw: Any) -> bool:
        """An element that rule 6 keeps whatever its value, binary numbers (not text, not
        in Table E.1-1), read in the encoding that is written: its bytes go out as they
        came in, without being decoded and encoded again. Anything else, a VR that is not
        the dictionary's or a length that is not a whole number of values included,
        takes the ordinary way."""
        return (_plain_binary(raw) and (raw.is_implicit_VR, raw.is_little_endian) == self.encoding
                and annex_e.lookup(raw.tag) is None)

    def _unchanged_as_read(self, new: DataElement, elem: DataElement, raw: Any) -> bool:
        """Whether the rules kept `elem` unchanged (same VR, equal value; not a sequence)
        and its bytes as read are printable ASCII in the encoding written: those bytes
        then hold exactly the value the rules checked (ASCII reads the same in every
        character set, and nothing, no escape or control character, hides in them)."""
        if (not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes)
                or new.VR != elem.VR or new.VR == "SQ" or raw.VR not in (None, new.VR)
                or (raw.is_implicit_VR, raw.is_little_endian) != self.encoding
                or raw.length != len(raw.value) or raw.length % 2):
            return False
        if not _PRINTABLE_ASCII.fullmatch(raw.value):
            return False
        try:
            return bool(new.value == elem.value)
        except Exception:  # noqa: BLE001 - values that cannot be compared are encoded
            return False

    def element(
        self, elem: DataElement, parent: Dataset, encodings: list[str], depth: int
    ) -> DataElement | None:
        tag = elem.tag
        if tag == _SPECIFIC_CHARACTER_SET:
            return self._item_charset(elem, parent) if depth else None  # top: at the end
        if tag in _DEID_SUPPLEMENT and depth == 0:
            return None  # set at the end
        special = self._special(elem, parent, encodings, depth)
        if special is not _NOT_SPECIAL:
            return special
        row = annex_e.lookup(tag)
        if row is not None:
            return self._apply(row, elem, encodings, depth)
        return self._by_vr(elem, parent, encodings, depth)

    # -- the rules ------------------------------------------------------------

    def _special(self, elem: DataElement, parent: Dataset, encodings: list[str], depth: int):
        tag = int(elem.tag)
        if tag == _PATIENT_ID:
            value = self._text(parent, _PATIENT_ID, encodings)
            if depth == 0:
                pseudonym = self.patient_pseudonym
            elif value:
                pseudonym = self.keys.patient_pseudonym(value, self._issuer(parent, encodings))
            else:
                return self._empty(elem)
            self.report.count("pseudonymised")
            return DataElement(elem.tag, "LO", pseudonym)
        if tag == _PATIENT_NAME:
            if depth == 0:
                pseudonym = self.patient_pseudonym
            else:
                value = self._text(parent, _PATIENT_ID, encodings)
                if not value:
                    return self._empty(elem)
                pseudonym = self.keys.patient_pseudonym(value, self._issuer(parent, encodings))
            self.report.count("pseudonymised")
            return DataElement(elem.tag, "PN", pseudonym)
        if tag == _ACCESSION_NUMBER:
            value = self._text(parent, _ACCESSION_NUMBER, encodings)
            if not value:
                return self._empty(elem)
            self.report.count("pseudonymised")
            return DataElement(elem.tag, "SH", self.keys.accession_pseudonym(value))
        if tag == _PATIENT_BIRTH_DATE:
            return self._empty(elem)
        return _NOT_SPECIAL

    def _apply(self, row: annex_e.ProfileRow, elem: DataElement, encodings: list[str],
               depth: int) -> DataElement | None:
        action = annex_e.resolve_action(row, self.options)
        if action == "C":
            if annex_e.FLAG_MODIFIED_DATES in row.flags and self.options.modified_dates:
                if elem.VR in ("DA", "DT"):
                    return self._shift(elem)
                if elem.VR == "TM" or row.keyword == "TimezoneOffsetFromUTC":
                    return self._keep(elem)  # a whole-day shift leaves these unchanged
            if row.keyword in self.policy.keep_descriptors:
                return self._keep(elem, descriptor=True)
            action = annex_e.resolve_basic(row.basic)
        if action == "X":
            self.report.count("removed", row.keyword)
            return None
        if action == "Z":
            return self._empty(elem)
        if elem.VR == "SQ":  # K, U* and D: every item goes through the same rules
            return self._sequence(elem, encodings, depth)
        if action == "U" or (action == "D" and elem.VR == "UI"):
            return self._uid(elem, force=True)
        if action == "D":
            return self._dummy(elem)
        return self._keep(elem)  # K

    def _by_vr(self, elem: DataElement, parent: Dataset, encodings: list[str],
               depth: int) -> DataElement | None:
        vr = elem.VR
        keyword = elem.keyword
        if vr == "SQ":
            return self._sequence(elem, encodings, depth)
        if vr == "UI":
            return self._uid(elem, force=is_instance_uid_keyword(keyword))
        if vr in ("DA", "DT"):
            return self._shift(elem)
        if keyword in _CODE_KEYWORDS:
            return self._code(elem, parent, encodings)
        if keyword in self.policy.keep_descriptors:
            return self._keep(elem, descriptor=True)
        if vr in _TEXT_VRS:
            if keyword in SAFE_TEXT_KEYWORDS and vr != "UN":
                return self._keep(elem)
            self.report.count("fail_closed_removed", keyword or str(elem.tag))
            return None
        return self._keep(elem)

    # -- actions --------------------------------------------------------------

    def _copy(self, elem: DataElement) -> DataElement:
        # As read, invalid values included: converting again could raise.
        value = elem.value
        if isinstance(value, MultiValue):
            value = copy.deepcopy(value)
        return DataElement(elem.tag, elem.VR, value, already_converted=True)

    def _empty(self, elem: DataElement, outcome: str = "emptied") -> DataElement:
        self.report.count(outcome)
        vr = elem.VR
        if vr == "SQ":
            return DataElement(elem.tag, vr, Sequence())
        return DataElement(elem.tag, vr, empty_value_for_VR(vr))

    def _dummy(self, elem: DataElement) -> DataElement:
        vr = elem.VR
        self.report.count("dummy")
        if vr in _TEXT_VRS and vr != "UN" or vr == "CS":
            value: Any = DUMMY_TEXT[: _MAX_LENGTH.get(vr, 64)]
        elif vr == "DA":
            value = "19000101"
        elif vr == "DT":
            value = "19000101000000"
        elif vr == "TM":
            value = "000000"
        elif vr in ("IS", "DS"):
            value = "0"
        elif vr == "AS":
            value = "000D"
        elif vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"):
            value = 0
        elif vr in _BINARY_VRS:
            value = b""
        else:
            value = empty_value_for_VR(vr)
        return DataElement(elem.tag, vr, value)

    def _uid(self, elem: DataElement, *, force: bool) -> DataElement:
        """Remap every value (`force`: an instance UID, or Table E.1-1 says U or D) or
        every value that is not well known (:func:`is_well_known_uid`)."""
        values = _values(elem.value)
        remapped = []
        for value in values:
            text = str(value).strip().rstrip("\x00")
            if not text or (not force and is_well_known_uid(text)):
                remapped.append(text)
            else:
                remapped.append(self.keys.remap_uid(text))
                self.report.count("uid_remapped")
        if not values:
            return DataElement(elem.tag, "UI", empty_value_for_VR("UI"))
        return DataElement(elem.tag, "UI", remapped if len(remapped) > 1 else remapped[0])

    def _shift(self, elem: DataElement) -> DataElement:
        shifted = []
        for value in _values(elem.value):
            text = str(value)
            try:
                result = shift_date(text, self.offset)
            except ValueError:
                self.report.count("date_dropped", elem.keyword or str(elem.tag))
                continue
            if result:
                shifted.append(result)
                self.report.count("date_shifted")
        if not shifted:
            return DataElement(elem.tag, elem.VR, empty_value_for_VR(elem.VR))
        return DataElement(elem.tag, elem.VR, shifted if len(shifted) > 1 else shifted[0])

    # -- kept values: nothing identifying survives (IdentifyingScreen) -----------

    def _keep(self, elem: DataElement, *, descriptor: bool = False) -> DataElement | None:
        """A value the profile keeps, less what identifies someone, by VR: text is
        cleaned; a code string, a number or a URL that holds anything identifying is
        emptied or removed, never edited into another valid-looking value."""
        vr = elem.VR
        if descriptor:
            self.report.count("descriptor_cleaned")
        if vr in _CLEANED_TEXT_VRS:
            return self._clean_text(elem)
        if vr == "CS":
            return self._keep_code_string(elem)
        if vr in ("IS", "DS", "TM"):
            return self._keep_numbers(elem)
        if vr == "UR":
            return self._keep_whole(elem, long_digits=True)
        if vr == "AS":
            return self._keep_age(elem)
        if vr in _TEXT_VRS:  # PN, AE, UN: never kept
            self.report.count("fail_closed_removed", elem.keyword or str(elem.tag))
            return None
        return self._copy(elem)

    def _clean_text(self, elem: DataElement) -> DataElement:
        vr = elem.VR
        cleaned = []
        for value in _values(elem.value):
            text = str(value)
            result = self.screen.clean(text)
            if vr in _MAX_LENGTH:
                result = result[: _MAX_LENGTH[vr]].rstrip()
            if result != text.strip():
                self.report.cleaned.add(elem.keyword or str(elem.tag))
                self.report.count("kept_text_cleaned")
            cleaned.append(result)
        cleaned = [c for c in cleaned if c] or [""]
        return DataElement(elem.tag, vr, cleaned if len(cleaned) > 1 else cleaned[0])

    def _keep_code_string(self, elem: DataElement) -> DataElement:
        # Each value is a defined term: an edited one would be another term or none.
        # A value that identifies is emptied; the others keep their positions.  A word
        # of the standard's vocabulary stays, even when a name is the same word.
        values = [str(v) for v in _values(elem.value)]
        kept = ["" if v.strip() not in CODE_STRING_VOCABULARY and self.screen.hits(v) else v
                for v in values]
        if kept != values:
            self.report.cleaned.add(elem.keyword or str(elem.tag))
            self.report.count("code_string_emptied")
        if not any(kept):
            return DataElement(elem.tag, "CS", "")
        return DataElement(elem.tag, "CS", kept if len(kept) > 1 else kept[0])

    def _keep_age(self, elem: DataElement) -> DataElement:
        """An age is three digits and a unit (``045Y``); anything else in an AS (an ID, a
        name, a note) is emptied, never kept (the age is then computed, if it can be)."""
        if all(_AGE.fullmatch(str(v)) for v in _values(elem.value)):
            return self._copy(elem)
        self.report.cleaned.add(elem.keyword or str(elem.tag))
        return self._empty(elem, outcome="age_emptied")

    def _keep_numbers(self, elem: DataElement) -> DataElement:
        if any(self.screen.number_hits(str(v)) for v in _values(elem.value)):
            self.report.cleaned.add(elem.keyword or str(elem.tag))
            return self._empty(elem, outcome="number_emptied")
        return self._copy(elem)

    def _keep_whole(self, elem: DataElement, *, long_digits: bool) -> DataElement | None:
        if any(self.screen.hits(str(v), long_digits=long_digits) for v in _values(elem.value)):
            self.report.count("identifying_value_removed", elem.keyword or str(elem.tag))
            return None
        return self._copy(elem)

    def _code(self, elem: DataElement, parent: Dataset, encodings: list[str]) -> DataElement | None:
        """A part of a code: a code of the standard stays whole; any other is removed
        when it holds anything identifying (digits alone identify only outside the
        standard's numeric coding schemes)."""
        schemes, codes = _standard_codes()
        designator = self._text(parent, _CODING_SCHEME_DESIGNATOR, encodings)
        keyword = elem.keyword
        value = "\\".join(str(v) for v in _values(elem.value)).strip()
        if keyword in _CODE_VALUE_KEYWORDS and (designator, value) in codes:
            return self._copy(elem)
        if keyword == "CodingSchemeDesignator" and value in schemes:
            return self._copy(elem)
        return self._keep_whole(elem, long_digits=designator not in schemes)

    def _item_charset(self, elem: DataElement, item: Dataset) -> DataElement:
        """SpecificCharacterSet of a sequence item: defined terms only (an invalid one
        becomes ISO_IR 192, as at the top level; the item's text is written in UTF-8)."""
        charset = _ResolvedCharset.of(item)
        if charset.problem:
            self.report.warnings.append(
                "invalid SpecificCharacterSet in a sequence item: written as ISO_IR 192")
        return DataElement(elem.tag, "CS", charset.output_value or "")

    def _sequence(self, elem: DataElement, encodings: list[str], depth: int) -> DataElement:
        items = []
        for item in elem.value or ():
            charset = _ResolvedCharset.of(item, encodings)
            items.append(self.dataset(item, charset.encodings, depth + 1))
        return DataElement(elem.tag, "SQ", Sequence(items))


_NOT_SPECIAL = object()


def _name(tag: int) -> str:
    return keyword_for_tag(tag) or str(Tag(tag))


# ---------------------------------------------------------------------------
# Finishing touches


def _as_date(text: str) -> _dt.date | None:
    digits = text.strip()[:8]
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def patient_age(birth: _dt.date, on: _dt.date) -> str | None:
    """The Age String (AS) for someone born on `birth`, on day `on`."""
    if on < birth:
        return None
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 2:
        return f"{min(years, 999):03d}Y"
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months >= 1:
        return f"{months:03d}M"
    days = (on - birth).days
    return f"{days // 7:03d}W" if days >= 14 else f"{days:03d}D"


def _computed_age(helper: _Deidentifier, source: Dataset) -> str | None:
    birth = _as_date(helper._text(source, _PATIENT_BIRTH_DATE))
    if birth is None:
        return None
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        on = _as_date(helper._text(source, int(tag_for_keyword(keyword))))
        if on is not None:
            return patient_age(birth, on)
    return None


def _method_codes(policy: DeidPolicy) -> Sequence:
    codes = [annex_e.BASIC_PROFILE_CODE, annex_e.MODIFIED_DATES_CODE]
    if policy.keep_descriptors:
        codes.append(annex_e.CLEAN_DESCRIPTORS_CODE)
    if policy.retain_patient_characteristics:
        codes.append(annex_e.PATIENT_CHARACTERISTICS_CODE)
    items = []
    for value, scheme, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = scheme
        item.CodeMeaning = meaning
        items.append(item)
    return Sequence(items)


def _transfer_syntax(source: Dataset) -> tuple[UID, tuple[bool, bool]]:
    meta = getattr(source, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        syntax = UID(str(syntax).strip().rstrip("\x00"))
        if syntax.is_transfer_syntax:
            return syntax, (syntax.is_implicit_VR, syntax.is_little_endian)
    implicit, little = source.original_encoding
    if implicit is None or little is None:
        return ExplicitVRLittleEndian, (False, True)
    if not little:
        return ExplicitVRBigEndian, (False, False)
    if implicit:
        return ImplicitVRLittleEndian, (True, True)
    return ExplicitVRLittleEndian, (False, True)


def _file_meta(source: Dataset, out: Dataset, keys: ProjectKeys) -> tuple[bool, bool]:
    meta_in = getattr(source, "file_meta", None) or FileMetaDataset()
    syntax, encoding = _transfer_syntax(source)
    meta = FileMetaDataset()
    # The class as de-identified; the input's meta only when the dataset has none, and
    # then through the same rule (a class UID that is not well known is remapped).
    sop_class = str(out.get("SOPClassUID") or "").strip()
    if not sop_class:
        sop_class = str(meta_in.get("MediaStorageSOPClassUID") or "").strip().rstrip("\x00")
        if sop_class and not is_well_known_uid(sop_class):
            sop_class = keys.remap_uid(sop_class)
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    instance = str(meta_in.get("MediaStorageSOPInstanceUID") or "").strip().rstrip("\x00")
    if instance:
        meta.MediaStorageSOPInstanceUID = keys.remap_uid(instance)
    elif "SOPInstanceUID" in out:
        meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    out.file_meta = meta
    return encoding


class ElementRules:
    """The rules of one finished de-identification, for one more top-level element.

    What :func:`deidentify` does to a top-level element depends on the element and on the
    record around it (names, IDs and dates to screen for, the date offset, the pseudonym,
    the character set, the transfer syntax), and for a few attributes on their siblings
    (a code value's coding scheme, PatientID's issuer). :mod:`.series_memo` applies these
    rules to an element of another object whose every element the record depends on is
    byte for byte the same, and only to elements that depend on nothing else; the result
    is then what :func:`deidentify` would make of that element in that object.
    """

    def __init__(self, helper: _Deidentifier) -> None:
        self._helper = helper
        self._encodings = helper.charset.encodings
        self._implicit, self._little = helper.encoding
        #: What the pseudonym is keyed on: "PatientID", else "PatientName", "StudyInstanceUID"
        #: or "SOPInstanceUID" (see :meth:`_Deidentifier._patient_identity`).
        self.keyed_on = helper.keyed_on

    def apply(self, raw: RawDataElement) -> RawDataElement | DataElement | None:
        """Removed (None), kept as read (`raw` itself) or a new element."""
        alone = Dataset({raw.tag: raw})
        alone.set_original_encoding(self._implicit, self._little, self._encodings)
        return self._helper.output(alone, raw.tag, self._encodings, 0, _convert)


def deidentify(ds: Dataset, keys: ProjectKeys, policy: DeidPolicy | None = None) -> DeidResult:
    """Return a new, de-identified copy of `ds` and a report of what was done.

    Raises :class:`BurnedInAnnotationRefused` when :func:`burned_in_risk` finds a
    reason and the policy does not allow burned-in annotation, and
    :class:`UnsupportedObject` for a DICOMDIR.  The input is not
    modified.
    """
    return deidentify_with_rules(ds, keys, policy)[0]


def deidentify_with_rules(
    ds: Dataset, keys: ProjectKeys, policy: DeidPolicy | None = None
) -> tuple[DeidResult, ElementRules]:
    """:func:`deidentify`, and its rules for more top-level elements (:class:`ElementRules`)."""
    policy = policy or DeidPolicy()
    meta = getattr(ds, "file_meta", None)
    sop_class = str((meta.get("MediaStorageSOPClassUID") if meta is not None else None)
                    or ds.get("SOPClassUID") or "").strip()
    if sop_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        raise UnsupportedObject(
            "DICOMDIR files are not delivered: the gateway writes its own manifest.",
            log_message="refused: a DICOMDIR (its Referenced File IDs can hold patient IDs)",
        )
    if policy.modalities is not None:
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if modality not in policy.modalities:
            raise ModalityNotApproved(
                "This image's modality is not one the project's approval covers "
                f"({', '.join(sorted(policy.modalities))}); it was not delivered.",
                log_message="refused: modality not approved" + ("" if modality else " (none given)"),
            )
    risk = burned_in_risk(ds)
    if risk and not policy.allow_burned_in_annotation:
        raise BurnedInAnnotationRefused(
            "This image may show patient details in its pixels and the project's "
            f"approval does not allow such images ({risk}).",
            log_message=f"refused: {risk}",
        )
    helper = _Deidentifier(ds, keys, policy)
    out = helper.dataset(ds, helper.charset.encodings, depth=0)
    report = helper.report
    if risk:
        report.warnings.append(f"delivered with a burned-in annotation risk: {risk}")

    if helper.charset.output_value is not None:
        out.SpecificCharacterSet = helper.charset.output_value
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = policy.method_values()
    out.DeidentificationMethodCodeSequence = _method_codes(policy)
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    if "PatientName" not in out:
        out.PatientName = helper.patient_pseudonym
    if "PatientID" not in out:
        out.PatientID = helper.patient_pseudonym
    if policy.retain_patient_characteristics and not str(out.get("PatientAge") or "").strip():
        age = _computed_age(helper, ds)
        if age:
            out.PatientAge = age
            report.age_computed = True
    study_uid = out.get("StudyInstanceUID")
    report.study_key = str(study_uid) if study_uid else None

    implicit, little = _file_meta(ds, out, keys)
    out.set_original_encoding(implicit, little, _charset.convert_encodings(
        out.get("SpecificCharacterSet") or _charset.default_encoding))
    return DeidResult(dataset=out, report=report), ElementRules(helper)
