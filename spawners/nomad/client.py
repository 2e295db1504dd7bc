"""A thin async client for the parts of Nomad's HTTP API the spawner uses.

Every call carries the ACL token (``X-Nomad-Token``), the namespace and, when set, the region.
TLS takes a CA bundle alone or with a client certificate and key (Nomad's ``verify_https_client``).
Connection errors, timeouts, HTTP 429 and 5xx are retried with capped exponential backoff
and jitter; other 4xx answers are raised at once as typed errors. Reads can be blocking
queries (``index`` + ``wait``): Nomad holds the request until the object changes, so the
spawner follows an evaluation or allocation without fixed-interval polling.

The connection settings use Nomad's own environment variable names (``NOMAD_ADDR``,
``NOMAD_TOKEN``, ``NOMAD_NAMESPACE``, ``NOMAD_REGION``, ``NOMAD_CACERT``,
``NOMAD_CLIENT_CERT``, ``NOMAD_CLIENT_KEY``) in :meth:`NomadConnection.from_env`.
"""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class NomadError(Exception):
    """Nomad refused or failed a request. The message never contains the ACL token."""

    def __init__(
        self, message: str, *, status: int | None = None, method: str = "", path: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.method = method
        self.path = path

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        code = f"HTTP {self.status}: " if self.status else ""
        return f"{where}{code}{self.message}"


class NomadNotFound(NomadError):
    """404: the job, allocation, evaluation or variable does not exist (any more)."""


class NomadForbidden(NomadError):
    """403: the ACL token lacks a capability (see docs/nomad.md for the policy)."""


class NomadBadRequest(NomadError):
    """400 and other 4xx: Nomad rejected the request itself (e.g. an invalid job)."""


class NomadUnavailable(NomadError):
    """Nomad could not be reached, or kept answering 5xx, through every retry."""


@dataclass(frozen=True)
class NomadConnection:
    """Where Nomad is and how to talk to it."""

    address: str = "http://127.0.0.1:4646"
    token: str | None = field(default=None, repr=False)
    namespace: str = "default"
    region: str | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    skip_verify: bool = False
    timeout: float = 10.0
    retries: int = 4
    backoff_base: float = 0.25
    backoff_max: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> NomadConnection:
        """Settings from Nomad's standard variables; ``overrides`` win over them."""
        values: dict[str, Any] = {
            "address": environ.get("NOMAD_ADDR") or cls.address,
            "token": environ.get("NOMAD_TOKEN") or None,
            "namespace": environ.get("NOMAD_NAMESPACE") or cls.namespace,
            "region": environ.get("NOMAD_REGION") or None,
            "ca_cert": environ.get("NOMAD_CACERT") or None,
            "client_cert": environ.get("NOMAD_CLIENT_CERT") or None,
            "client_key": environ.get("NOMAD_CLIENT_KEY") or None,
            "skip_verify": environ.get("NOMAD_SKIP_VERIFY", "").lower() in {"1", "true"},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_namespace(self, namespace: str) -> NomadConnection:
        return replace(self, namespace=namespace)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx gets as ``verify``: a context for https, True for plain http."""
        if not self.address.startswith("https"):
            return True
        context = ssl.create_default_context(cafile=self.ca_cert or None)
        if self.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key or None)
        return context


@dataclass(frozen=True)
class Reply:
    """A decoded answer and its ``X-Nomad-Index`` (for the next blocking query)."""

    data: Any
    index: int


def wait_seconds(wait: str | float | None) -> float:
    if wait is None:
        return 0.0
    if isinstance(wait, (int, float)):
        return float(wait)
    text = wait.strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def _wait_param(wait: str | float) -> str:
    if isinstance(wait, str):
        return wait
    return f"{max(int(wait * 1000), 1)}ms"


Sleep = Callable[[float], Awaitable[None]]


class NomadClient:
    """One ``httpx.AsyncClient`` per client; close it with :meth:`aclose` (or ``async with``)."""

    def __init__(
        self,
        connection: NomadConnection,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.connection = connection
        headers = {"User-Agent": "research-workbench-nomad-spawner"}
        if connection.token:
            headers["X-Nomad-Token"] = connection.token
        self._http = httpx.AsyncClient(
            base_url=connection.address.rstrip("/") + "/v1",
            headers=headers,
            timeout=httpx.Timeout(connection.timeout),
            verify=connection.ssl_context(),
            transport=transport,
        )
        self._sleep = sleep
        self._jitter = jitter
        self.calls: collections.Counter[str] = collections.Counter()
        """Requests sent, by ``"METHOD /route"`` (retries count): for metrics and benchmarks."""

    async def __aenter__(self) -> NomadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # The one request path ---------------------------------------------------------------------
    def backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (0-based): capped exponential, 50-100 % jitter."""
        ceiling = min(self.connection.backoff_max, self.connection.backoff_base * 2**attempt)
        return ceiling * (0.5 + 0.5 * self._jitter())

    async def request(
        self,
        method: str,
        path: str,
        *,
        route: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        namespace: str | None = None,
        index: int | None = None,
        wait: str | float | None = None,
    ) -> Reply:
        """Send one request with retries; ``route`` names it in :attr:`calls` (default: path)."""
        query: dict[str, Any] = {"namespace": namespace or self.connection.namespace}
        if self.connection.region:
            query["region"] = self.connection.region
        timeout = self.connection.timeout
        if index is not None and wait is not None:
            query["index"] = str(index)
            query["wait"] = _wait_param(wait)
            # Nomad adds up to wait/16 of jitter to a blocking query.
            timeout = wait_seconds(wait) * 1.0625 + self.connection.timeout
        for key, value in (params or {}).items():
            if value is not None:
                query[key] = str(value).lower() if isinstance(value, bool) else str(value)
        label = f"{method} {route or path}"
        attempts = self.connection.retries + 1
        last: NomadError | None = None
        for attempt in range(attempts):
            self.calls[label] += 1
            try:
                response = await self._http.request(
                    method, path, params=query, json=body, timeout=timeout
                )
            except (httpx.TransportError, ssl.SSLError) as exc:
                # TLS 1.3 reports a refused client certificate after the handshake, as a bare
                # ssl.SSLError from the first read.
                cause = exc if isinstance(exc, ssl.SSLError) else (exc.__cause__ or exc.__context__)
                if isinstance(cause, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
                    raise NomadUnavailable(
                        f"TLS handshake with {self.connection.address} failed: {exc}",
                        method=method,
                        path=path,
                    ) from None
                last = NomadUnavailable(
                    f"cannot reach Nomad at {self.connection.address}: "
                    f"{type(exc).__name__} {exc}".rstrip(),
                    method=method,
                    path=path,
                )
            else:
                if response.status_code < 400:
                    return Reply(_decode(response), int(response.headers.get("X-Nomad-Index", 0)))
                message = response.text.strip()[:500] or response.reason_phrase
                if response.status_code not in RETRY_STATUS:
                    raise _error_for(response.status_code)(
                        message, status=response.status_code, method=method, path=path
                    )
                last = NomadUnavailable(
                    message, status=response.status_code, method=method, path=path
                )
            if attempt + 1 < attempts:
                await self._sleep(self.backoff(attempt))
        assert last is not None
        raise last

    # Jobs -----------------------------------------------------------------------------------
    async def register_job(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs``; returns ``{"EvalID", "JobModifyIndex", ...}``."""
        namespace = str(job.get("Namespace") or self.connection.namespace)
        reply = await self.request("POST", "/jobs", body={"Job": dict(job)}, namespace=namespace)
        return dict(reply.data or {})

    async def read_job(self, job_id: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            reply = await self.request(
                "GET", f"/job/{_seg(job_id)}", route="/job/:id", namespace=namespace
            )
        except NomadNotFound:
            return None
        return dict(reply.data)

    async def list_jobs(self, prefix: str, *, namespace: str | None = None) -> list[dict[str, Any]]:
        reply = await self.request("GET", "/jobs", params={"prefix": prefix}, namespace=namespace)
        return list(reply.data or [])

    async def deregister_job(
        self, job_id: str, *, purge: bool = False, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """``DELETE /v1/job/:id``; None when the job does not exist (already gone)."""
        try:
            reply = await self.request(
                "DELETE",
                f"/job/{_seg(job_id)}",
                route="/job/:id",
                params={"purge": purge},
                namespace=namespace,
            )
        except NomadNotFound:
            return None
        return dict(reply.data or {})

    async def job_allocations(
        self,
        job_id: str,
        *,
        namespace: str | None = None,
        index: int | None = None,
        wait: str | float | None = None,
    ) -> Reply:
        return await self.request(
            "GET",
            f"/job/{_seg(job_id)}/allocations",
            route="/job/:id/allocations",
            namespace=namespace,
            index=index,
            wait=wait,
        )

    async def job_evaluations(self, job_id: str, *, namespace: str | None = None) -> Reply:
        return await self.request(
            "GET",
            f"/job/{_seg(job_id)}/evaluations",
            route="/job/:id/evaluations",
            namespace=namespace,
        )

    # Evaluations and allocations ------------------------------------------------------------
    async def evaluation(
        self,
        eval_id: str,
        *,
        namespace: str | None = None,
        index: int | None = None,
        wait: str | float | None = None,
    ) -> Reply:
        return await self.request(
            "GET",
            f"/evaluation/{_seg(eval_id)}",
            route="/evaluation/:id",
            namespace=namespace,
            index=index,
            wait=wait,
        )

    async def evaluation_allocations(self, eval_id: str, *, namespace: str | None = None) -> Reply:
        return await self.request(
            "GET",
            f"/evaluation/{_seg(eval_id)}/allocations",
            route="/evaluation/:id/allocations",
            namespace=namespace,
        )

    async def allocation(
        self,
        alloc_id: str,
        *,
        namespace: str | None = None,
        index: int | None = None,
        wait: str | float | None = None,
    ) -> Reply:
        return await self.request(
            "GET",
            f"/allocation/{_seg(alloc_id)}",
            route="/allocation/:id",
            namespace=namespace,
            index=index,
            wait=wait,
        )

    async def allocation_services(self, alloc_id: str, *, namespace: str | None = None) -> Reply:
        return await self.request(
            "GET",
            f"/allocation/{_seg(alloc_id)}/services",
            route="/allocation/:id/services",
            namespace=namespace,
        )

    # Variables --------------------------------------------------------------------------------
    async def put_variable(
        self, path: str, items: Mapping[str, str], *, namespace: str | None = None
    ) -> dict[str, Any]:
        ns = namespace or self.connection.namespace
        body = {"Namespace": ns, "Path": path, "Items": dict(items)}
        reply = await self.request(
            "PUT", f"/var/{quote(path, safe='/')}", route="/var/:path", body=body, namespace=ns
        )
        return dict(reply.data or {})

    async def read_variable(
        self, path: str, *, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            reply = await self.request(
                "GET", f"/var/{quote(path, safe='/')}", route="/var/:path", namespace=namespace
            )
        except NomadNotFound:
            return None
        return dict(reply.data)

    async def delete_variable(self, path: str, *, namespace: str | None = None) -> bool:
        """True if it was deleted, False if it did not exist."""
        ns = namespace or self.connection.namespace
        try:
            # Nomad ignores a body here; the published API description asks for one.
            await self.request(
                "DELETE",
                f"/var/{quote(path, safe='/')}",
                route="/var/:path",
                body={"Namespace": ns, "Path": path},
                namespace=ns,
            )
        except NomadNotFound:
            return False
        return True


def _seg(value: str) -> str:
    return quote(value, safe="")


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _error_for(status: int) -> type[NomadError]:
    if status == 404:
        return NomadNotFound
    if status == 403:
        return NomadForbidden
    return NomadBadRequest
