"""The double's HTTP side: Nomad's ``/v1`` endpoints on 127.0.0.1, in a thread of its own.

:class:`NomadDouble` owns a thread with its own event loop, so the same double serves tests
in the test process and a JupyterHub running as a subprocess. Control and inspection
methods are called from any thread; they run on the double's loop and return copies.

Each request is recorded (:attr:`NomadDouble.requests`) and checked against Nomad's OpenAPI
file (:mod:`.spec`); a request that fails the check is answered 400 and recorded in
:attr:`NomadDouble.violations`, which tests assert to be empty. Fault injection:
:meth:`fail_requests` (answer 403/404/500/... a number of times), :meth:`stall_requests`
(hold answers), :meth:`fail_next_driver`, :meth:`lose_allocation`, :meth:`crash_task`,
an ACL token, and nodes that make placement fail with Nomad's real metrics.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tornado import httpserver, netutil, web

from .cluster import Cluster, Timeline
from .scheduler import Node
from .spec import SpecValidator, load_validator

_printed_reasons: set[str] = set()


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str] | None
    status: int | None
    times: int
    message: str = ""
    stall: float = 0.0


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int = 0
    started: float = field(default_factory=time.monotonic)
    token: str | None = None


def _wait_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not match:
        return 300.0
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return float(match.group(1)) * unit


class _Handler(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE")

    def initialize(self, double: NomadDouble) -> None:
        self.double = double

    def check_xsrf_cookie(self) -> None:  # an API server, not a browser app
        return None

    async def get(self, path: str) -> None:
        await self._handle(path)

    async def post(self, path: str) -> None:
        await self._handle(path)

    async def put(self, path: str) -> None:
        await self._handle(path)

    async def delete(self, path: str) -> None:
        await self._handle(path)

    async def _handle(self, raw_path: str) -> None:
        double = self.double
        method = self.request.method or "GET"
        path = "/" + raw_path
        query = {k: [v.decode() for v in vs] for k, vs in self.request.query_arguments.items()}
        record = RequestRecord(method, path, query, token=self.request.headers.get("X-Nomad-Token"))
        double._requests.append(record)
        status, data, index = await double._dispatch(
            method, path, query, self.request.body or None, self.request.headers
        )
        record.status = status
        self.set_status(status)
        self.set_header("X-Nomad-Index", str(index))
        self.set_header("X-Nomad-KnownLeader", "true")
        self.set_header("X-Nomad-LastContact", "0")
        if status == 204 or data is None:
            self.finish()
            return
        if isinstance(data, str):
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(data)
            return
        if double.validator is not None:
            double._violations.extend(double.validator.check_response(method, path, status, data))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class _ControlHandler(web.RequestHandler):
    """``/_double/...``: inspection for a double running in another process (not Nomad's API)."""

    def initialize(self, double: NomadDouble) -> None:
        self.double = double

    def check_xsrf_cookie(self) -> None:
        return None

    def get(self, what: str) -> None:
        double = self.double
        if what.startswith("timeline/"):
            record = double.cluster.allocs.get(what.split("/", 1)[1])  # type: ignore[union-attr]
            if record is None:
                raise web.HTTPError(404)
            self.finish(vars(record.timeline))
        elif what == "requests":
            self.finish({"count": len(double._requests)})
        elif what == "violations":
            self.finish({"violations": list(double._violations)})
        else:
            raise web.HTTPError(404)

    def post(self, what: str) -> None:
        if what != "requests/clear":
            raise web.HTTPError(404)
        self.double._requests.clear()
        self.finish({})


class NomadDouble:
    """A stateful stand-in for a Nomad agent's HTTP API, on a free 127.0.0.1 port."""

    def __init__(
        self,
        nodes: list[Node] | None = None,
        *,
        acl_token: str | None = None,
        namespaces: tuple[str, ...] = ("default",),
        region: str = "global",
        ssl_context: ssl.SSLContext | None = None,
        validate: bool = True,
        schedule_delay: float = 0.02,
        step_delay: float = 0.01,
        image_pull_seconds: float | Callable[[str], float] = 0.3,
        csi_volumes: set[str] | None = None,
        root_dir: Path | None = None,
    ) -> None:
        self.nodes = nodes if nodes is not None else [Node()]
        self.acl_token = acl_token
        self.ssl_context = ssl_context
        self.validator: SpecValidator | None = None
        self.validation = "request validation off"
        if validate:
            self.validator, self.validation = load_validator()
            if self.validator is None and self.validation not in _printed_reasons:
                _printed_reasons.add(self.validation)
                print(f"nomad double: {self.validation}")
        self._own_root = root_dir is None
        self.root_dir = root_dir or Path(tempfile.mkdtemp(prefix="nomad-double-"))
        self._cluster_args = dict(
            region=region,
            namespaces=namespaces,
            schedule_delay=schedule_delay,
            step_delay=step_delay,
            image_pull_seconds=image_pull_seconds,
            csi_volumes=csi_volumes,
        )
        self._requests: list[RequestRecord] = []
        self._violations: list[str] = []
        self._faults: list[Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: httpserver.HTTPServer | None = None
        self.cluster: Cluster | None = None
        self.port = 0

    # Start and stop -------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> NomadDouble:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # report start-up failures to the caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="nomad-double", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        self.cluster = Cluster(self.nodes, root_dir=self.root_dir, **self._cluster_args)  # type: ignore[arg-type]
        app = web.Application(
            [
                (r"/v1/(.*)", _Handler, {"double": self}),
                (r"/_double/(.*)", _ControlHandler, {"double": self}),
            ]
        )
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = httpserver.HTTPServer(app, ssl_options=self.ssl_context)
        self._server.add_sockets(sockets)

    def close(self) -> None:
        if self._loop is None:
            return

        async def stop() -> None:
            if self._server:
                self._server.stop()
            if self.cluster:
                await self.cluster.shutdown()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None
        if self._own_root and self.cluster:
            self.cluster.remove_root()

    def __enter__(self) -> NomadDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the double's loop and return its result (from any other thread)."""
        assert self._loop is not None, "the double is not running"

        async def run() -> Any:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    # Requests -------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        return list(self._requests)

    @property
    def violations(self) -> list[str]:
        return list(self._violations)

    def clear_requests(self) -> None:
        self._requests.clear()

    async def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: bytes | None,
        headers: Any,
    ) -> tuple[int, Any, int]:
        cluster = self.cluster
        assert cluster is not None
        if self.validator is not None:
            problems = self.validator.check_request(method, path, query, body)
            if problems:
                self._violations.extend(problems)
                return (
                    400,
                    "request does not match Nomad's API: " + "; ".join(problems),
                    cluster.index,
                )
        for fault in self._faults:
            if fault.times <= 0:
                continue
            if fault.method and fault.method != method:
                continue
            if fault.path and not fault.path.search(path):
                continue
            fault.times -= 1
            if fault.stall:
                await asyncio.sleep(fault.stall)
            if fault.status:
                return fault.status, fault.message or _reason(fault.status), cluster.index
            break
        if self.acl_token is not None and headers.get("X-Nomad-Token") != self.acl_token:
            return 403, "Permission denied", cluster.index
        region = (query.get("region") or [None])[0]
        if region and region != cluster.region:
            return 500, f"No path to region: {region}", cluster.index
        namespace = (query.get("namespace") or ["default"])[0]
        data = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                return 400, "Request body is not JSON", cluster.index
        return await self._route(method, path, query, namespace, data)

    async def _route(
        self, method: str, path: str, query: dict[str, list[str]], namespace: str, body: Any
    ) -> tuple[int, Any, int]:
        c = self.cluster
        assert c is not None

        def q(name: str, default: str = "") -> str:
            return (query.get(name) or [default])[0]

        if method == "POST" and path == "/jobs":
            job = (body or {}).get("Job") or {}
            status, data = c.register_job(namespace, job)
            return status, data, c.index
        if method == "GET" and path == "/jobs":
            prefix = q("prefix")
            return await self._blocking(
                query, lambda: c.table_index["jobs"], lambda: c.job_stubs(namespace, prefix)
            )
        if method == "GET" and path == "/allocations":
            return await self._blocking(
                query, lambda: c.table_index["allocs"], lambda: c.alloc_stubs(namespace)
            )
        match = re.fullmatch(r"/job/([^/]+)(/allocations|/evaluations)?", path)
        if match:
            job_id, sub = unquote(match.group(1)), match.group(2)
            if sub == "/allocations":
                return await self._blocking(
                    query,
                    lambda: c.table_index["allocs"],
                    lambda: c.job_alloc_stubs(namespace, job_id, q("all") == "true"),
                )
            if sub == "/evaluations":
                return await self._blocking(
                    query, lambda: c.table_index["evals"], lambda: c.job_evals(namespace, job_id)
                )
            if method == "DELETE":
                status, data = c.deregister_job(namespace, job_id, q("purge") == "true")
                return status, data, c.index
            if method == "POST":
                status, data = c.register_job(namespace, (body or {}).get("Job") or {})
                return status, data, c.index

            def job_index() -> int:
                job = c.jobs.get((namespace, job_id))
                return job["ModifyIndex"] if job else c.table_index["jobs"]

            return await self._blocking(
                query, job_index, lambda: c.job_view(namespace, job_id), missing="job not found"
            )
        match = re.fullmatch(r"/evaluation/([^/]+)(/allocations)?", path)
        if match:
            eval_id = unquote(match.group(1))
            if match.group(2):
                return await self._blocking(
                    query, lambda: c.table_index["allocs"], lambda: c.eval_alloc_stubs(eval_id)
                )

            def eval_index() -> int:
                ev = c.evals.get(eval_id)
                return ev["ModifyIndex"] if ev else c.table_index["evals"]

            return await self._blocking(
                query, eval_index, lambda: c.eval_view(eval_id), missing="eval not found"
            )
        match = re.fullmatch(r"/allocation/([^/]+)(/services)?", path)
        if match:
            alloc_id = unquote(match.group(1))
            if match.group(2):
                return await self._blocking(
                    query, lambda: c.table_index["services"], lambda: c.alloc_services(alloc_id)
                )

            def alloc_index() -> int:
                record = c.allocs.get(alloc_id)
                return record.data["ModifyIndex"] if record else c.table_index["allocs"]

            return await self._blocking(
                query, alloc_index, lambda: c.alloc_view(alloc_id), missing="alloc not found"
            )
        match = re.fullmatch(r"/var/(.+)", path)
        if match:
            var_path = unquote(match.group(1))
            if method == "PUT" or method == "POST":
                status, data = c.put_variable(namespace, var_path, body or {})
                return status, data, c.index
            if method == "DELETE":
                status, data = c.delete_variable(namespace, var_path)
                return status, data, c.index

            def var_index() -> int:
                var = c.variables.get((namespace, var_path))
                return var["ModifyIndex"] if var else c.table_index["vars"]

            return await self._blocking(
                query,
                var_index,
                lambda: (
                    dict(c.variables[(namespace, var_path)])
                    if (namespace, var_path) in c.variables
                    else None
                ),
                missing="variable not found",
            )
        return 404, f"no handler for {method} /v1{path} in the Nomad test double", c.index

    async def _blocking(
        self,
        query: dict[str, list[str]],
        index_of: Callable[[], int],
        produce: Callable[[], Any],
        missing: str | None = None,
    ) -> tuple[int, Any, int]:
        c = self.cluster
        assert c is not None
        wanted = int((query.get("index") or ["0"])[0] or 0)
        if wanted > 0:
            wait = min(_wait_seconds((query.get("wait") or ["5m"])[0]), 600.0)
            deadline = time.monotonic() + wait
            while index_of() <= wanted and time.monotonic() < deadline:
                await c.wait_change(deadline - time.monotonic())
        data = produce()
        if data is None and missing:
            return 404, missing, index_of()
        return 200, data, index_of()

    # Faults ---------------------------------------------------------------------------------------
    def fail_requests(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        message: str = "",
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (path is a regex)."""
        self._faults.append(
            Fault(method, re.compile(path) if path else None, status, times, message)
        )

    def stall_requests(
        self, seconds: float, *, method: str | None = None, path: str | None = None, times: int = 1
    ) -> None:
        """Hold the next ``times`` matching requests for ``seconds`` before answering."""
        self._faults.append(
            Fault(method, re.compile(path) if path else None, None, times, stall=seconds)
        )

    def fail_next_driver(self, message: str, times: int = 1) -> None:
        """The next ``times`` tasks fail in the driver with ``message`` (as ``DriverError``)."""
        self.call(lambda: self.cluster.driver_failures.extend([message] * times))  # type: ignore[union-attr]

    def lose_allocation(self, alloc_id: str) -> None:
        self.call(lambda: self.cluster.lose_alloc(alloc_id))  # type: ignore[union-attr]

    def crash_task(self, alloc_id: str) -> None:
        self.call(lambda: self.cluster.crash_task(alloc_id))  # type: ignore[union-attr]

    def add_node(self, node: Node) -> None:
        def add() -> None:
            assert self.cluster is not None
            self.cluster.nodes.append(node)
            self.cluster.bump("jobs")
            self.cluster._retry_blocked()

        self.call(add)

    # Inspection (copies) --------------------------------------------------------------------------
    def job(self, job_id: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.call(lambda: self.cluster.job_view(namespace, job_id))  # type: ignore[union-attr]

    def job_ids(self, namespace: str = "default") -> list[str]:
        return self.call(lambda: [j["ID"] for j in self.cluster.job_stubs(namespace, "")])  # type: ignore[union-attr]

    def allocations(
        self, job_id: str | None = None, namespace: str = "default"
    ) -> list[dict[str, Any]]:
        def get() -> list[dict[str, Any]]:
            assert self.cluster is not None
            return [
                self.cluster.alloc_view(r.data["ID"])
                for r in self.cluster.allocs.values()
                if r.data["Namespace"] == namespace
                and (job_id is None or r.data["JobID"] == job_id)
            ]

        return self.call(get)

    def evaluations(self, job_id: str, namespace: str = "default") -> list[dict[str, Any]]:
        return self.call(lambda: self.cluster.job_evals(namespace, job_id))  # type: ignore[union-attr]

    def variable(self, path: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.call(lambda: self.cluster.variables.get((namespace, path)))  # type: ignore[union-attr]

    def timeline(self, alloc_id: str) -> Timeline:
        return self.call(lambda: self.cluster.allocs[alloc_id].timeline)  # type: ignore[union-attr]

    def task_log(self, alloc_id: str, task: str = "notebook", stream: str = "stderr") -> str:
        path = self.root_dir / "alloc" / alloc_id / "alloc" / "logs" / f"{task}.{stream}.0"
        return path.read_text(errors="replace") if path.exists() else ""

    def process_alive(self, alloc_id: str) -> bool:
        def alive() -> bool:
            assert self.cluster is not None
            process = self.cluster.allocs[alloc_id].process
            return process is not None and process.poll() is None

        return self.call(alive)


def _reason(status: int) -> str:
    return {
        403: "Permission denied",
        404: "not found",
        429: "too many requests",
        500: "rpc error: No cluster leader",
        502: "bad gateway",
        503: "service unavailable",
    }.get(status, f"error {status}")
