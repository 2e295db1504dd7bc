"""Start, watch and stop one server's Nomad job: coordination only.

The rules live elsewhere (job shape in :mod:`.objects`, wording in :mod:`.placement` and
:mod:`.events`); this module sequences API calls and nothing else, so it is tested against
the Nomad test double without JupyterHub, and :class:`~.spawner.NomadSpawner` only adapts it
to the Spawner contract.

Start: write the token Variable, register the job, follow the evaluation with blocking
queries (placement failures end the start within seconds, with the reason), follow the
allocation with blocking queries (each task event becomes a progress message), return the
address as soon as the task runs. A start that fails cleans up after itself, because the
hub does not call ``stop()`` for a server whose ``poll()`` already says it is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import events
from .client import (
    NomadBadRequest,
    NomadClient,
    NomadError,
    NomadForbidden,
    NomadNotFound,
    NomadUnavailable,
)
from .objects import GROUP, TASK, variable_path
from .placement import explain

TERMINAL_CLIENT = frozenset({"complete", "failed", "lost"})

Progress = Callable[[int, str], None]


class StartFailed(Exception):
    """The server could not start; ``message`` is for the user, ``log_message`` for the log."""

    def __init__(
        self, message: str, *, reason: str, log_message: str = "", status_code: int = 500
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.log_message = log_message or message
        self.status_code = status_code


@dataclass(frozen=True)
class Started:
    ip: str
    port: int
    alloc_id: str
    node: str


@dataclass(frozen=True)
class Submitted:
    job_id: str
    namespace: str
    eval_id: str


def _newest_live(allocs: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    live = [
        a for a in allocs if a.get("DesiredStatus") == "run" and a.get("TaskGroup", GROUP) == GROUP
    ]
    return max(live, key=lambda a: a.get("CreateIndex", 0), default=None)


class ServerJob:
    """One server's job. Stateless between calls: ids are passed in and saved by the caller."""

    def __init__(
        self,
        client: NomadClient,
        *,
        log: logging.Logger | logging.LoggerAdapter[Any],
        progress: Progress | None = None,
        wait: float = 30.0,
        fail_on_unplaceable: bool = True,
    ) -> None:
        self.client = client
        self.log = log
        self.progress = progress or (lambda percent, message: None)
        self.wait = wait
        self.fail_on_unplaceable = fail_on_unplaceable

    # Start -----------------------------------------------------------------------------------
    async def start(
        self,
        job: Mapping[str, Any],
        secrets: Mapping[str, str] | None = None,
        *,
        profile_name: str = "",
        on_submitted: Callable[[Submitted], None] | None = None,
    ) -> Started:
        job_id = str(job["ID"])
        namespace = str(job["Namespace"])
        try:
            return await self._start(job, secrets, profile_name, on_submitted)
        except StartFailed as failure:
            self.log.warning("start of Nomad job %s failed: %s", job_id, failure.log_message)
            await self._cleanup_failed(job_id, namespace, bool(secrets))
            raise

    async def _start(
        self,
        job: Mapping[str, Any],
        secrets: Mapping[str, str] | None,
        profile_name: str,
        on_submitted: Callable[[Submitted], None] | None,
    ) -> Started:
        job_id, namespace = str(job["ID"]), str(job["Namespace"])
        with _translated(namespace):
            if secrets:
                await self.client.put_variable(variable_path(job_id), secrets, namespace=namespace)
            registered = await self.client.register_job(job)
        eval_id = str(registered.get("EvalID") or "")
        # Block on the evaluation from its creation index: the first answer is the settled one.
        eval_index = int(registered.get("EvalCreateIndex") or 0)
        if on_submitted:
            on_submitted(Submitted(job_id, namespace, eval_id))
        self.progress(events.SUBMITTED, f"Submitted to Nomad as job {job_id} ({namespace})")

        with _translated(namespace):
            alloc = await self._placed_allocation(
                job_id, namespace, eval_id, eval_index, profile_name
            )
            return await self._follow_allocation(alloc, namespace)

    async def resume(self, job_id: str, namespace: str, alloc_id: str | None) -> Started:
        """Pick up a start where a hub killed mid-spawn left it: wait for the job's live
        allocation (queued ones wait for capacity) and follow it until its task runs.
        Unbounded like the start itself: the caller bounds it. StartFailed if it fails."""
        with _translated(namespace):
            if alloc_id:
                alloc = (await self.client.allocation(alloc_id, namespace=namespace)).data or {}
            else:
                alloc = await self._wait_for_allocation(job_id, namespace)
            return await self._follow_allocation(alloc, namespace)

    async def _placed_allocation(
        self, job_id: str, namespace: str, eval_id: str, eval_index: int, profile_name: str
    ) -> Mapping[str, Any]:
        if eval_id:
            evaluation = await self._settled_evaluation(eval_id, namespace, eval_index)
            status = evaluation.get("Status")
            if status in {"failed", "canceled"}:
                raise StartFailed(
                    "Nomad could not schedule the server: "
                    + (evaluation.get("StatusDescription") or status),
                    reason="evaluation_" + str(status),
                )
            failed = evaluation.get("FailedTGAllocs") or {}
            if failed:
                queued = not self.fail_on_unplaceable
                failure = explain(failed, profile_name=profile_name, queued=queued)
                if self.fail_on_unplaceable:
                    raise StartFailed(
                        failure.message,
                        reason="unplaceable",
                        log_message=f"job {job_id}: {failure.log_message}",
                        status_code=503 if failure.busy else 500,
                    )
                self.progress(events.EVALUATED, failure.message)
            else:
                self.progress(events.EVALUATED, "Nomad found a node for the server")
            placed = await self.client.evaluation_allocations(eval_id, namespace=namespace)
            alloc = _newest_live(list(placed.data or []))
            if alloc is not None:
                return alloc
        # Nothing new placed (same job re-registered, or waiting for capacity): the job's own
        # live allocation, waited for with blocking queries.
        return await self._wait_for_allocation(job_id, namespace)

    async def _settled_evaluation(
        self, eval_id: str, namespace: str, index: int = 0
    ) -> Mapping[str, Any]:
        while True:
            reply = await self.client.evaluation(
                eval_id, namespace=namespace, index=index, wait=self.wait
            )
            evaluation = reply.data or {}
            if evaluation.get("Status") not in {"pending", None}:
                return evaluation
            index = await self._next_index(index, reply.index)

    async def _wait_for_allocation(self, job_id: str, namespace: str) -> Mapping[str, Any]:
        index = 0
        while True:
            reply = await self.client.job_allocations(
                job_id, namespace=namespace, index=index, wait=self.wait
            )
            alloc = _newest_live(list(reply.data or []))
            if alloc is not None:
                return alloc
            index = await self._next_index(index, reply.index)

    async def _follow_allocation(self, stub: Mapping[str, Any], namespace: str) -> Started:
        """Follow one allocation until its task runs (address) or fails (message).

        The list stub already carries the task states, so the first blocking query starts
        from its index instead of re-reading what is known.
        """
        alloc_id = str(stub["ID"])
        node = str(stub.get("NodeName") or stub.get("NodeID", "")[:8])
        self.progress(events.PLACED, f"Placed on node {node}" if node else "Placed by Nomad")
        seen = 0
        alloc: Mapping[str, Any] = stub
        index = int(stub.get("ModifyIndex") or 0)
        while True:
            task_events = ((alloc.get("TaskStates") or {}).get(TASK) or {}).get("Events") or []
            for event in task_events[seen:]:
                step = events.describe_event(event, node)
                if step is not None and not step.failed:
                    self.progress(step.percent, step.message)
            seen = len(task_events)
            outcome = events.allocation_outcome(alloc, TASK)
            if outcome.state == "running":
                where = events.address(alloc)
                if where is None and alloc is stub:
                    full = await self.client.allocation(alloc_id, namespace=namespace)
                    where = events.address(full.data or {})
                if where is None:
                    raise StartFailed(
                        "Nomad started the server but reports no address for it.",
                        reason="no_address",
                        log_message=f"allocation {alloc_id} has no 'http' port",
                    )
                return Started(where[0], where[1], alloc_id, node)
            if outcome.state == "failed":
                raise StartFailed(
                    outcome.message,
                    reason=outcome.reason,
                    log_message=f"allocation {alloc_id} on {node}: {outcome.message}",
                )
            reply = await self.client.allocation(
                alloc_id, namespace=namespace, index=index, wait=self.wait
            )
            alloc = reply.data or {}
            index = await self._next_index(index, reply.index)

    async def _next_index(self, old: int, new: int) -> int:
        if new <= old:
            # The wait ran out without a change (or the server gives no index): do not spin.
            await asyncio.sleep(0.05)
            return old
        return new

    async def _cleanup_failed(self, job_id: str, namespace: str, had_secrets: bool) -> None:
        try:
            await self.client.deregister_job(job_id, purge=True, namespace=namespace)
            if had_secrets:
                await self.client.delete_variable(variable_path(job_id), namespace=namespace)
        except NomadError as exc:  # the orphan reconciler removes what is left
            self.log.warning("could not clean up failed job %s: %s", job_id, exc)

    # Poll ------------------------------------------------------------------------------------
    async def status(self, job_id: str, namespace: str, alloc_id: str | None) -> int | None:
        """None while pending or running, an int once the server is gone or going.

        Errors reaching Nomad answer None: a Nomad outage must not make the hub forget
        servers that are still running.
        """
        try:
            if alloc_id:
                try:
                    alloc = (await self.client.allocation(alloc_id, namespace=namespace)).data
                except NomadNotFound:
                    return 0
                return events.poll_code(alloc, TASK)
            job = await self.client.read_job(job_id, namespace=namespace)
            if job is None or job.get("Stop") or job.get("Status") == "dead":
                return 0
            allocs = (await self.client.job_allocations(job_id, namespace=namespace)).data
            live = _newest_live(list(allocs or []))
            if live is None:
                return None if job.get("Status") == "pending" else 0
            return events.poll_code(live, TASK)
        except NomadError as exc:
            self.log.warning("cannot poll Nomad job %s, assuming it still runs: %s", job_id, exc)
            return None

    # Stop ------------------------------------------------------------------------------------
    async def stop(
        self,
        job_id: str,
        namespace: str,
        alloc_id: str | None,
        *,
        purge: bool = False,
        timeout: float = 30.0,
        delete_variable: bool = True,
    ) -> bool:
        """Deregister and wait up to ``timeout`` s for the task to end; idempotent.

        True when the allocation is known to have stopped within the time.
        """
        with _translated(namespace):
            await self.client.deregister_job(job_id, purge=purge, namespace=namespace)
        stopped = await self._wait_stopped(job_id, namespace, alloc_id, timeout)
        if not stopped:
            self.log.warning("Nomad job %s still stopping after %.0f s", job_id, timeout)
        if delete_variable:
            try:
                await self.client.delete_variable(variable_path(job_id), namespace=namespace)
            except NomadError as exc:
                self.log.warning("could not delete variable of job %s: %s", job_id, exc)
        return stopped

    async def _wait_stopped(
        self, job_id: str, namespace: str, alloc_id: str | None, timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            left = deadline - time.monotonic()
            try:
                if alloc_id:
                    try:
                        reply = await self.client.allocation(
                            alloc_id,
                            namespace=namespace,
                            index=index,
                            wait=max(min(left, self.wait), 0.001),
                        )
                    except NomadNotFound:
                        return True
                    done = reply.data.get("ClientStatus") in TERMINAL_CLIENT
                else:
                    reply = await self.client.job_allocations(
                        job_id,
                        namespace=namespace,
                        index=index,
                        wait=max(min(left, self.wait), 0.001),
                    )
                    done = all(a.get("ClientStatus") in TERMINAL_CLIENT for a in reply.data or [])
            except NomadError as exc:
                self.log.warning("cannot follow stop of job %s: %s", job_id, exc)
                return False
            if done:
                return True
            if time.monotonic() >= deadline:
                return False
            index = await self._next_index(index, reply.index)


class _translated:
    """Turn client errors into :class:`StartFailed` with messages a user can act on."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None or isinstance(exc, StartFailed) or not isinstance(exc, NomadError):
            return False
        if isinstance(exc, NomadForbidden):
            raise StartFailed(
                "The hub is not allowed to do this in Nomad (ACL policy). "
                "Tell the workbench admins.",
                reason="nomad_forbidden",
                log_message=f"Nomad ACL refused {exc} in namespace {self.namespace}",
            ) from None
        if isinstance(exc, NomadUnavailable):
            raise StartFailed(
                "The compute cluster (Nomad) is not reachable right now. Try again in a few "
                "minutes; if it persists, tell the workbench admins.",
                reason="nomad_unavailable",
                log_message=str(exc),
                status_code=503,
            ) from None
        if isinstance(exc, NomadBadRequest):
            raise StartFailed(
                "Nomad rejected the server's job; this is a configuration problem. "
                "Tell the workbench admins.",
                reason="job_rejected",
                log_message=str(exc),
            ) from None
        raise StartFailed(
            f"Nomad answered unexpectedly: {exc.message}",
            reason="nomad_error",
            log_message=str(exc),
        ) from None
