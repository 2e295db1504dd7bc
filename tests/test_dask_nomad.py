"""Dask workers as Nomad jobs, against the Nomad double (workers are real local processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from distributed import Client

from extensions.compute import reaper
from extensions.compute.nomad import (
    ClusterLimits,
    NomadCluster,
    WorkerShape,
    WorkerStartFailed,
)
from extensions.compute.nomad_jobs import (
    DaskJobSettings,
    Owner,
    WorkerSpec,
    build_worker_job,
    job_id,
)
from extensions.compute.quota import QuotaRefused
from spawners.nomad.client import NomadClient, NomadConnection
from tests.nomad_double import DeviceGroup, Node, NomadDouble

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = DaskJobSettings(driver="raw_exec", python=sys.executable, death_timeout_s=5)
SMALL = WorkerShape.of(1, "512MiB")


@pytest.fixture
def nomad() -> Iterator[NomadDouble]:
    nodes = [
        Node(name="cpu-1", cpu_mhz=8000, memory_mb=16384),
        Node(name="gpu-1", node_class="gpu", cpu_mhz=8000, memory_mb=16384,
             devices=[DeviceGroup(name="NVIDIA H100 80GB HBM3", count=2)]),
    ]
    with NomadDouble(nodes) as double:
        yield double
        assert double.violations == [], "requests or answers that do not match Nomad's API"


def owner(cluster_id: str | None = None) -> Owner:
    return Owner("anna", "magi", cluster_id or uuid.uuid4().hex[:8])


def cluster_on(nomad: NomadDouble, **kwargs: object) -> NomadCluster:
    options: dict[str, object] = {"settings": SETTINGS, "shape": SMALL, "heartbeat_s": 3600}
    options.update(kwargs)
    return NomadCluster(connection=NomadConnection(address=nomad.address, retries=1),
                        owner=options.pop("owner", owner()), **options)  # type: ignore[arg-type]


def live_processes(nomad: NomadDouble, job_ids: Iterable[str]) -> list[str]:
    alive = []
    for job in job_ids:
        for alloc in nomad.allocations(job):
            if nomad.process_alive(alloc["ID"]):
                alive.append(alloc["ID"])
    return alive


# The job, as JSON ---------------------------------------------------------------------------
def test_worker_job_shape() -> None:
    settings = DaskJobSettings(driver="raw_exec", python="/opt/py/bin/python", datacenters=("dc1", "dc2"),
                               death_timeout_s=60, env={"DASK_LOGGING__DISTRIBUTED": "info"})
    who = Owner("anna", "magi", "c0ffee01")
    job = build_worker_job(settings, who, WorkerSpec("w3", "tcp://10.0.0.5:8786", 2, 4 * 1024**3,
                                                     quota_allocation="a" * 32))
    assert job == {
        "ID": "dask--anna--c0ffee01--w3",
        "Name": "dask--anna--c0ffee01--w3",
        "Namespace": "default",
        "Type": "batch",
        "Datacenters": ["dc1", "dc2"],
        "Meta": {
            "workbench_user": "anna",
            "workbench_project": "magi",
            "workbench_dask_cluster": "c0ffee01",
            "workbench_dask_role": "worker",
            "workbench_dask_scheduler": "tcp://10.0.0.5:8786",
            "workbench_quota_allocation": "a" * 32,
        },
        "TaskGroups": [{
            "Name": "worker",
            "Count": 1,
            "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "worker"}, {"Label": "nanny"}]}],
            "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 300_000_000_000, "Delay": 5_000_000_000},
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Tasks": [{
                "Name": "dask-worker",
                "Driver": "raw_exec",
                "Config": {"command": "/opt/py/bin/python", "args": [
                    "-m", "distributed.cli.dask_worker", "tcp://10.0.0.5:8786",
                    "--name", "w3", "--nthreads", "2", "--memory-limit", str(4 * 1024**3),
                    "--death-timeout", "60", "--host", "${NOMAD_IP_worker}",
                    "--local-directory", "${NOMAD_TASK_DIR}", "--no-dashboard",
                    "--worker-port", "${NOMAD_PORT_worker}", "--nanny-port", "${NOMAD_PORT_nanny}",
                ]},
                "Env": {"DASK_LOGGING__DISTRIBUTED": "info", "WORKBENCH_PROJECT": "magi",
                        "WORKBENCH_DASK_CLUSTER": "c0ffee01", "OMP_NUM_THREADS": "1",
                        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                "Resources": {"CPU": 2000, "MemoryMB": 4096},
                "KillSignal": "SIGTERM",
                "KillTimeout": 10_000_000_000,
                "LogConfig": {"MaxFiles": 2, "MaxFileSizeMB": 10},
            }],
        }],
    }


def test_gpu_worker_job_uses_dask_cuda_on_host_network_in_docker() -> None:
    settings = DaskJobSettings(image="registry.region.dk/workbench/gpu:2026.1")
    job = build_worker_job(settings, Owner("anna", "magi", "c1"),
                           WorkerSpec("w0", "tcp://10.0.0.5:8786", 4, 16 * 1024**3, gpus=1,
                                      extra_args=("--rmm-pool-size", "24GB")))
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == "docker"
    assert task["Config"]["image"] == "registry.region.dk/workbench/gpu:2026.1"
    assert task["Config"]["network_mode"] == "host"
    assert [task["Config"]["command"], *task["Config"]["args"][:2]] == ["dask", "cuda", "worker"]
    assert "--worker-port" not in task["Config"]["args"]  # dask cuda worker picks free ports
    assert task["Config"]["args"][-2:] == ["--rmm-pool-size", "24GB"]
    assert task["Resources"]["Devices"] == [{"Name": "nvidia/gpu", "Count": 1}]


def test_job_ids_stay_valid_and_list_by_user() -> None:
    long = Owner("a.very.long+user@name.example.org", "magi", "c0ffee01")
    ident = job_id(SETTINGS, long, "w12")
    assert len(ident) <= 63 + 40 and ident.startswith(reaper.user_prefix(SETTINGS, long.username))
    assert ident.replace("-", "").isalnum()
    with pytest.raises(ValueError, match="job prefix"):
        DaskJobSettings(job_prefix="Dask Jobs")


# Against the double -------------------------------------------------------------------------
def test_workers_join_compute_and_are_gone_after_close(nomad: NomadDouble) -> None:
    cluster = cluster_on(nomad, n_workers=2)
    jobs = sorted(nomad.job_ids())
    assert jobs == [f"dask--anna--{cluster.runtime.owner.cluster_id}--w0",
                    f"dask--anna--{cluster.runtime.owner.cluster_id}--w1"]
    with Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        assert names == ["w0", "w1"]
        total = client.submit(sum, client.map(lambda x: x * x, range(10))).result()
        assert total == 285
        hosts = set(client.run(lambda: os.environ["NOMAD_JOB_ID"]).values())
        assert hosts == set(jobs)  # each worker runs inside its own Nomad job
    cluster.close()
    assert nomad.job_ids() == []
    assert live_processes(nomad, jobs) == []


def test_scale_and_limits(nomad: NomadDouble) -> None:
    cluster = cluster_on(nomad, n_workers=0, limits=ClusterLimits(max_workers=3, max_cores=2))
    try:
        assert cluster.worker_bound() == 2
        cluster.scale(5)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            time.sleep(0.5)
            assert len(cluster.worker_spec) == 2 and len(nomad.job_ids()) == 2
            cluster.scale(1)
            deadline = time.monotonic() + 30
            while len(nomad.job_ids()) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(nomad.job_ids()) == 1
    finally:
        cluster.close()
    assert nomad.job_ids() == []


def test_unplaceable_worker_is_explained_and_leaves_nothing(nomad: NomadDouble) -> None:
    with pytest.raises(Exception) as caught:
        cluster_on(nomad, n_workers=1, shape=WorkerShape(1, 512 * 1024**2, gpus=4),
                   settings=DaskJobSettings(driver="raw_exec", python=sys.executable,
                                            gpu_worker_command=(sys.executable, "-m", "distributed.cli.dask_worker")))
    error = caught.value
    while not isinstance(error, WorkerStartFailed) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, WorkerStartFailed), caught.value
    assert "No node can start a Dask worker" in error.message and "GPU" in error.message
    assert nomad.job_ids() == []


class TinyLedger:
    """A fake accounting backend: ``limit`` workers at a time (the real one: test_dask_quota.py)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []
        self.stop: set[str] = set()

    async def reserve(self, name: str, *, cpu: float, gpus: int) -> str:
        if len(self.active) >= self.limit:
            raise QuotaRefused(f"Project magi may use at most {self.limit} GPUs at a time "
                               "(max_concurrent_gpus).", reason="max_concurrent_gpus")
        ident = uuid.uuid4().hex
        self.active[ident] = name
        self.log.append(("reserve", name))
        return ident

    async def started(self, allocation_id: str) -> None:
        self.log.append(("started", self.active[allocation_id]))

    async def heartbeat(self, allocation_ids: Iterable[str]) -> set[str]:
        return set(allocation_ids) & self.stop

    async def ended(self, allocation_id: str) -> None:
        self.log.append(("ended", self.active.pop(allocation_id)))

    async def aclose(self) -> None:
        return None


def test_quota_bounds_scaling_and_stops_workers_it_no_longer_allows(nomad: NomadDouble) -> None:
    ledger = TinyLedger(limit=1)
    cluster = cluster_on(nomad, n_workers=0, accounting=ledger, quota_retry_s=3600)
    try:
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            deadline = time.monotonic() + 20
            while len(cluster.worker_spec) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(cluster.worker_spec) == 1 and len(nomad.job_ids()) == 1
            assert cluster.worker_bound() == 1
            assert "max_concurrent_gpus" in cluster.quota_refusals[0]
            cluster.scale(3)  # bounded by the refusal, no new reservation tried
            assert len(cluster.worker_spec) == 1
            assert client.submit(lambda: 6 * 7).result() == 42
            # The quota service asks for the worker's stop (budget used up): it is retired.
            ledger.stop = set(ledger.active)
            stopped = client.sync(cluster.heartbeat_once)
            assert len(stopped) == 1
            deadline = time.monotonic() + 30
            while nomad.job_ids() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert nomad.job_ids() == []
    finally:
        cluster.close()
    kinds = [event for event, _ in ledger.log]
    assert kinds.count("reserve") == 1 and kinds.count("started") == 1 and kinds.count("ended") == 1
    assert ledger.active == {}


# Leftovers ---------------------------------------------------------------------------------
def _job(role: str, status: str, scheduler: str, age_s: float, now: int) -> reaper.DaskJob:
    return reaper.DaskJob(f"dask--anna--c--{role}-{status}-{age_s}", "anna", "c", role, scheduler, "",
                          status, now - int(age_s * 1e9))


def test_leftover_rule() -> None:
    now = time.time_ns()
    dead = _job("worker", "dead", "tcp://a:1", 5, now)
    orphan = _job("worker", "running", "tcp://gone:1", 600, now)
    young = _job("worker", "pending", "tcp://gone:1", 5, now)
    served = _job("worker", "running", "tcp://alive:1", 600, now)
    scheduler = _job("scheduler", "running", "", 600, now)
    leftovers, kept = reaper.find_leftovers([dead, orphan, young, served, scheduler],
                                            {"tcp://alive:1"}, now_ns=now, grace_s=120)
    assert leftovers == [dead, orphan]
    assert kept == [young, served, scheduler]


async def test_reaper_removes_workers_whose_scheduler_is_gone(nomad: NomadDouble) -> None:
    gone = Owner("bo", "kina", "deadbeef")
    spec = WorkerSpec("w0", "tcp://127.0.0.1:9", 1, 256 * 1024**2)  # nothing listens on port 9
    job = build_worker_job(DaskJobSettings(driver="raw_exec", python=sys.executable), gone, spec)
    job["TaskGroups"][0]["Tasks"][0]["Config"] = {"command": "/bin/sleep", "args": ["300"]}
    async with NomadClient(NomadConnection(address=nomad.address)) as client:
        await client.register_job(job)
        deadline = time.monotonic() + 10
        while not any(nomad.process_alive(a["ID"]) for a in nomad.allocations(job["ID"])):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        report = await reaper.reap(client, SETTINGS, grace_s=60)
        assert [j.job_id for j in report.kept] == [job["ID"]]  # submitted just now: spared
        report = await reaper.reap(client, SETTINGS, grace_s=0)
        assert [j.job_id for j in report.removed] == [job["ID"]]
    assert nomad.job_ids() == []


def _run_kernel(nomad: NomadDouble, body: str) -> subprocess.Popen[str]:
    script = textwrap.dedent(f"""\
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from distributed import Client
        from extensions.compute.nomad import NomadCluster, WorkerShape
        from extensions.compute.nomad_jobs import DaskJobSettings, Owner
        from spawners.nomad.client import NomadConnection
        cluster = NomadCluster(connection=NomadConnection(address={nomad.address!r}),
                               owner=Owner("anna", "magi", "kernel01"),
                               settings=DaskJobSettings(driver="raw_exec", python=sys.executable,
                                                        death_timeout_s=3),
                               shape=WorkerShape.of(1, "512MiB"), n_workers=1)
        client = Client(cluster)
        client.wait_for_workers(1, timeout=60)
        print("READY", flush=True)
        """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def _wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip() == "READY", f"kernel did not get its worker (exit {process.poll()})"


def test_a_kernel_that_exits_without_closing_takes_its_workers_along(nomad: NomadDouble) -> None:
    process = _run_kernel(nomad, "sys.exit(0)\n")  # SpecCluster closes clusters at exit
    _wait_ready(process)
    assert process.wait(timeout=60) == 0
    assert nomad.job_ids() == []


def test_a_killed_kernel_leaves_workers_that_end_themselves_and_the_reaper_purges(nomad: NomadDouble) -> None:
    process = _run_kernel(nomad, "time.sleep(600)\n")
    _wait_ready(process)
    [job] = nomad.job_ids()
    [alloc] = nomad.allocations(job)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 30  # death_timeout 3 s
    while nomad.process_alive(alloc["ID"]):
        assert time.monotonic() < deadline, "the worker outlived its scheduler"
        time.sleep(0.2)
    assert nomad.job(job)["Status"] == "dead"

    async def reap() -> reaper.Report:
        async with NomadClient(NomadConnection(address=nomad.address)) as client:
            return await reaper.reap(client, SETTINGS, username="anna")

    report = asyncio.run(reap())
    assert [j.job_id for j in report.removed] == [job]
    assert nomad.job_ids() == []
