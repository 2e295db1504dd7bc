"""Accounting a Nomad batch run against the project's quota: the hook and its implementations.

A run on Nomad borrows the profile's CPUs and GPUs like a server does, so it is charged the
same way, as an allocation of kind ``batch`` in the quota ledger (:mod:`services.quota`),
through :class:`RunQuota` at four points of :mod:`.nomad`:

  reserve     before the run's folder is made and the job registered: a refusal (its message
              names the limit, the usage and the reset) means nothing is created or submitted
  started     when the allocation's task starts (usage counts from Nomad's start time)
  heartbeat   while the run is followed; answers the quota service's stop request, if any
  ended       when the allocation is terminal, or when submission failed (a reservation that
              never started is released and costs nothing)

Which implementation :func:`quota_from_env` picks, first match:

* :class:`ServiceQuota` — ``WORKBENCH_QUOTA_URL`` and the server's ``JUPYTERHUB_API_TOKEN``:
  the quota service's allocations API, as a user's server must use it (it never holds the
  ledger's database credentials), through the Dask cluster's client
  (:class:`extensions.compute.quota.QuotaService`) with ``kind: batch``. The service's own
  reservation time-out applies there: a job queued in Nomad for longer loses its reservation
  and starts unaccounted (``started`` then changes nothing).
* :class:`LedgerQuota` — ``WORKBENCH_QUOTA_DB``: the ledger's SQL tables directly, with the same
  atomic reservation the spawner uses; for hub-side processes, admins and CI.
* :class:`NoQuota` — neither: nothing is charged (local development); the record says so.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from hub_config.model import Profile, WorkbenchConfig

from .errors import RunRefused

QUOTA_URL_ENV = "WORKBENCH_QUOTA_URL"
QUOTA_DB_ENV = "WORKBENCH_QUOTA_DB"
RESERVATION_TTL = 3600.0  # a batch job may wait for capacity longer than a server spawn


@dataclass(frozen=True)
class RunClaim:
    project: str
    user: str
    run_id: str
    profile: Profile


class RunQuota(Protocol):
    description: str

    async def reserve(self, claim: RunClaim) -> str | None:
        """An allocation id, or None when nothing is accounted; raises RunRefused."""

    async def started(self, allocation_id: str, at: float | None = None) -> None:
        """The job's task started (``at``: when Nomad says it did; else now)."""

    async def heartbeat(self, allocation_id: str) -> str | None:
        """Keep the allocation alive; returns why the quota service wants it stopped, if it does."""

    async def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        """The task ended (``at``: when Nomad says it did), or the run never started."""


class NoQuota:
    description = "not charged (no quota service or ledger configured)"

    async def reserve(self, claim: RunClaim) -> str | None:
        return None

    async def started(self, allocation_id: str, at: float | None = None) -> None:
        return None

    async def heartbeat(self, allocation_id: str) -> str | None:
        return None

    async def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        return None


class LedgerQuota:
    """Batch runs in the quota ledger's tables (:mod:`services.quota.ledger`), directly."""

    def __init__(self, url: str, config: WorkbenchConfig, *, ttl: float = RESERVATION_TTL) -> None:
        self.url = url
        self.config = config
        self.ttl = ttl
        self.description = "charged in the quota ledger"

    @property
    def ledger(self):
        from services.quota.ledger import ledger_for

        return ledger_for(self.url)

    async def reserve(self, claim: RunClaim) -> str | None:
        from services.quota.accounts import project_accounts
        from services.quota.errors import QuotaError
        from services.quota.ledger import Claim

        account = project_accounts(self.config).get(claim.project)
        if account is None:
            raise RunRefused(f"Project {claim.project!r} is not configured, so it has no quota.")
        request = Claim(account.id, claim.user, gpus=claim.profile.gpus, cpu=claim.profile.cpu,
                        kind="batch", server_name=f"run:{claim.run_id}", profile=claim.profile.slug)
        try:
            return await asyncio.to_thread(self.ledger.reserve, request, account.budget,
                                           now=time.time(), ttl=self.ttl, account_label=account.label)
        except QuotaError as error:
            raise RunRefused(error.message, reason=error.reason, status=error.status,
                             log_message=error.log_message) from None

    async def started(self, allocation_id: str, at: float | None = None) -> None:
        now = time.time()
        await asyncio.to_thread(self.ledger.mark_started, allocation_id, now=min(at or now, now))

    async def heartbeat(self, allocation_id: str) -> str | None:
        def beat() -> str | None:
            ledger = self.ledger
            ledger.heartbeat([allocation_id], now=time.time())
            allocation = ledger.get(allocation_id)
            if allocation is not None and allocation.stop_requested_at is not None:
                return allocation.stop_reason or "stopped by the quota service"
            return None

        return await asyncio.to_thread(beat)

    async def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        now = time.time()
        await asyncio.to_thread(self.ledger.finish, allocation_id, at=min(at or now, now), now=now,
                                reason=reason)


class ServiceQuota:
    """Batch runs through the quota service's allocations API, with the server's hub token."""

    STOPPED = "the project's compute budget is used up (the quota service asked to stop it)"

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.description = f"charged through the quota service at {url}"
        self._clients: dict[str, object] = {}  # allocation id -> its project's API client

    async def reserve(self, claim: RunClaim) -> str | None:
        from extensions.compute.quota import QuotaError

        client = _service(self.url, self.token, claim.project)
        try:
            allocation = await client.reserve(f"run:{claim.run_id}", cpu=claim.profile.cpu,
                                              gpus=claim.profile.gpus)
        except QuotaError as error:
            await client.aclose()
            raise RunRefused(error.message, reason=error.reason, log_message=error.log_message) from None
        self._clients[allocation] = client
        return allocation

    def _client(self, allocation_id: str):
        if allocation_id not in self._clients:
            # Settled by another process (collect): only reservations need the project.
            self._clients[allocation_id] = _service(self.url, self.token, "")
        return self._clients[allocation_id]

    async def started(self, allocation_id: str, at: float | None = None) -> None:
        await self._client(allocation_id).started(allocation_id)

    async def heartbeat(self, allocation_id: str) -> str | None:
        stop = await self._client(allocation_id).heartbeat([allocation_id])
        return self.STOPPED if stop else None

    async def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        client = self._client(allocation_id)
        self._clients.pop(allocation_id, None)
        try:
            await client.ended(allocation_id)  # type: ignore[attr-defined]
        finally:
            await client.aclose()  # type: ignore[attr-defined]


def _service(url: str, token: str, project: str):
    from extensions.compute.quota import QuotaService

    return QuotaService(url, token, project, kind="batch")


def quota_from_env(config: WorkbenchConfig, environ: Mapping[str, str] | None = None) -> RunQuota:
    environ = os.environ if environ is None else environ
    url, token = environ.get(QUOTA_URL_ENV), environ.get("JUPYTERHUB_API_TOKEN")
    if url and token:
        return ServiceQuota(url, token)
    if environ.get(QUOTA_DB_ENV):
        return LedgerQuota(environ[QUOTA_DB_ENV], config)
    return NoQuota()
