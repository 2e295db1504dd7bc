"""Search summaries (what researchers see of a study) and all-or-nothing pull delivery."""

from __future__ import annotations

import copy
import dataclasses
import csv
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from services.sample_gateway import delivery
from services.sample_gateway.delivery import (
    MANIFEST_FIELDS,
    PullWriter,
    remove_partials,
)
from services.sample_gateway.pseudonyms import ProjectKeys, shift_date
from services.sample_gateway.summaries import StudyIdentity, summarize_study

KEYS = ProjectKeys(b"k" * 32, "magi")

# -- summaries -----------------------------------------------------------------------------

STUDY_UID = "1.2.826.0.1.3680043.8.498.11111111111111111"
PATIENT_ID = "0101451234"


def qido_record(**changes: object) -> dict:
    """A QIDO-RS study record (DICOM JSON) of a fictitious patient."""
    ds = Dataset()
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate = "20210315"
    ds.StudyTime = "101500"
    ds.StudyDescription = "CT THORAX Jensen 2021-03-15 ref 1234567"
    ds.ModalitiesInStudy = ["SR", "CT"]
    ds.NumberOfStudyRelatedSeries = 3
    ds.NumberOfStudyRelatedInstances = 120
    ds.PatientName = "Jensen^Karin^Marie"
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = "CPR"
    ds.PatientBirthDate = "19450101"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC998877"
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds.to_json_dict()


def test_summary_golden() -> None:
    result = summarize_study(qido_record(), KEYS)
    assert result is not None
    study, identity = result
    assert study == {
        "study_key": "2.25.223392669935454330772020088943202986984",
        "patient": "PWRCMB5SHKB",
        "age": "76 years",
        "study_date": "2014-11-02",
        "description": "CT THORAX ref",
        "modalities": ["CT", "SR"],
        "series": 3,
        "instances": 120,
    }
    assert identity == StudyIdentity(
        study_uid=STUDY_UID, patient_id=PATIENT_ID, issuer="CPR",
    )


def test_summary_is_derived_from_the_project_keys() -> None:
    study, _ = summarize_study(qido_record(), KEYS)  # type: ignore[misc]
    patient = KEYS.patient_pseudonym(PATIENT_ID)
    assert study["study_key"] == KEYS.study_key(STUDY_UID)
    assert study["patient"] == patient
    shifted = shift_date("20210315", KEYS.date_offset_days(patient))
    assert study["study_date"] == f"{shifted[:4]}-{shifted[4:6]}-{shifted[6:]}"
    other, _ = summarize_study(qido_record(), ProjectKeys(b"k" * 32, "kina"))  # type: ignore[misc]
    assert other["study_key"] != study["study_key"] and other["patient"] != study["patient"]


def test_summary_holds_no_identifying_value() -> None:
    study, _ = summarize_study(qido_record(), KEYS)  # type: ignore[misc]
    shown = json.dumps(study)
    for value in ("Jensen", "Karin", "Marie", PATIENT_ID, "CPR", "19450101", "1945", STUDY_UID,
                  "20210315", "2021-03-15", "ACC998877", "1234567"):
        assert value not in shown, value


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"PatientAge": "045Y"}, "age", "45 years"),
        ({"PatientAge": "006M", "PatientBirthDate": None}, "age", "6 months"),
        ({"PatientAge": "003W", "PatientBirthDate": None}, "age", "3 weeks"),
        ({"PatientAge": "010D", "PatientBirthDate": None}, "age", "10 days"),
        ({"PatientBirthDate": "20210301"}, "age", "2 weeks"),
        ({"PatientBirthDate": None}, "age", ""),
        ({"StudyDate": None}, "study_date", ""),
        ({"StudyDate": None}, "age", ""),
        ({"StudyDescription": None}, "description", ""),
        ({"StudyDescription": "MR knee left"}, "description", "MR knee left"),
        ({"ModalitiesInStudy": "MR"}, "modalities", ["MR"]),
        ({"ModalitiesInStudy": None}, "modalities", []),
        ({"NumberOfStudyRelatedSeries": None}, "series", None),
        ({"NumberOfStudyRelatedInstances": None}, "instances", None),
    ],
)
def test_summary_fields(changes: dict, field: str, value: object) -> None:
    study, _ = summarize_study(qido_record(**changes), KEYS)  # type: ignore[misc]
    assert study[field] == value


def test_record_without_study_uid_is_skipped() -> None:
    assert summarize_study(qido_record(StudyInstanceUID=None), KEYS) is None


def test_record_is_not_modified() -> None:
    record = qido_record()
    before = copy.deepcopy(record)
    summarize_study(record, KEYS)
    assert record == before


# -- delivery ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return dcmread(path)


def instance(ct: Dataset, series: str, sop: str, number: str | None) -> Dataset:
    ds = copy.deepcopy(ct)
    ds.StudyInstanceUID = "2.25.100"
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.PatientID = "PAAAAAAAAAA"
    ds.StudyDescription = "CT, \"quoted\" description"
    if number is None:
        del ds.InstanceNumber
    else:
        ds.InstanceNumber = number
    return ds


HEADER = {"pull": "pull-1", "project": "magi", "user": "anna", "study_keys": ["2.25.100"]}


def test_commit_writes_files_and_both_manifests(tmp_path: Path, ct: Dataset) -> None:
    samples = tmp_path / "samples"
    writer = PullWriter(tmp_path, "pull-1")
    assert writer.partial == samples / ".partial-pull-1" and writer.partial.is_dir()
    rows = [writer.write(instance(ct, "2.25.7", "2.25.71", "10")),
            writer.write(instance(ct, "2.25.7", "2.25.72", "2")),
            writer.write(instance(ct, "2.25.5", "2.25.51", None))]
    assert not (samples / "pull-1").exists()  # nothing visible before commit
    final = writer.commit(HEADER)
    assert final == samples / "pull-1"
    assert sorted(p.name for p in samples.iterdir()) == ["pull-1"]  # partial renamed away

    files = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())
    assert files == ["2.25.100/2.25.5/2.25.51.dcm", "2.25.100/2.25.7/2.25.71.dcm",
                     "2.25.100/2.25.7/2.25.72.dcm", "manifest.csv", "manifest.json"]

    manifest = json.loads((final / "manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "instances"} == HEADER
    instances = manifest["instances"]
    # sorted by study, series, then instance number as a number (2 before 10)
    assert [i["sop_uid"] for i in instances] == ["2.25.51", "2.25.72", "2.25.71"]
    assert [i["instance_number"] for i in instances] == ["", "2", "10"]
    for entry in instances:
        data = (final / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        ds = dcmread(final / entry["file"])
        assert ds.SOPInstanceUID == entry["sop_uid"]
        assert ds.file_meta.MediaStorageSOPInstanceUID == entry["sop_uid"]
    assert instances[0] | {"file": "", "sha256": "", "bytes": 0} == {
        "file": "", "sha256": "", "bytes": 0, "patient": "PAAAAAAAAAA", "study_key": "2.25.100",
        "study_date": "2004-01-19", "study_description": 'CT, "quoted" description',
        "series_uid": "2.25.5", "series_description": "", "series_number": "1", "modality": "CT",
        "sop_uid": "2.25.51", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": "",
        "transfer_syntax": ExplicitVRLittleEndian, "rows": 128, "columns": 128, "frames": 1,
    }
    assert {r.sop_uid for r in rows} == {i["sop_uid"] for i in instances}

    with open(final / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == MANIFEST_FIELDS
        table = list(reader)
    assert table == [{k: str(v) for k, v in entry.items()} for entry in instances]


def test_abort_leaves_nothing(tmp_path: Path, ct: Dataset) -> None:
    samples = tmp_path / "samples"
    writer = PullWriter(tmp_path, "pull-2")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    writer.abort()
    assert list(samples.iterdir()) == []
    writer.abort()  # twice is harmless


def test_a_failing_write_can_be_aborted(tmp_path: Path, ct: Dataset) -> None:
    samples = tmp_path / "samples"
    writer = PullWriter(tmp_path, "pull-3")
    broken = instance(ct, "2.25.7", "2.25.71", "1")
    del broken.SOPInstanceUID
    with pytest.raises(ValueError, match="without valid UIDs"):
        writer.write(broken)
    writer.abort()
    assert list(samples.iterdir()) == []


def test_commit_puts_everything_on_disk_with_one_filesystem_sync(tmp_path: Path, ct: Dataset,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(delivery, "unwritten_bytes", lambda: 0)
    monkeypatch.setattr(delivery, "sync_filesystem", lambda fd: synced.append(fd) or True)
    monkeypatch.setattr(delivery.os, "fsync", lambda fd: pytest.fail("fsync per file"))
    writer = PullWriter(tmp_path, "pull-s")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    partial_fd = writer._partial_fd
    monkeypatch.setattr(delivery.os, "fsync", lambda fd: synced.append(-fd))
    writer.commit(HEADER)
    assert synced[0] == partial_fd  # the filesystem, before the rename; then the samples folder
    assert len(synced) == 2 and synced[1] < 0


def test_commit_syncs_each_file_where_there_is_no_syncfs(tmp_path: Path, ct: Dataset,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "sync_filesystem", lambda fd: False)
    synced: list[int] = []
    real = delivery.os.fsync
    monkeypatch.setattr(delivery.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    writer = PullWriter(tmp_path, "pull-f")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    writer.write(instance(ct, "2.25.7", "2.25.72", "2"))
    writer.commit(HEADER)
    # two images, two manifests, the study and series folders, the pull, the samples folder
    assert len(synced) == 2 + 2 + 2 + 1 + 1


@pytest.mark.parametrize("unwritten", [None, delivery.SYNCFS_OTHERS_LIMIT + 1, 10 * 1024**3])
def test_commit_syncs_each_file_when_others_have_much_unwritten(tmp_path: Path, ct: Dataset,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                unwritten: int | None) -> None:
    """syncfs would wait for every other writer's dirty pages too (a notebook writing
    gigabytes to the same disk): then, or when the machine will not say, each file is synced."""
    writer = PullWriter(tmp_path, "pull-d")
    row = writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    others = None if unwritten is None else unwritten + row.bytes  # the pull's own count too
    monkeypatch.setattr(delivery, "unwritten_bytes", lambda: others)
    monkeypatch.setattr(delivery, "sync_filesystem", lambda fd: pytest.fail("syncfs"))
    synced: list[int] = []
    real = delivery.os.fsync
    monkeypatch.setattr(delivery.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    writer.commit(HEADER)
    assert len(synced) == 1 + 2 + 2 + 1 + 1  # image, manifests, study and series, pull, samples


def test_a_big_pull_already_written_out_does_not_hide_others_data(tmp_path: Path, ct: Dataset,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A 256 MB pull the kernel has already written out, 200 MB of another writer's data
    unwritten: subtracting the whole pull would call that 'nothing else' and syncfs would
    wait for it. At most SYNCFS_OTHERS_LIMIT of the pull's own bytes are counted off."""
    writer = PullWriter(tmp_path, "pull-b")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    writer.rows[0] = dataclasses.replace(writer.rows[0], bytes=256 * 1024**2)
    monkeypatch.setattr(delivery, "unwritten_bytes", lambda: 200 * 1024**2)
    monkeypatch.setattr(delivery, "sync_filesystem", lambda fd: pytest.fail("syncfs"))
    writer.commit(HEADER)


def test_commit_syncs_the_filesystem_beside_a_little_unwritten_data(tmp_path: Path, ct: Dataset,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    writer = PullWriter(tmp_path, "pull-l")
    row = writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    monkeypatch.setattr(delivery, "unwritten_bytes", lambda: delivery.SYNCFS_OTHERS_LIMIT + row.bytes)
    synced: list[int] = []
    monkeypatch.setattr(delivery, "sync_filesystem", lambda fd: synced.append(fd) or True)
    writer.commit(HEADER)
    assert len(synced) == 1


def test_unwritten_bytes_reads_this_machine() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo here (not Linux)")
    unwritten = delivery.unwritten_bytes()
    assert isinstance(unwritten, int) and unwritten >= 0


def test_syncfs_errors_fail_the_commit(tmp_path: Path, ct: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    class Failing:
        def __call__(self, fd: int) -> int:
            delivery.ctypes.set_errno(errno.EIO)
            return -1

    monkeypatch.setattr(delivery, "_syncfs", Failing())
    monkeypatch.setattr(delivery, "unwritten_bytes", lambda: 0)
    writer = PullWriter(tmp_path, "pull-e")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    with pytest.raises(OSError) as failed:
        writer.commit(HEADER)
    assert failed.value.errno == errno.EIO
    assert not (tmp_path / "samples" / "pull-e").exists()  # never made visible
    writer.abort()
    assert list((tmp_path / "samples").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another group needs root")
def test_delivered_files_and_folders_belong_to_the_project_group(tmp_path: Path, ct: Dataset) -> None:
    group = 65534  # nogroup: not root's
    os.chown(tmp_path, -1, group)
    writer = PullWriter(tmp_path, "pull-g")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    final = writer.commit(HEADER)
    paths = [final, *final.rglob("*")]
    assert len(paths) == 1 + 2 + 1 + 2  # the pull, study and series folders, the image, 2 manifests
    assert {p.stat().st_gid for p in paths} == {group}


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another group needs root")
def test_pulls_made_before_the_project_had_its_group_are_shared_later(tmp_path: Path, ct: Dataset) -> None:
    """A pull before the project's first server start: the project folder (and so the pull,
    and the samples folder the gateway made) had root's group. share_samples, called as the
    spawner hands the project folder over, gives them the servers' group; it never follows a
    link out, never touches a pull still being written."""
    group = 65534  # nogroup: not root's
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, -1, 0)
    writer = PullWriter(project, "pull-early")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    final = writer.commit(HEADER)
    samples = project / "samples"
    assert samples.stat().st_gid == 0 and final.stat().st_gid == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("not the project's")
    os.chown(outside, -1, 0)
    series_dir = next(p for p in final.rglob("*") if p.is_dir() and p.parent != final)
    (series_dir / "link").symlink_to(outside)
    busy = PullWriter(project, "pull-busy")  # a .partial- folder, being written
    os.chown(project, -1, group)  # the spawner's hand-over
    changed = delivery.share_samples(project, group)
    everything = [samples, final, *final.rglob("*")]
    assert {p.lstat().st_gid for p in everything} == {group}
    assert changed == len(everything)
    assert outside.stat().st_gid == 0  # the link was not followed
    assert busy.partial.stat().st_gid == 0
    assert stat.S_IMODE(samples.stat().st_mode) == delivery.DIR_MODE  # group reads, nobody writes
    assert delivery.share_samples(project, group) == 0  # nothing left to change
    busy.abort()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another group needs root")
def test_a_samples_folder_that_is_not_the_gateways_is_left_alone(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    (samples / "pull-x").mkdir(parents=True)
    os.chown(samples, 65534, 0)  # made by someone else (a server's account)
    assert delivery.share_samples(tmp_path, 65534) == 0
    assert (samples / "pull-x").stat().st_gid == 0
    assert delivery.share_samples(tmp_path / "no-such-project", 65534) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another group needs root")
def test_sharing_samples_never_opens_a_fifo_nor_stops_at_a_vanished_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review's attacks: a FIFO where a folder was (a plain open would block the spawn and
    the hub with it), a pull someone else owns, a file removed during the walk (one pull
    deleted must not leave the others unshared), a samples folder its group could write."""
    import threading

    group = 65534
    samples = tmp_path / "samples"
    for pull in ("p1", "p2", "p3"):
        (samples / pull / "study" / "series").mkdir(parents=True)
        (samples / pull / "manifest.json").write_text("{}")
    os.mkfifo(samples / "p1" / "study" / "pipe")
    (samples / "foreign" / "inner").mkdir(parents=True)
    os.chown(samples / "foreign", 65534, 0)
    samples.chmod(0o775)
    real_chown = os.chown
    vanish = {"manifest.json"}

    def flaky_chown(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name in vanish:
            vanish.clear()
            raise FileNotFoundError(2, "removed meanwhile", name)
        return real_chown(name, *args, **kwargs)

    monkeypatch.setattr(delivery.os, "chown", flaky_chown)
    done = threading.Thread(target=delivery.share_samples, args=(tmp_path, group), daemon=True)
    done.start()
    done.join(20)
    assert not done.is_alive(), "share_samples blocked"
    assert stat.S_IMODE(samples.stat().st_mode) == 0o750  # the group reads, never writes
    for pull in ("p1", "p2", "p3"):
        assert (samples / pull / "study" / "series").stat().st_gid == group
    assert (samples / "p1" / "study" / "pipe").lstat().st_gid == group
    assert (samples / "foreign" / "inner").stat().st_gid == 0  # not the gateway's: not walked


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another group needs root")
def test_a_pull_written_across_the_hand_over_takes_the_new_group(tmp_path: Path, ct: Dataset) -> None:
    """The project folder handed to its servers' group while a pull was being written (the
    first server start): the commit gives the whole pull the new group."""
    os.chown(tmp_path, -1, 0)
    writer = PullWriter(tmp_path, "pull-across")
    writer.write(instance(ct, "2.25.7", "2.25.71", "1"))
    os.chown(tmp_path, -1, 65534)
    delivery.share_samples(tmp_path, 65534)  # the spawner, meanwhile: skips the partial pull
    final = writer.commit(HEADER)
    assert {p.lstat().st_gid for p in [final, *final.rglob("*")]} == {65534}


def test_remove_partials(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    (samples / ".partial-a" / "x" / "y").mkdir(parents=True)
    (samples / ".partial-a" / "x" / "y" / "f.dcm").write_bytes(b"half")
    (samples / ".partial-b").mkdir()
    (samples / "done-pull" / "s").mkdir(parents=True)
    (samples / "done-pull" / "manifest.json").write_text("{}")
    (samples / "notes.partial-c").write_text("a user's file")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".partial-z").mkdir(parents=True)
    (samples / ".partial-link").symlink_to(elsewhere / ".partial-z")
    removed = remove_partials(tmp_path)
    assert sorted(p.name for p in removed) == [".partial-a", ".partial-b"]
    assert sorted(p.name for p in samples.iterdir()) == [".partial-link", "done-pull", "notes.partial-c"]
    assert (samples / "done-pull" / "manifest.json").read_text() == "{}"
    assert (elsewhere / ".partial-z").is_dir()  # a link is not followed
    assert remove_partials(tmp_path) == []
    assert remove_partials(tmp_path / "missing") == []
    (tmp_path / "linked" / "samples").parent.mkdir()
    (tmp_path / "linked" / "samples").symlink_to(elsewhere, target_is_directory=True)
    assert remove_partials(tmp_path / "linked") == []  # a linked samples folder is not searched
    assert (elsewhere / ".partial-z").is_dir()
