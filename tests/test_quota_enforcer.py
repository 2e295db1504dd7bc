"""The while-running reconciler with a fake hub, a fake clock and fake probes.

Warnings at 80 and 95 %, the used-up notice that starts the grace period, stops only after
it, only of the servers the used-up limit concerns; a raised budget cancels the stop; a
restarted service neither repeats notices nor loses the grace already running; servers the
hub forgot are closed at their last sighting; stale reservations are released.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from hub_config.model import Budget
from services.quota.accounts import Account
from services.quota.enforcer import Enforcer, EnforcerSettings, HubServer
from services.quota.errors import QuotaExceeded
from services.quota.ledger import ENDED, RELEASED, RUNNING, Claim, Ledger
from services.quota.notices import announcement_html, for_user

MAY_2 = 1777716000.0  # 2026-05-02 12:00 CEST
H = 3600.0


class FakeHub:
    def __init__(self) -> None:
        self.running: dict[tuple[str, str], HubServer] = {}
        self.stops: list[tuple[str, str]] = []
        self.reachable = True

    async def servers(self) -> dict[tuple[str, str], HubServer]:
        if not self.reachable:
            import httpx

            raise httpx.ConnectError("hub down")
        return dict(self.running)

    async def stop_server(self, user: str, name: str) -> bool:
        self.stops.append((user, name))
        return True


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class World:
    """A ledger, accounts, a hub, and servers that answer their probe while 'up'."""

    def __init__(self, url: str, budget: Budget) -> None:
        self.ledger = Ledger(url)
        self.clock = Clock(MAY_2)
        self.hub = FakeHub()
        self.up: set[str] = set()
        self.account = Account("vision", "Project vision", "Vision", budget, frozenset({"anna", "bo"}))
        self.enforcer = self.new_enforcer()

    def new_enforcer(self) -> Enforcer:
        async def prober(urls: Mapping[str, str], timeout: float) -> set[str]:
            return {i for i in urls if i in self.up}

        return Enforcer(self.ledger, lambda: {"vision": self.account}, self.hub,
                        EnforcerSettings(interval=1, gone_after=60), clock=self.clock, prober=prober)

    def start(self, user: str, gpus: int, cpu: float, name: str = "") -> str:
        allocation = self.ledger.reserve(Claim("vision", user, gpus=gpus, cpu=cpu, server_name=name),
                                         self.account.budget, now=self.clock.now, ttl=600)
        self.ledger.mark_started(allocation, now=self.clock.now, url=f"http://127.0.0.1:1/user/{user}/")
        self.up.add(allocation)
        self.hub.running[(user, name)] = HubServer(user, name, True, None)
        return allocation

    def hub_stopped(self, allocation: str) -> None:
        """What the spawner's post-stop hook does when the hub stops the server."""
        record = self.ledger.get(allocation)
        self.ledger.finish(allocation, at=self.clock.now, now=self.clock.now, reason="stopped")
        self.up.discard(allocation)
        self.hub.running.pop((record.user, record.server_name), None)


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


async def test_warnings_then_stop_after_grace_only_for_gpu_servers(url: str) -> None:
    world = World(url, Budget(gpu_hours=10, grace_minutes=15))
    gpu = world.start("anna", gpus=2, cpu=8)
    cpu = world.start("bo", gpus=0, cpu=1)
    world.clock.now += 3.9 * H  # 7.8 GPU-hours: below 80 %
    report = await world.enforcer.tick()
    assert report.notices == [] and report.seen == 2
    world.clock.now += 0.2 * H  # 8.2: 80 %
    assert (await world.enforcer.tick()).notices == ["vision:*:gpu_hours:80"]
    world.clock.now += 0.7 * H  # 9.6: 95 %
    assert (await world.enforcer.tick()).notices == ["vision:*:gpu_hours:95"]
    world.clock.now += 0.25 * H  # 10.1: used up, grace starts
    report = await world.enforcer.tick()
    assert report.notices == ["vision:*:gpu_hours:100"] and report.stop_requested == []
    used_up_at = world.clock.now
    world.clock.now = used_up_at + 14 * 60
    assert (await world.enforcer.tick()).stop_requested == []
    assert world.hub.stops == []
    world.clock.now = used_up_at + 15 * 60
    report = await world.enforcer.tick()
    assert report.stop_requested == [gpu] and world.hub.stops == [("anna", "")]
    record = world.ledger.get(gpu)
    assert "stopped anna's server" in record.stop_reason and "gpu_hours" in record.stop_reason
    # the hub stops it; the CPU server keeps running
    world.hub_stopped(gpu)
    await world.enforcer.tick()
    assert world.ledger.get(cpu).status == RUNNING and world.hub.stops == [("anna", "")]
    notices = world.ledger.notices(accounts=["vision"])
    assert [n.level for n in notices] == [101, 100, 95, 80]
    assert notices[2].message == (
        "Project vision has used 95 % of its 10.0 GPU-hours for May 2026 (9.60 used). At 100 % running "
        "GPU servers are stopped after 15 minutes' grace; the budget resets on 2026-06-01 00:00 CEST."
    )
    assert notices[1].message == (
        "Project vision has used all of its 10.0 GPU-hours for May 2026: save your work, running GPU "
        "servers stop at 2026-05-02 17:18 CEST. New GPU servers cannot start until the budget resets "
        "on 2026-06-01 00:00 CEST, unless a workbench admin raises the budget."
    )
    seen = for_user(notices, "bo", {"vision": world.account})
    assert [n.level for n in seen] == [101]  # the latest word per limit replaces the earlier ones
    assert for_user(notices, "stranger", {"vision": world.account}) == []
    banner = announcement_html(seen)
    assert "The quota service stopped anna&#x27;s server at 2026-05-02 17:18 CEST" in banner


async def test_raising_the_budget_in_the_grace_period_cancels_the_stop(url: str) -> None:
    world = World(url, Budget(gpu_hours=1, grace_minutes=10))
    world.start("anna", gpus=1, cpu=1)
    world.clock.now += 1.05 * H
    assert "vision:*:gpu_hours:100" in (await world.enforcer.tick()).notices
    world.ledger.set_override("vision", {"gpu_hours": 5}, by="boss", now=world.clock.now)
    world.clock.now += 11 * 60
    report = await world.enforcer.tick()
    assert report.stop_requested == [] and world.hub.stops == []
    # used up again later: a new used-up notice for the new allowance, with its own grace
    world.clock.now += 4 * H
    report = await world.enforcer.tick()
    assert "vision:*:gpu_hours:100" in report.notices and report.stop_requested == []


async def test_a_restarted_service_keeps_the_grace_and_does_not_repeat_notices(url: str) -> None:
    world = World(url, Budget(cpu_core_hours=2, grace_minutes=30))
    allocation = world.start("anna", gpus=0, cpu=2)
    world.clock.now += 1.01 * H
    assert "vision:*:cpu_core_hours:100" in (await world.enforcer.tick()).notices
    world.clock.now += 20 * 60
    world.enforcer = world.new_enforcer()  # the service restarted
    world.ledger.dispose()
    world.ledger = world.enforcer.ledger = Ledger(url)
    report = await world.enforcer.tick()
    assert report.notices == [] and report.stop_requested == []
    world.clock.now += 10 * 60
    assert (await world.enforcer.tick()).stop_requested == [allocation]


async def test_per_user_caps_stop_only_that_user(url: str) -> None:
    world = World(url, Budget(per_user_gpu_hours=1, grace_minutes=0))
    anna = world.start("anna", gpus=1, cpu=1)
    bo = world.start("bo", gpus=1, cpu=1, name="second")
    world.ledger.finish(bo, at=world.clock.now, now=world.clock.now, reason="stopped")
    world.hub.running.pop(("bo", "second"))
    world.clock.now += 1.01 * H
    report = await world.enforcer.tick()
    assert "vision:anna:per_user_gpu_hours:100" in report.notices
    assert report.stop_requested == [anna] and world.hub.stops == [("anna", "")]
    notice = world.ledger.notices(accounts=["vision"])[0]
    assert notice.user == "anna"
    assert for_user([notice], "bo", {"vision": world.account}) == []


async def test_liveness_and_servers_the_hub_forgot(url: str) -> None:
    world = World(url, Budget(cpu_core_hours=1000))
    lost = world.start("anna", gpus=0, cpu=1)
    kept = world.start("bo", gpus=0, cpu=1)
    world.clock.now += 100
    await world.enforcer.tick()
    assert world.ledger.get(lost).last_seen_at == world.clock.now
    last_seen = world.clock.now
    # anna's server dies and the hub loses it (a missed post-stop hook); bo's stays up
    world.up.discard(lost)
    world.hub.running.pop(("anna", ""))
    world.clock.now += 30
    assert (await world.enforcer.tick()).closed == []  # not yet: gone_after is 60 s
    # while the hub is unreachable nothing is closed on its word
    world.hub.reachable = False
    world.clock.now += 120
    report = await world.enforcer.tick()
    assert report.closed == [] and not report.hub_reachable
    world.hub.reachable = True
    report = await world.enforcer.tick()
    assert report.closed == [lost]
    record = world.ledger.get(lost)
    assert record.status == ENDED and record.ended_at == last_seen
    assert world.ledger.get(kept).status == RUNNING and world.ledger.get(kept).last_seen_at == world.clock.now


async def test_stale_reservations_are_released(url: str) -> None:
    world = World(url, Budget(max_concurrent_gpus=1))
    stuck = world.ledger.reserve(Claim("vision", "anna", gpus=1, cpu=1), world.account.budget,
                                 now=world.clock.now, ttl=600)
    world.clock.now += 601
    report = await world.enforcer.tick()
    assert report.released == [stuck] and world.ledger.get(stuck).status == RELEASED


async def test_batch_allocations_need_heartbeats(url: str) -> None:
    world = World(url, Budget(cpu_core_hours=1000))
    batch = world.ledger.reserve(Claim("vision", "anna", gpus=0, cpu=4, kind="batch"), world.account.budget,
                                 now=world.clock.now, ttl=600)
    world.ledger.mark_started(batch, now=world.clock.now)
    world.clock.now += 200
    world.ledger.heartbeat([batch], now=world.clock.now)
    beat = world.clock.now
    world.clock.now += 299
    assert (await world.enforcer.tick()).closed == []
    world.clock.now += 2
    assert (await world.enforcer.tick()).closed == [batch]
    assert world.ledger.get(batch).ended_at == beat


def session_accounts(config: object) -> dict[str, Account]:
    """An extra-accounts source, as the teaching module provides one (loaded by name)."""
    import datetime as dt

    from hub_config.model import TeachingBudget
    from services.quota.accounts import session_account

    budget = TeachingBudget(starts=dt.datetime(2026, 5, 2, 9), ends=dt.datetime(2026, 5, 2, 16),
                            cpu_core_hours=3, grace_minutes=0)
    return {a.id: a for a in [session_account("intro", "Intro course", budget, ["stud1", "stud2"])]}


async def test_teaching_session_accounts_are_enforced_in_their_window(url: str) -> None:
    from services.quota.app import extra_accounts_loader

    load = extra_accounts_loader("tests.test_quota_enforcer:session_accounts", lambda: None)
    assert extra_accounts_loader("no.such.module:fn", lambda: None)() == {}
    [session] = load().values()
    assert session.id == "session:intro" and session.label == "Teaching session intro"
    world = World(url, Budget())
    world.account = session
    world.enforcer = world.new_enforcer()
    world.enforcer.accounts = lambda: {session.id: session}
    ids = []
    for student in ("stud1", "stud2"):
        allocation = world.ledger.reserve(Claim(session.id, student, gpus=0, cpu=1), session.budget,
                                          now=world.clock.now, ttl=600, account_label=session.label)
        world.ledger.mark_started(allocation, now=world.clock.now, url="http://127.0.0.1:1/")
        world.up.add(allocation)
        world.hub.running[(student, "")] = HubServer(student, "", True, None)
        ids.append(allocation)
    world.clock.now += 1.51 * H  # 3.02 core-hours: used up, no grace
    report = await world.enforcer.tick()
    assert sorted(report.stop_requested) == sorted(ids)
    stopped = world.ledger.notices(accounts=[session.id])[0]
    assert stopped.level == 101 and stopped.message.endswith("The session's budget is spent.")
    with pytest.raises(QuotaExceeded) as refused:
        world.ledger.reserve(Claim(session.id, "stud1", gpus=0, cpu=1), session.budget,
                             now=world.clock.now, ttl=600, account_label=session.label)
    assert "The session's budget does not reset; it ends on 2026-05-02 16:00 CEST." in refused.value.message
