"""The de-identification core: pseudonyms, the Annex E table and deidentify().

Golden values are computed with the fixed test key below; if one changes, every
project's pseudonyms change with it, so such a change must be deliberate.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

from services.sample_gateway import annex_e
from services.sample_gateway.deidentify import (
    _TERM_KEYWORDS_WHOLE,
    _TERM_KEYWORDS_WORDS,
    CODE_STRING_VOCABULARY,
    DEFAULT_KEEP_DESCRIPTORS,
    DOCUMENTED_UIDS,
    SAFE_TEXT_KEYWORDS,
    BurnedInAnnotationRefused,
    DeidError,
    DeidPolicy,
    UnsupportedObject,
    burned_in_risk,
    clean_descriptor,
    deidentify,
    identifying_terms,
    is_instance_uid_keyword,
    is_well_known_uid,
    patient_age,
)
from services.sample_gateway.pseudonyms import (
    OFFSET_MAX_DAYS,
    OFFSET_MIN_DAYS,
    KeyFileError,
    ProjectKeys,
    load_or_create_key,
    shift_date,
)

KEYS = ProjectKeys(bytes(range(32)), "KINA")
OTHER_PROJECT = ProjectKeys(bytes(range(32)), "MAGI")
POLICY = DeidPolicy()
ALLOW_BURNED_IN = DeidPolicy(allow_burned_in_annotation=True)


def read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name, download=False))


def charset_file(name: str) -> str:
    return next(path for path in get_charset_files() if path.endswith(name))


def write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def all_tags(ds: Dataset):
    for elem in ds:
        yield elem.tag
        if elem.VR == "SQ":
            for item in elem.value:
                yield from all_tags(item)


# ---------------------------------------------------------------------------
# Pseudonyms


def test_patient_pseudonym_golden_values() -> None:
    assert KEYS.patient_pseudonym("0101901234") == "P6WPEYQSRCM"
    assert KEYS.patient_pseudonym("0101901234", issuer="CPR") == "PHRCRTBEFSA"
    assert OTHER_PROJECT.patient_pseudonym("0101901234") == "PSRHEWMRF26"


def test_patient_pseudonym_properties() -> None:
    pseudonym = KEYS.patient_pseudonym("0101901234")
    assert pseudonym == KEYS.patient_pseudonym(" 0101901234 ")  # padding does not matter
    assert len(pseudonym) == 11 and pseudonym[0] == "P" and pseudonym[1:].isalnum()
    assert pseudonym.isupper()
    assert KEYS.patient_pseudonym("0101901235") != pseudonym
    other_key = ProjectKeys(bytes(range(1, 33)), "KINA")
    assert other_key.patient_pseudonym("0101901234") != pseudonym


def test_accession_pseudonym_fits_sh() -> None:
    assert KEYS.accession_pseudonym("RIPA123456") == "A4NUIVCUMXM"
    assert len(KEYS.accession_pseudonym("X" * 16)) <= 16


def test_remap_uid_golden_values() -> None:
    uid = "1.2.826.0.1.3680043.2.1125.1.1"
    assert KEYS.remap_uid(uid) == "2.25.111749012750307963273252720262604578749"
    assert OTHER_PROJECT.remap_uid(uid) == "2.25.299576777527308196148015670978191503864"
    assert KEYS.study_key("1.2.3.4") == "2.25.206781706977662891714300780912756610889"


@pytest.mark.parametrize("seed", range(200))
def test_remapped_uids_are_valid_and_stable(seed: int) -> None:
    uid = generate_uid(entropy_srcs=[str(seed)]) if seed % 2 else f"1.2.{seed}.{seed * 7}"
    remapped = KEYS.remap_uid(uid)
    assert UID(remapped).is_valid
    assert len(remapped) <= 64
    assert remapped == KEYS.remap_uid(uid)
    assert remapped != OTHER_PROJECT.remap_uid(uid)
    assert remapped != uid


def test_remap_of_an_invalid_uid_is_valid() -> None:
    assert UID(KEYS.remap_uid("dccc9599087131742838cc1162a630fea87ba9bf")).is_valid


def test_date_offset_range_and_golden_value() -> None:
    assert KEYS.date_offset_days("P6WPEYQSRCM") == KEYS.date_offset_days("P6WPEYQSRCM")
    assert KEYS.date_offset_days("0101901234") == -960
    offsets = {KEYS.date_offset_days(f"patient-{n}") for n in range(500)}
    assert all(OFFSET_MIN_DAYS <= o <= OFFSET_MAX_DAYS for o in offsets)
    assert 0 not in offsets
    assert len(offsets) > 400  # spread over the range


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20210304", "20200129"),
        ("2021", "2019"),  # partial dates keep their precision
        ("202103", "202001"),
        ("20210304101010.123+0100", "20200129101010.123+0100"),  # DT keeps time and zone
        ("20210304120000-0500", "20200129120000-0500"),
        ("20210304-20210310", "20200129-20200204"),  # ranges, open ones too
        ("-20210304", "-20200129"),
        ("20210304-", "20200129-"),
        ("2021.03.04", "20200129"),  # ACR-NEMA style, written back as DICOM
        ("20240229", "20230125"),
        ("", ""),
    ],
)
def test_shift_date_golden_values(value: str, expected: str) -> None:
    assert shift_date(value, -400) == expected


@pytest.mark.parametrize("value", ["2021-13-45", "20211301", "abc", "20210230", "2021030", "1-2-3"])
def test_shift_date_refuses_what_it_cannot_parse(value: str) -> None:
    with pytest.raises(ValueError):
        shift_date(value, -400)


def test_shift_date_preserves_intervals() -> None:
    for offset in (-366, -1000, -3650):
        first, second = shift_date("20200115", offset), shift_date("20230704", offset)
        days = lambda v: np.datetime64(f"{v[:4]}-{v[4:6]}-{v[6:]}")  # noqa: E731
        assert days(second) - days(first) == days("20230704") - days("20200115")


# ---------------------------------------------------------------------------
# The key file


def test_load_or_create_key(tmp_path) -> None:
    path = tmp_path / "KINA.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["KINA.key"]  # no temporary left


def test_load_or_create_key_refuses_a_readable_or_short_file(tmp_path) -> None:
    readable = tmp_path / "readable.key"
    readable.write_bytes(b"k" * 32)
    os.chmod(readable, 0o644)
    with pytest.raises(KeyFileError, match="0600"):
        load_or_create_key(readable)
    short = tmp_path / "short.key"
    short.write_bytes(b"k" * 8)
    os.chmod(short, 0o600)
    with pytest.raises(KeyFileError, match="32 bytes"):
        load_or_create_key(short)


def test_project_keys_never_print_the_key() -> None:
    assert "000102" not in repr(KEYS) and str(bytes(range(32))) not in repr(KEYS)
    with pytest.raises(ValueError):
        ProjectKeys(b"short", "KINA")


# ---------------------------------------------------------------------------
# The Annex E table


def test_annex_e_table_covers_the_standard() -> None:
    assert annex_e.ROW_COUNT == 621
    for tag, row in annex_e.BASIC_PROFILE.items():
        assert keyword_for_tag(tag) == row.keyword
        assert row.basic in annex_e.ACTIONS
        assert set(row.flags) <= {"M", "C", "P", "p"}
    assert annex_e.lookup(0x00100010).basic == "Z"  # PatientName
    assert annex_e.lookup(0x00080020).flags == "M"  # StudyDate
    assert annex_e.lookup(0x00081030).flags == "C"  # StudyDescription
    assert annex_e.lookup(0x00091010) is annex_e.PRIVATE_ATTRIBUTES
    assert annex_e.lookup(0x60003000) is annex_e.OVERLAY_DATA
    assert annex_e.lookup(0x60020010) is None  # overlay rows: not a table row
    assert annex_e.is_repeating_group(0x60020010)
    assert annex_e.lookup(0x00280010) is None  # Rows


@pytest.mark.parametrize(
    ("code", "action"),
    [("X/Z", "Z"), ("X/D", "X"), ("Z/D", "Z"), ("X/Z/D", "Z"), ("X/Z/U*", "U"), ("D", "D")],
)
def test_compound_actions(code: str, action: str) -> None:
    assert annex_e.resolve_basic(code) == action


def test_options_override_the_basic_profile() -> None:
    options = annex_e.Options(patient_characteristics=True)
    assert annex_e.resolve_action(annex_e.lookup(0x00101010), options) == "K"  # PatientAge
    assert annex_e.resolve_action(annex_e.lookup(0x00101010), annex_e.Options()) == "X"
    allergies = annex_e.lookup(0x00102110)  # free text: cleaned or removed, never kept
    assert annex_e.resolve_action(allergies, options) == "C"
    no_cleaning = annex_e.Options(clean_descriptors=False, patient_characteristics=True)
    assert annex_e.resolve_action(allergies, no_cleaning) == "X"
    assert annex_e.resolve_action(annex_e.lookup(0x00080021), options) == "C"  # SeriesDate
    assert annex_e.resolve_action(annex_e.lookup(0x00100030), options) == "Z"  # BirthDate


def test_safe_text_keywords_are_text_and_not_identifying() -> None:
    for keyword in SAFE_TEXT_KEYWORDS | DEFAULT_KEEP_DESCRIPTORS:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        assert tag is not None, keyword
        row = annex_e.BASIC_PROFILE.get(int(tag))
        if keyword in SAFE_TEXT_KEYWORDS:
            assert dictionary_VR(tag) in {"LO", "SH", "ST", "LT", "UT", "UC", "UR"}, keyword
            assert row is None, keyword
        else:
            assert row is None or "C" in row.flags, keyword


def test_policy_refuses_an_identifying_descriptor() -> None:
    with pytest.raises(ValueError, match="InstitutionName"):
        DeidPolicy(keep_descriptors=frozenset({"InstitutionName"}))
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        DeidPolicy(keep_descriptors=frozenset({"NoSuchThing"}))


def test_well_known_uids() -> None:
    assert is_well_known_uid("1.2.840.10008.5.1.4.1.1.2")
    assert is_well_known_uid("1.2.840.10008.1.2.4.50")
    assert is_well_known_uid("1.3.12.2.1107.5.9.1")  # a documented private SOP class
    assert not is_well_known_uid("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")
    assert not is_well_known_uid("1.2.840.10008.5.1.4.1.1.2.1234")  # the root is not enough


def test_documented_uids_are_valid_and_not_in_the_dictionary() -> None:
    for uid in DOCUMENTED_UIDS:
        assert UID(uid).is_valid, uid
        assert uid not in pydicom.uid.UID_dictionary, uid


@pytest.mark.parametrize(
    ("keyword", "instance"),
    [("SOPInstanceUID", True), ("ReferencedSOPInstanceUID", True),
     ("FrameOfReferenceUID", True), ("ReferencedFrameOfReferenceUID", True),
     ("SOPInstanceUIDOfConcatenationSource", True), ("SOPClassUID", False),
     ("TransferSyntaxUID", False), ("CodingSchemeUID", False)],
)
def test_instance_uid_keywords(keyword: str, instance: bool) -> None:
    assert is_instance_uid_keyword(keyword) is instance


def test_code_string_vocabulary_is_valid_code_strings() -> None:
    for word in CODE_STRING_VOCABULARY:
        assert re.fullmatch(r"[A-Z0-9_ ]{1,16}", word), word


def test_terms_come_from_attributes_the_profile_removes_or_pseudonymises() -> None:
    # The airlock refuses a de-identified file in which identifying_terms() still finds
    # anything but a pseudonym: every attribute it reads must leave the profile empty.
    for keyword in _TERM_KEYWORDS_WHOLE + _TERM_KEYWORDS_WORDS:
        if keyword in ("PatientID", "AccessionNumber"):
            continue  # pseudonymised
        row = annex_e.BASIC_PROFILE[int(pydicom.datadict.tag_for_keyword(keyword))]
        assert annex_e.resolve_action(row, POLICY.options) in ("X", "Z"), keyword


# ---------------------------------------------------------------------------
# deidentify(): a real CT


@pytest.fixture(scope="module")
def ct() -> Dataset:
    return read("CT_small.dcm")


@pytest.fixture(scope="module")
def ct_result(ct):
    return deidentify(ct, KEYS, POLICY)


def test_identity_is_replaced(ct, ct_result) -> None:
    out = ct_result.dataset
    pseudonym = KEYS.patient_pseudonym("1CT1")
    assert out.PatientName == pseudonym == out.PatientID == ct_result.report.patient_pseudonym
    assert out.PatientBirthDate == ""
    assert out.InstitutionName == "" and out.ReferringPhysicianName == ""
    assert "OtherPatientIDsSequence" not in out
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.DeidentificationMethod[0] == "research-workbench sample gateway 1.0"
    assert list(out.DeidentificationMethod) == POLICY.method_values()
    assert all(len(value) <= 64 for value in out.DeidentificationMethod)
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113105", "113108"]
    assert {item.CodingSchemeDesignator for item in out.DeidentificationMethodCodeSequence} == {"DCM"}


def test_uids_are_remapped_consistently(ct, ct_result) -> None:
    out = ct_result.dataset
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert out[keyword].value == KEYS.remap_uid(ct[keyword].value), keyword
        assert UID(out[keyword].value).is_valid
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPClassUID == ct.SOPClassUID  # a class is not an instance
    assert out.file_meta.TransferSyntaxUID == ct.file_meta.TransferSyntaxUID
    assert ct_result.report.study_key == KEYS.study_key(ct.StudyInstanceUID)


def test_dates_are_shifted_by_the_patient_offset(ct, ct_result) -> None:
    out = ct_result.dataset
    offset = KEYS.date_offset_days(KEYS.patient_pseudonym("1CT1"))
    assert out.StudyDate == shift_date(ct.StudyDate, offset) != ct.StudyDate
    assert out.SeriesDate == shift_date(ct.SeriesDate, offset)
    assert out.StudyTime == ct.StudyTime  # whole-day shifts leave times alone
    assert out.PatientAge == ct.PatientAge


def test_private_tags_are_gone(ct, ct_result) -> None:
    assert any(tag.is_private for tag in all_tags(ct))
    assert not any(tag.is_private for tag in all_tags(ct_result.dataset))
    assert ct_result.report.counts["private_removed"] > 0


def test_input_is_not_mutated() -> None:
    ds = read("CT_small.dcm")
    before = write(ds)
    deidentify(ds, KEYS, POLICY)
    assert write(ds) == before
    assert ds.PatientName == "CompressedSamples^CT1"


def test_report_holds_no_identifying_value(ct, ct_result) -> None:
    text = json.dumps(ct_result.report.as_dict())
    for value in ("CompressedSamples", "1CT1", "JFK", ct.StudyInstanceUID, ct.StudyDate):
        assert value not in text


# ---------------------------------------------------------------------------
# deidentify(): built datasets


def _patient(patient_id: str = "0101901234", study_date: str = "20210304") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[patient_id, study_date, "sop"])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient_id, study_date])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient_id, study_date, "series"])
    ds.Modality = "CT"
    ds.PatientName = "Hansen^Jens Peter"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19800615"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = "RIPA123456"
    return ds


def test_intervals_between_two_studies_of_a_patient_are_preserved() -> None:
    first = deidentify(_patient(study_date="20200115"), KEYS, POLICY).dataset
    second = deidentify(_patient(study_date="20230704"), KEYS, POLICY).dataset
    as_day = lambda v: np.datetime64(f"{v[:4]}-{v[4:6]}-{v[6:]}")  # noqa: E731
    assert as_day(second.StudyDate) - as_day(first.StudyDate) == np.timedelta64(1266, "D")
    assert first.PatientID == second.PatientID  # the studies link
    assert first.StudyInstanceUID != second.StudyInstanceUID
    other = deidentify(_patient(patient_id="0202802345", study_date="20200115"), KEYS, POLICY)
    assert other.dataset.PatientID != first.PatientID


def test_accession_number_and_age() -> None:
    result = deidentify(_patient(), KEYS, POLICY)
    assert result.dataset.AccessionNumber == KEYS.accession_pseudonym("RIPA123456")
    assert result.dataset.PatientAge == "040Y"  # computed from the real dates
    assert result.report.age_computed
    no_characteristics = DeidPolicy(retain_patient_characteristics=False)
    assert "PatientAge" not in deidentify(_patient(), KEYS, no_characteristics).dataset


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [("19800615", "20210301", "040Y"), ("20200101", "20210601", "017M"),
     ("20210101", "20210125", "003W"), ("20210101", "20210105", "004D"),
     ("20210101", "20200101", None)],
)
def test_patient_age(birth: str, on: str, age: str | None) -> None:
    as_date = lambda v: np.datetime64(f"{v[:4]}-{v[4:6]}-{v[6:]}").astype(object)  # noqa: E731
    assert patient_age(as_date(birth), as_date(on)) == age


def test_sequences_at_any_depth() -> None:
    ds = _patient()
    source = Dataset()
    source.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    source.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7"
    private_in_item = Dataset()
    private_in_item.add_new(0x00091010, "LO", "SECRET VENDOR NOTE")
    source.add_new(0x00091000, "LO", "ACME")
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4.5.6.8"
    inner.ObservationDateTime = "20210304101010"
    inner.PersonName = "Observer^Olga"
    inner.add_new(0x00111010, "SQ", Sequence([private_in_item]))
    source.ReferencedImageSequence = Sequence([inner])
    ds.SourceImageSequence = Sequence([source])
    ds.add_new(0x00291010, "SQ", Sequence([private_in_item]))

    out = deidentify(ds, KEYS, POLICY).dataset
    offset = KEYS.date_offset_days(KEYS.patient_pseudonym("0101901234"))
    item = out.SourceImageSequence[0]
    assert item.ReferencedSOPInstanceUID == KEYS.remap_uid("1.2.3.4.5.6.7")
    assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    nested = item.ReferencedImageSequence[0]
    assert nested.ReferencedSOPInstanceUID == KEYS.remap_uid("1.2.3.4.5.6.8")
    assert nested.ObservationDateTime == shift_date("20210304101010", offset)
    assert nested.PersonName == "ANONYMIZED"  # D: a dummy
    assert not any(tag.is_private for tag in all_tags(out))
    assert b"SECRET" not in write(out)


def test_references_between_instances_still_resolve() -> None:
    first = _patient()
    second = _patient(study_date="20210304")
    second.SOPInstanceUID = "1.2.3.99"
    reference = Dataset()
    reference.ReferencedSOPClassUID = first.SOPClassUID
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.SourceImageSequence = Sequence([reference])
    out_first = deidentify(first, KEYS, POLICY).dataset
    out_second = deidentify(second, KEYS, POLICY).dataset
    assert out_second.SourceImageSequence[0].ReferencedSOPInstanceUID == out_first.SOPInstanceUID


def test_descriptors_are_cleaned() -> None:
    ds = _patient()
    ds.StudyDescription = "CT thorax Hansen 2021-03-04 ref 0101901234"
    ds.SeriesDescription = "Jens Peter AX 5mm"
    ds.ProtocolName = "T1_MPRAGE RIPA123456"
    ds.InstitutionName = "Rigshospitalet Glostrup"
    ds.BodyPartExamined = "CHEST"
    ds.PerformedProcedureStepDescription = "Rigshospitalet CT"
    ds.ImageComments = "Patient moved, Hansen"  # a descriptor that is not kept
    result = deidentify(ds, KEYS, POLICY)
    out = result.dataset
    assert out.StudyDescription == "CT thorax ref"
    assert out.SeriesDescription == "AX 5mm"
    assert out.ProtocolName == "T1_MPRAGE"
    assert out.BodyPartExamined == "CHEST"
    assert out.PerformedProcedureStepDescription == "CT"
    assert "ImageComments" not in out
    assert {"StudyDescription", "SeriesDescription", "ProtocolName"} <= result.report.cleaned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CT HEAD 04.03.21", "CT HEAD"),
        ("MR knee (left) 20210304", "MR knee (left)"),
        ("contact doe@example.org", "contact"),
        ("cpr 010190-1234 scan", "cpr scan"),
        ("b1000 DWI", "b1000 DWI"),  # four digits: not an ID
        ("Series 3 of 12", "Series 3 of 12"),
        ("DOE_HEAD", "HEAD"),  # underscores separate words
        ("Doerum knee", "Doerum knee"),  # only whole words of the terms
        ("DOË knee", "knee"),  # compared without accents and case
        ("Doe2 knee", "2 knee"),  # a digit does not make another word
        ("EPIQ 7C_1.7.1.24", "EPIQ 7C_1.7.1.24"),  # a version, not a date
        ("V5.00.02", "V5.00.02"),
        ("12.31.2021 knee", "knee"),  # month first
    ],
)
def test_clean_descriptor(text: str, expected: str) -> None:
    assert clean_descriptor(text, {"doe"}) == expected


def test_identifying_terms() -> None:
    ds = _patient()
    ds.InstitutionName = "Rigshospitalet Glostrup"
    ds.OperatorsName = "Nielsen^A"
    terms = identifying_terms(ds)
    assert {"hansen", "jens peter", "jens", "peter", "0101901234", "ripa123456",
            "rigshospitalet", "glostrup", "nielsen"} <= terms
    assert "a" not in terms


def test_identifying_terms_are_normalised_and_split_at_hyphens() -> None:
    ds = _patient()
    ds.PatientName = "ＳØＧＡＡＲＤ-Ærø^Åse"  # fullwidth letters: NFKC
    ds.InstitutionName = "Glostrup Medical Center"
    terms = identifying_terms(ds)
    assert {"søgaard-ærø", "søgaard", "ærø", "åse", "glostrup medical center",
            "glostrup"} <= terms
    assert "medical" not in terms and "center" not in terms  # generic words name no place


def test_fail_closed_for_unknown_and_unlisted_text() -> None:
    ds = _patient()
    ds.add_new(0x00F01234, "LO", "Hansen was here")  # an even group nobody defines
    ds.add_new(0x00081080, "LO", "Admitting diagnosis")  # in Table E.1-1: X
    ds.ContentDescription = "free text about Hansen"  # not in the table, not safe
    ds.Manufacturer = "ACME"  # safe text
    ds.ConvolutionKernel = "B30f"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]  # CS: kept
    result = deidentify(ds, KEYS, POLICY)
    out = result.dataset
    assert 0x00F01234 not in out
    assert "AdmittingDiagnosesDescription" not in out
    assert "ContentDescription" not in out
    assert out.Manufacturer == "ACME" and out.ConvolutionKernel == "B30f"
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert result.report.counts["fail_closed_removed"] == 1  # ContentDescription
    assert result.report.counts["opaque_removed"] == 1  # the undefined (00F0,1234), unread
    assert b"Hansen" not in write(out)


def test_overlays_and_curves_are_removed() -> None:
    ds = read("MR-SIEMENS-DICOM-WithOverlays.dcm")
    assert any(tag.group == 0x6000 for tag in ds.keys())
    out = deidentify(ds, KEYS, POLICY).dataset
    assert not any(0x6000 <= tag.group <= 0x601E for tag in out.keys())


# ---------------------------------------------------------------------------
# Burned-in annotation


def _us(flag: str | None) -> Dataset:
    ds = _patient()
    ds.Modality = "US"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    if flag is not None:
        ds.BurnedInAnnotation = flag
    return ds


def test_burned_in_risk() -> None:
    assert burned_in_risk(_patient()) is None
    assert "BurnedInAnnotation is YES" in burned_in_risk(_us("YES"))
    assert "Ultrasound Image" in burned_in_risk(_us(None))
    assert burned_in_risk(_us("NO")) is None
    ct = _patient()
    ct.BurnedInAnnotation = "YES"
    assert burned_in_risk(ct) is not None
    secondary = _patient()
    secondary.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    secondary.Modality = "OT"
    assert "Secondary Capture" in burned_in_risk(secondary)
    label = _patient()
    label.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    label.BurnedInAnnotation = "NO"
    assert "label" in burned_in_risk(label)


def test_burned_in_annotation_is_refused_unless_allowed() -> None:
    with pytest.raises(BurnedInAnnotationRefused) as refused:
        deidentify(_us(None), KEYS, POLICY)
    error = refused.value
    assert isinstance(error, DeidError)
    assert error.status == 422 and error.reason == "burned_in_annotation"
    assert "0101901234" not in error.message and "Hansen" not in error.message
    assert error.to_json()["error"]["reason"] == "burned_in_annotation"
    result = deidentify(_us(None), KEYS, ALLOW_BURNED_IN)
    assert any("burned-in" in w for w in result.report.warnings)
    assert deidentify(_us("NO"), KEYS, POLICY).dataset.BurnedInAnnotation == "NO"


def test_real_ultrasound_with_burned_in_text_is_refused() -> None:
    deid_data = pytest.importorskip("deid_data.data")
    path = os.path.join(deid_data.get_dataset("ultrasounds"), "RGB_IMAGE.dcm")
    ds = pydicom.dcmread(path)
    with pytest.raises(BurnedInAnnotationRefused):
        deidentify(ds, KEYS, POLICY)


def test_dicomdir_is_refused() -> None:
    with pytest.raises(UnsupportedObject):
        deidentify(read("DICOMDIR"), KEYS, ALLOW_BURNED_IN)


# ---------------------------------------------------------------------------
# Files: writable, pixels still decode


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # explicit VR little endian, private tags
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "rtplan.dcm",  # implicit VR, no pixels
        "image_dfl.dcm",  # deflated
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_jp2klossless.dcm",  # JPEG 2000
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, colour
        "JPEG-LL.dcm",  # JPEG lossless (pydicom-data)
    ],
)
def test_output_is_writable_and_pixels_still_decode(name: str) -> None:
    try:
        ds = read(name)
    except (ValueError, TypeError):
        pytest.skip(f"{name} is not available")
    out = deidentify(ds, KEYS, ALLOW_BURNED_IN).dataset
    data = write(out)
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert back.SOPInstanceUID == KEYS.remap_uid(ds.SOPInstanceUID)
    assert back.PatientIdentityRemoved == "YES"
    if "PixelData" in ds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert np.array_equal(back.pixel_array, ds.pixel_array)


def test_dataset_without_file_meta() -> None:
    ds = _patient()
    assert "TransferSyntaxUID" not in getattr(ds, "file_meta", {})
    out = deidentify(ds, KEYS, POLICY).dataset
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert out.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert out.file_meta.MediaStorageSOPInstanceUID == KEYS.remap_uid(ds.SOPInstanceUID)
    back = pydicom.dcmread(io.BytesIO(write(out)))
    assert back.PatientID == KEYS.patient_pseudonym("0101901234")


def test_big_endian_file_without_meta() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file("ExplVR_BigEndNoMeta.dcm", download=False)
        ds = pydicom.dcmread(path, force=True)
    out = deidentify(ds, KEYS, POLICY).dataset
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    back = pydicom.dcmread(io.BytesIO(write(out)))
    assert back.SOPInstanceUID == KEYS.remap_uid(ds.SOPInstanceUID)


# ---------------------------------------------------------------------------
# Character sets


def test_multibyte_character_sets_round_trip() -> None:
    ds = pydicom.dcmread(charset_file("chrH31.dcm"))
    original = str(ds.PatientName)
    out = deidentify(ds, KEYS, ALLOW_BURNED_IN).dataset
    assert out.SpecificCharacterSet == ds.SpecificCharacterSet
    data = write(out)
    back = pydicom.dcmread(io.BytesIO(data))
    assert str(back.PatientName) == KEYS.patient_pseudonym(ds.PatientID)
    for part in original.split("="):
        family = part.split("^")[0]
        if family:
            assert family.encode("utf-8") not in data


@pytest.mark.filterwarnings("ignore:Unknown encoding")
def test_invalid_specific_character_set_is_handled(tmp_path) -> None:
    raw = open(charset_file("chrGerm.dcm"), "rb").read()
    broken = tmp_path / "broken-charset.dcm"
    broken.write_bytes(raw.replace(b"ISO_IR 100", b"ISO_IR 999"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(broken)
    ds.StudyDescription = None  # replaced below by a raw Latin-1 value
    del ds.StudyDescription
    ds.add(pydicom.dataelem.RawDataElement(
        pydicom.tag.Tag(0x00081030), "LO", 10, "Übersicht ".encode("latin-1"), 0, False, True))
    with pytest.warns(UserWarning, match="SpecificCharacterSet"):
        result = deidentify(ds, KEYS, ALLOW_BURNED_IN)
    out = result.dataset
    assert any("ISO_IR 999" in w for w in result.report.warnings)
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.StudyDescription == "Übersicht"  # decoded with the fallback
    back = pydicom.dcmread(io.BytesIO(write(out)))
    assert back.StudyDescription == "Übersicht"
    assert "Äneas".encode("latin-1") not in write(out)
