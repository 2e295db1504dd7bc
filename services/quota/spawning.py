"""The quota on the spawn path: reserve before start, account from start to stop.

:class:`spawners.workbench.WorkbenchSpawnerMixin` calls :class:`SpawnQuota` at these points, so
the local and the Nomad spawner both get it:

  run_pre_spawn_hook   reserve (atomic check-and-insert); a refusal is a SpawnException
                       naming the limit, the usage and the reset
  start returned       the interval opens (usage counts from here)
  get_url (restart)    the same, for a start a killed hub did not see through
  post-stop hook       the interval closes: now for a requested stop, at the time the
                       server was last seen for one that died; a reservation that never
                       started is released (a failed spawn uses nothing)

The hook talks to the ledger database directly through SQLAlchemy rather than to the quota
service over HTTP: the check and the reservation are one database transaction (atomic across
hub, service and CLI processes), starts keep being enforced while the quota service restarts,
and the spawn path saves an HTTP round trip and a token (see benchmarks/quota_spawn.py for
the overhead). Database calls run in a worker thread so the hub's event loop never waits on a
lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub_config.model import WorkbenchConfig

from .accounts import Account, project_accounts
from .budgets import remaining_lines, usage_of
from .ledger import RUNNING, Claim, Ledger, ledger_for


@dataclass
class SpawnQuota:
    ledger_url: str
    reservation_ttl: float = 600.0
    clock: Callable[[], float] = time.time

    @property
    def ledger(self) -> Ledger:
        return ledger_for(self.ledger_url)

    async def reserve(
        self, account: Account, *, user: str, server_name: str, profile: str, gpus: int, cpu: float
    ) -> str:
        """Raises QuotaExceeded or LedgerUnavailable; returns the allocation id."""
        claim = Claim(account.id, user, gpus=gpus, cpu=cpu, kind="server",
                      server_name=server_name, profile=profile)
        return await asyncio.to_thread(
            self.ledger.reserve, claim, account.budget, now=self.clock(), ttl=self.reservation_ttl,
            account_label=account.label,
        )

    async def started(self, allocation_id: str, url: str | None) -> bool:
        return await asyncio.to_thread(self.ledger.mark_started, allocation_id, now=self.clock(), url=url)

    async def adopt(self, allocation_id: str, url: str | None) -> bool:
        """A server found running after a hub restart: True when it is accounted (its
        reservation starts now, or it was running already); False when the reservation
        lapsed or was closed meanwhile."""

        def adopt() -> bool:
            if self.ledger.mark_started(allocation_id, now=self.clock(), url=url):
                return True
            record = self.ledger.get(allocation_id)
            return record is not None and record.status == RUNNING

        return await asyncio.to_thread(adopt)

    async def ended(self, allocation_id: str, *, requested: bool, reason: str) -> Any:
        """Close at now for a requested stop, else at the last time the server was seen alive."""

        def close() -> Any:
            now = self.clock()
            at = now if requested else (self.ledger.last_seen(allocation_id) or now)
            return self.ledger.finish(allocation_id, at=at, now=now, reason=reason)

        return await asyncio.to_thread(close)

    async def notes(self, config: WorkbenchConfig, user: str, project_ids: list[str]) -> dict[str, list[str]]:
        """The spawn form's line per project: hours left, free GPUs, when it resets."""
        accounts = project_accounts(config)

        def read() -> dict[str, list[str]]:
            now = self.clock()
            notes = {}
            for project_id in project_ids:
                account = accounts.get(project_id)
                if account is None:
                    continue
                view = self.ledger.view(account.id, account.budget, now=now)
                if view.budget is None:
                    notes[project_id] = ["No compute budget is set for this project."]
                    continue
                usage = usage_of(view.spans, view.window, now)
                notes[project_id] = remaining_lines(view.budget, view.window, usage, user)
            return notes

        return await asyncio.to_thread(read)


async def project_notes(spawner: Any, project_ids: list[str]) -> dict[str, list[str]]:
    """``c.Spawner.project_notes_hook``: the remaining budget under each project in the form."""
    quota = spawner.quota
    if quota is None:
        return {}
    return await quota.notes(spawner.workbench, spawner.user.name, project_ids)
