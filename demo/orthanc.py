"""A real Orthanc PACS as a child process: the stand-in for RIPA in demos and tests.

Two layers, as in kubespawner's ``objects.py``:

- :func:`orthanc_config` is pure: it builds the JSON configuration and checks its inputs.
- :class:`OrthancServer` only coordinates: it writes that configuration to a private temporary
  folder, runs ``Orthanc CONFIG.json`` in the foreground, waits until ``GET /system`` answers
  with the credentials, uploads files, and stops the process.

Facts about Orthanc 1.10.1 (Debian 12: orthanc 1.10.1+dfsg-2+deb12u1, orthanc-dicomweb 1.7,
orthanc-gdcm 1.5 with GDCM 3.0.21), checked on these machines:

- **Binding.** The HTTP server (CivetWeb) and the DICOM server (DCMTK) both listen on all
  interfaces (``0.0.0.0``); Orthanc 1.10 has no option to bind 127.0.0.1 only
  (``HttpBindAddresses`` appeared in the Orthanc mainline in September 2025, for HTTP only).
  What protects this server is therefore its configuration: ``RemoteAccessAllowed: false``
  (HTTP requests from any address but loopback are refused, credentials or not: Orthanc
  answers 401 as for a wrong password),
  HTTP basic authentication for every request, and for DICOM a called-AET check, no
  ``DicomAlwaysAllow*`` and registered modalities whose host is checked
  (``DicomCheckModalityHost``): an association from an unknown AET, or from a known AET at
  another address, is rejected. Where a host has other interfaces, a host firewall is still
  the right complement.
- **Plugins.** A plugin path that does not exist is logged and ignored; Orthanc starts
  anyway. :meth:`OrthancServer.start` therefore checks ``GET /plugins`` and fails when
  ``dicom-web`` or ``gdcm`` is missing.
- **Transcoding.** With GDCM restricted to the JPEG 2000 transfer syntaxes (built-in DCMTK
  handles JPEG, JPEG-LS and RLE), *decoding* JPEG 2000 (``/preview``, ``/rendered``) is fine,
  but *transcoding* JPEG 2000 to another syntax through GDCM (a WADO-RS request without
  ``transfer-syntax=*``, ``/modify`` with ``Transcode``, a C-GET/C-STORE to a peer that does
  not accept JPEG 2000) segfaults the whole server in ``gdcm::ImageWriter::Write``,
  intermittently: the same CT file survived 1 to 6 transcodes before the crash, and single
  requests crashed it for several of the 10 JPEG 2000 test files tried. Clients must ask
  WADO-RS for ``transfer-syntax=*`` (as stored) and decode themselves (pydicom + pylibjpeg);
  by default this configuration also turns off transcoding on the DICOM protocol, so a DIMSE
  peer that does not propose the stored syntax gets a failed sub-operation, not a dead PACS.
- ``RestApiWriteToFileSystemEnabled`` is an Orthanc 1.12.0 option; Debian's 1.10.1 carries the
  backported fix (its log says "Rest API can not write to the file system"), and the option
  is set to ``false`` explicitly. Unknown options are ignored silently by Orthanc 1.10.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

__all__ = [
    "DEFAULT_PLUGIN_DIR",
    "GDCM_TRANSFER_SYNTAXES",
    "Modality",
    "OrthancError",
    "OrthancServer",
    "OrthancStartError",
    "OrthancUploadError",
    "UploadFailure",
    "find_free_port",
    "find_free_ports",
    "orthanc_config",
]

DEFAULT_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
GDCM_PLUGIN = "libOrthancGdcm.so"
DICOMWEB_ROOT = "/dicom-web/"
# GDCM only for what DCMTK (Orthanc's built-in codec) cannot decode: JPEG 2000. Letting GDCM
# handle the JPEG family too can abort the whole server on some transcodes.
GDCM_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000 Image Compression
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component (Lossless Only)
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
)
_AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
_WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


class OrthancError(RuntimeError):
    """Base class of the errors of this module."""


class OrthancStartError(OrthancError):
    """Orthanc did not come up; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "", *, port_in_use: bool = False) -> None:
        self.log_tail = log_tail
        self.port_in_use = port_in_use
        super().__init__(f"{message}\n--- Orthanc log (tail) ---\n{log_tail}" if log_tail else message)


@dataclass(frozen=True)
class UploadFailure:
    path: Path
    status_code: int | None
    message: str

    def __str__(self) -> str:
        status = f"HTTP {self.status_code}" if self.status_code is not None else "no answer"
        return f"{self.path}: {status}: {self.message}"


class OrthancUploadError(OrthancError):
    """Some files were not stored. ``failures`` says which and why; ``stored`` maps the
    paths that did get stored to their Orthanc instance ids."""

    def __init__(self, failures: list[UploadFailure], stored: dict[Path, str]) -> None:
        self.failures = failures
        self.stored = stored
        shown = "\n  ".join(str(f) for f in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(
            f"{len(failures)} of {len(failures) + len(stored)} file(s) were not stored in Orthanc:"
            f"\n  {shown}{more}"
        )


@dataclass(frozen=True)
class Modality:
    """A DICOM peer allowed to talk to Orthanc, from ``host`` only, under ``aet``.

    The defaults suit a query/retrieve client such as the sample gateway: it may echo, find,
    get and move, but not store into the archive.
    """

    aet: str
    host: str = "127.0.0.1"
    port: int = 104
    allow_echo: bool = True
    allow_find: bool = True
    allow_get: bool = True
    allow_move: bool = True
    allow_store: bool = False

    def to_orthanc(self) -> dict[str, Any]:
        return {
            "AET": self.aet,
            "Host": self.host,
            "Port": self.port,
            "Manufacturer": "Generic",
            "AllowEcho": self.allow_echo,
            "AllowFind": self.allow_find,
            "AllowFindWorklist": False,
            "AllowGet": self.allow_get,
            "AllowMove": self.allow_move,
            "AllowStore": self.allow_store,
            "AllowStorageCommitment": False,
            "AllowTranscoding": False,
        }


# --------------------------------------------------------------------------- pure builder


def orthanc_config(
    http_port: int,
    dicom_port: int,
    storage_dir: str | os.PathLike[str],
    users: Mapping[str, str],
    aet: str = "RIPA",
    modalities: Mapping[str, Modality | Mapping[str, Any]] | None = None,
    *,
    plugin_dir: str | os.PathLike[str] = DEFAULT_PLUGIN_DIR,
    transcode_dicom_protocol: bool = False,
) -> dict[str, Any]:
    """Build a locked-down Orthanc 1.10 configuration (pure: no I/O).

    ``users`` maps user names to passwords for HTTP basic authentication (required: an
    Orthanc without users would answer everybody on loopback). ``modalities`` maps a symbolic
    name to a :class:`Modality` or a mapping with the same field names (``aet``, ``host``,
    ``port``, ``allow_*``); only those peers may open a DICOM association, from their host.
    ``transcode_dicom_protocol`` turns Orthanc's on-the-fly transcoding for DIMSE peers back
    on (see the module docstring for why it is off).

    Raises :class:`ValueError` with a readable message for a bad port, AET, user or host.
    """
    for name, port in (("http_port", http_port), ("dicom_port", dicom_port)):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"{name} must be an integer in 1..65535, got {port!r}")
    if http_port == dicom_port:
        raise ValueError(f"http_port and dicom_port must differ (both {http_port})")
    storage = Path(storage_dir)
    if not storage.is_absolute():
        raise ValueError(f"storage_dir must be an absolute path, got {str(storage)!r}")
    _check_aet(aet, "aet")
    if not users:
        raise ValueError("users must name at least one user: authentication is always on")
    for user, password in users.items():
        if not user or ":" in user or not user.isprintable():
            raise ValueError(f"user name {user!r} is not usable with HTTP basic authentication")
        if not password:
            raise ValueError(f"user {user!r} has an empty password")
    peers = {name: _as_modality(name, spec) for name, spec in (modalities or {}).items()}
    plugins = Path(plugin_dir)
    return {
        "Name": aet,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        # Demo data can be rebuilt: no fsync per instance.
        "SyncStorageArea": False,
        "Plugins": [str(plugins / DICOMWEB_PLUGIN), str(plugins / GDCM_PLUGIN)],
        "LuaScripts": [],
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        # HTTP: loopback only, authenticated, no web UI or WebDAV share.
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": dict(users),
        "SslEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "WebDavDeleteAllowed": False,
        "WebDavUploadAllowed": False,
        "HttpDescribeErrors": True,
        "HttpCompressionEnabled": False,
        "HttpThreadsCount": 16,
        "HttpRequestTimeout": 30,
        # Outgoing HTTP (there are no peers): short timeout, verified TLS.
        "HttpTimeout": 10,
        "HttpsVerifyPeers": True,
        "HttpProxy": "",
        "OrthancPeers": {},
        "OrthancPeersInDatabase": False,
        # DICOM: called AET checked; only registered modalities, from their host.
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "StrictAetComparison": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {name: m.to_orthanc() for name, m in peers.items()},
        "DicomModalitiesInDatabase": False,
        "UnknownSopClassAccepted": False,
        "DicomTlsEnabled": False,
        "DicomScpTimeout": 30,
        "DicomScuTimeout": 10,
        "TranscodeDicomProtocol": transcode_dicom_protocol,
        "BuiltinDecoderTranscoderOrder": "After",
        "StableAge": 2,
        "OverwriteInstances": True,
        "DeidentifyLogs": True,
        "DicomWeb": {
            "Enable": True,
            "Root": DICOMWEB_ROOT,
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
        },
        "Gdcm": {
            "Enable": True,
            "Throttling": 1,
            "RestrictTransferSyntaxes": list(GDCM_TRANSFER_SYNTAXES),
        },
    }


def _check_aet(aet: str, what: str) -> None:
    if not isinstance(aet, str) or not _AET_RE.match(aet) or aet.strip() != aet:
        raise ValueError(
            f"{what} {aet!r} is not a valid AE title (1-16 printable ASCII characters, "
            "no backslash, no leading or trailing space)"
        )


def _as_modality(name: str, spec: Modality | Mapping[str, Any]) -> Modality:
    if not name or not name.isidentifier():
        raise ValueError(f"modality name {name!r} must be a simple identifier")
    if not isinstance(spec, Modality):
        try:
            spec = Modality(**dict(spec))
        except TypeError as exc:
            raise ValueError(f"modality {name!r}: {exc}") from None
    _check_aet(spec.aet, f"modality {name!r}: AET")
    if spec.host.strip() in _WILDCARD_HOSTS:
        raise ValueError(f"modality {name!r}: host {spec.host!r} would disable the host check")
    if not isinstance(spec.port, int) or not 1 <= spec.port <= 65535:
        raise ValueError(f"modality {name!r}: port must be in 1..65535, got {spec.port!r}")
    return spec


# --------------------------------------------------------------------------- ports


def find_free_ports(count: int, host: str = "0.0.0.0") -> list[int]:
    """``count`` distinct TCP ports free right now on ``host``.

    The default probes all interfaces, because that is where Orthanc 1.10 binds. Another
    process can still take a port before Orthanc does; :meth:`OrthancServer.start` retries
    with new ports when it picked them itself.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def find_free_port(host: str = "0.0.0.0") -> int:
    """One free TCP port (see :func:`find_free_ports`)."""
    return find_free_ports(1, host)[0]


# --------------------------------------------------------------------------- the process


@dataclass
class _Run:
    """Per-start state, cleared by ``stop``."""

    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    log_file: Any = field(repr=False)


class OrthancServer:
    """An Orthanc child process on loopback ports, with a typed, small API.

    >>> with OrthancServer() as pacs:                     # doctest: +SKIP
    ...     ids = pacs.upload(archive.paths())
    ...     httpx.get(pacs.dicomweb_url + "/studies", auth=pacs.auth)

    ``storage_dir`` defaults to a temporary folder removed by :meth:`stop`; pass a folder to
    keep the archive between runs. Ports default to free ones. ``users`` defaults to one
    user, ``ripa``, with a random password (see :attr:`username` / :attr:`password`).
    ``modalities`` are the DICOM peers allowed in (see :class:`Modality`).
    """

    def __init__(
        self,
        storage_dir: str | os.PathLike[str] | None = None,
        *,
        http_port: int | None = None,
        dicom_port: int | None = None,
        users: Mapping[str, str] | None = None,
        aet: str = "RIPA",
        modalities: Mapping[str, Modality | Mapping[str, Any]] | None = None,
        executable: str = "Orthanc",
        plugin_dir: str | os.PathLike[str] = DEFAULT_PLUGIN_DIR,
        start_timeout: float = 30.0,
        transcode_dicom_protocol: bool = False,
    ) -> None:
        self._storage_arg = Path(storage_dir).resolve() if storage_dir is not None else None
        self._fixed_http_port = http_port
        self._fixed_dicom_port = dicom_port
        self._http_port = http_port
        self._dicom_port = dicom_port
        self._users = dict(users) if users else {"ripa": secrets.token_urlsafe(18)}
        self.aet = aet
        self._modalities = dict(modalities or {})
        self.executable = executable
        self.plugin_dir = Path(plugin_dir)
        self.start_timeout = start_timeout
        self.transcode_dicom_protocol = transcode_dicom_protocol
        self._run: _Run | None = None
        self._storage_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._finalizer: weakref.finalize | None = None
        # Validate the arguments now, with placeholder ports for those not chosen yet.
        check_http = http_port if http_port is not None else (1 if dicom_port != 1 else 2)
        check_dicom = dicom_port if dicom_port is not None else (3 if check_http != 3 else 4)
        orthanc_config(check_http, check_dicom, self._storage_arg or "/", self._users, aet,
                       self._modalities, plugin_dir=self.plugin_dir)

    # -- addresses and credentials ----------------------------------------------------------

    @property
    def http_port(self) -> int:
        if self._http_port is None:
            raise OrthancError("ports are chosen by start(): the server is not started")
        return self._http_port

    @property
    def dicom_port(self) -> int:
        if self._dicom_port is None:
            raise OrthancError("ports are chosen by start(): the server is not started")
        return self._dicom_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Root of the DICOMweb API, ``http://127.0.0.1:PORT/dicom-web`` (no trailing slash)."""
        return self.base_url + DICOMWEB_ROOT.rstrip("/")

    @property
    def username(self) -> str:
        return next(iter(self._users))

    @property
    def password(self) -> str:
        return self._users[self.username]

    @property
    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.username, self.password)

    @property
    def storage_dir(self) -> Path | None:
        if self._storage_arg is not None:
            return self._storage_arg
        return Path(self._storage_tmp.name) if self._storage_tmp else None

    @property
    def log_path(self) -> Path | None:
        return self._run.log_path if self._run else None

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._run.process.pid if self._run else None

    def config(self) -> dict[str, Any]:
        """The configuration this server runs with (it holds the passwords)."""
        storage = self.storage_dir
        if storage is None:
            raise OrthancError("the storage folder is chosen by start(): the server is not started")
        return orthanc_config(self.http_port, self.dicom_port, storage, self._users, self.aet,
                              self._modalities, plugin_dir=self.plugin_dir,
                              transcode_dicom_protocol=self.transcode_dicom_protocol)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on :attr:`base_url` with the credentials (close it after use)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.base_url, auth=self.auth, **kwargs)

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        ports = f"http={self._http_port} dicom={self._dicom_port}"
        return f"<OrthancServer {self.aet} {ports} {state}>"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start Orthanc and wait until it answers; returns ``self``.

        Raises :class:`OrthancStartError` (with the log tail) when the executable is missing,
        the process exits, a required plugin did not load, or ``start_timeout`` passes. A failed
        start leaves nothing running. When the ports were picked automatically and one was
        taken in the meantime, it retries twice with new ports.
        """
        if self.running:
            return self
        if shutil.which(self.executable) is None:
            raise OrthancStartError(f"Orthanc executable {self.executable!r} not found on PATH")
        if self._storage_arg is None and self._storage_tmp is None:
            self._storage_tmp = tempfile.TemporaryDirectory(prefix="orthanc-storage-")
        assert self.storage_dir is not None
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        auto_ports = self._fixed_http_port is None or self._fixed_dicom_port is None
        attempts = 3 if auto_ports else 1
        for attempt in range(attempts):
            if auto_ports:
                free = iter(p for p in find_free_ports(3)
                            if p not in (self._fixed_http_port, self._fixed_dicom_port))
                self._http_port = self._fixed_http_port or next(free)
                self._dicom_port = self._fixed_dicom_port or next(free)
            try:
                self._spawn()
                self._wait_ready()
                return self
            except OrthancStartError as exc:
                self._shutdown(0.0, keep_storage=True)
                if not (exc.port_in_use and attempt + 1 < attempts):
                    self._cleanup_storage()
                    raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop Orthanc; returns its exit status.

        With a given ``storage_dir`` Orthanc is asked to shut down (SIGTERM; it takes about
        3.5 s to close its index) and killed after ``timeout``; a temporary storage, about to
        be deleted, is not worth the wait and the process is killed at once. Safe to call
        twice. Removes the private configuration folder (it holds the passwords) and, unless
        ``storage_dir`` was given, the storage.
        """
        return self._shutdown(timeout, keep_storage=False)

    def _shutdown(self, timeout: float, *, keep_storage: bool) -> int | None:
        run, self._run = self._run, None
        code: int | None = None
        if run is not None:
            code = _terminate(run.process, timeout if self._storage_arg is not None else 0.0)
            run.log_file.close()
            shutil.rmtree(run.workdir, ignore_errors=True)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if not keep_storage:
            self._cleanup_storage()
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines Orthanc wrote (empty when it is not started)."""
        return _tail(self._run.log_path, lines) if self._run else ""

    def _spawn(self) -> None:
        for port in (self.http_port, self.dicom_port):
            if not _port_free(port):
                raise OrthancStartError(f"port {port} is already in use", port_in_use=True)
        workdir = Path(tempfile.mkdtemp(prefix="orthanc-run-"))
        config_path = workdir / "orthanc.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.config(), fh, indent=2)
        log_path = workdir / "orthanc.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        try:
            process = subprocess.Popen(
                [self.executable, str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                # DCMTK (Orthanc's DICOM stack) reads TCP_NODELAY from the environment; without
                # it every C-GET/C-MOVE image waits ~40 ms on Nagle's algorithm.
                env={**os.environ, "TCP_NODELAY": "1"},
                start_new_session=True,  # a Ctrl-C meant for the caller does not reach it
            )
        except OSError as exc:
            log_file.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise OrthancStartError(f"cannot run {self.executable!r}: {exc}") from exc
        self._run = _Run(process=process, workdir=workdir, log_path=log_path, log_file=log_file)
        # Never leave an orphan Orthanc behind if the caller forgets stop().
        self._finalizer = weakref.finalize(self, _terminate, process, 5.0)

    def _wait_ready(self) -> None:
        assert self._run is not None
        process = self._run.process
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(base_url=self.base_url, auth=self.auth, timeout=2.0) as client:
            while True:
                code = process.poll()
                if code is not None:
                    tail = self.log_tail()
                    raise OrthancStartError(f"Orthanc exited with status {code} while starting",
                                            tail, port_in_use="in use" in tail)
                try:
                    response = client.get("/system")
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    self._check_started(client, response.json())
                    return
                if response is not None and response.status_code in (401, 403):
                    # Someone else answers on our port; ours is about to fail to bind.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(2.0)
                    if process.poll() is not None:
                        continue
                    raise OrthancStartError(
                        f"GET /system answered {response.status_code}: the port is served by "
                        "another process or the credentials are wrong", self.log_tail())
                if time.monotonic() > deadline:
                    raise OrthancStartError(
                        f"Orthanc did not answer within {self.start_timeout:.0f} s", self.log_tail())
                time.sleep(0.05)

    def _check_started(self, client: httpx.Client, system: Mapping[str, Any]) -> None:
        if system.get("HttpPort") != self.http_port or system.get("DicomPort") != self.dicom_port:
            raise OrthancStartError(
                f"the server on port {self.http_port} is not ours: /system says {dict(system)}",
                self.log_tail())
        plugins = set(client.get("/plugins").json())
        missing = {"dicom-web", "gdcm"} - plugins
        if missing:
            raise OrthancStartError(
                f"Orthanc started without the plugin(s) {sorted(missing)} (loaded: "
                f"{sorted(plugins)}); check {self.plugin_dir}", self.log_tail())

    def _cleanup_storage(self) -> None:
        if self._storage_tmp is not None:
            self._storage_tmp.cleanup()
            self._storage_tmp = None

    # -- data -------------------------------------------------------------------------------

    def upload(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        concurrency: int = 4,
        timeout: float = 60.0,
    ) -> list[str]:
        """Store DICOM files with ``POST /instances``, ``concurrency`` at a time.

        A folder stands for every DICOM file below it (files with the ``DICM`` preamble).
        Returns the Orthanc instance ids in the order of the files. Raises
        :class:`OrthancUploadError` listing every file that was not stored, with Orthanc's
        status and message, after trying all of them.
        """
        if not self.running:
            raise OrthancError("upload() needs a running server: call start() first")
        files = list(_expand(paths))
        if not files:
            return []
        stored: dict[Path, str] = {}
        failures: list[UploadFailure] = []
        with self.client(timeout=timeout,
                         limits=httpx.Limits(max_connections=concurrency)) as client:
            def post(path: Path) -> tuple[Path, str | UploadFailure]:
                try:
                    body = path.read_bytes()
                except OSError as exc:
                    return path, UploadFailure(path, None, f"cannot read: {exc}")
                try:
                    r = client.post("/instances", content=body,
                                    headers={"Content-Type": "application/dicom"})
                except httpx.HTTPError as exc:
                    return path, UploadFailure(path, None, f"{type(exc).__name__}: {exc}")
                if r.status_code != 200:
                    return path, UploadFailure(path, r.status_code, _orthanc_message(r))
                answer = r.json()
                if answer.get("Status") not in ("Success", "AlreadyStored"):
                    return path, UploadFailure(path, r.status_code, f"status {answer.get('Status')!r}")
                return path, str(answer["ID"])

            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                for path, result in pool.map(post, files):
                    if isinstance(result, UploadFailure):
                        failures.append(result)
                    else:
                        stored[path] = result
        if failures:
            raise OrthancUploadError(failures, stored)
        return [stored[p] for p in files]


# --------------------------------------------------------------------------- helpers


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds (at once when it is 0)."""
    if process.poll() is None:
        try:
            if timeout > 0:
                process.send_signal(signal.SIGTERM)
                return process.wait(timeout)
            process.kill()
        except subprocess.TimeoutExpired:
            process.kill()
        except ProcessLookupError:
            pass
    try:
        return process.wait(10.0)
    except subprocess.TimeoutExpired:
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        data = path.read_bytes()[-64 * 1024:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _orthanc_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("Message", "Details", "OrthancError") if body.get(k)]
        if parts:
            return "; ".join(dict.fromkeys(parts))
    return str(body)[:200]


def _expand(paths: Iterable[str | os.PathLike[str]]) -> Iterable[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and _is_dicom(child):
                    yield child
        else:
            yield path


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
