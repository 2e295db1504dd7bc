"""Identifying values hidden where the profile keeps values: an adversarial tester's findings.

Every test starts from a real CT (pydicom's ``CT_small.dcm``) given an obviously fictitious
identity: patient ``Quuxley^Jérôme``, PatientID ``QX771234`` and, in OtherPatientIDsSequence,
a number shaped like a Danish CPR number, ``0304801234``.  The identity is then planted where
the de-identifier used to copy values verbatim (kept "safe" text, code strings, codes, UIDs
under the DICOM root, other VRs, sequences), and the output is searched for it: in every
element's value, compared after NFKC normalisation, case folding and accent stripping, and
in the written bytes.
"""

from __future__ import annotations

import copy
import io
import json
import unicodedata
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from services.sample_gateway.deidentify import DeidPolicy, deidentify, is_well_known_uid
from services.sample_gateway.pseudonyms import ProjectKeys

KEYS = ProjectKeys(bytes(range(32)), "KINA")
POLICY = DeidPolicy()

SURNAME = "Quuxley"
GIVEN = "Jérôme"
PATIENT_ID = "QX771234"
CPR = "0304801234"
CHEST = ("816094009", "SCT", "Chest")  # a code of pydicom's concept dictionary


@pytest.fixture(scope="module")
def ct() -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))


@pytest.fixture
def victim(ct) -> Dataset:
    ds = copy.deepcopy(ct)
    ds.PatientName = f"{SURNAME}^{GIVEN}"
    ds.PatientID = PATIENT_ID
    other = Dataset()
    other.PatientID = CPR
    other.TypeOfPatientID = "TEXT"
    other.IssuerOfPatientID = "CPR"
    ds.OtherPatientIDsSequence = Sequence([other])
    return ds


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _texts(ds: Dataset):
    """(keyword, value as text) for every element at any depth except pixel data."""
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.keyword == "PixelData":
            continue
        values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
        for value in values:
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            yield elem.keyword or str(elem.tag), str(value)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for elem in meta:
            yield elem.keyword, str(elem.value)


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def leaks(out: Dataset, *needles: str) -> list[str]:
    """Where any of `needles` survives in `out`: element values (normalised) and bytes."""
    found = []
    folded = [(needle, _fold(needle)) for needle in needles]
    for keyword, text in _texts(out):
        for needle, key in folded:
            if key in _fold(text):
                found.append(f"{keyword} holds {needle!r}")
    data = _written(out)
    for needle in needles:
        for form in {unicodedata.normalize(f, needle) for f in ("NFC", "NFD")}:
            for variant in {form, form.upper(), form.lower()}:
                for encoded in {variant.encode("utf-8"), variant.encode("latin-1", "ignore")}:
                    if len(encoded) >= 4 and encoded in data:
                        found.append(f"bytes hold {variant!r}")
    return found


IDENTITY = (SURNAME, GIVEN, PATIENT_ID, CPR)


def deid(ds: Dataset, policy: DeidPolicy = POLICY) -> Dataset:
    return deidentify(ds, KEYS, policy).dataset


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# ---------------------------------------------------------------------------
# Finding 1: kept "safe" text and code strings were copied verbatim


def test_the_victim_itself_is_clean(victim) -> None:
    out = deid(victim)
    assert leaks(out, *IDENTITY) == []
    assert out.ConvolutionKernel == "STANDARD" and out.Manufacturer == "GE MEDICAL SYSTEMS"
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_code_meaning_is_cleaned_and_a_standard_code_stays_intact(victim) -> None:
    victim.AnatomicRegionSequence = Sequence([_code(CHEST[0], CHEST[1], f"Chest of {SURNAME}")])
    out = deid(victim)
    item = out.AnatomicRegionSequence[0]
    assert item.CodeMeaning == "Chest of"
    assert (item.CodeValue, item.CodingSchemeDesignator) == CHEST[:2]  # a code: never edited
    assert leaks(out, *IDENTITY) == []


def test_window_explanation_is_cleaned(victim) -> None:
    victim.WindowCenterWidthExplanation = f"{SURNAME} window"
    out = deid(victim)
    assert out.WindowCenterWidthExplanation == "window"
    assert leaks(out, *IDENTITY) == []


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ConvolutionKernel", PATIENT_ID),
        ("ReceiveCoilName", CPR),
        ("ReceiveCoilName", "030480-1234"),  # the CPR with its dash, in no record
        ("SequenceName", SURNAME),
        ("PositionReferenceIndicator", SURNAME.upper()),
        ("Manufacturer", f"{GIVEN} {SURNAME}"),
        ("SoftwareVersions", f"v2 {PATIENT_ID.lower()}"),
    ],
)
def test_kept_text_loses_the_identity(victim, keyword: str, value: str) -> None:
    setattr(victim, keyword, value)
    out = deid(victim)
    assert leaks(out, *IDENTITY, value) == []
    assert keyword in out  # cleaned, not removed: the attribute may be required


def test_a_code_string_with_a_name_is_emptied_not_edited(victim) -> None:
    victim.ImageType = ["DERIVED", "SECONDARY", SURNAME.upper()]
    victim.ScanOptions = f"HELICAL_{SURNAME.upper()}"  # editing would leave "HELICAL"
    victim.PatientPosition = "FFS"
    out = deid(victim)
    assert list(out.ImageType) == ["DERIVED", "SECONDARY", ""]  # positions keep their meaning
    assert out.ScanOptions == ""
    assert out.PatientPosition == "FFS"
    assert leaks(out, *IDENTITY) == []


def test_a_code_string_with_an_id_or_a_cpr_is_emptied(victim) -> None:
    victim.ImageType = ["ORIGINAL", "PRIMARY", PATIENT_ID, CPR]
    out = deid(victim)
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "", ""]
    assert leaks(out, *IDENTITY) == []


# ---------------------------------------------------------------------------
# Finding 2: names were matched without Unicode normalisation


@pytest.mark.parametrize(
    ("name_form", "text", "expected"),
    [
        ("NFC", f"Thorax {unicodedata.normalize('NFD', GIVEN)}", "Thorax"),  # the finding
        ("NFD", f"Thorax {unicodedata.normalize('NFC', GIVEN)}", "Thorax"),
        ("NFD", f"{unicodedata.normalize('NFD', GIVEN)} thorax", "thorax"),
        ("NFC", f"Thorax {GIVEN.upper()}", "Thorax"),
        ("NFC", "Thorax Jerome", "Thorax"),  # accents dropped by whoever typed it
        ("NFC", "Thorax ＱＵＵＸＬＥＹ", "Thorax"),  # fullwidth: NFKC makes it ASCII
        ("NFC", "Thorax Quu\u200bxley", "Thorax"),  # a zero-width space inside the name
        ("NFC", "Thorax Quu\u00adxley", "Thorax"),  # a soft hyphen
        ("NFC", f"Thorax {SURNAME}2", "Thorax 2"),  # glued to a digit: still a word
    ],
)
def test_names_match_in_any_unicode_form(victim, name_form: str, text: str,
                                         expected: str) -> None:
    victim.PatientName = unicodedata.normalize(name_form, f"{SURNAME}^{GIVEN}")
    victim.SeriesDescription = text
    out = deid(victim)
    assert out.SeriesDescription == expected
    assert leaks(out, *IDENTITY) == []


def test_danish_letters_match_their_transliterations(victim) -> None:
    victim.PatientName = "Søgaard-Ærø^Åse"
    victim.SeriesDescription = "Thorax Soegaard Aeroe Aase"
    victim.StudyDescription = "CT SØGAARD Sogaard aero ase"
    out = deid(victim)
    assert out.SeriesDescription == "Thorax"
    assert out.StudyDescription == "CT"


# ---------------------------------------------------------------------------
# Finding 3: any UID under 1.2.840.10008 was kept


def test_uids_under_the_dicom_root_are_not_well_known() -> None:
    assert is_well_known_uid("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    assert is_well_known_uid("1.2.840.10008.1.2.1")  # Explicit VR Little Endian
    assert is_well_known_uid("2.16.840.1.113883.6.96")  # SNOMED CT, PS3.16 Table 8-1
    assert not is_well_known_uid("1.2.840.10008.3304801234")
    assert not is_well_known_uid("1.2.840.10008.99.3304801234")
    assert not is_well_known_uid("1.2.840.10008.5.1.4.1.1.2.3304801234")


def test_instance_uids_are_always_remapped(victim) -> None:
    victim.FrameOfReferenceUID = "1.2.840.10008.3304801234"
    victim.SOPInstanceUID = "1.2.840.10008.99.3304801234"
    victim.file_meta.MediaStorageSOPInstanceUID = victim.SOPInstanceUID
    victim.SeriesInstanceUID = "1.2.840.10008.1.2"  # a dictionary UID, but an instance here
    victim.SOPInstanceUIDOfConcatenationSource = "1.2.840.10008.1.2.1"  # not in Table E.1-1
    reference = Dataset()
    reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    reference.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2"
    victim.ReferencedImageSequence = Sequence([reference])
    out = deid(victim)
    assert out.FrameOfReferenceUID == KEYS.remap_uid("1.2.840.10008.3304801234")
    assert out.SOPInstanceUID == KEYS.remap_uid("1.2.840.10008.99.3304801234")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SeriesInstanceUID == KEYS.remap_uid("1.2.840.10008.1.2")
    assert out.SOPInstanceUIDOfConcatenationSource == KEYS.remap_uid("1.2.840.10008.1.2.1")
    item = out.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == KEYS.remap_uid("1.2.840.10008.5.1.4.1.1.2")
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # a class stays
    assert leaks(out, "3304801234") == []
    for keyword in ("FrameOfReferenceUID", "SOPInstanceUID", "SeriesInstanceUID"):
        assert UID(out[keyword].value).is_valid


def test_a_documented_private_class_stays(victim) -> None:
    reference = Dataset()
    reference.ReferencedSOPClassUID = "1.3.12.2.1107.5.9.1"  # Siemens CSA Non-Image
    reference.ReferencedSOPInstanceUID = "1.3.12.2.1107.5.9.1.77"
    victim.ReferencedInstanceSequence = Sequence([reference])
    item = deid(victim).ReferencedInstanceSequence[0]
    assert item.ReferencedSOPClassUID == "1.3.12.2.1107.5.9.1"
    assert item.ReferencedSOPInstanceUID == KEYS.remap_uid("1.3.12.2.1107.5.9.1.77")


def test_a_class_uid_that_is_not_a_class_is_remapped(victim) -> None:
    fake_class = "1.2.840.10008.5.1.4.1.1.2.3304801234"
    victim.SOPClassUID = fake_class
    victim.file_meta.MediaStorageSOPClassUID = fake_class
    coding = Dataset()
    coding.CodingSchemeDesignator = "SCT"
    coding.CodingSchemeUID = "2.16.840.1.113883.6.96"
    other = Dataset()
    other.CodingSchemeDesignator = "99QX"
    other.CodingSchemeUID = "1.2.840.10008.2.16.3304801234"
    victim.CodingSchemeIdentificationSequence = Sequence([coding, other])
    out = deid(victim)
    assert out.SOPClassUID == KEYS.remap_uid(fake_class)
    assert out.file_meta.MediaStorageSOPClassUID == out.SOPClassUID
    assert out.CodingSchemeIdentificationSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"
    assert leaks(out, "3304801234") == []


# ---------------------------------------------------------------------------
# The same class of bug elsewhere: other VRs, depths and kept attributes


def test_application_entity_titles_are_removed_at_any_depth(victim) -> None:
    victim.SendingApplicationEntityTitle = SURNAME.upper()  # AE, not in Table E.1-1
    item = Dataset()
    item.ReceivingApplicationEntityTitle = PATIENT_ID
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    victim.ReferencedImageSequence = Sequence([item])
    out = deid(victim)
    assert "SendingApplicationEntityTitle" not in out
    assert "ReceivingApplicationEntityTitle" not in out.ReferencedImageSequence[0]
    assert leaks(out, *IDENTITY) == []


def test_urls_and_urn_codes_with_an_identity_are_removed(victim) -> None:
    victim.RetrieveURL = f"https://pacs.example/{PATIENT_ID}"
    code = Dataset()
    code.URNCodeValue = f"urn:example:patient:{CPR}"
    code.CodingSchemeDesignator = "99QX"
    code.CodeMeaning = "Local code"
    victim.ProcedureCodeSequence = Sequence([code])
    out = deid(victim)
    assert "RetrieveURL" not in out
    assert "URNCodeValue" not in out.ProcedureCodeSequence[0]
    assert out.ProcedureCodeSequence[0].CodeMeaning == "Local code"
    assert leaks(out, *IDENTITY) == []


def test_local_codes_and_schemes_with_an_identity_are_removed(victim) -> None:
    local = _code(PATIENT_ID, "99LOCAL", "Patient code")
    scheme = _code("T-D3000", SURNAME.upper(), "Chest")
    versioned = _code(CHEST[0], "SCT", "Chest")
    versioned.CodingSchemeVersion = CPR
    victim.ProcedureCodeSequence = Sequence([local, scheme, versioned])
    out = deid(victim)
    local_out, scheme_out, versioned_out = out.ProcedureCodeSequence
    assert "CodeValue" not in local_out and local_out.CodingSchemeDesignator == "99LOCAL"
    assert "CodingSchemeDesignator" not in scheme_out and scheme_out.CodeValue == "T-D3000"
    assert "CodingSchemeVersion" not in versioned_out and versioned_out.CodeValue == CHEST[0]
    assert leaks(out, *IDENTITY) == []


def test_unknown_values_are_removed_at_any_depth(victim) -> None:
    victim.add_new(0x00F10010, "UN", SURNAME.encode())  # an even group nobody defines
    item = Dataset()
    item.add_new(0x00F10010, "UN", PATIENT_ID.encode())
    item.add_new(0x00F10012, "LO", CPR)
    item.ContentDescription = f"about {SURNAME}"  # LO, not in the table, not safe
    victim.ReferencedImageSequence = Sequence([item])
    out = deid(victim)
    assert 0x00F10010 not in out
    assert len(out.ReferencedImageSequence[0]) == 0
    assert leaks(out, *IDENTITY) == []


def test_person_names_inside_sequences(victim) -> None:
    observer = Dataset()
    observer.PersonName = f"{SURNAME}^{GIVEN}"  # Table E.1-1: D, a dummy
    observer.EvaluatorName = f"{SURNAME}^{GIVEN}"  # a PN the table does not list
    observer.CodeMeaning = f"seen by {SURNAME}"
    patient = Dataset()
    patient.PatientName = f"{SURNAME}^{GIVEN}"
    patient.PatientID = PATIENT_ID
    observer.ReferencedImageSequence = Sequence([patient])
    victim.ContentSequence = Sequence([observer])
    out = deid(victim)
    item = out.ContentSequence[0]
    assert item.PersonName == "ANONYMIZED"
    assert "EvaluatorName" not in item
    assert item.CodeMeaning == "seen by"
    nested = item.ReferencedImageSequence[0]
    assert nested.PatientName == nested.PatientID == out.PatientID  # the same pseudonym
    assert leaks(out, *IDENTITY) == []


def test_other_patient_ids_are_gone_everywhere(victim) -> None:
    victim.ReceiveCoilName = f"coil {CPR}"
    victim.SeriesDescription = f"Thorax {CPR[:6]}-{CPR[6:]}"
    nested = Dataset()
    nested.OtherPatientIDsSequence = copy.deepcopy(victim.OtherPatientIDsSequence)
    nested.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    victim.ReferencedImageSequence = Sequence([nested])
    out = deid(victim)
    assert "OtherPatientIDsSequence" not in out
    assert "OtherPatientIDsSequence" not in out.ReferencedImageSequence[0]
    assert out.ReceiveCoilName == "coil" and out.SeriesDescription == "Thorax"
    assert leaks(out, *IDENTITY) == []


def test_patient_characteristics_kept_by_the_option_are_cleaned(victim) -> None:
    victim.EthnicGroup = SURNAME  # Retain Patient Characteristics: K
    out = deid(victim, DeidPolicy(retain_patient_characteristics=True))
    assert out.EthnicGroup == ""
    assert leaks(out, *IDENTITY) == []


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("AcquisitionNumber", CPR),  # IS
        ("SliceLocation", CPR),  # DS: the integer part is CPR-shaped
        ("SliceThickness", f"0.{CPR}"),  # DS: the record's own number after the point
        ("ContentTime", f"{CPR}.1"),  # TM that is not a time
        ("InstanceNumber", "1504801234"),  # CPR-shaped, though in no record
    ],
)
def test_numbers_holding_a_cpr_are_emptied(victim, keyword: str, value: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setattr(victim, keyword, value)
    out = deid(victim)
    assert out[keyword].is_empty
    assert leaks(out, CPR) == []


def test_ordinary_numbers_stay(victim) -> None:
    victim.SliceLocation = "-77.2040634155"
    # ten digits after the point, shaped like a CPR number but not the record's
    victim.ImageOrientationPatient = ["0.0311801234", "1", "0", "0", "0", "1"]
    out = deid(victim)
    assert out.SliceLocation == victim.SliceLocation
    assert out.ImageOrientationPatient == victim.ImageOrientationPatient
    assert out.InstanceNumber == victim.InstanceNumber


def test_a_character_set_in_an_item_must_be_a_character_set(victim) -> None:
    item = Dataset()
    item.SpecificCharacterSet = SURNAME.upper()
    item.CodeMeaning = "Chest"
    good = Dataset()
    good.SpecificCharacterSet = "ISO_IR 100"
    good.CodeMeaning = "Brust"
    victim.AnatomicRegionSequence = Sequence([item, good])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deidentify(victim, KEYS, POLICY)
    out = result.dataset
    assert out.AnatomicRegionSequence[0].SpecificCharacterSet == "ISO_IR 192"
    assert out.AnatomicRegionSequence[1].SpecificCharacterSet == "ISO_IR 100"
    assert leaks(out, *IDENTITY) == []
    assert SURNAME.upper() not in " ".join(result.report.warnings)


def test_the_report_never_echoes_an_identifying_character_set(victim) -> None:
    victim.SpecificCharacterSet = SURNAME.upper()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deidentify(victim, KEYS, POLICY)
    assert result.dataset.SpecificCharacterSet == "ISO_IR 192"
    assert SURNAME.upper() not in " ".join(result.report.warnings)


def test_the_report_names_attributes_never_values(victim) -> None:
    victim.ImageType = ["DERIVED", "SECONDARY", SURNAME.upper()]
    victim.ConvolutionKernel = PATIENT_ID
    victim.AcquisitionNumber = CPR
    victim.AnatomicRegionSequence = Sequence([_code(PATIENT_ID, "99QX", f"{SURNAME} chest")])
    result = deidentify(victim, KEYS, POLICY)
    report = result.report.as_dict()
    text = json.dumps(report, ensure_ascii=False)
    assert [value for value in IDENTITY if _fold(value) in _fold(text)] == []
    assert {"ImageType", "ConvolutionKernel", "AcquisitionNumber", "CodeMeaning"} <= set(
        report["cleaned"])
    assert "CodeValue" in report["removed"]
    counts = report["counts"]
    assert counts["code_string_emptied"] == counts["number_emptied"] == 1
    assert counts["kept_text_cleaned"] == 2 and counts["identifying_value_removed"] == 1


# ---------------------------------------------------------------------------
# A second trial: text written under another VR, and byte strings of their own format


def _reread(ds: Dataset) -> Dataset:
    """Written and read back, so each element has the explicit VR it was written with."""
    return pydicom.dcmread(io.BytesIO(_written(ds)))


@pytest.mark.parametrize(("tag", "vr"), [
    (0x00081030, "OB"), (0x00081030, "OW"), (0x00081030, "FD"), (0x00081030, "UL"),  # StudyDescription
    (0x00080070, "OB"),  # Manufacturer (safe text)
    (0x00280030, "OB"),  # PixelSpacing (DS, not in Table E.1-1)
    (0x00089999, "OB"),  # a public tag no dictionary defines
    (0x00200037, "UT"),  # ImageOrientationPatient (DS) as free text
])
def test_identifying_text_under_another_vr_is_removed(victim, tag: int, vr: str) -> None:
    """As an explicit-VR file with that VR reads (the element as read, undecoded)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    payload = f"{SURNAME.upper()}^{GIVEN} {CPR}".encode("latin-1").ljust(32, b" ")
    victim[tag] = RawDataElement(Tag(tag), vr, len(payload), payload, 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = deid(victim)
    assert tag not in out
    assert leaks(out, *IDENTITY) == []


def test_byte_strings_of_their_own_format_are_removed_at_any_depth(victim) -> None:
    item = Dataset()
    item.HPGLDocument = b"IN;LB" + f"{SURNAME} {CPR}".encode() + b"\x03;"
    item.HPGLDocumentID = 1
    victim.HPGLDocumentSequence = Sequence([item])
    victim.ICCProfile = b"\x00\x00\x02\x0cacsp sRGB profile "  # kept: colour needs it
    out = deid(_reread(victim))
    assert "HPGLDocument" not in out.HPGLDocumentSequence[0]
    assert out.ICCProfile == victim.ICCProfile
    assert leaks(out, *IDENTITY) == []


def test_text_vrs_screened_alike_may_stand_for_each_other(victim) -> None:
    from pydicom.dataelem import DataElement

    del victim.StudyDescription
    victim.add(DataElement(0x00081030, "SH", f"CT THORAX {SURNAME}"))  # LO by the dictionary
    victim.add(DataElement(0x00180050, "IS", "5"))  # SliceThickness is DS
    out = deid(_reread(victim))
    assert out.StudyDescription == "CT THORAX" and out.SliceThickness == 5


@pytest.mark.parametrize("value", [CPR, f"{SURNAME}^{GIVEN}", f"045Y {SURNAME}", "45 years"])
def test_an_age_that_is_not_an_age_is_not_kept(victim, value: str) -> None:
    from pydicom.dataelem import DataElement

    victim.PatientBirthDate = ""
    victim.add(DataElement(0x00101010, "AS", value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = deid(victim, DeidPolicy(retain_patient_characteristics=True))
    assert str(out.get("PatientAge", "")) == ""
    assert leaks(out, *IDENTITY) == []


def test_a_valid_age_is_kept(victim) -> None:
    victim.PatientAge = "045Y"
    assert deid(victim, DeidPolicy(retain_patient_characteristics=True)).PatientAge == "045Y"


@pytest.mark.parametrize(
    ("charset", "name", "text", "gone"),
    [
        ("ISO_IR 192", "Wang^Xiaodong=王^小东", "胸部CT王小东", "王小东"),
        ("GB18030", "Wang^Xiaodong=王^小东", "王小东 胸部CT", "王小东"),
        ("ISO_IR 192", "Yamada^Tarou=山田^太郎=やまだ^たろう", "山田太郎様 胸部CT", "山田太郎"),
        ("ISO_IR 192", "Yamada^Tarou=山田^太郎", "胸部CT山田様", "山田"),
        ("ISO_IR 192", "Hong^Gildong=洪^吉洞=홍^길동", "흉부CT 홍길동님", "홍길동"),
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎", "山田太郎様 胸部CT", "山田太郎"),
    ],
)
def test_names_in_scripts_without_spaces_are_found_inside_text(victim, charset: str, name: str,
                                                              text: str, gone: str) -> None:
    victim.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    victim.PatientName = name
    victim.StudyDescription = text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _reread(deid(_reread(victim)))
    assert gone not in str(out.get("StudyDescription", ""))
    assert "CT" in str(out.get("StudyDescription", ""))  # the rest of the description stays
