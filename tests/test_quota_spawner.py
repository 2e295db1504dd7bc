"""The quota hook in WorkbenchSpawnerMixin, driven the way JupyterHub drives a spawner.

A tiny concrete spawner (a real process would add nothing here) shows the four hook points:
reserve in run_pre_spawn_hook, the interval opening when start returns, closing at stop (now)
or at death (the last sighting), releasing after a failed start; and the allocation id
surviving a hub restart in the spawner's state.
"""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.spawner import Spawner, SpawnException
from jupyterhub.utils import maybe_future

from services.quota.ledger import ENDED, RELEASED, RUNNING, Ledger
from services.quota.spawning import project_notes
from spawners.workbench import WorkbenchSpawnerMixin

WORKBENCH = """\
profiles:
  - {slug: cpu-small, name: Small CPU, cpu: 1, memory: 1G}
  - {slug: gpu-1, name: One GPU, cpu: 4, memory: 4G, gpus: 1, projects: [vision]}
projects:
  - id: vision
    title: Vision
    members: [anna, bo, cy]
    approval: {reference: R-1, expires: 2099-01-01}
    budget: {gpu_hours: 100, max_concurrent_gpus: 1, max_concurrent_servers: 5}
  - id: free
    title: No budget
    members: [anna]
    approval: {reference: R-2, expires: 2099-01-01}
"""


class PretendServer(Spawner):
    """The concrete spawner under the mixin: start/poll/stop of a pretend server."""

    fail_start = False
    alive = False

    @property
    def server(self) -> types.SimpleNamespace:  # the hub's Server row, as far as start needs it
        return types.SimpleNamespace(base_url=f"/user/{self.user.name}/")

    async def start(self):
        if self.fail_start:
            raise RuntimeError("the node refused the container")
        self.alive = True
        return ("127.0.0.1", 45678)

    async def poll(self):
        if not self.alive and self.fail_start:
            self.clear_state()  # as LocalProcessSpawner.poll does for a server without a pid
        return None if self.alive else 0

    async def stop(self, now: bool = False) -> None:
        self.alive = False


class FakeServerSpawner(WorkbenchSpawnerMixin, PretendServer):
    """Mixin first, as LocalWorkbenchSpawner and NomadSpawner do."""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str]:
    yaml = tmp_path / "workbench.yaml"
    yaml.write_text(WORKBENCH)
    return yaml, f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def make(setup: tuple[Path, str], user: str = "anna", name: str = "", **config: object) -> FakeServerSpawner:
    yaml, url = setup
    config.setdefault("quota_db_url", url)
    spawner = FakeServerSpawner(
        user=types.SimpleNamespace(name=user, url=f"/user/{user}/", escaped_name=user, id=1),
        hub=Hub(),
        orm_spawner=orm.Spawner(name=name),
        workbench_config_file=str(yaml),
        **config,
    )
    spawner.api_token = "token"
    return spawner


async def spawn(spawner: FakeServerSpawner, profile: str = "gpu-1", project: str = "vision") -> object:
    """What User.spawn does: options, pre-spawn hook, start; on failure the hub stops it."""
    spawner.user_options = {"project": project, "profile": profile}
    spawner._spawn_pending = True
    try:
        await maybe_future(spawner.run_pre_spawn_hook())
        return await spawner.start()
    except BaseException:
        await hub_stop(spawner)
        raise
    finally:
        spawner._spawn_pending = False


async def hub_stop(spawner: FakeServerSpawner) -> None:
    """What User.stop does: stop only if poll says running, then the post-stop hook."""
    if await spawner.poll() is None:
        await spawner.stop()
    await maybe_future(spawner.run_post_stop_hook())
    spawner.clear_state()


async def test_reserve_start_stop_accounts_one_interval(setup) -> None:
    spawner = make(setup)
    await spawn(spawner)
    allocation = spawner.quota_allocation
    ledger = Ledger(setup[1])
    record = ledger.get(allocation)
    assert record.status == RUNNING and record.gpus == 1 and record.cpu == 4
    assert record.url == "http://127.0.0.1:45678/user/anna/"
    assert spawner._progress_events[0]["message"] == "Quota: 1 GPU(s) and 4 core(s) reserved for project vision"
    await hub_stop(spawner)
    record = ledger.get(allocation)
    assert record.status == ENDED and record.end_reason == "stopped"
    assert record.ended_at == pytest.approx(time.time(), abs=5)
    assert spawner.quota_allocation is None


async def test_over_budget_start_is_refused_with_the_limit_and_reset(setup) -> None:
    first = make(setup, "anna")
    await spawn(first)
    second = make(setup, "bo")
    with pytest.raises(SpawnException) as caught:
        await spawn(second)
    error = caught.value
    assert error.status_code == 429 and error.reason == "quota_exceeded"
    assert error.jupyterhub_message.startswith(
        "Project vision may use at most 1 GPU at a time (budget setting max_concurrent_gpus); 1 GPU is in use now"
    )
    assert "resets on" in error.jupyterhub_message
    assert second.quota_allocation is None
    # a CPU server of the same project still starts
    await spawn(second, profile="cpu-small")
    assert len(Ledger(setup[1]).allocations(account="vision", statuses=[RUNNING])) == 2
    await hub_stop(first)
    await hub_stop(second)


async def test_failed_start_releases_the_reservation(setup) -> None:
    spawner = make(setup, "anna")
    spawner.fail_start = True
    with pytest.raises(RuntimeError):
        await spawn(spawner)
    ledger = Ledger(setup[1])
    [record] = ledger.allocations(account="vision")
    assert record.status == RELEASED and record.started_at is None
    # the GPU is free again
    other = make(setup, "bo")
    await spawn(other)
    await hub_stop(other)


async def test_a_server_that_died_is_closed_when_last_seen(setup) -> None:
    spawner = make(setup, "anna")
    await spawn(spawner)
    ledger = Ledger(setup[1])
    allocation = spawner.quota_allocation
    seen = ledger.get(allocation).started_at + 0.5  # the quota service's last successful probe
    ledger.heartbeat([allocation], now=seen)
    await asyncio.sleep(1.0)  # it dies unseen; the hub notices later
    spawner.alive = False  # it died; nobody asked it to stop
    await hub_stop(spawner)
    record = ledger.get(allocation)
    assert record.status == ENDED and record.ended_at == seen
    assert record.end_reason == "server died (seen by the hub's poll)"


async def test_allocation_survives_a_hub_restart(setup) -> None:
    first = make(setup, "anna", name="gpu")
    await spawn(first)
    state = first.get_state()
    assert state["workbench"] == {"version": 2, "project": "vision", "profile": "gpu-1",
                                  "allocation": first.quota_allocation}
    # the hub restarts: a new spawner object gets the saved state and the server still runs
    again = make(setup, "anna", name="gpu")
    again.load_state(state)
    again.alive = True
    assert again.quota_allocation == first.quota_allocation
    await hub_stop(again)
    ledger = Ledger(setup[1])
    [record] = ledger.allocations(account="vision")
    assert record.status == ENDED and record.id == first.quota_allocation


async def test_old_and_empty_state(setup) -> None:
    spawner = make(setup)
    spawner.load_state({})
    assert spawner.quota_allocation is None
    spawner.load_state({"workbench": {"version": 1, "project": "vision", "profile": "gpu-1"}})
    assert spawner.selection is not None and spawner.quota_allocation is None
    await maybe_future(spawner.run_post_stop_hook())  # nothing to close: a server from before quotas


async def test_ledger_down_refuses_rather_than_starting_unaccounted(setup, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    spawner = make((setup[0], f"sqlite:///{blocker}/ledger.sqlite"))
    with pytest.raises(SpawnException) as caught:
        await spawn(spawner)
    assert caught.value.status_code == 503
    assert caught.value.jupyterhub_message.startswith("The quota ledger cannot be reached")


async def test_quota_off_keeps_the_plain_synchronous_hook(setup) -> None:
    spawner = make(setup, quota_db_url="")
    spawner.user_options = {"project": "vision", "profile": "gpu-1"}
    assert spawner.run_pre_spawn_hook() is None  # no awaitable: callers that do not await still work
    assert spawner.selection is not None


async def test_form_note_shows_remaining_budget(setup) -> None:
    running = make(setup, "bo")
    await spawn(running)
    spawner = make(setup, "anna")
    notes = await project_notes(spawner, ["vision", "free"])
    [head, tail] = notes["vision"]
    assert head.startswith("Budget for ") and "GPU-hours left" in head and "0 of 1 GPUs free now" in head
    assert "4 of 5 servers free now" in head and tail.startswith("Resets on ")
    assert notes["free"] == ["No compute budget is set for this project."]
    html = await spawner._default_options_form()(spawner)
    assert "0 of 1 GPUs free now" not in html  # the hub config wires the hook; the default has none
    spawner.project_notes_hook = project_notes
    html = await spawner._default_options_form()(spawner)
    assert "0 of 1 GPUs free now" in html
    await hub_stop(running)


async def test_a_start_slower_than_the_reservation_is_stopped(setup) -> None:  # noqa: ANN001
    spawner = make(setup, quota_reservation_ttl=0.0)  # the reservation expires at once
    with pytest.raises(SpawnException) as caught:
        await spawn(spawner)
    assert caught.value.reason == "quota_reservation_expired"
    [record] = Ledger(setup[1]).allocations(account="vision")
    assert record.status == RELEASED and record.started_at is None


async def test_fifty_concurrent_spawns_through_the_hook(ledger_url: str, tmp_path: Path) -> None:
    """The hub's path (mixin, worker threads, one engine per process) on SQLite and PostgreSQL:
    50 spawns of 1-GPU servers at once against max_concurrent_gpus 2 start exactly 2."""
    yaml = tmp_path / "race.yaml"
    yaml.write_text(WORKBENCH.replace("members: [anna, bo, cy]", "members: [" + ", ".join(
        f"u{i:02d}" for i in range(50)) + "]").replace("max_concurrent_gpus: 1", "max_concurrent_gpus: 2"))
    spawners = [make((yaml, ledger_url), f"u{i:02d}") for i in range(50)]

    async def attempt(spawner: FakeServerSpawner) -> str:
        try:
            await spawn(spawner)
        except SpawnException as refusal:
            assert refusal.status_code == 429
            return refusal.jupyterhub_message
        return "started"

    outcomes = await asyncio.gather(*(attempt(s) for s in spawners))
    assert outcomes.count("started") == 2
    assert all(o.startswith("Project vision may use at most 2 GPUs at a time") for o in outcomes if o != "started")
    ledger = Ledger(ledger_url)
    assert len(ledger.allocations(account="vision")) == 2
    for spawner in spawners:
        if spawner.quota_allocation:
            await hub_stop(spawner)
    assert ledger.allocations(account="vision", statuses=[RUNNING]) == []
