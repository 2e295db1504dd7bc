"""What real archives do, one quirk at a time, against a tiny DICOMweb archive in this process.

Each test switches on one behaviour of :class:`tests.fixtures.fake_dicomweb.FakeArchive`
(no percent-decoding, case-sensitive matching, result caps, ignored offset, stalls, multipart
shapes, objects without file meta, an invalid character set, an object of another study,
ImagerPixelSpacing only) and drives the real gateway (search, pull, thumbnails) through it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from extensions.loading import open_series
from hub_config.loader import parse_config
from hub_config.storage import StorageLayout
from services.sample_gateway.archive import ArchiveSettings, DicomWebArchive
from services.sample_gateway.audit import AuditLog, verify
from services.sample_gateway.errors import ArchiveTimeout
from services.sample_gateway.gateway import Gateway
from services.sample_gateway.logsafety import configure_logging
from services.sample_gateway.queries import StudyCriteria
from services.sample_gateway.state import GatewayState
from tests.fixtures.fake_dicomweb import FakeArchive, serve


def config_text(url: str, archive: str = "", limits: str = "") -> str:
    return textwrap.dedent(f"""\
        archive:
          name: Fake RIPA
          dicomweb_url: {url}
          timeout_seconds: 1
        """) + textwrap.indent(textwrap.dedent(archive), "  ") + textwrap.dedent(f"""\
        profiles: [{{slug: small, name: Small, cpu: 1, memory: 1G}}]
        projects:
          - id: magi
            title: MAGI
            members: [anna]
            approval: {{reference: T-1, expires: 2099-12-31}}
            archive:
              enabled: true
              limits: {{max_studies_per_pull: 5, max_instances_per_pull: 100, max_studies_per_day: 1000{limits}}}
        """)


@asynccontextmanager
async def gateway_for(fake: FakeArchive, tmp_path: Path, archive: str = "") -> AsyncIterator[Gateway]:
    async with serve(fake) as url:
        config = parse_config(config_text(url, archive))
        private = tmp_path / "gateway"
        gateway = Gateway(
            config=lambda: config,
            storage=StorageLayout(tmp_path / "data"),
            archive=DicomWebArchive(ArchiveSettings(url, timeout_seconds=1, name="Fake RIPA")),
            state=GatewayState.at(private),
            audit=AuditLog(private / "audit.jsonl"),
            keys_dir=private / "keys",
        )
        try:
            yield gateway
        finally:
            await gateway.aclose()


async def search(gateway: Gateway, **criteria: Any) -> dict[str, Any]:
    return await gateway.search("anna", "magi", StudyCriteria(**criteria))


async def pull(gateway: Gateway, keys: list[str]) -> dict[str, Any]:
    started = await gateway.start_pull("anna", "magi", keys)
    await gateway.wait_idle()
    return gateway.pull_status("anna", started["id"])


def descriptions(answer: dict[str, Any]) -> list[str]:
    return sorted(s["description"] for s in answer["studies"])


def study_queries(fake: FakeArchive) -> list[str]:
    return [r for r in fake.requests if r.startswith("/dicom-web/studies?")]


def thorax_archive(**behaviour: Any) -> FakeArchive:
    fake = FakeArchive(**behaviour)
    for description in ("CT THORAX", "Thorax low dose", "ct thorax control", "MR Schädel nativ",
                        "HEAD^CT", "tHoRaX odd"):
        fake.add_study(description, [("CT_small.dcm", "axial", 1)])
    return fake


# -- search: what the archive understands ---------------------------------------------------

async def test_wildcards_caret_and_non_ascii_without_percent_decoding(tmp_path: Path) -> None:
    fake = thorax_archive()
    async with gateway_for(fake, tmp_path) as gateway:
        assert descriptions(await search(gateway, description="Schädel")) == ["MR Schädel nativ"]
        assert descriptions(await search(gateway, description="schädel NATIV")) == ["MR Schädel nativ"]
        assert descriptions(await search(gateway, description="head^ct")) == ["HEAD^CT"]
        assert descriptions(await search(gateway, description="*thórax?")) == [
            "CT THORAX", "Thorax low dose", "ct thorax control"]  # wildcards typed are not sent
    sent = "".join(study_queries(fake))
    assert "%" not in sent and "^" not in sent and sent.isascii()
    assert "StudyDescription=*SCH*DEL*" in sent  # the umlaut became a wildcard


async def test_case_sensitive_archive_is_asked_each_spelling_and_shows_a_study_once(tmp_path: Path) -> None:
    fake = thorax_archive(case_sensitive=True)
    async with gateway_for(fake, tmp_path) as gateway:
        answer = await search(gateway, description="thorax")
        assert descriptions(answer) == ["CT THORAX", "Thorax low dose", "ct thorax control"]
        assert answer["complete"] and answer["next_page"] is None
        patterns = {r.split("StudyDescription=")[1].split("&")[0] for r in study_queries(fake)}
        assert patterns == {"*THORAX*", "*Thorax*", "*thorax*"}
        assert not gateway.archive.traits.case_insensitive

        # Every spelling finds nothing for this combination: the gateway reads the range itself.
        odd = await search(gateway, description="odd thorax")
        assert descriptions(odd) == ["tHoRaX odd"]
        assert any("read the studies of your date and modality range" in n for n in odd["notices"])
        none = await search(gateway, description="abdomen")
        assert none["studies"] == [] and any("compared their descriptions" in n for n in none["notices"])


async def test_a_case_insensitive_archive_is_recognised_and_asked_once(tmp_path: Path) -> None:
    fake = thorax_archive(case_sensitive=False)
    async with gateway_for(fake, tmp_path) as gateway:
        answer = await search(gateway, description="THORAX")
        assert descriptions(answer) == ["CT THORAX", "Thorax low dose", "ct thorax control", "tHoRaX odd"]
        assert gateway.archive.traits.case_insensitive  # learned from 'Thorax' answering *THORAX*
        fake.requests.clear()
        again = await search(gateway, description="thorax")
        assert len(again["studies"]) == 4
        assert {r.split("StudyDescription=")[1].split("&")[0] for r in study_queries(fake)} == {"*THORAX*"}


async def test_configured_case_insensitive_archive_gets_one_spelling(tmp_path: Path) -> None:
    fake = thorax_archive(case_sensitive=False)
    async with gateway_for(fake, tmp_path, "text_matching: case-insensitive\nmax_results: 1000\n") as gateway:
        answer = await search(gateway, description="thorax")
        assert len(answer["studies"]) == 4
    assert len(study_queries(fake)) == 1


# -- search: paging -------------------------------------------------------------------------

def many(count: int, **behaviour: Any) -> FakeArchive:
    fake = FakeArchive(**behaviour)
    for n in range(count):
        fake.add_study(f"CT THORAX {n:02d}", [("CT_small.dcm", "axial", 1)], date=f"202301{n + 1:02d}")
    return fake


@pytest.mark.parametrize(
    ("behaviour", "archive"),
    [
        ({"cap": 3}, "page_size: 5\n"),  # cut silently: the gateway asks on
        ({"cap": 3, "warn_when_capped": True}, "page_size: 5\n"),  # says so: Warning 299
        ({"cap": 3}, "page_size: 5\nmax_results: 3\n"),  # the cap is configured
    ],
)
async def test_paging_past_the_archives_result_limit(tmp_path: Path, behaviour: dict, archive: str) -> None:
    fake = many(7, **behaviour)
    async with gateway_for(fake, tmp_path, archive) as gateway:
        answer = await search(gateway)
        assert len(answer["studies"]) == 7 and answer["complete"]
        offsets = [r.split("offset=")[1] for r in study_queries(fake)]
        assert offsets[:3] == ["0", "3", "6"]
        # Paged by the researcher: 2 at a time, each study once.
        seen, page = [], None
        while True:
            answer = await search(gateway, limit=2, **({"page": page} if page else {}))
            seen += [s["study_key"] for s in answer["studies"]]
            page = answer["next_page"]
            if page is None:
                break
        assert len(seen) == len(set(seen)) == 7


async def test_an_archive_that_ignores_offset(tmp_path: Path) -> None:
    fake = many(7, cap=3, ignore_offset=True)
    async with gateway_for(fake, tmp_path) as gateway:
        answer = await search(gateway)
        assert len(answer["studies"]) == 3 and answer["next_page"] is None
        assert answer["complete"] is False
        assert any("ignores requests for further results" in n for n in answer["notices"])
        first = await search(gateway, limit=2)
        rest = await search(gateway, limit=2, page=first["next_page"])
        keys = [s["study_key"] for s in first["studies"] + rest["studies"]]
        assert len(keys) == len(set(keys)) == 3  # nothing shown twice, nothing of page 1 lost


async def test_a_search_that_stalls_after_a_page_returns_what_it_found(tmp_path: Path) -> None:
    fake = many(5, cap=2, stall_search_after=1)
    async with gateway_for(fake, tmp_path) as gateway:
        started = time.monotonic()
        answer = await search(gateway)
        assert time.monotonic() - started < 3
        assert len(answer["studies"]) == 2 and answer["complete"] is False
        assert answer["next_page"] is not None
        assert any("stopped answering" in n and "did not answer within 1 s" in n for n in answer["notices"])
        with pytest.raises(ArchiveTimeout, match="did not answer within 1 s"):
            await search(gateway, page=answer["next_page"])
        records = gateway.audit.records()
        assert [r["outcome"] for r in records] == ["ok", "failed"]
        assert records[0]["complete"] is False


# -- pulls: shapes of the answer ------------------------------------------------------------

@pytest.mark.parametrize(
    ("part_style", "bare"),
    [("headers", False), ("minimal", False), ("headers", True), ("minimal", True)],
)
async def test_multipart_shapes_and_objects_without_file_meta(tmp_path: Path, part_style: str, bare: bool) -> None:
    fake = FakeArchive(part_style=part_style, bare=bare)
    fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 3), ("MR_small_implicit.dcm", "implicit", 2)])
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway))["studies"]
        done = await pull(gateway, [studies[0]["study_key"]])
        assert done["status"] == "done" and done["instances_done"] == 5, done
        folder = gateway.storage.project_dir("magi") / done["path"]
        files = sorted(folder.rglob("*.dcm"))
        assert len(files) == 5
        syntaxes = set()
        for path in files:
            ds = pydicom.dcmread(path)
            assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == studies[0]["patient"]
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            syntaxes.add(ds.file_meta.TransferSyntaxUID)
            assert ds.pixel_array.shape[0] > 0
        assert syntaxes == {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}  # as the archive stated them


async def test_single_part_answer_for_one_object(tmp_path: Path) -> None:
    fake = FakeArchive(part_style="single-when-one")
    fake.add_study("CR CHEST", [("CT_small.dcm", "one image", 1)])
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway))["studies"]
        done = await pull(gateway, [studies[0]["study_key"]])
        assert done["status"] == "done" and done["instances_done"] == 1
        thumbs = await gateway.thumbnails("anna", "magi", [studies[0]["study_key"]])
        assert thumbs["thumbnails"][studies[0]["study_key"]]["png"]


async def test_an_object_of_another_study_is_never_delivered(tmp_path: Path) -> None:
    fake = FakeArchive(wrong_study=True)
    fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 2)])
    other = fake.add_study("CT ABDOMEN", [("CT_small.dcm", "axial", 1)], patient=("FAKE-0002", "OTHER^PERSON"))
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway, description="thorax"))["studies"]
        done = await pull(gateway, [studies[0]["study_key"]])
        assert done["status"] == "done" and done["instances_done"] == 2 and done["instances_refused"] == 1
        folder = gateway.storage.project_dir("magi") / done["path"]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["refused"] == {"The archive sent an object from another study; it was not delivered.": 1}
        assert {p.parent.parent.name for p in folder.rglob("*.dcm")} == {studies[0]["study_key"]}
        assert other.uid not in "".join(p.read_bytes().hex() for p in folder.rglob("*.dcm"))


async def test_a_pull_that_stalls_times_out_and_leaves_nothing(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeArchive(stall_after_parts=2)
    study = fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 4)])
    configure_logging()  # as the gateway process does at start
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway))["studies"]
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            done = await pull(gateway, [studies[0]["study_key"]])
        # The log says what failed, not which study: the archive's UIDs identify.
        gateway_lines = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("tornado"))
        assert "ReadTimeout" in gateway_lines and "studies/\u2026/series/\u2026" in gateway_lines
        assert study.uid not in gateway_lines and study.series[0].uid not in gateway_lines
        assert time.monotonic() - started < 4
        assert done["status"] == "failed" and done["error"]["reason"] == "archive_timeout"
        assert "did not answer within 1 s" in done["error"]["message"]
        assert "2 of 4 images had arrived before that; nothing was delivered" in done["error"]["message"]
        samples = gateway.storage.samples_dir("magi")
        assert list(samples.iterdir()) == []  # no partial folder, no files
        assert gateway.audit.records()[-1]["outcome"] == "failed"
        assert verify(gateway.audit.path).ok


async def test_an_archive_that_is_down_while_pulling(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 2)])
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway))["studies"]
        await gateway.archive.aclose()
        gateway.archive = DicomWebArchive(ArchiveSettings("http://127.0.0.1:9/dicom-web", timeout_seconds=1,
                                                          name="Fake RIPA"))
        from services.sample_gateway.errors import ArchiveUnavailable

        with pytest.raises(ArchiveUnavailable, match="cannot be reached"):
            await gateway.start_pull("anna", "magi", [studies[0]["study_key"]])
        assert list(gateway.storage.samples_dir("magi").glob("*")) == []


# -- pulls: what is inside the objects ------------------------------------------------------

def _latin1_with_bad_charset(data: bytes) -> bytes:
    assert b"ISO_IR 100" in data
    return data.replace(b"ISO_IR 100", b"ISO_IR 999")  # not a defined term: same length


def _latin1_description(ds: pydicom.Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SeriesDescription = "Röntgen Thorax"


@pytest.mark.filterwarnings("ignore:Unknown encoding 'ISO_IR 999'")
async def test_an_invalid_character_set_is_decoded_with_a_fallback_and_reported(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 2)], change=_latin1_description,
                   patch=_latin1_with_bad_charset)
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway))["studies"]
        with pytest.warns(UserWarning, match="invalid SpecificCharacterSet 'ISO_IR 999'"):
            done = await pull(gateway, [studies[0]["study_key"]])
        assert done["status"] == "done" and done["instances_done"] == 2
        folder = gateway.storage.project_dir("magi") / done["path"]
        manifest = json.loads((folder / "manifest.json").read_text())
        (warning, count), = manifest["warnings"].items()
        assert count == 2 and "ISO_IR 999" in warning and "ISO_IR 192" in warning
        ds = pydicom.dcmread(next(folder.rglob("*.dcm")))
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.SeriesDescription == "Röntgen Thorax"  # decoded as Latin-1, written as UTF-8
        assert gateway.audit.records()[-1]["warnings"] == 2


def _imager_spacing_only(ds: pydicom.Dataset) -> None:
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.4, 0.2]


async def test_images_with_only_imager_pixel_spacing(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("DX KNEE", [("CT_small.dcm", "projection", 1)], change=_imager_spacing_only)
    async with gateway_for(fake, tmp_path) as gateway:
        studies = (await search(gateway))["studies"]
        done = await pull(gateway, [studies[0]["study_key"]])
        folder = gateway.storage.project_dir("magi") / done["path"]
        image = open_series(next(folder.rglob("*.dcm")).parent)
        assert image.dims[-2:] == ("y", "x")
        assert np.allclose(np.diff(image.coords["x"].values), 0.2) or np.allclose(
            np.abs(np.diff(image.coords["x"].values)), 0.2
        )
        thumbs = await gateway.thumbnails("anna", "magi", [studies[0]["study_key"]])
        png = base64.b64decode(thumbs["thumbnails"][studies[0]["study_key"]]["png"])
        assert Image.open(io.BytesIO(png)).size == (64, 128)  # rows twice as far apart: twice as tall


async def test_thumbnails_refuse_images_that_may_show_text(tmp_path: Path) -> None:
    fake = FakeArchive()
    fake.add_study("US ABDOMEN", [("US1_J2KR.dcm", "colour", 1)])
    fake.add_study("CT THORAX", [("CT_small.dcm", "axial", 3)])
    async with gateway_for(fake, tmp_path) as gateway:
        studies = {s["description"]: s["study_key"] for s in (await search(gateway))["studies"]}
        answer = await gateway.thumbnails("anna", "magi", list(studies.values()))
        us, ct = (answer["thumbnails"][studies[d]] for d in ("US ABDOMEN", "CT THORAX"))
        assert us["png"] is None and "approval does not allow" in us["message"]
        assert Image.open(io.BytesIO(base64.b64decode(ct["png"]))).size == (128, 128)
        record = gateway.audit.records()[-1]
        assert record["action"] == "thumbnails" and record["shown"] == 1 and record["refused"] == 1
        # Only the middle image of the series was fetched, once (then from the cache).
        retrieves = [r for r in fake.requests if "/instances/" in r and not r.endswith("/instances")]
        await gateway.thumbnails("anna", "magi", [studies["CT THORAX"]])
        assert [r for r in fake.requests if "/instances/" in r and not r.endswith("/instances")] == retrieves
        assert len(retrieves) == 2


def test_fake_archive_builds_real_files() -> None:
    fake = FakeArchive()
    study = fake.add_study("CT", [("CT_small.dcm", "a", 1)])
    instance = study.series[0].instances[0]
    assert pydicom.dcmread(io.BytesIO(instance.data)).StudyInstanceUID == study.uid
    assert instance.bare[:4] != b"\0\0\0\0" and b"DICM" not in instance.bare[:200]



def test_answers_are_read_a_mebibyte_at_a_time() -> None:
    """httpcore's 64 KiB reads cost a third of a 26 MB series' retrieval here; the gateway
    raises them to 1 MiB on import. If httpcore renames the knob this fails (and says so)."""
    import httpcore

    from services.sample_gateway import archive

    assert archive.READ_BYTES == 1024 * 1024
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES >= archive.READ_BYTES
