"""The airlock's steps in one process: request, identifier checks, review, delivery, audit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.airlock import checks
from services.airlock.airlock import Airlock, Limits
from services.airlock.errors import AuditDown, Conflict, Forbidden, Invalid, NotFound
from services.airlock.records import Review
from services.sample_gateway.audit import verify
from services.sample_gateway.deidentify import DeidPolicy, deidentify
from services.sample_gateway.pseudonyms import ProjectKeys

CONFIG = parse_config(
    """\
data_stewards: [stella]
profiles:
  - {slug: small, name: Small, cpu: 1, memory: 1G}
projects:
  - id: magi
    title: MAGI
    members: [anna, erik]
    stewards: [erik]
    approval: {reference: P-1, expires: 2099-12-31}
  - id: kina
    title: KINA
    members: [bo]
    approval: {reference: P-2, expires: 2099-12-31}
"""
)
KEYS = ProjectKeys(b"k" * 32, "magi")


def _deidentified(name: str, target: Path, **policy: bool) -> Path:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    deidentify(ds, KEYS, DeidPolicy(**policy)).dataset.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture
def airlock(tmp_path: Path) -> Airlock:
    storage = StorageLayout(tmp_path / "data")
    workspace = storage.project_dir("magi")
    (workspace / "results").mkdir(parents=True)
    (workspace / "results" / "summary.csv").write_text("metric,value\nauc,0.91\n")
    (workspace / "results" / "model.txt").write_text("weights: 42\n")
    (workspace / "samples").mkdir()
    _deidentified("CT_small.dcm", workspace / "samples" / "ct.dcm")
    _deidentified("US1_J2KR.dcm", workspace / "samples" / "us.dcm", allow_burned_in_annotation=True)
    (workspace / "raw.dcm").write_bytes(Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes())
    (workspace / "notes.txt").write_text("patient 010203-1234 looked fine\n")
    (workspace / "bundle.zip").write_bytes(b"PK\x03\x04")
    (workspace / "link.csv").symlink_to(workspace / "results" / "summary.csv")
    return Airlock(lambda: CONFIG, storage, tmp_path / "airlock", tmp_path / "egress",
                   limits=Limits(max_files=20, max_bytes=50 * 1024**2),
                   clock=lambda: dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc))


def test_clean_request_waits_for_review_then_approval_delivers_with_manifest(airlock: Airlock) -> None:
    record = airlock.submit("anna", "magi", ["results", "samples/ct.dcm"], "figures for the paper")
    assert record.status == "pending_review" and record.findings == []
    assert [f.path for f in record.files] == ["results/model.txt", "results/summary.csv", "samples/ct.dcm"]
    # What is reviewed is the copy taken now: a later edit in the workspace does not leak out.
    (airlock.storage.project_dir("magi") / "results" / "summary.csv").write_text("changed\n")

    done = airlock.review("stella", record.id, "approve", "aggregate results, no identifiers")
    assert done.status == "exported" and done.review.by == "stella"
    out = airlock.egress / "magi" / record.id
    assert (out / "results" / "summary.csv").read_text() == "metric,value\nauc,0.91\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["approved_by"] == "stella" and manifest["requested_by"] == "anna"
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {f.path: f.sha256 for f in record.files}
    assert not (airlock.root / "staging" / record.id).exists()
    with pytest.raises(Conflict):
        airlock.review("erik", record.id, "reject", "too late")


def test_identifying_dicom_and_archives_are_refused_before_review(airlock: Airlock) -> None:
    record = airlock.submit("anna", "magi", ["raw.dcm", "bundle.zip", "results/summary.csv"])
    assert record.status == "refused"
    codes = {(f["path"], f["code"]) for f in record.findings if f["severity"] == "refuse"}
    assert codes == {("raw.dcm", "identity_not_removed"), ("raw.dcm", "identifying_value"),
                     ("bundle.zip", "archive")}
    identifying = next(f for f in record.findings if f["code"] == "identifying_value")
    assert "PatientName" in identifying["message"] and "PatientID" in identifying["message"]
    assert not (airlock.root / "staging" / record.id).exists()
    with pytest.raises(Conflict):
        airlock.review("stella", record.id, "approve", "no")


def test_flagged_files_need_an_acknowledged_approval(airlock: Airlock) -> None:
    record = airlock.submit("anna", "magi", ["samples/us.dcm", "notes.txt"])
    assert record.status == "pending_review" and record.flagged
    flagged = {(f["path"], f["code"]) for f in record.findings}
    assert flagged == {("samples/us.dcm", "burned_in_risk"), ("notes.txt", "cpr_like")}
    assert "line 1" in next(f["message"] for f in record.findings if f["code"] == "cpr_like")
    with pytest.raises(Invalid, match="flagged files"):
        airlock.review("stella", record.id, "approve", "looked")
    done = airlock.review("stella", record.id, "approve", "looked at the frames: no text",
                          acknowledge_flags=True)
    assert done.status == "exported" and done.review.acknowledged_flags


def test_reject_needs_a_reason_and_removes_the_staged_copy(airlock: Airlock) -> None:
    record = airlock.submit("anna", "magi", ["results/summary.csv"])
    with pytest.raises(Invalid, match="reason"):
        airlock.review("stella", record.id, "reject", "  ")
    done = airlock.review("stella", record.id, "reject", "row-level data, aggregate first")
    assert done.status == "rejected"
    assert not (airlock.root / "staging" / record.id).exists()
    assert not (airlock.egress / "magi").exists()


def test_who_may_request_review_and_see(airlock: Airlock) -> None:
    record = airlock.submit("erik", "magi", ["results/summary.csv"])
    with pytest.raises(Forbidden, match="their own"):
        airlock.review("erik", record.id, "approve", "mine")  # erik is a steward of magi
    with pytest.raises(Forbidden, match="not a data steward"):
        airlock.review("anna", record.id, "approve", "a member is not a steward")
    with pytest.raises(NotFound):
        airlock.review("bo", record.id, "approve", "other project")
    with pytest.raises(NotFound):
        airlock.get("bo", record.id)
    assert [r.id for r in airlock.requests_for("anna")] == [record.id]
    assert airlock.requests_for("bo") == []
    with pytest.raises(Forbidden):
        airlock.submit("bo", "magi", ["results/summary.csv"])
    assert airlock.review("stella", record.id, "approve", "fine").status == "exported"


@pytest.mark.parametrize(
    ("paths", "reason"),
    [(["../kina/x"], "bad_path"), (["/etc/passwd"], "bad_path"), (["link.csv"], "link"),
     (["nope.csv"], "bad_path"), ([], "invalid")],
)
def test_paths_must_stay_in_the_workspace(airlock: Airlock, paths: list[str], reason: str) -> None:
    with pytest.raises(Invalid) as caught:
        airlock.submit("anna", "magi", paths)
    assert caught.value.reason == reason


def test_every_step_is_audited_in_a_verifiable_chain_without_identifiers(airlock: Airlock) -> None:
    refused = airlock.submit("anna", "magi", ["raw.dcm"])
    approved = airlock.submit("anna", "magi", ["results/summary.csv"])
    airlock.review("stella", approved.id, "approve", "ok")
    rejected = airlock.submit("anna", "magi", ["results/model.txt"])
    airlock.review("erik", rejected.id, "reject", "not needed")
    records = airlock.audit.records()
    steps = [(r["action"], r["request"], r["outcome"], r["actor"]) for r in records]
    assert steps == [
        ("export_requested", refused.id, "refused", "anna"),
        ("export_requested", approved.id, "pending_review", "anna"),
        ("export_reviewed", approved.id, "approved", "stella"),
        ("export_delivered", approved.id, "exported", "airlock"),
        ("export_requested", rejected.id, "pending_review", "anna"),
        ("export_reviewed", rejected.id, "rejected", "erik"),
    ]
    assert records[0]["findings"][0] == {"path": "raw.dcm", "code": "identity_not_removed"}
    assert records[2]["reason"] == "ok" and records[3]["destination"] == f"magi/{approved.id}"
    assert verify(airlock.audit.path).ok
    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    text = airlock.audit.path.read_text()
    assert str(source.PatientName) not in text and str(source.PatientID) not in text


def test_no_step_without_its_audit_record(airlock: Airlock) -> None:
    airlock.audit.path.write_text("not a record\n")  # appends now fail closed
    with pytest.raises(AuditDown):
        airlock.submit("anna", "magi", ["results/summary.csv"])
    assert airlock.store.all() == []
    assert not any((airlock.root / "staging").iterdir())


def test_an_approval_interrupted_before_delivery_is_delivered_at_start(airlock: Airlock) -> None:
    record = airlock.submit("anna", "magi", ["results/summary.csv"])
    with airlock.store.locked():  # the state a crash between review and delivery leaves
        saved = airlock.store.get(record.id)
        saved.status = "approved"
        saved.review = Review(by="stella", decision="approve", reason="ok", at="2026-12-03T12:00:00+00:00")
        airlock.store.save(saved)
    assert airlock.recover() == [record.id]
    assert airlock.store.get(record.id).status == "exported"
    assert (airlock.egress / "magi" / record.id / "results" / "summary.csv").exists()
    assert airlock.recover() == []


def test_check_table_and_pseudonymised_dicom_passes(tmp_path: Path) -> None:
    assert set(checks.CODES.values()) and all(sev in (checks.REFUSE, checks.FLAG) for sev, _ in checks.CODES.values())
    clean = _deidentified("MR_small.dcm", tmp_path / "mr.dcm")
    assert checks.check_file(clean, "mr.dcm") == []
    ds = pydicom.dcmread(clean)
    ds.PatientBirthDate = "19700101"
    ds.save_as(tmp_path / "dob.dcm")
    found = checks.check_file(tmp_path / "dob.dcm", "dob.dcm")
    assert [(f.code, f.detail) for f in found] == [("identifying_value", "PatientBirthDate")]
    (tmp_path / "plain.txt").write_text("numbers 1234567890123 are not CPR\n")
    assert checks.check_file(tmp_path / "plain.txt", "plain.txt") == []
