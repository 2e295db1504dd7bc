"""The quota ledger on SQLite and PostgreSQL: atomic reservations under a 50-way race, and
random start/stop/fail/die/restart sequences that never over-commit and always sum correctly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hub_config.model import Budget
from services.quota.budgets import usage_of
from services.quota.errors import QuotaExceeded
from services.quota.ledger import ENDED, RELEASED, RUNNING, Claim, Ledger

MAY_2 = 1777716000.0  # 2026-05-02 12:00 CEST: every sequence stays inside May
GPU_RACE = Budget(gpu_hours=500, max_concurrent_gpus=2, max_concurrent_servers=60)


def race(url: str, budget: Budget, users: list[str], now: float) -> tuple[list[str], list[tuple[str, float]]]:
    """Every user reserves a 1-GPU server at the same instant, each through its own engine."""
    ledgers = [Ledger(url, pool_size=1) for _ in users]
    barrier = threading.Barrier(len(users))
    granted: list[str] = []
    refused: list[tuple[str, float]] = []
    lock = threading.Lock()

    def one(ledger: Ledger, user: str) -> None:
        barrier.wait()
        began = time.perf_counter()
        try:
            allocation = ledger.reserve(Claim("vision", user, gpus=1, cpu=2), budget, now=now, ttl=600,
                                        account_label="Project vision")
        except QuotaExceeded as refusal:
            with lock:
                refused.append((refusal.message, time.perf_counter() - began))
        else:
            with lock:
                granted.append(allocation)

    threads = [threading.Thread(target=one, args=(ledger, user)) for ledger, user in zip(ledgers, users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ledger in ledgers:
        ledger.dispose()
    return granted, refused


def test_fifty_concurrent_reservations_grant_exactly_two(ledger_url: str) -> None:
    users = [f"u{i:02d}" for i in range(50)]
    granted, refused = race(ledger_url, GPU_RACE, users, MAY_2)
    assert len(granted) == 2 and len(refused) == 48
    for message, seconds in refused:
        assert message == (
            "Project vision may use at most 2 GPUs at a time (budget setting max_concurrent_gpus); 2 GPUs are in use now "
            "and this server asks for 1. Try again when one of them stops. The budget for May 2026 resets "
            "on 2026-06-01 00:00 CEST."
        )
        assert seconds < 10, "refusals come at once, not after a timeout"
    ledger = Ledger(ledger_url)
    rows = ledger.allocations(account="vision")
    assert sorted(r.id for r in rows) == sorted(granted)  # refusals recorded nothing
    # A failed spawn releases its reservation: the next start gets the GPU, a third does not.
    ledger.finish(granted[0], at=MAY_2, now=MAY_2 + 5, reason="spawn failed")
    assert ledger.get(granted[0]).status == RELEASED
    again, refused_again = race(ledger_url, GPU_RACE, ["late1", "late2", "late3"], MAY_2 + 6)
    assert len(again) == 1 and len(refused_again) == 2


def test_reservations_expire_when_the_start_never_comes(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    budget = Budget(max_concurrent_gpus=1)
    stuck = ledger.reserve(Claim("vision", "a", gpus=1, cpu=1), budget, now=MAY_2, ttl=60)
    with pytest.raises(QuotaExceeded):
        ledger.reserve(Claim("vision", "b", gpus=1, cpu=1), budget, now=MAY_2 + 59, ttl=60)
    # past its ttl the reservation no longer holds the GPU, even before the reconciler runs
    ledger.reserve(Claim("vision", "b", gpus=1, cpu=1), budget, now=MAY_2 + 61, ttl=60)
    assert [r.id for r in ledger.expire_reservations(now=MAY_2 + 62)] == [stuck]
    assert ledger.get(stuck).status == RELEASED
    assert not ledger.mark_started(stuck, now=MAY_2 + 63), "an expired reservation cannot start"


def test_overrides_apply_inside_the_reservation(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    budget = Budget(max_concurrent_gpus=1)
    ledger.reserve(Claim("vision", "a", gpus=1, cpu=1), budget, now=MAY_2, ttl=600)
    with pytest.raises(QuotaExceeded):
        ledger.reserve(Claim("vision", "b", gpus=1, cpu=1), budget, now=MAY_2, ttl=600)
    ledger.set_override("vision", {"max_concurrent_gpus": 2}, by="boss", now=MAY_2, note="deadline")
    ledger.reserve(Claim("vision", "b", gpus=1, cpu=1), budget, now=MAY_2, ttl=600)
    assert ledger.overrides()["vision"]["fields"] == {"max_concurrent_gpus": 2}
    assert ledger.clear_override("vision") and not ledger.clear_override("vision")


def test_notices_are_recorded_once(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    first = ledger.add_notice(account="vision", user="", limit="gpu_hours", level=80, allowed=10,
                              window_start=1.0, now=5.0, message="80 %")
    again = ledger.add_notice(account="vision", user="", limit="gpu_hours", level=80, allowed=10,
                              window_start=1.0, now=9.0, message="80 % again")
    assert again.id == first.id and again.created_at == 5.0
    raised = ledger.add_notice(account="vision", user="", limit="gpu_hours", level=80, allowed=20,
                               window_start=1.0, now=9.0, message="80 % of the raised budget")
    assert raised.id != first.id
    assert [n.message for n in ledger.notices(accounts=["vision"])] == ["80 % of the raised budget", "80 %"]


# Stateful: random sequences against a model ----------------------------------------------------
GPUS, SERVERS, GPU_HOURS = 3, 4, 2.0
STATE_BUDGET = Budget(gpu_hours=GPU_HOURS, max_concurrent_gpus=GPUS, max_concurrent_servers=SERVERS)
TTL = 900.0


class LedgerMachine(RuleBasedStateMachine):
    """The model keeps its own intervals in integer seconds; the ledger must agree with it."""

    url_factory: Callable[[], str]

    @initialize()
    def setup(self) -> None:
        self.url = type(self).url_factory()
        self.ledger = Ledger(self.url)
        self.now = int(MAY_2)
        self.reserved: dict[str, tuple[int, str, int]] = {}  # id -> (gpus, user, reserved_at)
        self.running: dict[str, tuple[int, str, int, int]] = {}  # id -> (gpus, user, start, last_seen)
        self.closed: list[tuple[int, int, int]] = []  # (gpus, start, end)
        self.finished: list[str] = []  # ids in the order they ended (uuids: never sort them)

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.ledger.dispose()

    # model arithmetic
    def held(self) -> tuple[int, int]:
        live = [g for g, _, t in self.reserved.values() if t + TTL > self.now]
        live += [g for g, *_ in self.running.values()]
        return sum(live), len(live)

    def gpu_seconds(self) -> int:
        total = sum(g * (e - s) for g, s, e in self.closed)
        return total + sum(g * (self.now - s) for g, _, s, _ in self.running.values())

    @rule(seconds=st.integers(1, 3 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @rule(user=st.sampled_from(["ann", "bo", "cy"]), gpus=st.integers(0, 2))
    def reserve(self, user: str, gpus: int) -> None:
        held_gpus, held_servers = self.held()
        used = self.gpu_seconds() / 3600
        near_boundary = abs(used - GPU_HOURS) < 1e-6
        expect = held_servers + 1 <= SERVERS and held_gpus + gpus <= GPUS and (gpus == 0 or used < GPU_HOURS)
        try:
            allocation = self.ledger.reserve(Claim("vision", user, gpus=gpus, cpu=1), STATE_BUDGET,
                                             now=self.now, ttl=TTL)
        except QuotaExceeded as refusal:
            assert not expect or near_boundary, f"refused although within budget: {refusal.message}"
            return
        assert expect or near_boundary, "granted beyond the budget"
        self.reserved[allocation] = (gpus, user, self.now)

    @precondition(lambda self: self.reserved)
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        allocation = data.draw(st.sampled_from(list(self.reserved)))
        gpus, user, reserved_at = self.reserved.pop(allocation)
        started = self.ledger.mark_started(allocation, now=self.now)
        # an expired reservation may still be 'reserved' in the table but must never start late:
        # its GPUs may have gone to someone else meanwhile
        assert started == (reserved_at + TTL > self.now)
        if started:
            self.running[allocation] = (gpus, user, self.now, self.now)
        else:
            self.ledger.finish(allocation, at=self.now, now=self.now, reason="start came too late")
            self.finished.append(allocation)

    @precondition(lambda self: self.reserved)
    @rule(data=st.data())
    def spawn_fails(self, data: st.DataObject) -> None:
        allocation = data.draw(st.sampled_from(list(self.reserved)))
        self.reserved.pop(allocation)
        self.ledger.finish(allocation, at=self.now, now=self.now, reason="spawn failed")
        assert self.ledger.get(allocation).status == RELEASED
        self.finished.append(allocation)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        allocation = data.draw(st.sampled_from(list(self.running)))
        gpus, _, start, _ = self.running.pop(allocation)
        self.ledger.finish(allocation, at=self.now, now=self.now, reason="stopped")
        self.closed.append((gpus, start, self.now))
        self.finished.append(allocation)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def dies_unseen(self, data: st.DataObject) -> None:
        """Found dead: closed at the last time it was seen alive, not now."""
        allocation = data.draw(st.sampled_from(list(self.running)))
        gpus, _, start, last_seen = self.running.pop(allocation)
        assert self.ledger.last_seen(allocation) == last_seen
        self.ledger.finish(allocation, at=last_seen, now=self.now, reason="died")
        self.closed.append((gpus, start, last_seen))
        self.finished.append(allocation)

    @rule()
    def heartbeat(self) -> None:
        self.ledger.heartbeat(list(self.running), now=self.now)
        self.running = {k: (g, u, s, self.now) for k, (g, u, s, _) in self.running.items()}

    @rule()
    def expire(self) -> None:
        expired = {r.id for r in self.ledger.expire_reservations(now=self.now)}
        assert expired == {k for k, (_, _, t) in self.reserved.items() if t + TTL <= self.now}
        for allocation in [k for k in self.reserved if k in expired]:
            self.reserved.pop(allocation)
            self.finished.append(allocation)

    @rule()
    def restart(self) -> None:
        """A hub or service restart: a new process opens the same database."""
        self.ledger.dispose()
        self.ledger = Ledger(self.url)

    @precondition(lambda self: self.finished)
    @rule(data=st.data())
    def finish_twice(self, data: st.DataObject) -> None:
        """Closing again (a retried hook, the reconciler) changes nothing."""
        allocation = data.draw(st.sampled_from(self.finished))
        assert self.ledger.get(allocation).status in (ENDED, RELEASED)
        assert self.ledger.finish(allocation, at=self.now + 99, now=self.now + 99, reason="again") is None

    @invariant()
    def never_over_committed_and_sums_agree(self) -> None:
        view = self.ledger.view("vision", STATE_BUDGET, now=self.now)
        usage = usage_of(view.spans, view.window, self.now)
        assert usage.active_gpus <= GPUS and usage.active_servers <= SERVERS
        assert usage.active_gpus == self.held()[0]
        assert usage.gpu_hours == pytest.approx(self.gpu_seconds() / 3600, abs=1e-9)
        running = {r.id for r in self.ledger.allocations(statuses=[RUNNING])}
        assert running == set(self.running)
        # the reservation's SQL aggregate agrees with the arithmetic the pages and enforcer use
        for user in ("ann", "bo", "cy"):
            sql = self.ledger.usage("vision", view.window, now=self.now, user=user)
            assert (sql.active_gpus, sql.active_servers) == (usage.active_gpus, usage.active_servers)
            assert sql.gpu_hours == pytest.approx(usage.gpu_hours, abs=1e-9)
            assert sql.cpu_core_hours == pytest.approx(usage.cpu_core_hours, abs=1e-9)
            mine, expected = sql.of(user), usage.of(user)
            assert (mine.active_gpus, mine.active_servers) == (expected.active_gpus, expected.active_servers)
            assert mine.gpu_hours == pytest.approx(expected.gpu_hours, abs=1e-9)
            assert mine.cpu_core_hours == pytest.approx(expected.cpu_core_hours, abs=1e-9)


def _run_machine(url_factory: Callable[[], str], examples: int, steps: int) -> None:
    machine = type("Machine", (LedgerMachine,), {"url_factory": staticmethod(url_factory)})
    machine.TestCase.settings = settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    machine.TestCase().runTest()


def test_random_sequences_on_sqlite(make_ledger_url: Callable[[str], str]) -> None:
    _run_machine(lambda: make_ledger_url("sqlite"), examples=60, steps=30)


def test_random_sequences_on_postgresql(make_ledger_url: Callable[[str], str]) -> None:
    _run_machine(lambda: make_ledger_url("postgresql"), examples=12, steps=25)


def test_sqlite_ledger_is_private_to_the_hubs_user(tmp_path) -> None:  # noqa: ANN001
    """Finding of an adversarial test: quota/ was 0755 and ledger.sqlite 0644 (who works on
    which project, and when, readable by every local user)."""
    folder = tmp_path / "data" / "quota"
    ledger = Ledger(f"sqlite:///{folder / 'ledger.sqlite'}")
    ledger.reserve(Claim("vision", "anna", gpus=0, cpu=1), None, now=MAY_2, ttl=600,
                   account_label="Project vision")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [folder, *folder.iterdir()]}
    ledger.dispose()
    assert modes == {"quota": "0o700", "ledger.sqlite": "0o600", "ledger.sqlite-wal": "0o600",
                     "ledger.sqlite-shm": "0o600"}
    # A ledger left by an earlier version is narrowed when it is opened.
    folder.chmod(0o755)
    (folder / "ledger.sqlite").chmod(0o644)
    Ledger(f"sqlite:///{folder / 'ledger.sqlite'}").dispose()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct((folder / "ledger.sqlite").stat().st_mode & 0o777) == "0o600"
