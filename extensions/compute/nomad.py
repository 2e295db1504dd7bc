"""Dask beyond one server: workers (and optionally the scheduler) as Nomad jobs.

:class:`NomadCluster` is a ``distributed`` ``SpecCluster``, so ``scale``, ``adapt``,
``Client(cluster)``, the dashboard and ``close`` behave as with any Dask cluster. Each worker
is a :class:`NomadWorker`, one Nomad batch job (:mod:`.nomad_jobs` builds it). A worker's
life:

1. **reserve** it against the project's quota (:mod:`.quota`); a refusal stops the cluster
   growing (its size is capped at what the project holds, for ``quota_retry_s`` seconds, then
   adaptive scaling may try again) and the reason is kept in ``cluster.quota_refusals``;
2. **submit** its job (the id is recorded at once, so a crash leaves nothing unknown) and
   follow it with blocking queries until the task runs: a placement failure is explained
   (no GPU node, memory exhausted...) and fails that worker, cleaning up after itself;
3. **started**: its CPU-/GPU-hours count from here; a heartbeat every ``heartbeat_s`` keeps
   the allocation alive, and workers whose stop the quota service asks for are retired;
4. **close**: deregister (purged), wait for the task to end, close the allocation.

Cleanup without a clean close: ``SpecCluster`` closes clusters at interpreter exit (a kernel
that shuts down or restarts); a kernel killed outright leaves workers whose scheduler is gone,
and they exit after ``death_timeout_s`` (their batch jobs complete). With the scheduler on
Nomad, it ends itself after ``scheduler_idle_timeout_s`` without work. What is still left
(jobs of dead clusters) is removed by :mod:`.reaper`, which :class:`NomadCluster` also runs
for the user's own jobs when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dask.utils import parse_bytes
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler

from spawners.nomad import events
from spawners.nomad.client import (
    NomadClient,
    NomadConnection,
    NomadError,
    NomadNotFound,
)
from spawners.nomad.placement import explain

from . import reaper
from .nomad_jobs import (
    SCHEDULER_TASK,
    WORKER_TASK,
    DaskJobSettings,
    Owner,
    WorkerSpec,
    allocated_port,
    build_scheduler_job,
    build_worker_job,
)
from .quota import Accounting, QuotaError, Unaccounted

log = logging.getLogger("workbench.dask.nomad")
TERMINAL = frozenset({"complete", "failed", "lost"})


class WorkerStartFailed(RuntimeError):
    """Nomad could not place or start a worker; ``message`` is for the user."""

    def __init__(self, message: str, *, reason: str, log_message: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.log_message = log_message or message


@dataclass(frozen=True)
class WorkerShape:
    """What each worker gets (and is charged for)."""

    threads: int = 1
    memory: int = 2 * 1024**3
    gpus: int = 0
    extra_args: tuple[str, ...] = ()

    @classmethod
    def of(cls, threads: int = 1, memory: str | int = "2GiB", gpus: int = 0) -> WorkerShape:
        return cls(threads, parse_bytes(memory) if isinstance(memory, str) else int(memory), gpus)


@dataclass(frozen=True)
class ClusterLimits:
    """Per-cluster ceilings (Dask Gateway's ``cluster_max_workers/cores/memory``)."""

    max_workers: int | None = None
    max_cores: float | None = None
    max_memory: int | None = None

    def max_for(self, shape: WorkerShape) -> int | None:
        bounds = [b for b in (
            self.max_workers,
            math.floor(self.max_cores / shape.threads) if self.max_cores is not None else None,
            self.max_memory // shape.memory if self.max_memory is not None else None,
        ) if b is not None]
        return min(bounds) if bounds else None


@dataclass
class Runtime:
    """What the scheduler and every worker of one cluster share."""

    connection: NomadConnection
    settings: DaskJobSettings
    owner: Owner
    shape: WorkerShape
    accounting: Accounting
    start_timeout: float = 300.0
    stop_timeout: float = 30.0
    fail_on_unplaceable: bool = True
    quota_retry_s: float = 60.0
    client: NomadClient | None = None
    cluster: Any = None  # weakref to the NomadCluster
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> worker name (submitted)
    held: set[str] = field(default_factory=set)  # quota allocation ids held now
    quota_refusals: list[str] = field(default_factory=list)
    ceiling: int | None = None
    ceiling_until: float = 0.0

    def nomad(self) -> NomadClient:
        if self.client is None:
            self.client = NomadClient(self.connection)
        return self.client

    def current_ceiling(self) -> int | None:
        if self.ceiling is not None and time.monotonic() < self.ceiling_until:
            return self.ceiling
        return None

    def refuse(self, name: str, error: QuotaError) -> None:
        """A worker the quota does not allow: cap the cluster at what it holds, drop the spec."""
        self.quota_refusals.append(error.message)
        self.ceiling = len(self.held)
        self.ceiling_until = time.monotonic() + self.quota_retry_s
        log.warning("Dask worker %s not started: %s", name, error.log_message)
        cluster = self.cluster() if self.cluster else None
        if cluster is not None:
            cluster.worker_spec.pop(name, None)
            cluster.loop.add_callback(cluster._correct_state)


async def wait_running(
    client: NomadClient,
    job_id: str,
    namespace: str,
    task: str,
    *,
    timeout: float,
    fail_on_unplaceable: bool = True,
) -> dict[str, Any]:
    """The job's allocation once its task runs (full, with ports), following blocking queries."""
    deadline = time.monotonic() + timeout
    index, explained = 0, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkerStartFailed(
                f"Nomad did not start Dask job {job_id} within {timeout:.0f} s.",
                reason="start_timeout",
            )
        reply = await client.job_allocations(job_id, namespace=namespace, index=index,
                                             wait=min(left, 10.0))
        live = [a for a in reply.data or [] if a.get("DesiredStatus") == "run"]
        for stub in live:
            outcome = events.allocation_outcome(stub, task)
            if outcome.state == "failed":
                raise WorkerStartFailed(
                    outcome.message.replace("the server", "the Dask process"),
                    reason=outcome.reason,
                    log_message=f"job {job_id} allocation {stub.get('ID')}: {outcome.message}",
                )
            if outcome.state == "running":
                full = await client.allocation(str(stub["ID"]), namespace=namespace)
                return dict(full.data or {})
        if not live and not explained:
            evaluations = (await client.job_evaluations(job_id, namespace=namespace)).data or []
            failed = next((e.get("FailedTGAllocs") for e in evaluations if e.get("FailedTGAllocs")), None)
            if failed:
                explained = True
                failure = explain(failed, queued=not fail_on_unplaceable)
                message = failure.message.replace("this server", "a Dask worker")
                if fail_on_unplaceable:
                    raise WorkerStartFailed(message, reason=failure.reason, log_message=failure.log_message)
                log.warning("%s (%s)", message, job_id)
        if reply.index > index:
            index = reply.index
        else:
            await asyncio.sleep(0.05)


async def stop_job(client: NomadClient, job_id: str, namespace: str, alloc_id: str | None,
                   timeout: float) -> bool:
    """Deregister (purged) and wait until the allocation's task has ended; idempotent."""
    await client.deregister_job(job_id, purge=True, namespace=namespace)
    if not alloc_id:
        return True
    deadline, index = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            reply = await client.allocation(alloc_id, namespace=namespace, index=index,
                                            wait=max(0.05, min(5.0, deadline - time.monotonic())))
        except NomadNotFound:
            return True
        if (reply.data or {}).get("ClientStatus") in TERMINAL:
            return True
        if reply.index > index:
            index = reply.index
        else:
            await asyncio.sleep(0.05)
    return False


class NomadWorker(ProcessInterface):
    """One Dask worker as one Nomad batch job (see the module docstring for its life)."""

    def __init__(self, scheduler: str, name: str, runtime: Runtime, **_: Any) -> None:
        super().__init__(scheduler, name)
        self.scheduler_address = scheduler
        self.name = str(name)
        self.runtime = runtime
        self.job_id: str | None = None
        self.alloc_id: str | None = None
        self.allocation_id = ""
        self.refused: QuotaError | None = None

    async def start(self) -> None:
        rt = self.runtime
        shape = rt.shape
        try:
            self.allocation_id = await rt.accounting.reserve(
                f"{rt.owner.cluster_id}/{self.name}", cpu=float(shape.threads), gpus=shape.gpus
            )
        except QuotaError as error:
            self.refused = error
            rt.refuse(self.name, error)
            await super().start()
            return
        if self.allocation_id:
            rt.held.add(self.allocation_id)
        job = build_worker_job(
            rt.settings,
            rt.owner,
            WorkerSpec(self.name, self.scheduler_address, shape.threads, shape.memory, shape.gpus,
                       self.allocation_id, shape.extra_args),
        )
        self.job_id = str(job["ID"])
        rt.jobs[self.job_id] = self.name
        client = rt.nomad()
        try:
            await client.register_job(job)
            alloc = await wait_running(client, self.job_id, rt.settings.namespace, WORKER_TASK,
                                       timeout=rt.start_timeout,
                                       fail_on_unplaceable=rt.fail_on_unplaceable)
        except (WorkerStartFailed, NomadError) as exc:
            log.warning("Dask worker %s failed to start: %s", self.name, exc)
            await self.close()
            if isinstance(exc, WorkerStartFailed):
                raise
            raise WorkerStartFailed(f"Nomad refused the Dask worker: {exc}", reason="nomad_error") from None
        self.alloc_id = str(alloc["ID"])
        with contextlib.suppress(QuotaError):
            await rt.accounting.started(self.allocation_id)
        await super().start()

    async def close(self) -> None:
        rt = self.runtime
        if self.job_id:
            job_id, self.job_id = self.job_id, None
            try:
                stopped = await stop_job(rt.nomad(), job_id, rt.settings.namespace, self.alloc_id,
                                         rt.stop_timeout)
                if not stopped:
                    log.warning("Dask job %s still stopping after %.0f s", job_id, rt.stop_timeout)
                rt.jobs.pop(job_id, None)
            except NomadError as exc:  # the reaper removes it later
                log.warning("could not stop Dask job %s: %s", job_id, exc)
        if self.allocation_id:
            allocation_id, self.allocation_id = self.allocation_id, ""
            rt.held.discard(allocation_id)
            try:
                await rt.accounting.ended(allocation_id)
            except QuotaError as exc:  # the quota service closes silent allocations itself
                log.warning("could not close quota allocation %s: %s", allocation_id, exc.log_message)
        await super().close()


class NomadScheduler(ProcessInterface):
    """The scheduler as a Nomad job (for servers that workers cannot reach)."""

    def __init__(self, runtime: Runtime, **_: Any) -> None:
        super().__init__()
        self.runtime = runtime
        self.job_id: str | None = None
        self.alloc_id: str | None = None
        self.dashboard: tuple[str, int] | None = None

    async def start(self) -> None:
        rt = self.runtime
        job = build_scheduler_job(rt.settings, rt.owner)
        self.job_id = str(job["ID"])
        rt.jobs[self.job_id] = "scheduler"
        client = rt.nomad()
        try:
            await client.register_job(job)
            alloc = await wait_running(client, self.job_id, rt.settings.namespace, SCHEDULER_TASK,
                                       timeout=rt.start_timeout)
            comm = allocated_port(alloc, "comm")
            if comm is None:
                raise WorkerStartFailed("Nomad reports no address for the scheduler.", reason="no_address")
            self.alloc_id = str(alloc["ID"])
            self.dashboard = allocated_port(alloc, "dashboard")
            await _wait_listening(*comm, timeout=rt.start_timeout)
        except BaseException:
            await self.close()
            raise
        self.address = f"tcp://{comm[0]}:{comm[1]}"
        await super().start()

    async def close(self) -> None:
        if self.job_id:
            job_id, self.job_id = self.job_id, None
            try:
                await stop_job(self.runtime.nomad(), job_id, self.runtime.settings.namespace,
                               self.alloc_id, self.runtime.stop_timeout)
                self.runtime.jobs.pop(job_id, None)
            except NomadError as exc:
                log.warning("could not stop the Dask scheduler job %s: %s", job_id, exc)
        await super().close()


async def _wait_listening(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise WorkerStartFailed(f"the Dask scheduler at {host}:{port} never answered",
                                        reason="scheduler_silent") from None
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


class NomadCluster(SpecCluster):
    """A Dask cluster whose workers are Nomad jobs, charged to the project and bounded by it.

    ``scheduler="local"`` runs the scheduler in this process (the kernel), listening on
    ``scheduler_host`` (an address the Nomad nodes reach) with its dashboard on loopback for
    the hub's proxy; ``scheduler="nomad"`` places it as a job too.
    """

    def __init__(
        self,
        *,
        connection: NomadConnection,
        owner: Owner,
        settings: DaskJobSettings | None = None,
        shape: WorkerShape = WorkerShape(),
        accounting: Accounting | None = None,
        limits: ClusterLimits = ClusterLimits(),
        n_workers: int = 0,
        scheduler: Literal["local", "nomad"] = "local",
        scheduler_host: str = "127.0.0.1",
        dashboard_address: str = "127.0.0.1:0",
        start_timeout: float = 300.0,
        stop_timeout: float = 30.0,
        heartbeat_s: float = 60.0,
        quota_retry_s: float = 60.0,
        fail_on_unplaceable: bool = True,
        reap_on_start: bool = True,
        **kwargs: Any,
    ) -> None:
        self.runtime = Runtime(
            connection, settings or DaskJobSettings(), owner, shape, accounting or Unaccounted(),
            start_timeout=start_timeout, stop_timeout=stop_timeout,
            fail_on_unplaceable=fail_on_unplaceable, quota_retry_s=quota_retry_s,
        )
        self.limits = limits
        self.heartbeat_s = heartbeat_s
        self.reap_on_start = reap_on_start
        self._heartbeat: asyncio.Task[None] | None = None
        worker = {"cls": NomadWorker, "options": {"runtime": self.runtime}}
        if scheduler == "nomad":
            scheduler_spec = {"cls": NomadScheduler, "options": {"runtime": self.runtime}}
        else:
            scheduler_spec = {
                "cls": Scheduler,
                "options": {"host": scheduler_host, "port": 0, "dashboard_address": dashboard_address,
                            "idle_timeout": None},
            }
        bound = limits.max_for(shape)
        first = min(n_workers, bound) if bound is not None else n_workers
        workers = {f"w{i}": worker for i in range(first)}
        self._i = first
        super().__init__(workers=workers, scheduler=scheduler_spec, worker=worker,
                         name=f"nomad-{owner.cluster_id}", **kwargs)

    # Names and bounds --------------------------------------------------------------------------
    def _new_worker_name(self, worker_number: int) -> str:
        return f"w{worker_number}"

    @property
    def quota_refusals(self) -> list[str]:
        """Why workers were not started, as the quota service said it (newest last)."""
        return list(self.runtime.quota_refusals)

    def worker_bound(self) -> int | None:
        """The most workers this cluster may have now: its limits and, after a refusal, the quota."""
        bounds = [b for b in (self.limits.max_for(self.runtime.shape), self.runtime.current_ceiling())
                  if b is not None]
        return min(bounds) if bounds else None

    def scale(self, n: int = 0, memory: str | None = None, cores: float | None = None) -> Any:
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / self.runtime.shape.memory))
        if cores is not None:
            n = max(n, math.ceil(cores / self.runtime.shape.threads))
        bound = self.worker_bound()
        if bound is not None and n > bound:
            log.info("cluster %s: %d workers asked, %d allowed", self.name, n, bound)
            n = bound
        return super().scale(n)

    scale_up = scale

    def adapt(self, *args: Any, maximum: float = math.inf, **kwargs: Any) -> Any:
        bound = self.limits.max_for(self.runtime.shape)
        if bound is not None:
            maximum = min(maximum, bound)
        return super().adapt(*args, maximum=maximum, **kwargs)

    # Life --------------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self.status in (Status.running, Status.closed):
            return await super()._start()
        self.runtime.cluster = weakref.ref(self)
        if self.reap_on_start:
            try:
                report = await reaper.reap(
                    self.runtime.nomad(), self.runtime.settings, username=self.runtime.owner.username,
                    accounting=self.runtime.accounting,
                )
                if report.removed:
                    log.info("removed %d leftover Dask jobs of earlier clusters", len(report.removed))
            except NomadError as exc:
                log.warning("could not look for leftover Dask jobs: %s", exc)
        await super()._start()
        self._heartbeat = asyncio.ensure_future(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.heartbeat_once()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad answer
                log.warning("quota heartbeat of cluster %s failed: %s", self.name, exc)

    async def heartbeat_once(self) -> list[str]:
        """Report the workers alive; retire those the quota service wants stopped. Returns them."""
        by_allocation = {
            w.allocation_id: name for name, w in self.workers.items()
            if isinstance(w, NomadWorker) and w.allocation_id
        }
        if not by_allocation:
            return []
        stop = await self.runtime.accounting.heartbeat(list(by_allocation))
        names = [by_allocation[a] for a in stop if a in by_allocation]
        if names:
            rt = self.runtime
            rt.quota_refusals.append(
                f"The project's compute budget is used up: {len(names)} Dask worker(s) were stopped."
            )
            rt.ceiling = len(by_allocation) - len(names)
            rt.ceiling_until = time.monotonic() + rt.quota_retry_s
            log.warning("quota: retiring workers %s of cluster %s", names, self.name)
            await self.scale_down(names)
        return names

    async def _close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        try:
            await super()._close()
        finally:
            if self.runtime.client is not None:
                await self.runtime.client.aclose()
                self.runtime.client = None
            await self.runtime.accounting.aclose()

    @property
    def dashboard_link(self) -> str:
        scheduler = self.scheduler
        if isinstance(scheduler, NomadScheduler) and scheduler.dashboard:
            from .cluster import proxied_dashboard_link

            host, port = scheduler.dashboard
            return proxied_dashboard_link(host, port)
        return super().dashboard_link


def new_cluster_id() -> str:
    return secrets.token_hex(4)


def owner_from_env(env: Mapping[str, str], cluster_id: str | None = None) -> Owner:
    return Owner(
        username=env.get("JUPYTERHUB_USER") or env.get("USER") or "unknown",
        project=env.get("WORKBENCH_PROJECT") or "none",
        cluster_id=cluster_id or new_cluster_id(),
    )
