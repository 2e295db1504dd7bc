"""Nomad-placed Dask workers are charged to the project through the real quota service.

The quota hub (``tests/fixtures/quota.py``: JupyterHub, the quota service and its ledger)
gives rita a token for the quota service, as her server's token would be; an admin caps
project ``steady`` at one GPU at a time; a cluster of one-GPU workers on the Nomad double then
gets one worker, the second is refused with the service's own message, the ledger shows a
running ``dask-worker`` allocation, and closing the cluster ends it.
"""

# ruff: noqa: F811 - quota_hub is imported as a fixture and taken as a parameter
from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from distributed import Client

from extensions.compute.nomad import NomadCluster, WorkerShape
from extensions.compute.nomad_jobs import DaskJobSettings, Owner
from extensions.compute.quota import QuotaRefused, QuotaService
from spawners.nomad.client import NomadConnection
from tests.nomad_double import DeviceGroup, Node, NomadDouble

pytestmark = [pytest.mark.hub]

pytest.importorskip("services.quota.app", reason="the quota service (services/quota/app.py) is not in this tree")
from tests.fixtures.quota import quota_hub  # noqa: F401 - the fixture, also without the conftest plugin

PROJECT, USER = "steady", "rita"
# GPU workers whose command is the plain worker (no dask-cuda on the test machine).
SETTINGS = DaskJobSettings(driver="raw_exec", python=sys.executable,
                           gpu_worker_command=(sys.executable, "-m", "distributed.cli.dask_worker"))


@pytest.fixture
def one_gpu_budget(quota_hub) -> Iterator[str]:
    with quota_hub.api() as api:
        api.post(f"users/{USER}")
        answer = api.post(f"users/{USER}/tokens", json={"scopes": ["access:services!service=quota"],
                                                        "note": "dask quota test"})
        answer.raise_for_status()
        token = answer.json()["token"]
    with quota_hub.quota_api() as admin:
        admin.put(f"api/budgets/{PROJECT}", json={"max_concurrent_gpus": 1}).raise_for_status()
    try:
        yield token
    finally:
        with quota_hub.quota_api() as admin:
            admin.delete(f"api/budgets/{PROJECT}")


def _ledger_rows(quota_hub, ids: list[str]) -> list[dict]:
    with quota_hub.quota_api() as admin:
        return [admin.get(f"api/allocations/{i}").json() for i in ids]


def test_workers_are_reserved_started_refused_and_ended_in_the_ledger(quota_hub, one_gpu_budget: str) -> None:
    accounting = QuotaService(f"{quota_hub.url}/services/quota/", one_gpu_budget, PROJECT)
    nodes = [Node(name="gpu-1", cpu_mhz=8000, memory_mb=16384, devices=[DeviceGroup(count=2)])]
    with NomadDouble(nodes) as nomad:
        cluster = NomadCluster(connection=NomadConnection(address=nomad.address), owner=Owner(USER, PROJECT, "q1"),
                               settings=SETTINGS, shape=WorkerShape(1, 512 * 1024**2, gpus=1),
                               accounting=accounting, heartbeat_s=3600, quota_retry_s=3600)
        try:
            cluster.scale(2)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=60)
                deadline = time.monotonic() + 30
                while len(cluster.worker_spec) > 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert len(cluster.worker_spec) == 1 and len(nomad.job_ids()) == 1
                [refusal] = cluster.quota_refusals
                assert "max_concurrent_gpus" in refusal and "Project steady" in refusal
                assert client.submit(lambda: 2 + 2).result() == 4

                [worker] = [w for w in cluster.workers.values() if w.allocation_id]
                allocation_id = worker.allocation_id
                [job] = nomad.job_ids()
                assert nomad.job(job)["Meta"]["workbench_quota_allocation"] == allocation_id
                [row] = _ledger_rows(quota_hub, [allocation_id])
                assert (row["kind"], row["status"], row["user"], row["account"]) == (
                    "dask-worker", "running", USER, PROJECT)
                assert (row["gpus"], row["cpu"]) == (1, 1.0)
                assert client.sync(cluster.heartbeat_once) == []  # alive, no stop asked
        finally:
            cluster.close()
        assert nomad.job_ids() == []
    [row] = _ledger_rows(quota_hub, [allocation_id])
    assert row["status"] == "ended" and row["ended_at"] >= row["started_at"]


async def test_a_refusal_is_typed_and_an_unreachable_service_refuses_too(quota_hub, one_gpu_budget: str) -> None:
    service = QuotaService(f"{quota_hub.url}/services/quota/", one_gpu_budget, PROJECT)
    held = await service.reserve("held", cpu=1, gpus=1)
    try:
        with pytest.raises(QuotaRefused) as refused:
            await service.reserve("second", cpu=1, gpus=1)
        assert refused.value.reason == "max_concurrent_gpus"
        assert "at most 1 GPU at a time" in refused.value.message
    finally:
        await service.ended(held)
        await service.aclose()
    from extensions.compute.quota import QuotaUnavailable

    nowhere = QuotaService("http://127.0.0.1:9/services/quota/", "t", PROJECT, timeout=1, retries=0)
    with pytest.raises(QuotaUnavailable, match="no worker was started"):
        await nowhere.reserve("w", cpu=1, gpus=0)
    await nowhere.aclose()
