"""Start, poll and stop servers' Nomad jobs against the test double (real local processes)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest

from hub_config.model import Profile, Project
from spawners.nomad import objects
from spawners.nomad.client import NomadClient, NomadConnection
from spawners.nomad.lifecycle import ServerJob, StartFailed
from spawners.nomad.objects import JobSettings, ServerSpec
from tests.nomad_double import DeviceGroup, Node, NomadDouble
from tests.nomad_double.fixtures import echo_command, nomad_fixture  # noqa: F401 - fixture

log = logging.getLogger("test.nomad")
PROJECT = Project.model_validate(
    {
        "id": "magi",
        "title": "MAGI",
        "members": ["anna"],
        "approval": {"reference": "R-1", "expires": "2030-01-01"},
    }
)
CPU = Profile.model_validate({"slug": "cpu-small", "name": "Small CPU", "cpu": 1, "memory": "1G"})
GPU = Profile.model_validate(
    {
        "slug": "gpu-1",
        "name": "One GPU",
        "cpu": 2,
        "memory": "4G",
        "gpus": 1,
        "nomad": {"driver": "raw_exec"},
    }
)
H100 = Profile.model_validate(
    {
        "slug": "h100",
        "name": "H100",
        "cpu": 2,
        "memory": "4G",
        "gpus": 1,
        "nomad": {"driver": "raw_exec", "gpu": {"model": "NVIDIA H100 80GB HBM3"}},
    }
)
TOKEN = "hub-api-token-for-this-server"


def job_for(profile: Profile, user: str = "anna", server: str = "", **settings: object) -> dict:
    spec = ServerSpec(
        username=user,
        server_name=server,
        project=PROJECT,
        profile=profile,
        env={"JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_USER": user},
        base_url=f"/user/{user}/",
    )
    values = {"driver": "raw_exec", "command": echo_command(), "datacenters": ("dc1",)}
    values.update(settings)
    return objects.build_job(spec, JobSettings(**values))  # type: ignore[arg-type]


def wait_http(url: str, timeout: float = 15.0) -> httpx.Response:
    """The task runs before it listens (as with Nomad): wait for the answer, like the hub."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Run:
    """A client and a ServerJob recording progress, for one test."""

    def __init__(self, nomad: NomadDouble, **job_options: object) -> None:
        self.client = NomadClient(
            NomadConnection(address=nomad.address, retries=3, backoff_base=0.05)
        )
        self.progress: list[tuple[int, str]] = []
        self.server = ServerJob(
            self.client,
            log=log,
            wait=5.0,
            progress=lambda p, m: self.progress.append((p, m)),
            **job_options,
        )

    async def start(self, job: dict) -> tuple[object, float]:
        started = time.monotonic()
        names = {p.slug: p.name for p in (CPU, GPU, H100)}
        result = await self.server.start(
            job,
            {"JUPYTERHUB_API_TOKEN": TOKEN},
            profile_name=names[job["Meta"]["workbench_profile"]],
        )
        return result, time.monotonic() - started


async def test_start_runs_a_real_process_with_the_token_only_via_the_variable(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    job = job_for(CPU)
    started, _ = await run.start(job)
    answer = wait_http(f"http://{started.ip}:{started.port}/").json()
    assert answer["port"] == started.port
    assert answer["has_token"] and answer["token_length"] == len(TOKEN)
    assert answer["service_url"] == f"http://127.0.0.1:{started.port}/user/anna/"
    stored = nomad.job(job["ID"])
    assert TOKEN not in str(stored)
    assert nomad.variable("nomad/jobs/jupyter--anna")["Items"] == {"JUPYTERHUB_API_TOKEN": TOKEN}
    percents = [p for p, _ in run.progress]
    assert percents == sorted(percents) and max(percents) < 100
    messages = [m for _, m in run.progress]
    assert messages[0] == "Submitted to Nomad as job jupyter--anna (default)"
    assert "Nomad placed the server on node cpu-1" in messages
    assert messages[-1] == "Server process started; waiting for JupyterLab to answer"
    assert await run.server.status(job["ID"], "default", started.alloc_id) is None
    await run.client.aclose()


async def test_start_returns_promptly_once_the_allocation_runs(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    started, _ = await run.start(job_for(CPU))
    returned = time.monotonic()
    timeline = nomad.timeline(started.alloc_id)
    assert 0 <= returned - timeline.running < 0.5  # blocking queries, not a polling interval
    await run.client.aclose()


async def test_stop_deregisters_waits_and_is_idempotent(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    job = job_for(CPU)
    started, _ = await run.start(job)
    assert nomad.process_alive(started.alloc_id)
    assert await run.server.stop(job["ID"], "default", started.alloc_id, timeout=10) is True
    assert not nomad.process_alive(started.alloc_id)
    assert nomad.job(job["ID"])["Status"] == "dead"
    assert nomad.variable("nomad/jobs/jupyter--anna") is None
    assert await run.server.status(job["ID"], "default", started.alloc_id) == 0
    # again, and with purge, and for a job that never existed
    assert await run.server.stop(job["ID"], "default", started.alloc_id, purge=True) is True
    assert nomad.job(job["ID"]) is None
    assert await run.server.stop("jupyter--nobody", "default", None) is True
    types = [e["Type"] for e in nomad.allocations(job["ID"])[0]["TaskStates"]["notebook"]["Events"]]
    assert types[-3:] == ["Killing", "Terminated", "Killed"]
    await run.client.aclose()


async def test_placement_failure_is_explained_within_seconds_and_cleaned_up(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    job = job_for(H100)
    began = time.monotonic()
    with pytest.raises(StartFailed) as failed:
        await run.start(job)
    assert time.monotonic() - began < 3
    assert failed.value.reason == "unplaceable"
    assert failed.value.status_code == 500
    assert failed.value.message == (
        "No node can start the profile 'H100' right now: 2 nodes have no GPU of the kind this "
        "profile asks for. Choose another profile, or ask the workbench admins: no node in the "
        "cluster can run this profile as configured."
    )
    assert "ConstraintFiltered" not in failed.value.message
    assert "constraint filtered {'missing devices': 2}" in failed.value.log_message
    assert nomad.job(job["ID"]) is None  # purged by the failed start itself
    assert nomad.variable("nomad/jobs/jupyter--anna") is None
    await run.client.aclose()


async def test_busy_gpus_say_so_and_point_to_later(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    first, _ = await run.start(job_for(GPU, user="anna"))
    with pytest.raises(StartFailed) as failed:
        await run.start(job_for(GPU, user="bo"))
    assert failed.value.status_code == 503
    assert failed.value.message == (
        "No node can start the profile 'One GPU' right now: 1 node has no GPU of the kind this "
        "profile asks for; all GPUs are in use on 1 node. Try again later, choose another "
        "profile, or ask the workbench admins."
    )
    await run.server.stop("jupyter--anna", "default", first.alloc_id, timeout=10)
    await run.client.aclose()


async def test_queued_start_waits_for_capacity_when_configured(nomad) -> None:  # noqa: ANN001
    run = Run(nomad, fail_on_unplaceable=False)
    task = asyncio.ensure_future(run.start(job_for(H100)))
    await asyncio.sleep(0.5)
    assert not task.done()
    assert any("stays queued" in m for _, m in run.progress)
    nomad.add_node(
        Node(
            name="gpu-2",
            drivers=frozenset({"raw_exec"}),
            devices=[DeviceGroup(name="NVIDIA H100 80GB HBM3", attributes={"memory": "81559 MiB"})],
        )
    )
    started, _ = await asyncio.wait_for(task, 10)
    assert started.node == "gpu-2"
    await run.client.aclose()


async def test_driver_failure_message_reaches_the_user(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    nomad.fail_next_driver(
        "failed to create container: API error (404): pull access denied for "
        "registry.region/jupyter-gpu, repository does not exist or may require 'docker login'"
    )
    job = job_for(CPU)
    with pytest.raises(StartFailed) as failed:
        await run.start(job)
    assert failed.value.reason == "alloc_failed"
    assert failed.value.message.startswith(
        "The server could not be started: failed to create container: API error (404): "
        "pull access denied"
    )
    assert nomad.job(job["ID"]) is None
    await run.client.aclose()


async def test_missing_command_and_early_exit_are_reported(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    with pytest.raises(StartFailed) as failed:
        await run.start(job_for(CPU, command=("/nonexistent/jupyterhub-singleuser",)))
    assert 'exec: "/nonexistent/jupyterhub-singleuser": No such file or directory' in (
        failed.value.message
    )
    # A process that dies at once: either start() sees the exit, or (as with Nomad, where the
    # task counts as running once started) it returns and the next poll says exit code 3.
    try:
        started, _ = await run.start(job_for(CPU, user="bo", command=("/bin/sh", "-c", "exit 3")))
    except StartFailed as exited:
        assert exited.message == "The server process exited (exit code 3) before it was ready"
    else:
        for _ in range(100):
            code = await run.server.status("jupyter--bo", "default", started.alloc_id)
            if code is not None:
                break
            await asyncio.sleep(0.02)
        assert code == 3
    await run.client.aclose()


async def test_simulated_docker_reports_the_image_download(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    job = job_for(CPU, driver="docker", image="registry.region/jupyter-cpu:2026.1")
    started, _ = await run.start(job)
    messages = [m for _, m in run.progress]
    assert (
        "Downloading the container image (the first start on a node can take minutes)" in messages
    )
    assert any("Pulled 3/3" in m for m in messages)
    assert started.node == "gpu-1"
    await run.client.aclose()


async def test_lost_allocation_and_crash_end_the_server(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    one, _ = await run.start(job_for(CPU, user="anna"))
    two, _ = await run.start(job_for(CPU, user="bo"))
    nomad.lose_allocation(one.alloc_id)
    assert await run.server.status("jupyter--anna", "default", one.alloc_id) == 1
    nomad.crash_task(two.alloc_id)
    for _ in range(50):
        code = await run.server.status("jupyter--bo", "default", two.alloc_id)
        if code is not None:
            break
        await asyncio.sleep(0.05)
    assert code == 137  # killed by SIGKILL
    await run.client.aclose()


async def test_status_without_alloc_id_and_through_nomad_outages(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    job = job_for(CPU)
    started, _ = await run.start(job)
    assert await run.server.status(job["ID"], "default", None) is None  # old state: job lookup
    nomad.fail_requests(500, path="^/allocation/", times=10)
    assert await run.server.status(job["ID"], "default", started.alloc_id) is None  # not "dead"
    nomad.fail_requests(403, path="^/allocation/", times=1)
    assert await run.server.status(job["ID"], "default", started.alloc_id) is None
    assert await run.server.status("jupyter--nobody", "default", None) == 0
    await run.client.aclose()


async def test_transient_errors_are_retried_and_acl_refusals_explained(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    nomad.fail_requests(500, method="POST", path="^/jobs$", times=2)
    nomad.stall_requests(0.3, path="^/evaluation/", times=1)
    started, _ = await run.start(job_for(CPU))
    assert started.port > 0
    registers = [r for r in nomad.requests if r.method == "POST" and r.path == "/jobs"]
    assert [r.status for r in registers] == [500, 500, 200]
    nomad.fail_requests(403, method="PUT", path="^/var/", times=1)
    with pytest.raises(StartFailed) as failed:
        await run.start(job_for(CPU, user="bo"))
    assert failed.value.reason == "nomad_forbidden"
    assert "ACL" in failed.value.message and "PUT /var/nomad/jobs/jupyter--bo" in (
        failed.value.log_message
    )
    await run.client.aclose()


async def test_unreachable_nomad_is_a_clear_503(tmp_path: Path) -> None:
    client = NomadClient(
        NomadConnection(address="http://127.0.0.1:9", retries=1, backoff_base=0.01, timeout=1)
    )
    server = ServerJob(client, log=log)
    with pytest.raises(StartFailed) as failed:
        await server.start(job_for(CPU), {"JUPYTERHUB_API_TOKEN": TOKEN})
    assert failed.value.status_code == 503
    assert failed.value.message.startswith("The compute cluster (Nomad) is not reachable")
    await client.aclose()


async def test_api_calls_per_spawn_are_few(nomad) -> None:  # noqa: ANN001
    run = Run(nomad)
    nomad.clear_requests()
    await run.start(job_for(CPU))
    paths = [f"{r.method} {r.path.split('/')[1]}" for r in nomad.requests]
    assert len(paths) <= 10, paths
    await run.client.aclose()
