"""A project approved for some modalities gets only those: series the archive lists without
a modality are left out, and each object's own modality is checked (an archive's series
record may lack it or disagree with the objects). Found by an adversarial trial: a CT
without Modality reached a project approved for MR only."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pydicom

from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway.archive import ArchiveSettings, DicomWebArchive
from services.sample_gateway.audit import AuditLog
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.pipeline import Workers
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.state import GatewayState
from tests.fixtures.fake_dicomweb import FakeArchive, serve


@asynccontextmanager
async def mr_only_gateway(fake: FakeArchive, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with serve(fake) as url:
        config = parse_config(textwrap.dedent(f"""\
            archive: {{name: Fake RIPA, dicomweb_url: "{url}", timeout_seconds: 5}}
            profiles: [{{slug: small, name: Small, cpu: 1, memory: 1G}}]
            projects:
              - id: magi
                title: MAGI
                members: [anna]
                approval: {{reference: T-1, expires: 2099-12-31}}
                archive: {{enabled: true, modalities: [MR]}}
            """))
        gateway = Gateway(
            config=lambda: config, storage=StorageLayout(tmp_path / "data"),
            archive=DicomWebArchive(ArchiveSettings(url, timeout_seconds=5, name="Fake RIPA")),
            state=GatewayState.at(tmp_path / "gw"), audit=AuditLog(tmp_path / "gw" / "audit.jsonl"),
            keys_dir=tmp_path / "gw" / "keys", workers=Workers(0),
        )
        try:
            yield gateway
        finally:
            await gateway.aclose()


async def pull_all(gateway: Gateway) -> dict:
    keys = [s["study_key"] for s in (await gateway.search("anna", "magi", StudyCriteria()))["studies"]]
    started = await gateway.start_pull("anna", "magi", keys)
    await gateway.wait_idle()
    return gateway.pull_status("anna", started["id"])


def delivered_modalities(gateway: Gateway, result: dict) -> list[str]:
    folder = gateway.storage.project_dir("magi") / result["path"]
    return sorted(str(pydicom.dcmread(p).get("Modality", "")) for p in folder.rglob("*.dcm"))


async def test_a_series_without_a_modality_is_left_out(tmp_path: Path) -> None:
    fake = FakeArchive()
    study = fake.add_study("HEAD", [("MR_small.dcm", "mr", 1), ("CT_small.dcm", "ct", 1)],
                           change=lambda ds: delattr(ds, "Modality") if ds.Modality == "CT" else None)
    study.series[1].modality = ""  # the archive's series record has none either
    async with mr_only_gateway(fake, tmp_path) as gateway:
        result = await pull_all(gateway)
        assert result["status"] == "done" and result["instances_done"] == 1, result
        assert delivered_modalities(gateway, result) == ["MR"]


async def test_objects_whose_modality_is_not_approved_are_refused_each(tmp_path: Path) -> None:
    fake = FakeArchive()
    # The series record says MR; two of its objects are CT, one has no modality.
    study = fake.add_study("HEAD", [("MR_small.dcm", "mr", 4)])
    for index, change in ((1, "CT"), (2, "CT"), (3, None)):
        instance = study.series[0].instances[index]
        ds = pydicom.dcmread(io.BytesIO(instance.data))
        if change is None:
            del ds.Modality
        else:
            ds.Modality = change
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        instance.data = out.getvalue()
    async with mr_only_gateway(fake, tmp_path) as gateway:
        result = await pull_all(gateway)
        assert result["status"] == "done", result
        assert (result["instances_done"], result["instances_refused"]) == (1, 3), result
        assert delivered_modalities(gateway, result) == ["MR"]
        folder = gateway.storage.project_dir("magi") / result["path"]
        manifest = json.loads((folder / "manifest.json").read_text())
        (message, count), = manifest["refused"].items()
        assert count == 3 and "modality" in message and "MR" in message


async def test_a_preview_uses_an_approved_series_as_the_pull_does(tmp_path: Path) -> None:
    fake = FakeArchive()
    study = fake.add_study("MR HEAD", [("MR_small.dcm", "t1", 1), ("CT_small.dcm", "scout", 3)])
    study.series[1].modality = ""  # the larger series, listed without a modality
    async with mr_only_gateway(fake, tmp_path) as gateway:
        key, = [s["study_key"] for s in (await gateway.search("anna", "magi", StudyCriteria()))["studies"]]
        preview = (await gateway.thumbnails("anna", "magi", [key]))["thumbnails"][key]
    assert preview["png"], preview
