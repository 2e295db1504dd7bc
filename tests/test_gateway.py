"""The sample gateway against the real Orthanc: search, pull, de-identify, limits, audit."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import json
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from demo.archive import DemoArchive
from services.sample_gateway.archive import ArchiveSettings
from services.sample_gateway.audit import verify
from services.sample_gateway.errors import (
    ArchiveTimeout,
    ArchiveUnavailable,
    BadRequest,
    GatewayError,
    LimitExceeded,
    NotAllowed,
    NotFound,
)
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.state import Pull, now

pytestmark = pytest.mark.orthanc


def identifying_values(archive: DemoArchive) -> set[str]:
    """Every value in the archive that must never reach a researcher."""
    values: set[str] = set()
    for e in archive.entries:
        values.update({e.patient_id, e.patient_birth_date, e.accession_number, e.study_instance_uid,
                       e.series_instance_uid, e.sop_instance_uid, e.study_date})
        if e.frame_of_reference_uid:
            values.add(e.frame_of_reference_uid)
        values.update(part for part in e.patient_name.replace("^", " ").split() if len(part) >= 3)
    values.discard("")
    return values


async def search(gateway: Gateway, user: str = "anna", project: str = "magi", **criteria: object) -> list[dict]:
    return (await gateway.search(user, project, StudyCriteria(**criteria)))["studies"]


async def pull(gateway: Gateway, keys: list[str], user: str = "anna", project: str = "magi") -> dict:
    started = await gateway.start_pull(user, project, keys)
    await gateway.wait_idle()
    return gateway.pull_status(user, started["id"])


async def test_search_shows_no_identifying_values(make_gateway: Callable[..., Gateway], demo_archive: DemoArchive) -> None:
    gateway = make_gateway()
    studies = await search(gateway)
    assert studies, "the demo archive has studies this project may see"
    shown = json.dumps(studies)
    leaked = sorted(v for v in identifying_values(demo_archive) if v in shown)
    assert leaked == []
    for study in studies:
        assert study["study_key"].startswith("2.25.")
        assert study["patient"].startswith("P") and len(study["patient"]) == 11
        assert study["age"].endswith("years")
        assert set(study["modalities"]) <= {"CT", "MR", "CR", "NM"}  # the project's modalities only
    await gateway.aclose()


async def test_search_criteria_modality_description_dates(make_gateway: Callable[..., Gateway], demo_archive: DemoArchive) -> None:
    gateway = make_gateway()
    ct = await search(gateway, modality="CT")
    assert ct and all(s["modalities"] == ["CT"] for s in ct)
    # Case, accents and word order do not matter; Orthanc gets wildcards only.
    thorax = await search(gateway, description="thorax")
    assert {s["description"] for s in thorax} == {e.study_description for e in demo_archive.entries
                                                  if "THORAX" in e.study_description}
    assert [s["description"] for s in await search(gateway, description="follow-up THÓRAX")] == ["CT THORAX FOLLOW-UP"]
    # Dates are searched as researchers see them: shifted.
    everything = await search(gateway)
    shown = sorted(s["study_date"] for s in everything)
    for day in (shown[0], shown[-1]):
        on_day = await search(gateway, date_from=day, date_to=day)
        assert on_day and sorted(s["study_key"] for s in on_day) == sorted(
            s["study_key"] for s in everything if s["study_date"] == day)
    after = await search(gateway, date_from=shown[1])
    assert sorted(s["study_key"] for s in after) == sorted(
        s["study_key"] for s in everything if s["study_date"] >= shown[1])
    # The original dates find nothing their shifted dates would not (no date is shifted by 0).
    for original in {e.study_date for e in demo_archive.entries}:
        day = f"{original[:4]}-{original[4:6]}-{original[6:]}"
        assert all(s["study_date"] == day for s in await search(gateway, date_from=day, date_to=day))
    assert await search(gateway, description="no such study anywhere") == []
    await gateway.aclose()


async def test_follow_up_studies_share_a_pseudonym_and_keep_their_interval(
    make_gateway: Callable[..., Gateway], demo_archive: DemoArchive
) -> None:
    gateway = make_gateway()
    studies = await search(gateway, description="thorax")
    assert len(studies) == 2 and studies[0]["patient"] == studies[1]["patient"]
    import datetime as dt

    real = sorted({e.study_date for e in demo_archive.entries if "THORAX" in e.study_description})
    real_days = (dt.date.fromisoformat(f"{real[1][:4]}-{real[1][4:6]}-{real[1][6:]}")
                 - dt.date.fromisoformat(f"{real[0][:4]}-{real[0][4:6]}-{real[0][6:]}")).days
    shown = sorted(dt.date.fromisoformat(s["study_date"]) for s in studies)
    assert (shown[1] - shown[0]).days == real_days
    assert shown[0].strftime("%Y%m%d") not in real  # shifted
    other_project = make_gateway()
    other = await search(other_project, user="bo", project="kina", description="thorax")
    assert {s["patient"] for s in other}.isdisjoint({s["patient"] for s in studies})
    await gateway.aclose()
    await other_project.aclose()


async def test_pull_delivers_deidentified_files_with_manifest_and_audit(
    make_gateway: Callable[..., Gateway], demo_archive: DemoArchive, tmp_path: Path
) -> None:
    gateway = make_gateway()
    studies = await search(gateway, description="thorax")
    result = await pull(gateway, [s["study_key"] for s in studies])
    assert result["status"] == "done", result
    assert result["instances_done"] == result["instances_total"] == sum(s["instances"] for s in studies)
    folder = gateway.storage.project_dir("magi") / result["path"]
    files = sorted(folder.rglob("*.dcm"))
    assert len(files) == result["instances_done"]

    # No identifying value of the archive in any delivered byte (names, IDs, dates, UIDs).
    secrets_ = identifying_values(demo_archive)
    for path in files + [folder / "manifest.json", folder / "manifest.csv"]:
        data = path.read_bytes()
        leaked = [v for v in secrets_ if v.encode() in data]
        assert leaked == [], f"{path.name} holds {leaked}"

    first = pydicom.dcmread(files[0])
    assert first.PatientIdentityRemoved == "YES"
    assert first.PatientID == studies[0]["patient"] and str(first.PatientName) == studies[0]["patient"]
    assert str(first.StudyInstanceUID) in {s["study_key"] for s in studies}
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert not any(elem.tag.is_private for elem in first.iterall())
    assert "PatientBirthDate" not in first or not first.PatientBirthDate

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["project"] == "magi" and manifest["user"] == "anna"
    assert len(manifest["instances"]) == len(files)
    row = manifest["instances"][0]
    assert hashlib.sha256((folder / row["file"]).read_bytes()).hexdigest() == row["sha256"]
    with open(folder / "manifest.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(files)

    # Same study pulled again: the same pseudonymous UIDs (consistent per project).
    again = await pull(gateway, [studies[0]["study_key"]])
    again_uids = {p.stem for p in (gateway.storage.project_dir("magi") / again["path"]).rglob("*.dcm")}
    assert again_uids <= {p.stem for p in files}

    records = gateway.audit.records()
    assert [r["action"] for r in records] == ["search", "pull", "pull"]
    assert records[1]["actor"] == "anna" and records[1]["instances"] == len(files)
    assert records[1]["study_keys"] == [s["study_key"] for s in studies]
    assert verify(gateway.audit.path).ok
    audit_text = gateway.audit.path.read_text()
    assert [v for v in secrets_ if v in audit_text] == []
    await gateway.aclose()


@pytest.mark.parametrize(
    ("user", "project", "error", "reason", "words"),
    [
        ("bo", "magi", NotAllowed, "not_member", "not a member of a project called 'magi'"),
        ("carla", "oldproj", NotAllowed, "approval_expired", "expired on 2020-01-31"),
        ("dan", "noarchive", NotAllowed, "archive_not_approved", "not approved to pull samples"),
    ],
)
async def test_refusals_say_why(make_gateway: Callable[..., Gateway], user: str, project: str,
                                error: type, reason: str, words: str) -> None:
    gateway = make_gateway()
    with pytest.raises(error) as caught:
        await search(gateway, user=user, project=project)
    assert caught.value.reason == reason and words in caught.value.message
    with pytest.raises(error):
        await gateway.start_pull(user, project, ["2.25.1"])
    await gateway.aclose()


async def test_modality_outside_the_approval_is_refused(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    with pytest.raises(NotAllowed, match="approved for CT, MR, CR, NM only, not US"):
        await search(gateway, modality="US")
    await gateway.aclose()


async def test_limits_name_the_limit_and_the_usage(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    every = await search(gateway)
    with pytest.raises(LimitExceeded) as caught:
        await gateway.start_pull("anna", "magi", [s["study_key"] for s in every[:4]])
    assert caught.value.reason == "max_studies_per_pull" and "selected 4 studies" in caught.value.message
    kina = make_gateway()
    big = max(await search(kina, user="bo", project="kina", modality="CT"), key=lambda s: s["instances"])
    with pytest.raises(LimitExceeded) as caught:
        await kina.start_pull("bo", "kina", [big["study_key"]])
    assert caught.value.reason == "max_instances_per_pull"
    assert f"hold {big['instances']} images; this project may pull at most 10 per pull" in caught.value.message
    mr = await search(kina, user="bo", project="kina", modality="CR")
    done = await pull(kina, [mr[0]["study_key"]], user="bo", project="kina")
    assert done["status"] == "done"
    mr_studies = await search(kina, user="bo", project="kina", modality="MR")
    small_mr = min(mr_studies, key=lambda s: s["instances"])
    done = await pull(kina, [small_mr["study_key"]], user="bo", project="kina")
    assert done["status"] == "done", done
    with pytest.raises(LimitExceeded) as caught:
        await kina.start_pull("bo", "kina", [mr[0]["study_key"]])
    assert caught.value.reason == "max_studies_per_day"
    assert "pulled 2 studies today; the daily limit is 2" in caught.value.message
    await gateway.aclose()
    await kina.aclose()


async def test_unknown_or_repeated_study_keys(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    with pytest.raises(NotFound, match="not from a search of project magi"):
        await gateway.start_pull("anna", "magi", ["2.25.12345"])
    studies = await search(gateway)
    with pytest.raises(BadRequest, match="selected twice"):
        await gateway.start_pull("anna", "magi", [studies[0]["study_key"]] * 2)
    # A key found by one project is not valid for another.
    with pytest.raises(NotFound):
        await gateway.start_pull("bo", "kina", [studies[0]["study_key"]])
    await gateway.aclose()


async def test_burned_in_annotation_refused_unless_approved(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    results = []
    for study in await search(gateway, user="bo", project="kina", modality="US"):
        results.append((study, await pull(gateway, [study["study_key"]], user="bo", project="kina")))
    refused = [(s, r) for s, r in results if r["status"] == "failed"]
    assert refused, "the demo archive holds ultrasound without a BurnedInAnnotation flag"
    study, result = refused[0]
    assert result["error"]["reason"] == "nothing_delivered"
    assert "pixels" in result["error"]["message"] and "approval does not allow" in result["error"]["message"]
    assert result["instances_refused"] == study["instances"]
    for _, done in results:
        if done["status"] == "done":  # only images that say they carry no burned-in text
            for path in (gateway.storage.project_dir("kina") / done["path"]).rglob("*.dcm"):
                assert pydicom.dcmread(path).get("BurnedInAnnotation") == "NO"
    assert not any(p.name.startswith(".partial") for p in gateway.storage.samples_dir("kina").iterdir())

    # The same study for a project whose approval covers burned-in text is delivered.
    config = gateway.config()
    kina = config.project("kina")
    allowed = kina.model_copy(update={"archive": kina.archive.model_copy(update={"allow_burned_in_annotation": True})})
    changed = config.model_copy(update={"projects": [allowed if p.id == "kina" else p for p in config.projects]})
    gateway.config = lambda: changed
    again = await pull(gateway, [study["study_key"]], user="bo", project="kina")
    assert again["status"] == "done" and again["instances_done"] == study["instances"]
    await gateway.aclose()


async def test_archive_down_is_a_clear_error_and_writes_nothing(make_gateway: Callable[..., Gateway]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    gateway = make_gateway(ArchiveSettings(f"http://127.0.0.1:{closed_port}/dicom-web", timeout_seconds=2,
                                           name="Test RIPA"))
    with pytest.raises(ArchiveUnavailable, match="Test RIPA cannot be reached right now"):
        await search(gateway)
    assert gateway.audit.records()[-1]["outcome"] == "failed"
    await gateway.aclose()


async def test_stalled_archive_times_out_within_the_configured_time(make_gateway: Callable[..., Gateway]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stall() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)  # never answer
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stall, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    gateway = make_gateway(ArchiveSettings(f"http://127.0.0.1:{port}/dicom-web", timeout_seconds=1.5,
                                           name="Test RIPA"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ArchiveTimeout, match="did not answer within 1.5 s"):
        await search(gateway)
    assert loop.time() - started < 5
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()
    await gateway.aclose()


async def test_restart_fails_interrupted_pulls_and_removes_partial_files(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    gateway.state.add_pull(Pull(id="20260101T000000-anna-abcdef", project="magi", username="anna",
                                status="running", created=now(), studies=1, instances_total=5))
    partial = gateway.storage.samples_dir("magi") / ".partial-20260101T000000-anna-abcdef"
    partial.mkdir(parents=True)
    (partial / "x.dcm").write_bytes(b"half")
    assert gateway.recover() == ["20260101T000000-anna-abcdef"]
    status = gateway.pull_status("anna", "20260101T000000-anna-abcdef")
    assert status["status"] == "failed" and status["error"]["reason"] == "interrupted"
    assert not partial.exists()
    assert gateway.recover() == []  # idempotent
    await gateway.aclose()


async def test_pull_status_only_for_project_members(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    studies = await search(gateway, modality="CR")
    done = await pull(gateway, [studies[0]["study_key"]])
    with pytest.raises(NotFound):
        gateway.pull_status("bo", done["id"])
    assert gateway.list_pulls("anna", "magi")[0]["id"] == done["id"]
    with pytest.raises(NotAllowed):
        gateway.list_pulls("bo", "magi")
    await gateway.aclose()


async def test_a_member_deletes_a_delivered_pull_audited_and_still_counted(make_gateway: Callable[..., Gateway]) -> None:
    from services.sample_gateway.errors import Conflict

    gateway = make_gateway()
    studies = await search(gateway, modality="CR")
    done = await pull(gateway, [studies[0]["study_key"]])
    folder = gateway.storage.project_dir("magi") / done["path"]
    assert folder.is_dir()
    since = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    used = gateway.state.usage_since("magi", since)

    with pytest.raises(NotFound):  # not a member of magi: as if it did not exist
        await gateway.delete_pull("bo", done["id"])
    assert folder.is_dir()

    deleted = await gateway.delete_pull("anna", done["id"])
    assert deleted["status"] == "deleted" and not folder.exists()
    assert deleted["path"] is None and gateway.pull_status("anna", done["id"])["path"] is None
    assert (gateway.storage.project_dir("magi") / "samples").is_dir()  # only that pull went
    assert gateway.state.usage_since("magi", since) == used  # deleting frees no daily allowance
    actions = [(r["action"], r.get("outcome")) for r in gateway.audit.records() if r.get("pull") == done["id"]]
    assert actions[-2:] == [("delete", "requested"), ("delete", "deleted")]
    with pytest.raises(Conflict, match="no files to delete"):
        await gateway.delete_pull("anna", done["id"])
    await gateway.aclose()


async def test_deleting_leaves_a_folder_moved_into_the_pulls_place_alone(
    make_gateway: Callable[..., Gateway]
) -> None:
    """A member moves another delivered pull to the name of the one being deleted: the
    gateway removes only the folder it delivered under that name, never a stand-in."""
    gateway = make_gateway()
    studies = await search(gateway, modality="CR")
    first = await pull(gateway, [studies[0]["study_key"]])
    second = await pull(gateway, [studies[0]["study_key"]])
    samples = gateway.storage.project_dir("magi") / "samples"
    shutil.rmtree(samples / first["id"])  # gone by hand: its name is free ...
    (samples / second["id"]).rename(samples / first["id"])  # ... and another pull is put there
    with pytest.raises(GatewayError, match="not the folder the gateway delivered"):
        await gateway.delete_pull("anna", first["id"])
    kept = samples / first["id"]
    assert (kept / "manifest.json").is_file() and any(kept.rglob("*.dcm"))
    records = [r for r in gateway.audit.records() if r.get("pull") == first["id"]]
    assert [r.get("outcome") for r in records[-2:]] == ["requested", "failed"]
    assert gateway.state.get_pull(first["id"]).status == "done"
    # put back where it belongs, the second pull deletes as usual
    kept.rename(samples / second["id"])
    deleted = await gateway.delete_pull("anna", second["id"])
    assert deleted["status"] == "deleted" and not (samples / second["id"]).exists()
    await gateway.aclose()


def test_an_older_state_database_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from services.sample_gateway.state import GatewayState

    database = tmp_path / "gateway.sqlite"
    with sqlite3.connect(database) as connection:  # the pulls table as it was before
        connection.execute(
            "CREATE TABLE pulls (id VARCHAR(64) PRIMARY KEY, project VARCHAR(64), username VARCHAR(64), "
            "status VARCHAR(16), created DATETIME, finished DATETIME, studies INTEGER, "
            "instances_total INTEGER, instances_done INTEGER, instances_refused INTEGER, "
            "bytes_received INTEGER, error TEXT, error_reason VARCHAR(64), path TEXT)")
        connection.execute("INSERT INTO pulls VALUES ('p-old', 'magi', 'anna', 'done', "
                           "'2026-12-01 10:00:00', NULL, 1, 1, 1, 0, 10, NULL, NULL, 'samples/p-old')")
    state = GatewayState.at(tmp_path)
    old = state.get_pull("p-old")
    assert old is not None and old.path == "samples/p-old" and old.folder_identity is None
    state.update_pull("p-old", folder_identity="1:2")
    assert GatewayState.at(tmp_path).get_pull("p-old").folder_identity == "1:2"


async def test_deleting_refuses_a_link_planted_in_place_of_the_pull(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """A server could swap its pull folder for a link to elsewhere: nothing there is removed."""
    gateway = make_gateway()
    studies = await search(gateway, modality="CR")
    done = await pull(gateway, [studies[0]["study_key"]])
    folder = gateway.storage.project_dir("magi") / done["path"]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    shutil.rmtree(folder)
    folder.symlink_to(victim, target_is_directory=True)
    with pytest.raises(GatewayError):
        await gateway.delete_pull("anna", done["id"])
    assert (victim / "keep.txt").read_text() == "keep"
    records = [r for r in gateway.audit.records() if r.get("pull") == done["id"]]
    assert [r.get("outcome") for r in records[-2:]] == ["requested", "failed"]
    assert gateway.state.get_pull(done["id"]).status == "done"
    await gateway.aclose()
