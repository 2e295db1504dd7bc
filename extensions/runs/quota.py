"""Accounting a Nomad batch run against the project's quota: the hook and its two implementations.

A run on Nomad borrows the profile's CPUs and GPUs like a server does, so it is charged the
same way, through :class:`RunQuota`, at four points of :mod:`.nomad`:

  reserve     before the job is registered (nothing is submitted when the budget refuses;
              the refusal's message names the limit, the usage and when it resets)
  started     when the allocation's task starts running (usage counts from here)
  heartbeat   while the run is followed; answers the quota service's stop request, if any
  ended       when the allocation is terminal, or when submission failed (a reservation
              that never started is released and costs nothing)

:class:`LedgerQuota` writes to the quota ledger of :mod:`services.quota` (the same SQL tables
and atomic reservation the spawner uses; allocations of kind ``batch``), found through
``$WORKBENCH_QUOTA_DB`` like the hub's. Without that setting :class:`NoQuota` charges nothing;
the run record says which one was used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from hub_config.model import Profile, WorkbenchConfig

from .errors import RunRefused

QUOTA_DB_ENV = "WORKBENCH_QUOTA_DB"
RESERVATION_TTL = 3600.0  # a batch job may queue for capacity longer than a server spawn


@dataclass(frozen=True)
class RunClaim:
    project: str
    user: str
    run_id: str
    profile: Profile


class RunQuota(Protocol):
    def reserve(self, claim: RunClaim) -> str | None:
        """An allocation id, or None when nothing is accounted; raises RunRefused."""

    def started(self, allocation_id: str, at: float | None = None) -> None:
        """The job's task started (``at``: when Nomad says it did; else now)."""

    def heartbeat(self, allocation_id: str) -> str | None:
        """Keep the allocation alive; returns why the quota service wants it stopped, if it does."""

    def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        """The task ended (``at``: when Nomad says it did), or the run never started."""


class NoQuota:
    """No ledger configured: runs are not charged (local development, CI)."""

    def reserve(self, claim: RunClaim) -> str | None:
        return None

    def started(self, allocation_id: str, at: float | None = None) -> None:
        return None

    def heartbeat(self, allocation_id: str) -> str | None:
        return None

    def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        return None


class LedgerQuota:
    """Batch runs in the quota ledger of :mod:`services.quota` (imported on first use)."""

    def __init__(self, url: str, config: WorkbenchConfig, *, ttl: float = RESERVATION_TTL) -> None:
        self.url = url
        self.config = config
        self.ttl = ttl

    @property
    def ledger(self):
        from services.quota.ledger import ledger_for

        return ledger_for(self.url)

    def reserve(self, claim: RunClaim) -> str | None:
        from services.quota.accounts import project_accounts
        from services.quota.errors import QuotaError
        from services.quota.ledger import Claim

        account = project_accounts(self.config).get(claim.project)
        if account is None:
            raise RunRefused(f"Project {claim.project!r} is not configured, so it has no quota.")
        request = Claim(account.id, claim.user, gpus=claim.profile.gpus, cpu=claim.profile.cpu,
                        kind="batch", server_name=f"run:{claim.run_id}", profile=claim.profile.slug)
        try:
            return self.ledger.reserve(request, account.budget, now=time.time(), ttl=self.ttl,
                                       account_label=account.label)
        except QuotaError as error:
            raise RunRefused(error.message, reason=error.reason, status=error.status,
                             log_message=error.log_message) from None

    def started(self, allocation_id: str, at: float | None = None) -> None:
        self.ledger.mark_started(allocation_id, now=min(at or time.time(), time.time()))

    def heartbeat(self, allocation_id: str) -> str | None:
        ledger = self.ledger
        ledger.heartbeat([allocation_id], now=time.time())
        allocation = ledger.get(allocation_id)
        if allocation is not None and allocation.stop_requested_at is not None:
            return allocation.stop_reason or "stopped by the quota service"
        return None

    def ended(self, allocation_id: str, reason: str, at: float | None = None) -> None:
        now = time.time()
        self.ledger.finish(allocation_id, at=min(at or now, now), now=now, reason=reason)


def quota_from_env(config: WorkbenchConfig, environ: Mapping[str, str] | None = None) -> RunQuota:
    environ = os.environ if environ is None else environ
    url = environ.get(QUOTA_DB_ENV)
    return LedgerQuota(url, config) if url else NoQuota()
