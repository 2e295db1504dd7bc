"""The DIMSE integration: C-FIND, C-GET and C-MOVE against the real Orthanc, and status tables.

Orthanc's C-FIND matches StudyDescription case-sensitively (its QIDO-RS does not), so the
search tests here are the case-sensitive archive in the flesh. The session's Orthanc knows
one peer, AET ``RIPAGW`` on 127.0.0.1 at ``orthanc.gateway.port``: the gateway uses it as
its calling AE and, for C-MOVE, as its storage SCP.
"""

from __future__ import annotations

import io
import json
import socket
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE

from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway import dimse_status
from services.sample_gateway.audit import AuditLog
from services.sample_gateway.dimse import DimseArchive, DimseSettings, StorageSCP
from services.sample_gateway.dimse_status import Category, Status
from services.sample_gateway.errors import ArchiveTimeout, ArchiveUnavailable
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.integration import Archive, build_archive
from services.sample_gateway.queries import StudyCriteria, StudyQuery
from services.sample_gateway.state import GatewayState
from tests.fixtures.archive import RunningOrthanc

# -- status tables (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "code", "category", "words"),
    [
        (dimse_status.FIND, 0xFF00, Category.PENDING, "match"),
        (dimse_status.FIND, 0xFF01, Category.PENDING, "optional keys"),
        (dimse_status.FIND, 0xA700, Category.FAILURE, "out of resources"),
        (dimse_status.FIND, 0xC123, Category.FAILURE, "unable to process"),
        (dimse_status.FIND, 0x0000, Category.SUCCESS, "success"),
        (dimse_status.MOVE, 0xA801, Category.FAILURE, "move destination unknown"),
        (dimse_status.MOVE, 0xB000, Category.WARNING, "one or more failures"),
        (dimse_status.MOVE, 0xA702, Category.FAILURE, "sub-operations"),
        (dimse_status.MOVE, 0xFE00, Category.CANCEL, "cancelled"),
        (dimse_status.GET, 0xA801, Category.FAILURE, "unknown status"),  # not a C-GET code
        (dimse_status.GET, 0xAA02, Category.FAILURE, "frame-level"),
        (dimse_status.STORE, 0xC001, Category.FAILURE, "did not ask"),
        (dimse_status.STORE, 0xB007, Category.WARNING, "does not match"),
        (dimse_status.STORE, 0x0122, Category.FAILURE, "SOP class not supported"),
        (dimse_status.FIND, 0xB123, Category.WARNING, "unknown status"),
        (dimse_status.FIND, 0x0107, Category.WARNING, "unknown status"),
        (dimse_status.FIND, 0x1234, Category.FAILURE, "unknown status"),
    ],
)
def test_status_tables(table: tuple, code: int, category: Category, words: str) -> None:
    info = dimse_status.describe(table, code)
    assert info.category == category and words in info.description
    assert info.hex == f"0x{code:04X}" and str(info).startswith(info.hex)


def test_named_codes_fall_in_their_tables() -> None:
    assert dimse_status.describe(dimse_status.MOVE, Status.MOVE_DESTINATION_UNKNOWN).category == Category.FAILURE
    assert dimse_status.describe(dimse_status.STORE, Status.UNEXPECTED_OBJECT).category == Category.FAILURE
    assert dimse_status.describe(dimse_status.GET, Status.SUB_OPERATIONS_FAILED).category == Category.WARNING


def test_settings_from_the_configuration() -> None:
    config = parse_config(textwrap.dedent("""\
        archive:
          name: RIPA
          integration: dimse
          timeout_seconds: 7
          dimse: {host: pacs.example, port: 11112, called_aet: RIPA, calling_aet: WBGW,
                  retrieve: c-move, storage_port: 11113, move_destination: WBGWSCP}
        profiles: [{slug: s, name: S, cpu: 1, memory: 1G}]
        """))
    archive = build_archive(config.archive)
    assert isinstance(archive, DimseArchive) and isinstance(archive, Archive)
    assert archive.settings == DimseSettings(
        host="pacs.example", port=11112, called_aet="RIPA", calling_aet="WBGW", retrieve="c-move",
        move_destination="WBGWSCP", storage_port=11113, timeout_seconds=7, name="RIPA",
    )
    assert archive.settings.destination_aet == "WBGWSCP"


# -- against the real Orthanc ---------------------------------------------------------------

def yaml_for(orthanc: RunningOrthanc, dimse: str, integration: str = "dimse") -> str:
    return textwrap.dedent(f"""\
        archive:
          name: Test RIPA
          integration: {integration}
          dicomweb_url: {orthanc.dicomweb_url}
          timeout_seconds: 5
          dimse: {{host: 127.0.0.1, port: {orthanc.dicom_port}, called_aet: {orthanc.aet}, {dimse}}}
        profiles: [{{slug: s, name: S, cpu: 1, memory: 1G}}]
        projects:
          - id: magi
            title: MAGI
            members: [anna]
            approval: {{reference: T-1, expires: 2099-12-31}}
            archive: {{enabled: true, limits: {{max_studies_per_pull: 3, max_instances_per_pull: 100,
                                                max_studies_per_day: 1000}}}}
        """)


@asynccontextmanager
async def gateway(orthanc: RunningOrthanc, tmp_path: Path, name: str, dimse: str,
                  integration: str = "dimse") -> AsyncIterator[Gateway]:
    config = parse_config(yaml_for(orthanc, dimse, integration))
    assert config.archive is not None
    archive = build_archive(config.archive, orthanc.username, orthanc.password)
    private = tmp_path / name
    built = Gateway(
        config=lambda: config, storage=StorageLayout(tmp_path / f"data-{name}"), archive=archive,
        state=GatewayState.at(private), audit=AuditLog(private / "audit.jsonl"),
        keys_dir=tmp_path / "keys",  # shared: the same pseudonyms whichever integration
    )
    try:
        yield built
    finally:
        await built.aclose()


def peer(orthanc: RunningOrthanc, **extra: str) -> str:
    fields = {"calling_aet": orthanc.gateway.aet, **extra}
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


async def search(gw: Gateway, **criteria: Any) -> list[dict[str, Any]]:
    return (await gw.search("anna", "magi", StudyCriteria(**criteria)))["studies"]


async def pull(gw: Gateway, keys: list[str]) -> dict[str, Any]:
    started = await gw.start_pull("anna", "magi", keys)
    await gw.wait_idle()
    return gw.pull_status("anna", started["id"])


def manifest_of(gw: Gateway, done: dict[str, Any]) -> dict[str, Any]:
    return json.loads((gw.storage.project_dir("magi") / done["path"] / "manifest.json").read_text())


@pytest.mark.orthanc
async def test_c_find_is_case_sensitive_at_orthanc_and_the_search_still_finds(
    orthanc: RunningOrthanc, tmp_path: Path
) -> None:
    # Orthanc's own C-FIND: lower case matches nothing.
    found = await DimseArchive(DimseSettings(
        host="127.0.0.1", port=orthanc.dicom_port, called_aet=orthanc.aet, calling_aet=orthanc.gateway.aet,
    )).find_studies(StudyQuery(description="*thorax*"), limit=10, offset=0)
    assert found.records == []
    async with gateway(orthanc, tmp_path, "web", peer(orthanc), "dicomweb") as web, \
            gateway(orthanc, tmp_path, "dimse", peer(orthanc)) as dimse:
        over_dimse = await search(dimse, description="thorax")
        over_web = await search(web, description="thorax")
        assert {s["description"] for s in over_dimse} == {"CT THORAX", "CT THORAX FOLLOW-UP"}
        # The same studies, pseudonyms, dates and counts whichever integration found them.
        assert sorted(over_dimse, key=lambda s: s["study_key"]) == sorted(over_web, key=lambda s: s["study_key"])
        everything = await search(dimse, limit=3)
        rest = await search(dimse, limit=50, page=(await dimse.search("anna", "magi", StudyCriteria(limit=3)))["next_page"])
        assert len(everything) == 3 and len({s["study_key"] for s in everything + rest}) == len(everything) + len(rest)
        assert len(everything + rest) == len(await search(web))


@pytest.mark.orthanc
@pytest.mark.parametrize("retrieve", ["c-get", "c-move"])
async def test_c_get_and_c_move_deliver_what_dicomweb_delivers(
    orthanc: RunningOrthanc, tmp_path: Path, retrieve: str
) -> None:
    extra = {"retrieve": retrieve}
    if retrieve == "c-move":
        extra["storage_port"] = str(orthanc.gateway.port)
    async with gateway(orthanc, tmp_path, "web", peer(orthanc), "dicomweb") as web, \
            gateway(orthanc, tmp_path, retrieve, peer(orthanc, **extra)) as dimse:
        # MR BRAIN: an enhanced multi-frame MR, RLE and JPEG-LS objects.
        study = (await search(dimse, description="MR BRAIN", modality="MR"))
        study = [s for s in study if s["description"] == "MR BRAIN"]
        keys = [study[0]["study_key"]]
        await search(web, description="MR BRAIN")
        started = time.monotonic()
        over_dimse = await pull(dimse, keys)
        assert over_dimse["status"] == "done", over_dimse
        assert time.monotonic() - started < 10
        over_web = await pull(web, keys)
        rows = lambda done, gw: sorted((r["file"], r["transfer_syntax"], r["frames"])
                                       for r in manifest_of(gw, done)["instances"])
        assert rows(over_dimse, dimse) == rows(over_web, web)
        assert manifest_of(dimse, over_dimse)["integration"] == "dimse"
        assert {r[1] for r in rows(over_dimse, dimse)} >= {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"}
        # The same content, element by element. (Not always byte for byte: Orthanc sends a
        # stored encapsulated Pixel Data of VR OW as OB over DIMSE, as the standard says.)
        for file, *_ in rows(over_web, web):
            a = pydicom.dcmread(dimse.storage.project_dir("magi") / over_dimse["path"] / file)
            b = pydicom.dcmread(web.storage.project_dir("magi") / over_web["path"] / file)
            assert {e.tag: e.value for e in a} == {e.tag: e.value for e in b}
        thumbs = await dimse.thumbnails("anna", "magi", keys)
        web_thumbs = await web.thumbnails("anna", "magi", keys)
        assert thumbs["thumbnails"] == web_thumbs["thumbnails"] and thumbs["thumbnails"][keys[0]]["png"]


@pytest.mark.orthanc
async def test_c_move_to_an_unknown_destination_is_a_clear_error(orthanc: RunningOrthanc, tmp_path: Path) -> None:
    extra = {"retrieve": "c-move", "storage_port": str(orthanc.gateway.port), "move_destination": "NOSUCHAE"}
    async with gateway(orthanc, tmp_path, "move", peer(orthanc, **extra)) as dimse:
        keys = [(await search(dimse, modality="CR"))[0]["study_key"]]
        started = time.monotonic()
        done = await pull(dimse, keys)
        assert time.monotonic() - started < 5
        assert done["status"] == "failed" and done["error"]["reason"] in ("move_refused", "move_destination_unknown")
        assert "does not know the gateway's storage AE title 'NOSUCHAE'" in done["error"]["message"]
        assert list(dimse.storage.samples_dir("magi").iterdir()) == []
    orthanc.check_alive()


@pytest.mark.orthanc
async def test_an_unregistered_calling_ae_is_refused_clearly(orthanc: RunningOrthanc, tmp_path: Path) -> None:
    async with gateway(orthanc, tmp_path, "stranger", "calling_aet: STRANGER") as dimse:
        started = time.monotonic()
        with pytest.raises(ArchiveUnavailable) as caught:
            await search(dimse)
        assert time.monotonic() - started < 3
        assert caught.value.reason == "association_rejected"
        assert "refused the gateway's DICOM association" in caught.value.message
        assert "STRANGER" in caught.value.log_message and "STRANGER" not in caught.value.message
        assert dimse.audit.records()[-1]["outcome"] == "failed"


async def test_a_dimse_peer_that_never_answers_times_out(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    archive = DimseArchive(DimseSettings(host="127.0.0.1", port=listener.getsockname()[1],
                                         called_aet="RIPA", calling_aet="WB", timeout_seconds=1, name="Test RIPA"))
    started = time.monotonic()
    try:
        with pytest.raises(ArchiveTimeout, match="Test RIPA did not answer within 1 s"):
            await archive.find_studies(StudyQuery(), limit=5, offset=0)
        assert time.monotonic() - started < 3
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        down = DimseArchive(DimseSettings(host="127.0.0.1", port=closed, called_aet="RIPA",
                                          calling_aet="WB", timeout_seconds=1, name="Test RIPA"))
        with pytest.raises(ArchiveUnavailable, match="cannot be reached"):
            await down.find_series("1.2.3")
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_storage_scp_takes_only_what_a_move_asked_for(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scp = StorageSCP(aet="WBGW", bind="127.0.0.1", port=port, archive_aet="RIPA", archive_host="127.0.0.1",
                     timeout=5)
    scp.start()
    try:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))

        def store(calling: str) -> int | None:
            ae = AE(ae_title=calling)
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            assoc = ae.associate("127.0.0.1", port, ae_title="WBGW")
            if not assoc.is_established:
                return None
            try:
                return int(assoc.send_c_store(ds).Status)
            finally:
                assoc.release()

        assert store("STRANGER") is None  # only the archive's AE may associate
        assert store("RIPA") == Status.UNEXPECTED_OBJECT  # nobody asked for it
        received: list[Any] = []
        from services.sample_gateway.dimse import _Route, _Target

        message_id = scp.register(_Route(_Target(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)),
                                         received.append, threading.Event()))
        assert store("RIPA") == Status.SUCCESS  # routed by its study and series (no originator)
        assert len(received) == 1
        assert pydicom.dcmread(io.BytesIO(received[0].body)).SOPInstanceUID == ds.SOPInstanceUID
        scp.unregister(message_id)
        assert store("RIPA") == Status.UNEXPECTED_OBJECT
        assert len(scp.refused) == 2
    finally:
        scp.stop()


