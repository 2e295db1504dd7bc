"""DIMSE integration: C-FIND to search, C-GET or C-MOVE to retrieve (pynetdicom).

The second implementation of :class:`.integration.Archive`, for archives reached over the
DICOM port. pynetdicom is synchronous: each operation runs in a thread of its own and hands
objects to the event loop as they arrive, so a pull de-identifies while the archive is
still sending.

- **C-FIND** at study, series and image level. DIMSE has no ``offset``: a page is read from
  the start of the match list, and reading stops (A-ABORT) once enough matches are in or
  ``max_results`` is passed, which the page reports as ``capped``.
- **C-GET**: the archive sends the objects back on the gateway's association. The gateway
  proposes, for each SOP class of the series (from an image-level C-FIND), one presentation
  context per transfer syntax it can store, so the archive sends each object as stored and
  never has to transcode (Orthanc's transcoding is off; see ``demo/orthanc.py``).
- **C-MOVE**: the archive opens an association to the gateway's own storage SCP
  (:class:`StorageSCP`, started on first use). The SCP accepts associations from the
  archive's AE title only, then checks the sender's address, and only objects of a move it
  is waiting for: each C-MOVE gets its own message ID, and archives that name the move
  originator (PS3.7 C.4.2.1.4, Orthanc does) are routed by it; others by series UID.

Failures become :class:`.errors.ArchiveUnavailable` or :class:`.errors.ArchiveTimeout` with
a message for the researcher and the DIMSE detail for the log: a rejected association (an
unregistered calling AE), an unknown move destination, failed sub-operations, a peer that
stops answering within ``timeout_seconds``. Status codes are read through the tables in
:mod:`.dimse_status`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_role,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from . import dimse_status
from .dimse_status import Category, Status
from .errors import ArchiveTimeout, ArchiveUnavailable, GatewayError
from .integration import ArchiveTraits, StudyPage
from .multipart import Part
from .queries import STUDY_FIELDS, StudyQuery

if TYPE_CHECKING:
    from hub_config.model import ArchiveConnection

log = logging.getLogger(__name__)

FIND_MODEL = StudyRootQueryRetrieveInformationModelFind
GET_MODEL = StudyRootQueryRetrieveInformationModelGet
MOVE_MODEL = StudyRootQueryRetrieveInformationModelMove

#: Transfer syntaxes proposed per SOP class for C-GET, most common first: every one the
#: gateway can store and de-identify (pixels are not decoded for delivery).
RETRIEVE_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still stored)
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 part 2 lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 part 2
)
MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255

STUDY_KEYS = STUDY_FIELDS  # the names too: a summary's description is cleaned of them
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
               "NumberOfSeriesRelatedInstances")
IMAGE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")


@dataclass(frozen=True)
class DimseSettings:
    host: str
    port: int
    called_aet: str
    calling_aet: str
    retrieve: str = "c-get"  # or "c-move"
    move_destination: str | None = None
    storage_bind: str = "127.0.0.1"
    storage_port: int | None = None
    max_results: int = 1000
    timeout_seconds: float = 30.0
    name: str = "the archive"
    max_pdu: int = 262144  # what the gateway accepts per PDU (pynetdicom's default: 16 KiB)

    @classmethod
    def from_config(cls, connection: ArchiveConnection) -> DimseSettings:
        dimse = connection.dimse
        assert dimse is not None
        return cls(
            host=dimse.host, port=dimse.port, called_aet=dimse.called_aet,
            calling_aet=dimse.calling_aet, retrieve=dimse.retrieve,
            move_destination=dimse.move_destination, storage_bind=dimse.storage_bind,
            storage_port=dimse.storage_port, max_results=dimse.max_results,
            timeout_seconds=connection.timeout_seconds, name=connection.name,
        )

    @property
    def destination_aet(self) -> str:
        return self.move_destination or self.calling_aet


class DimseArchive:
    integration = "dimse"

    def __init__(self, settings: DimseSettings, traits: ArchiveTraits | None = None) -> None:
        if settings.retrieve not in ("c-get", "c-move"):
            raise ValueError(f"retrieve must be c-get or c-move, not {settings.retrieve!r}")
        if settings.retrieve == "c-move" and settings.storage_port is None:
            raise ValueError("C-MOVE needs the gateway's storage_port")
        self.settings = settings
        self.traits = traits or ArchiveTraits()
        self._scp: StorageSCP | None = None
        self._scp_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.settings.name

    async def aclose(self) -> None:
        if self._scp is not None:
            await asyncio.to_thread(self._scp.stop)
            self._scp = None

    # -- search -----------------------------------------------------------------------------
    async def find_studies(self, query: StudyQuery, *, limit: int, offset: int) -> StudyPage:
        identifier = _identifier("STUDY", STUDY_KEYS, {
            "ModalitiesInStudy": query.modality or "",
            "StudyDate": query.date_range or "",
            "StudyDescription": query.description or "",
        })
        cap = self.settings.max_results
        want = min(offset + limit, cap) + 1
        found = await asyncio.to_thread(self._find, identifier, want)
        matches = found[:cap]
        page = matches[offset : offset + limit]
        end = offset + limit
        return StudyPage(
            [_json(ds) for ds in page],
            more=len(found) > end and end < cap,
            capped=len(found) > cap and end >= cap,
        )

    async def find_series(self, study_uid: str) -> list[dict[str, Any]]:
        identifier = _identifier("SERIES", SERIES_KEYS, {"StudyInstanceUID": _uid(study_uid)})
        found = await asyncio.to_thread(self._find, identifier, self.settings.max_results)
        return [_json(ds) for ds in found]

    async def find_instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        identifier = _identifier("IMAGE", IMAGE_KEYS, {
            "StudyInstanceUID": _uid(study_uid), "SeriesInstanceUID": _uid(series_uid),
        })
        found = await asyncio.to_thread(self._find, identifier, 100_000)
        return [_json(ds) for ds in found]

    # -- retrieve ---------------------------------------------------------------------------
    async def retrieve_series(self, study_uid: str, series_uid: str) -> AsyncIterator[Part]:
        identifier = _identifier("SERIES", (), {
            "StudyInstanceUID": _uid(study_uid), "SeriesInstanceUID": _uid(series_uid),
        })
        target = _Target(study_uid, series_uid)
        if self.settings.retrieve == "c-move":
            stream = self._stream(lambda sink, stop: self._move(identifier, target, sink, stop))
        else:
            instances = await self.find_instances(study_uid, series_uid)
            classes = sorted({_first(i, "00080016") for i in instances} - {""})
            if not classes:
                return
            stream = self._stream(lambda sink, stop: self._get(identifier, classes, sink, stop))
        async for part in stream:
            yield part

    async def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Part:
        identifier = _identifier("IMAGE", (), {
            "StudyInstanceUID": _uid(study_uid), "SeriesInstanceUID": _uid(series_uid),
            "SOPInstanceUID": _uid(sop_uid),
        })
        if self.settings.retrieve == "c-move":
            target = _Target(study_uid, series_uid, sop_uid)
            stream = self._stream(lambda sink, stop: self._move(identifier, target, sink, stop))
        else:
            found = await asyncio.to_thread(self._find, _identifier("IMAGE", ("SOPClassUID",), {
                "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                "SOPInstanceUID": sop_uid,
            }), 2)
            classes = sorted({str(ds.get("SOPClassUID", "")) for ds in found} - {""})
            if not classes:
                raise ArchiveUnavailable(f"{self.name} no longer has an object you selected; search again.",
                                         log_message="C-FIND IMAGE: no SOP class for the instance")
            stream = self._stream(lambda sink, stop: self._get(identifier, classes, sink, stop))
        parts = [part async for part in stream]
        if len(parts) != 1:
            raise ArchiveUnavailable(
                f"{self.name} answered {len(parts)} objects for one instance.",
                log_message=f"retrieve of one instance: {len(parts)} objects",
            )
        return parts[0]

    # -- blocking operations (worker threads) ------------------------------------------------
    def _ae(self) -> AE:
        ae = AE(ae_title=self.settings.calling_aet)
        timeout = self.settings.timeout_seconds
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.maximum_pdu_size = self.settings.max_pdu
        return ae

    def _associate(self, ae: AE, **kwargs: Any) -> Association:
        started = time.monotonic()
        assoc = ae.associate(self.settings.host, self.settings.port,
                             ae_title=self.settings.called_aet, **kwargs)
        if assoc.is_established:
            return assoc
        where = f"{self.settings.called_aet}@{self.settings.host}:{self.settings.port}"
        if assoc.is_rejected:
            raise ArchiveUnavailable(
                f"{self.name} refused the gateway's DICOM association. This is a workbench "
                "configuration problem (the archive must know the gateway's AE title and "
                "address); the admins have been told in the gateway log.",
                reason="association_rejected",
                log_message=f"A-ASSOCIATE-RJ from {where} for calling AE "
                f"{self.settings.calling_aet!r}: {_rejection(assoc)}",
            )
        if time.monotonic() - started >= self.settings.timeout_seconds * 0.9:
            raise self._timeout(f"association with {where}")
        raise ArchiveUnavailable(
            f"{self.name} cannot be reached right now; try again later. If it persists, tell "
            "the workbench admins.",
            log_message=f"association with {where} failed (no answer or aborted)",
        )

    def _timeout(self, what: str) -> ArchiveTimeout:
        return ArchiveTimeout(
            f"{self.name} did not answer within {self.settings.timeout_seconds:g} s. It may be "
            "busy; try again later or with narrower criteria.",
            log_message=f"DIMSE timeout: {what}",
        )

    def _lost(self, assoc: Association, operation: str, started: float) -> GatewayError:
        if time.monotonic() - started >= self.settings.timeout_seconds * 0.9:
            return self._timeout(operation)
        return ArchiveUnavailable(
            f"{self.name} broke off the transfer; nothing from it was used. Try again.",
            log_message=f"{operation}: association ended without a final status "
            f"(aborted={assoc.is_aborted})",
        )

    def _find(self, identifier: Dataset, want: int) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(FIND_MODEL)
        assoc = self._associate(ae)
        found: list[Dataset] = []
        started = time.monotonic()
        try:
            for status, match in assoc.send_c_find(identifier, FIND_MODEL):
                if "Status" not in status:
                    raise self._lost(assoc, "C-FIND", started)
                info = dimse_status.describe(dimse_status.FIND, int(status.Status))
                if info.category == Category.PENDING:
                    if match is not None:
                        found.append(match)
                    if len(found) >= want:
                        assoc.abort()  # enough: DIMSE has no offset, stop the archive here
                        return found
                    started = time.monotonic()
                elif info.category == Category.FAILURE:
                    raise ArchiveUnavailable(
                        f"{self.name} could not answer the search ({info}). Try narrower "
                        "criteria; if it persists, tell the workbench admins.",
                        log_message=f"C-FIND {identifier.QueryRetrieveLevel}: {info}",
                    )
        finally:
            if assoc.is_established:
                assoc.release()
        return found

    def _get(self, identifier: Dataset, sop_classes: list[str], sink: Callable[[Part], None],
             stop: threading.Event) -> None:
        ae = self._ae()
        ae.add_requested_context(GET_MODEL)
        per_class = min(len(RETRIEVE_SYNTAXES), (MAX_CONTEXTS - 1) // max(len(sop_classes), 1))
        if per_class < 1:
            raise ArchiveUnavailable(
                f"The series holds {len(sop_classes)} kinds of objects, more than one C-GET can "
                "carry; ask the workbench admins to use C-MOVE for this archive.",
                log_message=f"C-GET: {len(sop_classes)} SOP classes",
            )
        for sop_class in sop_classes:
            for syntax in RETRIEVE_SYNTAXES[:per_class]:
                ae.add_requested_context(sop_class, syntax)
        roles = [build_role(sop_class, scp_role=True) for sop_class in sop_classes]

        def on_store(event: evt.Event) -> int:
            if stop.is_set():
                return int(Status.OUT_OF_RESOURCES)
            sink(_part(event))
            return int(Status.SUCCESS)

        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        self._retrieve(assoc, lambda: assoc.send_c_get(identifier, GET_MODEL), "C-GET",
                       dimse_status.GET, stop)

    def _move(self, identifier: Dataset, target: _Target, sink: Callable[[Part], None],
              stop: threading.Event) -> None:
        scp = self._storage_scp()
        message_id = scp.register(_Route(target, sink, stop))
        try:
            ae = self._ae()
            ae.add_requested_context(MOVE_MODEL)
            assoc = self._associate(ae)
            destination = self.settings.destination_aet
            self._retrieve(
                assoc,
                lambda: assoc.send_c_move(identifier, destination, MOVE_MODEL, msg_id=message_id),
                "C-MOVE", dimse_status.MOVE, stop,
            )
        finally:
            scp.unregister(message_id)

    def _retrieve(self, assoc: Association, send: Callable[[], Any], operation: str,
                  table: tuple[dimse_status.Row, ...], stop: threading.Event) -> None:
        started = time.monotonic()
        final: Dataset | None = None
        try:
            for status, _identifier_ in send():
                if stop.is_set():
                    assoc.abort()
                    return
                if "Status" not in status:
                    raise self._lost(assoc, operation, started)
                final = status
                started = time.monotonic()
                if dimse_status.describe(table, int(status.Status)).category != Category.PENDING:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        if final is None:
            raise self._lost(assoc, operation, started)
        self._check_final(final, operation, table)

    def _check_final(self, final: Dataset, operation: str, table: tuple[dimse_status.Row, ...]) -> None:
        code = int(final.Status)
        info = dimse_status.describe(table, code)
        completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        warned = int(final.get("NumberOfWarningSuboperations", 0) or 0)
        detail = (f"{operation} final status {info}: completed {completed}, failed {failed}, "
                  f"warning {warned}; comment {final.get('ErrorComment', '')!r}")
        if info.category == Category.SUCCESS and failed == 0:
            return
        destination = self.settings.destination_aet
        if code == Status.MOVE_DESTINATION_UNKNOWN or (
            operation == "C-MOVE" and info.category == Category.FAILURE and completed == 0
            and 0xC000 <= code <= 0xCFFF
        ):
            raise ArchiveUnavailable(
                f"{self.name} would not send the images to the gateway ({operation} status "
                f"{info}). Most often the archive does not know the gateway's storage AE title "
                f"{destination!r} as a destination (with the gateway's host and port "
                f"{self.settings.storage_port}). This is a workbench configuration problem; the "
                "admins have been told in the gateway log.",
                reason="move_destination_unknown" if code == Status.MOVE_DESTINATION_UNKNOWN
                else "move_refused",
                log_message=detail,
            )
        if failed or info.category == Category.WARNING:
            raise ArchiveUnavailable(
                f"{self.name} could send only {completed} of {completed + failed + warned} "
                f"images ({failed} failed); nothing was delivered. Try again; if it persists, "
                "tell the workbench admins.",
                reason="sub_operations_failed",
                log_message=detail,
            )
        raise ArchiveUnavailable(
            f"{self.name} refused to send the images ({operation} status {info}). Try again "
            "later; if it persists, tell the workbench admins.",
            log_message=detail,
        )

    def _storage_scp(self) -> StorageSCP:
        with self._scp_lock:
            if self._scp is None:
                assert self.settings.storage_port is not None
                scp = StorageSCP(
                    aet=self.settings.destination_aet, bind=self.settings.storage_bind,
                    port=self.settings.storage_port, archive_aet=self.settings.called_aet,
                    archive_host=self.settings.host, timeout=self.settings.timeout_seconds,
                    max_pdu=self.settings.max_pdu,
                )
                scp.start()
                self._scp = scp
            return self._scp

    # -- threads to the event loop ------------------------------------------------------------
    async def _stream(
        self, run: Callable[[Callable[[Part], None], threading.Event], None]
    ) -> AsyncIterator[Part]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def work() -> None:
            try:
                run(put, stop)
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                put(_Failed(error))
                return
            put(_DONE)

        threading.Thread(target=work, name="dimse-retrieve", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()


@dataclass(frozen=True)
class _Target:
    study_uid: str
    series_uid: str
    sop_uid: str | None = None

    def holds(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        return (study_uid == self.study_uid and series_uid == self.series_uid
                and (self.sop_uid is None or sop_uid == self.sop_uid))


@dataclass
class _Route:
    target: _Target
    sink: Callable[[Part], None]
    stop: threading.Event
    received: int = 0


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class StorageSCP:
    """The gateway's storage SCP for C-MOVE: accepts only what a running move asked for."""

    _ids = itertools.count(1)

    def __init__(self, *, aet: str, bind: str, port: int, archive_aet: str, archive_host: str,
                 timeout: float = 30.0, max_pdu: int = 262144) -> None:
        self.aet = aet
        self.bind = bind
        self.port = port
        self.archive_aet = archive_aet
        self.archive_addresses = _addresses(archive_host)
        self.timeout = timeout
        self.max_pdu = max_pdu
        self._routes: dict[int, _Route] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self.refused: list[str] = []  # why objects were refused (no patient data), newest last

    def start(self) -> None:
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        ae.require_calling_aet = [self.archive_aet]
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        try:
            self._server = ae.start_server((self.bind, self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except OSError as exc:
            raise ArchiveUnavailable(
                "The gateway cannot receive images from the archive right now (its storage "
                "port is not available); the admins have been told in the gateway log.",
                log_message=f"storage SCP {self.aet} on {self.bind}:{self.port}: {exc}",
            ) from None
        log.info("storage SCP %s listening on %s:%d for %s", self.aet, self.bind, self.port,
                 self.archive_aet)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def register(self, route: _Route) -> int:
        with self._lock:
            while True:
                message_id = next(self._ids) % 65535 + 1
                if message_id not in self._routes:
                    self._routes[message_id] = route
                    return message_id

    def unregister(self, message_id: int) -> None:
        with self._lock:
            self._routes.pop(message_id, None)

    def _on_store(self, event: evt.Event) -> int:
        address = event.assoc.requestor.address
        if address not in self.archive_addresses:
            return self._refuse(f"C-STORE from {address}, not the archive's host")
        request = event.request
        originator = str(request.MoveOriginatorApplicationEntityTitle or "").strip()
        message_id = request.MoveOriginatorMessageID
        ds = event.dataset
        uids = (str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
                str(ds.get("SOPInstanceUID", "")))
        with self._lock:
            route = self._routes.get(message_id) if originator == self.aet and message_id else None
            named = route is not None
            if route is None:  # archives that do not name the originator: by UIDs
                route = next((r for r in self._routes.values() if r.target.holds(*uids)), None)
        if route is None or not (named or route.target.holds(*uids)):
            return self._refuse(f"C-STORE of an object no running C-MOVE asked for (message {message_id})")
        # Sent for a running move (by the archive, naming it) but not one of the series asked
        # for: accepted here and refused by the pull for what it is (another study's object),
        # as C-GET does; refusing the C-STORE would fail the whole move.
        if route.stop.is_set():
            return int(Status.OUT_OF_RESOURCES)
        route.sink(_part(event))
        route.received += 1
        return int(Status.SUCCESS)

    def _refuse(self, why: str) -> int:
        log.warning("storage SCP refused an object: %s", why)
        self.refused.append(why)
        del self.refused[:-20]
        return int(Status.UNEXPECTED_OBJECT)


# -- helpers -------------------------------------------------------------------------------

def _identifier(level: str, keys: tuple[str, ...], values: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in keys:
        setattr(ds, keyword, "")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _json(ds: Dataset) -> dict[str, Any]:
    """A C-FIND identifier as a DICOM JSON record (what QIDO-RS answers)."""
    clean = Dataset()
    for elem in ds:
        if elem.keyword not in ("QueryRetrieveLevel", "RetrieveAETitle"):
            clean.add(elem)
    return clean.to_json_dict()


def _part(event: evt.Event) -> Part:
    syntax = str(event.context.transfer_syntax)
    return Part({"content-type": f"application/dicom; transfer-syntax={syntax}"},
                event.encoded_dataset(include_meta=True))


def _first(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else ""


def _uid(value: str) -> str:
    if not value or len(value) > 64 or not all(c.isdigit() or c == "." for c in value):
        raise ValueError(f"not a DICOM UID: {value!r}")
    return str(UID(value))


def _rejection(assoc: Association) -> str:
    primitive = getattr(assoc.acceptor, "primitive", None)
    parts = [getattr(primitive, name, None) for name in ("result_str", "source_str", "reason_str")]
    return ", ".join(str(p) for p in parts if p) or "rejected"


def _addresses(host: str) -> frozenset[str]:
    found = {host}
    try:
        found.update(info[4][0] for info in socket.getaddrinfo(host, None))
    except OSError:
        pass
    if found & {"localhost", "127.0.0.1", "::1"}:
        found.update({"127.0.0.1", "::1"})
    return frozenset(found)


__all__ = ["RETRIEVE_SYNTAXES", "DimseArchive", "DimseSettings", "StorageSCP"]
