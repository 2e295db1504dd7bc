"""Reproductions of an adversarial review of the sample gateway, one test per finding.

1. Daily limits held only for pulls started one after another and finished (usage read once,
   before the archive was asked, running pulls counted 0 bytes).
2. The gateway followed symbolic links in the researcher-writable project workspace.
3. One object with an unreadable value failed the whole pull and put the value in the log.
4. A pull whose folder could not be created stayed "running" for ever.
5. The HTTP API: deep JSON, huge bodies, huge offsets, long inputs echoed.
6. Delivered samples were world-readable.

Small inputs: a tiny DICOMweb archive in this process (:mod:`tests.fixtures.fake_dicomweb`),
pydicom's CT_small.dcm (39 kB an image), except where the real Orthanc is named.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import stat
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway import app as gateway_app
from services.sample_gateway.archive import ArchiveSettings, DicomWebArchive
from services.sample_gateway.audit import AuditLog
from services.sample_gateway.errors import LimitExceeded
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.logsafety import configure_logging
from services.sample_gateway.pipeline import Workers
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.state import GatewayState
from tests.fixtures.fake_dicomweb import FakeArchive, serve

CT = "CT_small.dcm"


def config_text(url: str, limits: str) -> str:
    return textwrap.dedent(f"""\
        archive:
          name: Fake RIPA
          dicomweb_url: {url}
          timeout_seconds: 5
        profiles: [{{slug: small, name: Small, cpu: 1, memory: 1G}}]
        projects:
          - id: magi
            title: MAGI
            members: [anna]
            approval: {{reference: T-1, expires: 2099-12-31}}
            archive:
              enabled: true
              limits: {{max_studies_per_pull: 5, max_instances_per_pull: 100, {limits}}}
          - id: kina
            title: KINA
            members: [bo]
            approval: {{reference: T-2, expires: 2099-12-31}}
            archive: {{enabled: true}}
        """)


@asynccontextmanager
async def gateway_for(fake: FakeArchive, tmp_path: Path, limits: str = "max_studies_per_day: 1000",
                      workers: Workers | None = None) -> AsyncIterator[Gateway]:
    async with serve(fake) as url:
        config = parse_config(config_text(url, limits))
        private = tmp_path / "gateway"
        gateway = Gateway(
            config=lambda: config,
            storage=StorageLayout(tmp_path / "data"),
            archive=DicomWebArchive(ArchiveSettings(url, timeout_seconds=5, name="Fake RIPA")),
            state=GatewayState.at(private),
            audit=AuditLog(private / "audit.jsonl"),
            keys_dir=private / "keys",
            workers=workers or Workers(0),
        )
        try:
            yield gateway
        finally:
            await gateway.aclose()


async def study_keys(gateway: Gateway) -> list[str]:
    answer = await gateway.search("anna", "magi", StudyCriteria())
    return sorted(s["study_key"] for s in answer["studies"])


async def pull(gateway: Gateway, keys: list[str]) -> dict[str, Any]:
    started = await gateway.start_pull("anna", "magi", keys)
    await gateway.wait_idle()
    return gateway.pull_status("anna", started["id"])


def archive_of(studies: int, images: int) -> FakeArchive:
    fake = FakeArchive()
    for number in range(studies):
        fake.add_study(f"CT THORAX {number}", [(CT, "axial", images)])
    return fake


def midnight() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def delivered_files(gateway: Gateway) -> list[Path]:
    return sorted(p for p in gateway.storage.samples_dir("magi").rglob("*.dcm"))


# -- 1. daily limits -------------------------------------------------------------------------

async def test_daily_byte_limit_holds_for_pulls_started_together(tmp_path: Path) -> None:
    """Three pulls of 4 images (157 kB each) against 300 kB a day, started one after another
    without waiting: all three were delivered (472 kB). Now the bytes of running pulls count,
    so pulls stop where the day's total would pass the limit (when they run side by side,
    possibly all of them: how many bytes a pull brings is known only as they come)."""
    fake = archive_of(3, 4)
    async with gateway_for(fake, tmp_path, "max_studies_per_day: 1000, max_bytes_per_day: 300000") as gateway:
        keys = await study_keys(gateway)
        started, refused = [], []
        for key in keys:
            try:
                started.append(await gateway.start_pull("anna", "magi", [key]))
            except LimitExceeded as error:
                refused.append(error.reason)
        await gateway.wait_idle()
        results = [gateway.pull_status("anna", s["id"]) for s in started]
        done = [r for r in results if r["status"] == "done"]
        assert sum(r["bytes"] for r in done) <= 300000, [(r["status"], r["bytes"]) for r in results]
        assert sum(p.stat().st_size for p in delivered_files(gateway)) <= 300000
        for result in results:
            if result["status"] == "failed":
                assert result["error"]["reason"] == "max_bytes_per_day", result
                assert "nothing was delivered" in result["error"]["message"]
        assert set(refused) <= {"max_bytes_per_day"}
        assert gateway.state.usage_since("magi", midnight()).bytes <= 300000


async def test_daily_byte_limit_stops_a_later_pull_during_its_transfer(tmp_path: Path) -> None:
    fake = archive_of(3, 4)
    async with gateway_for(fake, tmp_path, "max_studies_per_day: 1000, max_bytes_per_day: 300000") as gateway:
        keys = await study_keys(gateway)
        first = await pull(gateway, [keys[0]])
        assert first["status"] == "done" and 150_000 < first["bytes"] < 160_000
        second = await pull(gateway, [keys[1]])
        assert second["status"] == "failed" and second["error"]["reason"] == "max_bytes_per_day"
        assert 0 < second["bytes"] <= 300000 - first["bytes"] + 40_000  # stopped at the object that passed
        assert sorted(p.name for p in gateway.storage.samples_dir("magi").iterdir()) == [first["id"]]
        assert gateway.state.usage_since("magi", midnight()).bytes == first["bytes"]
        projects = {p["id"]: p for p in gateway.projects_for("anna")}
        assert projects["magi"]["bytes_pulled_today"] == first["bytes"]


async def test_daily_study_limit_holds_for_concurrent_requests(tmp_path: Path) -> None:
    """Four requests of one study each at the same moment against 2 studies a day."""
    fake = archive_of(4, 1)
    async with gateway_for(fake, tmp_path, "max_studies_per_day: 2") as gateway:
        keys = await study_keys(gateway)
        answers = await asyncio.gather(*(gateway.start_pull("anna", "magi", [k]) for k in keys),
                                       return_exceptions=True)
        accepted = [a for a in answers if isinstance(a, dict)]
        refused = [a for a in answers if isinstance(a, LimitExceeded)]
        assert len(accepted) == 2 and len(refused) == 2, answers
        assert {r.reason for r in refused} == {"max_studies_per_day"}
        await gateway.wait_idle()
        # A refused pull leaves nothing: no record, no folder, no audit record.
        assert sorted(p.id for p in gateway.state.pulls_of("magi")) == sorted(a["id"] for a in accepted)
        assert len([p for p in gateway.storage.samples_dir("magi").iterdir()]) == 2
        assert [r["action"] for r in gateway.audit.records()].count("pull") == 2
        assert gateway.state.usage_since("magi", midnight()).studies == 2


async def test_daily_image_limit_counts_running_pulls(tmp_path: Path) -> None:
    fake = archive_of(3, 3)
    async with gateway_for(fake, tmp_path, "max_studies_per_day: 100, max_instances_per_day: 7") as gateway:
        keys = await study_keys(gateway)
        answers = await asyncio.gather(*(gateway.start_pull("anna", "magi", [k]) for k in keys),
                                       return_exceptions=True)
        assert [type(a).__name__ for a in answers].count("LimitExceeded") == 1, answers
        await gateway.wait_idle()
        assert len(delivered_files(gateway)) == 6


# -- 2. links in the project workspace -------------------------------------------------------

async def test_a_symlinked_samples_folder_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = archive_of(1, 2)
    elsewhere = tmp_path / "other-project-or-egress"
    elsewhere.mkdir()
    async with gateway_for(fake, tmp_path) as gateway:
        project = gateway.storage.project_dir("magi")
        project.mkdir(parents=True)
        (project / "samples").symlink_to(elsewhere, target_is_directory=True)
        keys = await study_keys(gateway)
        with caplog.at_level(logging.WARNING, logger="sample_gateway"):
            result = await pull(gateway, keys)
        assert result["status"] == "failed", result
        assert result["error"]["reason"] == "workspace_unusable"
        assert "samples" in result["error"]["message"] and "symbolic link" in result["error"]["message"]
        assert list(elsewhere.iterdir()) == []
        assert "symbolic link" in caplog.text and str(project / "samples") in caplog.text  # for the admins
        assert gateway.audit.records()[-1]["outcome"] == "failed"


def _plant_on_first_part(gateway: Gateway, plant: Callable[[Path], None]) -> None:
    """Run ``plant(partial folder)`` when the first object of a pull arrives (a researcher
    racing the pull), by wrapping the archive's retrieve."""
    original = gateway.archive.retrieve_series
    samples = gateway.storage.samples_dir("magi")

    async def retrieve_series(study_uid: str, series_uid: str) -> AsyncIterator[Any]:
        planted = False
        async for part in original(study_uid, series_uid):
            if not planted:
                partial, = samples.glob(".partial-*")
                plant(partial)
                planted = True
            yield part

    gateway.archive.retrieve_series = retrieve_series  # type: ignore[method-assign]


async def test_a_link_planted_for_an_instance_file_is_not_followed(tmp_path: Path) -> None:
    fake = archive_of(1, 2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    async with gateway_for(fake, tmp_path) as gateway:
        keys = await study_keys(gateway)
        first = await pull(gateway, keys)  # the same study again gives the same file names
        assert first["status"] == "done"
        folder = gateway.storage.project_dir("magi") / first["path"]
        names = [p.relative_to(folder) for p in folder.rglob("*.dcm")]
        modes: list[int] = []

        def plant(partial: Path) -> None:
            modes.append(stat.S_IMODE(partial.stat().st_mode))
            for name in names:
                (partial / name).parent.mkdir(parents=True, exist_ok=True)
                (partial / name).symlink_to(victim)

        _plant_on_first_part(gateway, plant)
        second = await pull(gateway, keys)
        assert victim.read_text() == "precious\n"
        assert modes == [0o700]  # while it fills, only the gateway's user can enter the folder
        assert second["status"] == "failed" and second["error"]["reason"] == "workspace_unusable", second
        assert sorted(p.name for p in gateway.storage.samples_dir("magi").iterdir()) == [first["id"]]


async def test_a_link_planted_for_a_study_folder_is_not_followed(tmp_path: Path) -> None:
    fake = archive_of(1, 2)
    victim_dir = tmp_path / "victim-folder"
    victim_dir.mkdir()
    async with gateway_for(fake, tmp_path) as gateway:
        keys = await study_keys(gateway)

        def plant(partial: Path) -> None:
            (partial / keys[0]).symlink_to(victim_dir, target_is_directory=True)

        _plant_on_first_part(gateway, plant)
        result = await pull(gateway, keys)
        assert list(victim_dir.iterdir()) == []
        assert result["status"] == "failed" and result["error"]["reason"] == "workspace_unusable", result
        assert list(gateway.storage.samples_dir("magi").iterdir()) == []


# -- 3. one unreadable object ------------------------------------------------------------------

def _hansen(data: bytes) -> bytes:
    """NumberOfFrames (IS) holding a name: explicit VR little endian, the length changes."""
    element = b"\x28\x00\x08\x00IS\x02\x001 "
    assert data.count(element) == 1
    return data.replace(element, b"\x28\x00\x08\x00IS\x06\x00Hansen")


def _with_frames(ds: Any) -> None:
    ds.NumberOfFrames = 1


async def test_an_unreadable_object_is_refused_alone_and_its_value_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    fake = FakeArchive()
    study = fake.add_study("CT THORAX", [(CT, "axial", 3)], change=_with_frames)
    bad = study.series[0].instances[1]
    bad.data = _hansen(bad.data)
    configure_logging()  # as the gateway process does at start
    async with gateway_for(fake, tmp_path) as gateway:
        keys = await study_keys(gateway)
        with caplog.at_level(logging.INFO):
            result = await pull(gateway, keys)
        assert result["status"] == "done", result
        assert result["instances_done"] == 2 and result["instances_refused"] == 1
        folder = gateway.storage.project_dir("magi") / result["path"]
        manifest = json.loads((folder / "manifest.json").read_text())
        (message, count), = manifest["refused"].items()
        assert count == 1 and "NumberOfFrames" in message and "Hansen" not in message
        assert len(manifest["instances"]) == 2
        out, err = capfd.readouterr()
        assert "Hansen" not in caplog.text + out + err
        # httpx would log every WADO-RS URL (tornado's lines are the fake archive's own)
        gateway_lines = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("tornado"))
        assert study.uid not in gateway_lines + out + err and "HTTP Request" not in gateway_lines
        assert "NumberOfFrames" in caplog.text  # the admins learn which attribute
        assert "Hansen" not in gateway.audit.path.read_text()


def _worker_logging() -> tuple[bool, list[str]]:
    """In a worker process: are warnings sent through logging, which filters have the handlers."""
    import warnings

    root = logging.getLogger()
    return (warnings.showwarning.__module__ == "logging",
            [type(f).__name__ for h in root.handlers for f in h.filters])


async def test_worker_processes_keep_values_out_of_their_log(tmp_path: Path) -> None:
    fake = FakeArchive()
    study = fake.add_study("CT THORAX", [(CT, "axial", 2)], change=_with_frames)
    study.series[0].instances[0].data = _hansen(study.series[0].instances[0].data)
    workers = Workers(1)
    async with gateway_for(fake, tmp_path, workers=workers) as gateway:
        keys = await study_keys(gateway)
        result = await pull(gateway, keys)
        assert result["status"] == "done" and result["instances_refused"] == 1, result
        configured, filters = await workers.run(_worker_logging)
        assert configured and "NoDicomValues" in filters


# -- 4. pulls that cannot start ----------------------------------------------------------------

@pytest.mark.parametrize("obstacle", ["samples is a file", "partial folder exists"])
async def test_a_pull_that_cannot_create_its_folder_fails_and_is_not_counted(
    tmp_path: Path, obstacle: str
) -> None:
    fake = archive_of(1, 1)
    async with gateway_for(fake, tmp_path, "max_studies_per_day: 1") as gateway:
        keys = await study_keys(gateway)
        samples = gateway.storage.samples_dir("magi")
        if obstacle == "samples is a file":
            samples.parent.mkdir(parents=True)
            samples.write_text("not a folder")
        started = await gateway.start_pull("anna", "magi", keys)
        if obstacle == "partial folder exists":  # before the pull's task first runs
            (samples / f".partial-{started['id']}").mkdir(parents=True)
        await asyncio.wait_for(gateway.wait_idle(), 10)
        result = gateway.pull_status("anna", started["id"])
        assert result["status"] == "failed", result
        assert result["error"]["reason"] == "workspace_unusable"
        record = gateway.audit.records()[-1]
        assert (record["action"], record["outcome"], record["reason"]) == ("pull", "failed", "workspace_unusable")
        assert gateway.state.usage_since("magi", midnight()).studies == 0
        if obstacle == "partial folder exists":
            assert (samples / f".partial-{started['id']}").is_dir()  # not ours: left alone


# -- 5. the HTTP API -----------------------------------------------------------------------------

class FakeHubAuth:
    """Stands in for HubAuth: 'token anna' is anna, anything else nobody."""

    access_scopes: frozenset[str] = frozenset()

    def get_user(self, handler: Any) -> dict[str, Any] | None:
        header = handler.request.headers.get("Authorization", "")
        return {"name": "anna", "kind": "user"} if header == "token anna" else None

    def _persist_url_token_if_set(self, handler: Any) -> None:
        return None


@asynccontextmanager
async def api_for(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    from tornado.netutil import bind_sockets

    server = gateway_app.make_server(gateway_app.make_app(gateway, "/", FakeHubAuth()))  # type: ignore[arg-type]
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/",
                                     headers={"Authorization": "token anna"}, timeout=30) as client:
            yield client
    finally:
        server.stop()
        await server.close_all_connections()


def echoes_at_most(text: str, sent: str, limit: int = 100) -> bool:
    """Whether ``text`` holds no run of more than ``limit`` characters of ``sent``."""
    return all(sent[i:i + limit + 1] not in text for i in range(0, max(1, len(sent) - limit), 50))


async def test_deeply_nested_json_is_a_bad_request(tmp_path: Path) -> None:
    async with gateway_for(archive_of(1, 1), tmp_path) as gateway, api_for(gateway) as api:
        depth = 100_000
        body = '{"project": "magi", "criteria": ' + "[" * depth + "]" * depth + "}"
        response = await api.post("search", content=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["reason"] == "bad_json"


async def test_a_huge_body_is_refused_with_413(tmp_path: Path) -> None:
    async with gateway_for(archive_of(1, 1), tmp_path) as gateway, api_for(gateway) as api:
        body = json.dumps({"project": "magi", "criteria": {}, "padding": "x" * (30 * 1024 * 1024)})
        response = await api.post("search", content=body)
        assert response.status_code == 413
        assert response.json()["error"]["reason"] == "body_too_large"
        assert (await api.get("health")).status_code == 200  # the server is fine


@pytest.mark.orthanc
async def test_huge_offsets_and_page_tokens_are_refused(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    async with api_for(gateway) as api:
        for criteria in ({"offset": 10**20}, {"offset": 2**31}, {"page": "0.999999999.0."}):
            response = await api.post("search", json={"project": "magi", "criteria": criteria})
            assert response.status_code == 422, (criteria, response.text)
            assert response.json()["error"]["reason"] in ("bad_criteria", "bad_page")
        ok = await api.post("search", json={"project": "magi", "criteria": {"offset": 1000}})
        assert ok.status_code == 200, ok.text
    await gateway.aclose()


async def test_errors_echo_little_of_what_was_sent(tmp_path: Path) -> None:
    long = "A" * 5000
    digits = "1." + "9" * 5000
    async with gateway_for(archive_of(1, 1), tmp_path) as gateway, api_for(gateway) as api:
        answers = [
            (long, await api.post("search", json={"project": long, "criteria": {}})),
            (long, await api.post("search", json={"project": "magi", "criteria": {long: 1}})),
            (long, await api.post("search", json={"project": "magi", "criteria": {"modality": long}})),
            (digits, await api.post("pulls", json={"project": "magi", "study_keys": [digits]})),
            (digits, await api.post("thumbnails", json={"project": "magi", "study_keys": [digits]})),
            (long, await api.get(f"pulls/{long}")),
            (long, await api.get("pulls", params={"project": long})),
        ]
        for sent, response in answers:
            assert 400 <= response.status_code < 500, response.text[:300]
            assert response.json()["error"]["message"], response.text[:300]
            assert echoes_at_most(response.text, sent), response.text[:300]


# -- 6. permissions of what is delivered ---------------------------------------------------------

def _modes(folder: Path) -> Iterator[tuple[str, int]]:
    yield ".", stat.S_IMODE(folder.stat().st_mode)
    for path in folder.rglob("*"):
        yield str(path.relative_to(folder)), stat.S_IMODE(os.lstat(path).st_mode)


async def test_delivered_samples_are_for_the_project_group_only(tmp_path: Path) -> None:
    fake = archive_of(1, 2)
    async with gateway_for(fake, tmp_path) as gateway:
        result = await pull(gateway, await study_keys(gateway))
        folder = gateway.storage.project_dir("magi") / result["path"]
        modes = dict(_modes(folder))
        assert {m for p, m in modes.items() if (folder / p).is_dir()} == {0o750}, modes
        assert {m for p, m in modes.items() if not (folder / p).is_dir()} == {0o640}, modes
        assert len(modes) == 1 + 2 + 2 + 2  # the pull, study, series; two images, two manifests
