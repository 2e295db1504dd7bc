"""Thin async DICOMweb client for the archive (QIDO-RS search, WADO-RS retrieve).

One of the two integrations behind :class:`.integration.Archive`. Only the gateway process
holds the archive's address and credentials. Every failure becomes an
:class:`ArchiveUnavailable` or :class:`ArchiveTimeout` whose message tells the researcher
what happened and what to do; details go to the gateway log.

Retrieval always asks for ``transfer-syntax=*`` (the objects as stored): the gateway does
not need decoded pixels to de-identify, and asking Orthanc 1.10 to transcode JPEG 2000 can
crash it (see ``demo/orthanc.py``). Thumbnails decode locally (pylibjpeg, openjpeg, gdcm).
A QIDO-RS answer cut short by the archive's own result limit carries a ``Warning: 299``
header (PS3.18 8.3.4.5); :class:`.integration.StudyPage` reports it as ``more``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from .errors import ArchiveTimeout, ArchiveUnavailable
from .integration import ArchiveTraits, StudyPage
from .multipart import MultipartParser, Part, boundary_of
from .queries import StudyQuery, qido_params, query_string

log = logging.getLogger(__name__)

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: httpcore reads an answer 64 KiB at a time, each read a trip through several layers of
#: Python (its own benchmark chose 64 KiB over 4 KiB in 2020, encode/httpcore#135). A series
#: of 512x512 CT slices is tens of megabytes: 1 MiB reads take the WADO-RS retrieval of 50
#: of them (26 MB) from 29 to 19 ms here. A read returns what has arrived, never waits to
#: fill the size. Set for the whole gateway process (its other httpx clients gain too).
READ_BYTES = 1024 * 1024
_connection = getattr(httpcore, "AsyncHTTP11Connection", None)
if _connection is not None and getattr(_connection, "READ_NUM_BYTES", READ_BYTES) < READ_BYTES:
    _connection.READ_NUM_BYTES = READ_BYTES


@dataclass(frozen=True)
class ArchiveSettings:
    base_url: str
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 30.0
    max_connections: int = 8
    name: str = "the archive"


class DicomWebArchive:
    integration = "dicomweb"

    def __init__(self, settings: ArchiveSettings, transport: httpx.AsyncBaseTransport | None = None,
                 traits: ArchiveTraits | None = None) -> None:
        self.settings = settings
        self.traits = traits or ArchiveTraits()
        auth = (settings.username, settings.password) if settings.username else None
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            auth=auth,
            timeout=httpx.Timeout(settings.timeout_seconds),
            limits=httpx.Limits(max_connections=settings.max_connections),
            transport=transport,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    async def aclose(self) -> None:
        await self._client.aclose()

    async def find_studies(self, query: StudyQuery, *, limit: int, offset: int) -> StudyPage:
        path = "studies?" + query_string(qido_params(query, limit=limit, offset=offset))
        records, response = await self._qido_response(path)
        warning = response.headers.get("warning", "") if response is not None else ""
        more = True if warning.startswith("299") else None
        return StudyPage(records, more=more)

    async def find_series(self, study_uid: str) -> list[dict[str, Any]]:
        fields = "&".join(
            f"includefield={f}"
            for f in ("Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances", "SeriesNumber")
        )
        return await self._qido(f"studies/{_uid(study_uid)}/series?{fields}")

    async def find_instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        fields = "&".join(f"includefield={f}" for f in ("SOPClassUID", "InstanceNumber"))
        return await self._qido(f"studies/{_uid(study_uid)}/series/{_uid(series_uid)}/instances?{fields}")

    async def retrieve_series(self, study_uid: str, series_uid: str) -> AsyncIterator[Part]:
        """Yield each instance of a series (as multipart parts) while the answer streams in."""
        path = f"studies/{_uid(study_uid)}/series/{_uid(series_uid)}"
        async for part in self._retrieve(path):
            yield part

    async def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Part:
        path = f"studies/{_uid(study_uid)}/series/{_uid(series_uid)}/instances/{_uid(sop_uid)}"
        parts = [part async for part in self._retrieve(path)]
        if len(parts) != 1:
            raise ArchiveUnavailable(
                f"{self.settings.name} answered {len(parts)} objects for one instance.",
                log_message=f"WADO-RS {_for_log(path)}: {len(parts)} parts",
            )
        return parts[0]

    # -- plumbing ---------------------------------------------------------------------------
    async def _qido(self, path: str) -> list[dict[str, Any]]:
        return (await self._qido_response(path))[0]

    async def _qido_response(self, path: str) -> tuple[list[dict[str, Any]], httpx.Response | None]:
        async with self._errors(path):
            response = await self._client.get(path, headers={"Accept": "application/dicom+json"})
            self._check(response, path)
            if response.status_code == 204 or not response.content:
                return [], response
            try:
                body = response.json()
            except ValueError:
                raise ArchiveUnavailable(
                    f"{self.settings.name} answered a search with something that is not DICOM JSON.",
                    log_message=f"QIDO {_for_log(path)}: not JSON",
                ) from None
            if not isinstance(body, list):
                raise ArchiveUnavailable(
                    f"{self.settings.name} answered a search with an unexpected document.",
                    log_message=f"QIDO {_for_log(path)}: {type(body).__name__}",
                )
            return body, response

    async def _retrieve(self, path: str) -> AsyncIterator[Part]:
        async with self._errors(path):
            async with self._client.stream("GET", path, headers={"Accept": ACCEPT_DICOM}) as response:
                if response.status_code >= 400:
                    await response.aread()
                self._check(response, path)
                content_type = response.headers.get("content-type", "")
                boundary = boundary_of(content_type)
                if boundary is None:
                    # A single-part answer: the body is the object itself.
                    yield Part({"content-type": content_type}, await response.aread())
                    return
                parser = MultipartParser(boundary)
                async for chunk in response.aiter_bytes():
                    for part in parser.feed(chunk):
                        yield part
                try:
                    parser.close()
                except ValueError as exc:
                    raise ArchiveUnavailable(
                        f"{self.settings.name} ended the transfer early; nothing from this pull "
                        "was delivered. Try again.",
                        log_message=f"WADO-RS {_for_log(path)}: {exc}",
                    ) from None

    def _check(self, response: httpx.Response, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            message = (
                f"{self.settings.name} refused the gateway's credentials. This is a workbench "
                "configuration problem; the admins have been told in the gateway log."
            )
        elif status == 404:
            message = f"{self.settings.name} no longer has an object you selected; search again."
        else:
            message = f"{self.settings.name} failed to answer (HTTP {status}); try again later."
        raise ArchiveUnavailable(message, log_message=f"{_for_log(path)}: HTTP {status}")

    def _errors(self, path: str) -> _ArchiveErrors:
        return _ArchiveErrors(self.settings, path)


class _ArchiveErrors:
    """Turn transport errors into messages a researcher can act on."""

    def __init__(self, settings: ArchiveSettings, path: str) -> None:
        self.settings = settings
        self.path = _for_log(path)

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, httpx.HTTPError):
            return False
        name = self.settings.name
        if isinstance(exc, httpx.TimeoutException):
            raise ArchiveTimeout(
                f"{name} did not answer within {self.settings.timeout_seconds:g} s. It may be "
                "busy; try again later or with narrower criteria.",
                log_message=f"{self.path}: {type(exc).__name__}",
            ) from None
        raise ArchiveUnavailable(
            f"{name} cannot be reached right now; try again later. If it persists, tell the "
            "workbench admins.",
            log_message=f"{self.path}: {type(exc).__name__}: {exc}",
        ) from None


_UID_STEP = re.compile(r"(?<=/)[0-9.]+(?=/|$)")


def _for_log(path: str) -> str:
    """``studies/1.2.3/series/4.5.6`` -> ``studies/…/series/…``: the archive's UIDs are
    identifying (they find the patient in the archive) and stay out of the gateway log."""
    return _UID_STEP.sub("\u2026", path)


def _uid(value: str) -> str:
    """UIDs go into URL paths: only digits and dots are accepted."""
    if not value or len(value) > 64 or not all(c.isdigit() or c == "." for c in value):
        raise ValueError(f"not a DICOM UID: {value!r}")
    return value
