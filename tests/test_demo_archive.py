"""The demo archive: real DICOM sources, fictitious identities, fresh UIDs, deterministic."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from demo.archive import (
    BENCHMARK_SERIES_LENGTH,
    INDEX_NAME,
    PRIVATE_CREATOR,
    ArchiveBuildError,
    DemoArchive,
    build_archive,
    load_archive,
)

GENERATED_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, used by generate_uid


def _read(archive: DemoArchive, entry, **kwargs) -> pydicom.Dataset:
    return pydicom.dcmread(archive.root / entry.path, **kwargs)


def _source_uids(source: str) -> set[str]:
    ds = pydicom.dcmread(get_testdata_file(source, download=False))
    uids = {str(ds.file_meta.MediaStorageSOPInstanceUID)}
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            for v in elem.value if elem.VM > 1 else [elem.value]:
                if not str(v).startswith("1.2.840.10008."):
                    uids.add(str(v))
    return uids


def test_index_lists_every_file_with_its_header_values(demo_archive: DemoArchive) -> None:
    index = json.loads((demo_archive.root / INDEX_NAME).read_text())
    assert index["format"] == 1 and index["seed"] == demo_archive.seed
    on_disk = sorted(p.relative_to(demo_archive.root).as_posix()
                     for p in demo_archive.root.rglob("*.dcm"))
    assert sorted(f["path"] for f in index["files"]) == on_disk
    for entry in demo_archive.entries:
        ds = _read(demo_archive, entry, stop_before_pixels=True)
        assert entry.patient_name == str(ds.PatientName)
        assert entry.patient_id == ds.PatientID
        assert entry.patient_birth_date == ds.PatientBirthDate
        assert entry.accession_number == ds.AccessionNumber
        assert entry.study_instance_uid == ds.StudyInstanceUID
        assert entry.series_instance_uid == ds.SeriesInstanceUID
        assert entry.sop_instance_uid == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert entry.modality == ds.Modality
        assert entry.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
        assert entry.number_of_frames == int(ds.get("NumberOfFrames", 1))
    assert load_archive(demo_archive.root) == demo_archive


def test_modalities_transfer_syntaxes_and_multiframe_objects(demo_archive: DemoArchive) -> None:
    entries = demo_archive.entries
    assert {e.modality for e in entries} >= {"CT", "MR", "US", "CR", "NM"}
    syntaxes = {e.transfer_syntax_uid for e in entries}
    assert syntaxes >= {
        "1.2.840.10008.1.2",  # implicit VR little endian
        "1.2.840.10008.1.2.1",  # explicit VR little endian
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
    }
    multi = {e.source: e for e in entries if e.number_of_frames > 1}
    assert multi["eCT_Supplemental.dcm"].sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    enhanced = _read(demo_archive, multi["eCT_Supplemental.dcm"], stop_before_pixels=True)
    assert len(enhanced.PerFrameFunctionalGroupsSequence) == 2
    assert multi["examples_ybr_color.dcm"].number_of_frames == 30  # US cine, JPEG baseline
    assert multi["emri_small_jpeg_2k_lossless.dcm"].compressed  # compressed multi-frame


def test_full_size_series_only_when_asked(demo_archive: DemoArchive, tmp_path: Path) -> None:
    """The gateway benchmark's 50 slices of 512x512 CT: real-size pixels, differing per
    slice, none of the source's UIDs, and absent from the demo's own archive."""
    with pytest.raises(LookupError, match="full_size_ct"):
        demo_archive.full_size_series()
    archive = build_archive(tmp_path / "full", seed=demo_archive.seed, full_size_ct=True)
    series = archive.full_size_series()
    assert len(series) == 50 and len(archive.entries) == len(demo_archive.entries) + 50
    assert {(e.rows, e.columns, e.modality, e.study_description) for e in series} == {(512, 512, "CT", "CT ABDOMEN")}
    assert {e.patient_id for e in series} < {e.patient_id for e in demo_archive.entries}
    first, last = (_read(archive, e) for e in (series[0], series[-1]))
    assert not np.array_equal(first.pixel_array, last.pixel_array)
    leaked = _source_uids("693_UNCR.dcm") & {str(v.value) for ds in (first, last) for v in ds.iterall()
                                             if v.VR == "UI"}
    assert leaked == set()
    # The demo's own files are the same with or without it.
    assert archive.entries[: len(demo_archive.entries)] == demo_archive.entries


def test_benchmark_series_has_50_consistently_stepped_instances(demo_archive: DemoArchive) -> None:
    series = demo_archive.benchmark_series()
    assert len(series) == BENCHMARK_SERIES_LENGTH == 50
    headers = [_read(demo_archive, e, stop_before_pixels=True) for e in series]
    assert sorted(int(ds.InstanceNumber) for ds in headers) == list(range(1, 51))
    assert len({ds.FrameOfReferenceUID for ds in headers}) == 1
    assert len({ds.SeriesInstanceUID for ds in headers}) == 1
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    normal = np.cross(np.array(source.ImageOrientationPatient[:3], float),
                      np.array(source.ImageOrientationPatient[3:], float))
    for ds in sorted(headers, key=lambda d: int(d.InstanceNumber)):
        k = int(ds.InstanceNumber) - 1
        expected = np.array(source.ImagePositionPatient, float) - 5.0 * k * normal
        np.testing.assert_allclose(np.array(ds.ImagePositionPatient, float), expected, atol=1e-5)
        assert float(ds.SliceLocation) == pytest.approx(float(np.dot(expected, normal)), abs=1e-5)
        assert float(ds.SpacingBetweenSlices) == 5.0
        assert list(ds.ImageOrientationPatient) == list(source.ImageOrientationPatient)
    # A follow-up CT of the same patient, in another study and frame of reference.
    follow_up = [e for e in demo_archive.entries
                 if e.patient_id == series[0].patient_id and e.series_description == "CT Thorax 5 mm RLE"]
    assert len(follow_up) == 20
    # Every slice its own pixels (one source image, values shifted), compressed or not.
    for slices in (series, follow_up):
        first = sorted(slices, key=lambda e: e.path)[:3]
        arrays = [_read(demo_archive, e).pixel_array.astype(int) for e in first]
        assert not np.array_equal(arrays[0], arrays[1]) and not np.array_equal(arrays[1], arrays[2])
        assert np.array_equal(arrays[1] - arrays[0], np.ones_like(arrays[0]))
    assert str(_read(demo_archive, follow_up[1], stop_before_pixels=True).file_meta.TransferSyntaxUID) == RLELossless
    assert follow_up[0].study_instance_uid != series[0].study_instance_uid
    assert follow_up[0].frame_of_reference_uid != series[0].frame_of_reference_uid


def test_uids_are_new_unique_and_never_from_the_sources(demo_archive: DemoArchive) -> None:
    entries = demo_archive.entries
    sops = [e.sop_instance_uid for e in entries]
    assert len(set(sops)) == len(sops)
    owners: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        owners[e.study_instance_uid].add(e.patient_id)
        owners[e.series_instance_uid].add(e.patient_id)
        for uid in (e.study_instance_uid, e.series_instance_uid, e.sop_instance_uid):
            assert uid.startswith(GENERATED_ROOT) and len(uid) <= 64
    assert all(len(p) == 1 for p in owners.values())
    # No UID of any source survives anywhere in any file, sequences and private tags included.
    source_uids = set().union(*(_source_uids(s) for s in {e.source for e in entries}))
    assert len(source_uids) > 30
    for entry in entries:
        raw = (demo_archive.root / entry.path).read_bytes()
        leaked = [u for u in source_uids if u.encode() in raw]
        assert not leaked, f"{entry.path} keeps source UIDs {leaked}"


def test_references_inside_sequences_are_regenerated_consistently(demo_archive: DemoArchive) -> None:
    us = next(e for e in demo_archive.entries if e.source == "JPGLosslessP14SV1_1s_1f_8b.dcm")
    ds = _read(demo_archive, us, stop_before_pixels=True)
    source = pydicom.dcmread(get_testdata_file(us.source, download=False), stop_before_pixels=True)
    old = source.ReferencedStudySequence[0].ReferencedSOPInstanceUID
    new = ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID
    assert new != old and new.startswith(GENERATED_ROOT)
    # The source's own UIDs, referenced from a sequence, map to the new ones.
    if old == source.StudyInstanceUID:
        assert new == ds.StudyInstanceUID
    enhanced = next(e for e in demo_archive.entries if e.source == "eCT_Supplemental.dcm")
    ect = _read(demo_archive, enhanced, stop_before_pixels=True)
    dim_uids = {item.DimensionOrganizationUID for item in ect.DimensionOrganizationSequence}
    dim_uids |= {item.DimensionOrganizationUID for item in ect.DimensionIndexSequence}
    assert len(dim_uids) == 1 and next(iter(dim_uids)).startswith(GENERATED_ROOT)


def test_identities_are_fictitious_with_follow_up_studies(demo_archive: DemoArchive) -> None:
    studies: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for e in demo_archive.entries:
        assert e.patient_name.startswith("FICTIVE^")
        assert e.patient_id.startswith("DEMO-")
        assert e.accession_number.startswith("DEMOACC")
        assert e.patient_sex in {"F", "M"} and len(e.patient_birth_date) == 8
        studies[e.patient_id].add((e.study_date, e.accession_number))
    assert len(studies) == 4
    assert all(len(s) == 2 and len({d for d, _ in s}) == 2 for s in studies.values())
    accessions = Counter(a for s in studies.values() for _, a in s)
    assert all(n == 1 for n in accessions.values())
    # The sources' patients, institutions and staff are gone from every text value.
    forbidden = set()
    for source in {e.source for e in demo_archive.entries}:
        ds = pydicom.dcmread(get_testdata_file(source, download=False), stop_before_pixels=True)
        forbidden |= {str(ds.get(k, "")) for k in ("PatientName", "PatientID", "InstitutionName")}
    forbidden = {f for f in forbidden if len(f) >= 3}
    for entry in demo_archive.entries:
        ds = _read(demo_archive, entry, stop_before_pixels=True)
        assert ds.InstitutionName == "Demo Hospital"
        assert ds.ReferringPhysicianName == "DEMO^DOCTOR"
        for elem in ds.iterall():
            if elem.VR in ("PN", "LO", "SH", "LT", "ST", "UT") and elem.value:
                assert str(elem.value) not in forbidden, f"{entry.path}: {elem.keyword}={elem.value!r}"
            if elem.VR == "PN" and elem.value and elem.keyword != "PatientName":
                assert str(elem.value).startswith("DEMO^")


def test_identifying_text_and_private_tags_are_left_for_deidentification(demo_archive: DemoArchive) -> None:
    vendor_private = 0
    for entry in demo_archive.entries:
        ds = _read(demo_archive, entry, stop_before_pixels=True)
        assert entry.patient_name in ds.ImageComments
        assert entry.patient_name in ds.StudyComments
        assert entry.patient_id in ds.AdditionalPatientHistory
        value = ds.private_block(0x0099, PRIVATE_CREATOR)[0x02].value
        if isinstance(value, bytes):  # implicit VR files: an unknown private tag reads as UN
            value = value.decode("ascii").strip()
        assert value == entry.patient_id
        vendor_private += any(e.tag.is_private and e.tag.group != 0x0099 for e in ds)
    assert vendor_private >= 50  # e.g. the GE tags of CT_small


def test_every_file_decodes_with_the_installed_codecs(demo_archive: DemoArchive) -> None:
    for entry in demo_archive.entries:
        arr = _read(demo_archive, entry).pixel_array
        frames = entry.number_of_frames
        assert arr.shape[:3 if frames > 1 else 2] == (
            (frames, entry.rows, entry.columns) if frames > 1 else (entry.rows, entry.columns))


def test_same_seed_same_bytes_other_seed_other_uids(demo_archive: DemoArchive, tmp_path: Path) -> None:
    again = build_archive(tmp_path / "again", seed=demo_archive.seed)

    def digest(archive: DemoArchive) -> dict[str, str]:
        return {e.path: hashlib.sha256((archive.root / e.path).read_bytes()).hexdigest()
                for e in archive.entries}

    assert digest(again) == digest(demo_archive)
    other = build_archive(tmp_path / "other", seed="another-seed")
    assert {e.sop_instance_uid for e in other.entries}.isdisjoint(
        e.sop_instance_uid for e in demo_archive.entries)
    total = sum((demo_archive.root / e.path).stat().st_size for e in demo_archive.entries)
    assert total < 40 * 1024 * 1024


def test_outdir_rules_and_cli(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ArchiveBuildError, match="not empty"):
        build_archive(foreign)
    with pytest.raises(ArchiveBuildError, match="refusing"):
        build_archive(foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    out = tmp_path / "cli"
    run = [sys.executable, "-m", "demo.archive", str(out), "--seed", "cli-seed"]
    first = subprocess.run(run, check=False, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "85 files" in first.stdout and "CT Thorax 5 mm (benchmark)" in first.stdout
    assert load_archive(out).seed == "cli-seed"
    refused = subprocess.run(run, check=False, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    replaced = subprocess.run(run + ["--overwrite"], check=False, capture_output=True, text=True, timeout=120)
    assert replaced.returncode == 0, replaced.stderr
