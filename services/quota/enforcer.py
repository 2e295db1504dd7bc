"""The while-running reconciler: liveness, warnings, and stops after the grace period.

Each :meth:`Enforcer.tick` moves the ledger towards what is true and what the budgets say
(the status/target pattern of Dask Gateway's backends; every step is idempotent, so a restart
of the quota service simply resumes):

1. Reservations whose start never came are released (a hub that died mid-spawn).
2. Running servers are probed at their own ``/api`` (unauthenticated, answers while the hub is
   down); those that answer get ``last_seen = now`` in one statement. A server that dies is
   later closed at that time, not at the time someone noticed.
3. Allocations the hub no longer lists, that do not answer and were not seen for
   ``gone_after`` seconds, are closed at their last sighting (a missed post-stop hook).
4. For each account: hours used against each hours limit. Crossing ``warn_at`` levels records
   a notice once per level and period; reaching 100 % records the "used up" notice whose time
   starts the grace period; after the grace the concerned running servers are marked to stop.
5. Marked servers are stopped through the hub's REST API, retried every tick until the hub's
   post-stop hook closes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from .accounts import Account
from .budgets import hours_use, levels_reached, spans_to_stop, usage_of
from .ledger import RUNNING, AllocationRecord, Ledger
from .notices import (
    STOPPED,
    USED_UP,
    server_label,
    stopped_text,
    used_up_text,
    warning_text,
)

log = logging.getLogger("quota.enforcer")


@dataclass(frozen=True)
class HubServer:
    user: str
    name: str
    ready: bool
    pending: str | None


class HubClient(Protocol):
    async def servers(self) -> dict[tuple[str, str], HubServer]: ...

    async def stop_server(self, user: str, name: str) -> bool:
        """Ask the hub to stop it; True once the hub accepted (or it is already gone)."""
        ...


class HubApi:
    """The hub's REST API with the quota service's own token (list users, stop servers)."""

    def __init__(self, api_url: str, token: str, timeout: float = 10.0) -> None:
        self.client = httpx.AsyncClient(
            base_url=api_url.rstrip("/") + "/",
            headers={"Authorization": f"token {token}",
                     "Accept": "application/jupyterhub-pagination+json"},
            timeout=timeout,
        )

    async def servers(self) -> dict[tuple[str, str], HubServer]:
        found: dict[tuple[str, str], HubServer] = {}
        offset = 0
        while True:
            answer = await self.client.get("users", params={"state": "active", "offset": offset, "limit": 200})
            answer.raise_for_status()
            body = answer.json()
            items = body["items"] if isinstance(body, dict) else body
            for user in items:
                for name, server in (user.get("servers") or {}).items():
                    found[(user["name"], name)] = HubServer(
                        user["name"], name, bool(server.get("ready")), server.get("pending")
                    )
            following = (body.get("_pagination") or {}).get("next") if isinstance(body, dict) else None
            if not following:
                return found
            offset = int(following["offset"])

    async def stop_server(self, user: str, name: str) -> bool:
        path = f"users/{quote(user, safe='')}/server" if not name else (
            f"users/{quote(user, safe='')}/servers/{quote(name, safe='')}"
        )
        answer = await self.client.delete(path)
        if answer.status_code in (202, 204, 404):
            return True
        if answer.status_code == 400 and "not running" in answer.text:
            return True
        log.warning("hub refused to stop %s/%s: %s %s", user, name, answer.status_code, answer.text[:200])
        return False

    async def aclose(self) -> None:
        await self.client.aclose()


async def probe_alive(urls: Mapping[str, str], timeout: float) -> set[str]:
    """Ids whose server answers at ``url + 'api'`` (Jupyter Server's version endpoint)."""
    if not urls:
        return set()
    async with httpx.AsyncClient(timeout=timeout) as client:

        async def one(allocation_id: str, url: str) -> str | None:
            try:
                answer = await client.get(url.rstrip("/") + "/api")
            except httpx.HTTPError:
                return None
            return allocation_id if answer.status_code == 200 else None

        results = await asyncio.gather(*(one(i, u) for i, u in urls.items()))
    return {r for r in results if r}


@dataclass
class EnforcerSettings:
    interval: float = 30.0
    probe_timeout: float = 5.0
    gone_after: float = 120.0  # unseen and unknown to the hub this long: closed at last sighting
    heartbeat_timeout: float = 300.0  # allocations without a URL (batch, Dask) must report this often


@dataclass
class TickReport:
    released: list[str] = field(default_factory=list)
    seen: int = 0
    closed: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    stop_requested: list[str] = field(default_factory=list)
    stop_sent: list[str] = field(default_factory=list)
    hub_reachable: bool = True


class Enforcer:
    def __init__(
        self,
        ledger: Ledger,
        accounts: Callable[[], Mapping[str, Account]],
        hub: HubClient | None,
        settings: EnforcerSettings | None = None,
        clock: Callable[[], float] = time.time,
        prober: Callable[[Mapping[str, str], float], Any] = probe_alive,
    ) -> None:
        self.ledger = ledger
        self.accounts = accounts
        self.hub = hub
        self.settings = settings or EnforcerSettings()
        self.clock = clock
        self.prober = prober

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set; errors are logged, not fatal."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("quota enforcer tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.interval)
            except TimeoutError:
                pass

    async def tick(self) -> TickReport:
        report = TickReport()
        now = self.clock()
        released = await asyncio.to_thread(self.ledger.expire_reservations, now=now)
        report.released = [r.id for r in released]

        running = await asyncio.to_thread(self.ledger.allocations, statuses=[RUNNING])
        alive = await self.prober({a.id: a.url for a in running if a.url}, self.settings.probe_timeout)
        now = self.clock()
        report.seen = await asyncio.to_thread(self.ledger.heartbeat, alive, now=now)

        hub_servers: dict[tuple[str, str], HubServer] | None = None
        if self.hub is not None:
            try:
                hub_servers = await self.hub.servers()
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                report.hub_reachable = False
                log.warning("hub API not reachable (%s); nothing is closed on its word this tick", exc)
        report.closed = await self._close_gone(running, alive, hub_servers, now)

        accounts = self.accounts()
        for account in accounts.values():
            await self._enforce_account(account, now, report)
        await self._send_stops(report)
        if report.released or report.closed or report.notices or report.stop_requested:
            log.info(
                "quota tick: released %s, closed %s, notices %s, stop requested %s",
                report.released, report.closed, report.notices, report.stop_requested,
            )
        return report

    async def _close_gone(
        self,
        running: list[AllocationRecord],
        alive: set[str],
        hub_servers: dict[tuple[str, str], HubServer] | None,
        now: float,
    ) -> list[str]:
        closed = []
        for allocation in running:
            if allocation.id in alive:
                continue
            last = allocation.last_seen_at or allocation.started_at or now
            if allocation.kind == "server":
                if hub_servers is None or (allocation.user, allocation.server_name) in hub_servers:
                    continue
                if now - last < self.settings.gone_after:
                    continue
                reason = "server no longer known to the hub (closed by the quota service)"
            else:
                if allocation.url or now - last < self.settings.heartbeat_timeout:
                    continue
                reason = f"no heartbeat for {self.settings.heartbeat_timeout:g} s (closed by the quota service)"
            record = await asyncio.to_thread(self.ledger.finish, allocation.id, at=last, now=now, reason=reason)
            if record is not None:
                closed.append(allocation.id)
        return closed

    async def _enforce_account(self, account: Account, now: float, report: TickReport) -> None:
        view = await asyncio.to_thread(self.ledger.view, account.id, account.budget, now=now)
        budget, window = view.budget, view.window
        if budget is None:
            return
        spans = view.spans
        usage = usage_of(spans, window, now)
        by_id = {a.id: a for a in view.allocations}
        for use in hours_use(budget, usage):
            for level in levels_reached(use.fraction, budget.warn_at):
                if level == USED_UP:
                    stop_at = now + budget.grace_minutes * 60
                    message = used_up_text(account, use, window, stop_at)
                else:
                    message = warning_text(account, use, level, window, budget.grace_minutes)
                notice = await asyncio.to_thread(
                    self.ledger.add_notice, account=account.id, user=use.user or "",
                    limit=use.limit.value, level=level, allowed=use.allowed,
                    window_start=window.start, now=now, message=message,
                )
                if notice.created_at == now:
                    report.notices.append(f"{account.id}:{use.user or '*'}:{use.limit.value}:{level}")
                if level != USED_UP or now < notice.created_at + budget.grace_minutes * 60:
                    continue
                targets = [s for s in spans_to_stop(use, spans) if by_id[s.id].stop_requested_at is None]
                if not targets:
                    continue
                labels = [server_label(by_id[s.id].user, by_id[s.id].server_name) for s in targets]
                reason = stopped_text(account, use, window, labels, now)
                await asyncio.to_thread(
                    self.ledger.request_stop, [s.id for s in targets], reason=reason, now=now
                )
                report.stop_requested.extend(s.id for s in targets)
                # One 'stopped' notice per limit and period, naming what this round stopped.
                await asyncio.to_thread(
                    self.ledger.add_notice, account=account.id, user=use.user or "",
                    limit=use.limit.value, level=STOPPED, allowed=use.allowed,
                    window_start=window.start, now=now, message=reason,
                )

    async def _send_stops(self, report: TickReport) -> None:
        if self.hub is None:
            return
        pending = await asyncio.to_thread(self.ledger.allocations, statuses=["reserved", RUNNING])
        for allocation in pending:
            if allocation.stop_requested_at is None or allocation.kind != "server":
                continue
            try:
                accepted = await self.hub.stop_server(allocation.user, allocation.server_name)
            except httpx.HTTPError as exc:
                log.warning("could not ask the hub to stop %s/%s: %s", allocation.user, allocation.server_name, exc)
                continue
            if accepted:
                report.stop_sent.append(allocation.id)
                log.warning(
                    "stopping %s/%s (%s): %s", allocation.user, allocation.server_name or "(default)",
                    allocation.account, allocation.stop_reason,
                )
