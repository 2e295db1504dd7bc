"""A hub killed (SIGKILL) mid-spawn with NomadSpawner: state stays consistent after a restart.

The hub, its proxy and the orphan reconciler run as in ``test_nomad_hub.py``, here with a
quota ledger and ``fail_on_unplaceable = False``, so a spawn can be held pending in a way
Nomad itself holds it: the evaluation stays blocked until a node that fits joins the
cluster. JupyterHub's start-up check (``init_spawners``) polls each server it had; one whose
``poll()`` says it still runs is asked for its URL (``Spawner.get_url``) and then waited for.

Checked: a server whose allocation was still queued when the hub died is adopted once the
allocation runs, and its quota reservation becomes the running interval; a hub killed while
the job was being submitted leaves no server pending, no job (the reconciler removes it) and
no open reservation; in both cases the user can start again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest

from services.quota.ledger import ENDED, RELEASED, RESERVED, RUNNING, Ledger
from tests.nomad_double import NomadDouble
from tests.nomad_double.fixtures import cluster_nodes
from tests.nomad_double.scheduler import DeviceGroup, Node
from tests.test_nomad_hub import (
    ADMIN_TOKEN,
    CHP,
    SINGLEUSER,
    Hub,
    hub_for,
    spawn,
    wait_ready,
)

pytestmark = pytest.mark.hub

WORKBENCH = """\
profiles:
  - {slug: cpu-small, name: Small CPU, cpu: 1, memory: 1G}
  - slug: late
    name: One L4 (on a node that joins later)
    cpu: 1
    memory: 1G
    gpus: 1
    nomad: {gpu: {model: NVIDIA L4}}
projects:
  - id: magi
    title: MAGI
    members: [anna, bo, cy]
    approval: {reference: R-1, expires: 2030-01-01}
    budget: {period: month, gpu_hours: 100, cpu_core_hours: 1000}
"""

EXTRA = """
c.NomadSpawner.fail_on_unplaceable = False  # queue until capacity, as Nomad does
c.NomadSpawner.quota_db_url = {ledger!r}
c.NomadSpawner.http_timeout = 60
"""

LATE_NODE = Node(
    name="l4-1",
    node_class="gpu",
    cpu_mhz=8000,
    memory_mb=16384,
    drivers=frozenset({"raw_exec"}),
    devices=[DeviceGroup(name="NVIDIA L4", count=1, attributes={"memory": "23034 MiB"})],
)


def wait_for(condition: Callable[[], object], timeout: float, what: str, hub: Hub) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (after {timeout} s):\n{hub.log_tail(80)}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def nomad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadDouble]:
    if not CHP.exists() or not SINGLEUSER.exists():
        pytest.skip("configurable-http-proxy or jupyterhub-singleuser is not installed")
    with NomadDouble(cluster_nodes(tmp_path_factory.mktemp("nomad"))) as double:
        yield double
        assert double.violations == []


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('quota') / 'ledger.sqlite'}"


@pytest.fixture(scope="module")
def hub(nomad: NomadDouble, ledger_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    directory = tmp_path_factory.mktemp("hub")
    running = hub_for(directory, nomad, WORKBENCH, EXTRA.format(ledger=ledger_url))
    running.start()
    yield running
    with running.api as api:
        for user in ("anna", "bo"):
            api.delete(f"/users/{user}/server")
    running.stop()
    shutil.rmtree(directory / "data", ignore_errors=True)


def crash(hub: Hub) -> None:
    """SIGKILL the hub process alone, as a crash would. Its proxy stays (the next hub takes it
    over through the pid file); the old hub's orphan reconciler is ended here only so that two
    do not run at once in the test."""
    assert hub.process is not None
    services = [
        child
        for child in psutil.Process(hub.process.pid).children()
        if "spawners.nomad.orphans" in " ".join(child.cmdline())
    ]
    hub.process.kill()
    hub.process.wait(10)
    for service in services:
        service.kill()
    psutil.wait_procs(services, timeout=10)


def hub_server(hub: Hub, user: str) -> dict | None:
    with hub.api as api:
        return (api.get(f"/users/{user}").json().get("servers") or {}).get("")


def allocations(ledger: Ledger, user: str) -> list:
    return sorted(ledger.allocations(account="magi", user=user), key=lambda a: a.reserved_at)


def test_server_queued_when_the_hub_died_is_adopted_once_it_runs(
    hub: Hub, nomad: NomadDouble, ledger_url: str
) -> None:
    ledger = Ledger(ledger_url)
    answer = spawn(hub, "anna", "late")
    assert answer.status_code in (201, 202), answer.text

    def queued() -> bool:
        server = hub_server(hub, "anna") or {}
        job = nomad.job("jupyter--anna")
        saved = (server.get("state") or {}).get("nomad") or {}
        return job is not None and job["Status"] == "pending" and saved.get("job_id") == job["ID"]

    wait_for(queued, 60, "the job is queued in Nomad and its id saved by the hub", hub)
    [reserved] = allocations(ledger, "anna")
    assert reserved.status == RESERVED

    crash(hub)
    hub.start()
    nomad.add_node(LATE_NODE)  # capacity arrives after the restart: the allocation runs

    server = wait_ready(hub, "anna", timeout=120)
    assert server["ready"]
    status = httpx.get(
        f"{hub.url}/user/anna/api/status",
        headers={"Authorization": f"token {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert status.status_code == 200, hub.log_tail(80)
    job = nomad.job("jupyter--anna")
    assert job is not None and job["Status"] == "running"
    [adopted] = allocations(ledger, "anna")
    assert adopted.id == reserved.id and adopted.status == RUNNING, "the reservation became the run"
    assert adopted.url, "the quota service probes the adopted server at its address"

    with hub.api as api:
        api.delete("/users/anna/server")
    wait_for(lambda: hub_server(hub, "anna") is None, 60, "anna's server stops", hub)
    wait_for(lambda: ledger.get(reserved.id).status == ENDED, 30, "the interval closes", hub)
    wait_for(lambda: (nomad.job("jupyter--anna") or {"Status": "dead"})["Status"] == "dead", 30,
             "the job stops (dead, or purged)", hub)


def test_hub_killed_while_submitting_leaves_no_pending_server_job_or_reservation(
    hub: Hub, nomad: NomadDouble, ledger_url: str
) -> None:
    ledger = Ledger(ledger_url)
    # Nomad receives the job but answers only after the hub is gone; it registers it anyway.
    nomad.stall_requests(4, method="POST", path=r"^/jobs$")
    seen = len(nomad.requests)
    answer = spawn(hub, "bo", "cpu-small")
    assert answer.status_code in (201, 202), answer.text
    wait_for(
        lambda: any(r.method == "POST" and r.path == "/jobs" for r in nomad.requests[seen:]),
        60,
        "the hub submits bo's job",
        hub,
    )
    [reserved] = allocations(ledger, "bo")
    crash(hub)
    hub.start()

    wait_for(lambda: hub_server(hub, "bo") is None, 60, "bo's interrupted server is not kept", hub)
    wait_for(
        lambda: ledger.get(reserved.id).status == RELEASED,
        30,
        "the reservation of the interrupted start is released",
        hub,
    )
    # The job Nomad registered after the hub died belongs to no server: the reconciler
    # removes it (grace 1 s, every second).
    wait_for(
        lambda: nomad.job("jupyter--bo") is None,
        60,
        "the orphaned job is removed",
        hub,
    )
    assert "orphan removed: job jupyter--bo" in hub.log_tail(400)

    # The user can start again and reach a running server.
    answer = spawn(hub, "bo", "cpu-small")
    assert answer.status_code in (201, 202), answer.text
    wait_ready(hub, "bo")
    again = [a for a in allocations(ledger, "bo") if a.id != reserved.id]
    assert [a.status for a in again] == [RUNNING]
    with hub.api as api:
        api.delete("/users/bo/server")
    wait_for(lambda: hub_server(hub, "bo") is None, 60, "bo's server stops", hub)
    wait_for(lambda: ledger.get(again[0].id).status == ENDED, 30, "the interval closes", hub)
