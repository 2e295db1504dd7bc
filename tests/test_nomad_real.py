"""The Nomad client and lifecycle against a real Nomad agent, when ``NOMAD_ADDR`` names one.

    nomad agent -dev -config dev.hcl &     # dev.hcl: the dev agent section of docs/nomad.md
    NOMAD_ADDR=http://127.0.0.1:4646 .venv/bin/pytest tests/test_nomad_real.py

Uses Nomad's standard variables (``NOMAD_TOKEN``, ``NOMAD_NAMESPACE``, ``NOMAD_CACERT``,
...). The server task runs ``tests/nomad_double/echo_server.py`` with this interpreter, so
the agent must run on this machine with ``raw_exec`` enabled; ``NOMAD_TEST_DRIVER=docker``
with ``NOMAD_TEST_IMAGE`` runs a container image that listens on ``$NOMAD_PORT_http``
instead. Jobs are named ``wbtest--*`` and removed at the end.
"""

from __future__ import annotations

import logging
import os
import time

import httpx
import pytest

from hub_config.model import Profile, Project
from spawners.nomad import objects
from spawners.nomad.client import NomadClient, NomadConnection
from spawners.nomad.lifecycle import ServerJob, StartFailed
from tests.nomad_double.fixtures import echo_command

pytestmark = [
    pytest.mark.nomad_real,
    pytest.mark.skipif(
        not os.environ.get("NOMAD_ADDR"),
        reason="NOMAD_ADDR is not set: these tests need a real Nomad agent "
        "(e.g. `nomad agent -dev`, see docs/nomad.md)",
    ),
]
log = logging.getLogger("test.nomad.real")
PROJECT = Project.model_validate(
    {
        "id": "wbtest",
        "title": "Workbench test",
        "approval": {"reference": "T", "expires": "2099-01-01"},
    }
)
CPU = Profile.model_validate({"slug": "tiny", "name": "Tiny", "cpu": 0.1, "memory": "64M"})
NO_SUCH_GPU = Profile.model_validate(
    {
        "slug": "gpu",
        "name": "Imaginary GPU",
        "cpu": 0.1,
        "memory": "64M",
        "gpus": 1,
        "nomad": {"gpu": {"model": "No Such GPU 9000"}},
    }
)


def settings() -> objects.JobSettings:
    driver = os.environ.get("NOMAD_TEST_DRIVER", "raw_exec")
    return objects.JobSettings(
        hub_id="wbtest",
        job_prefix="wbtest",
        namespace=os.environ.get("NOMAD_NAMESPACE") or "default",
        datacenters=tuple(os.environ.get("NOMAD_TEST_DATACENTERS", "dc1").split(",")),
        driver=driver,  # type: ignore[arg-type]
        image=os.environ.get("NOMAD_TEST_IMAGE", "python:3.12-slim"),
        command=() if driver == "docker" else echo_command(),
        mhz_per_core=1000,
    )


def job(profile: Profile, user: str) -> dict:
    spec = objects.ServerSpec(
        user,
        "",
        PROJECT,
        profile,
        (),
        {"JUPYTERHUB_API_TOKEN": "real-nomad-test-token"},
        f"/user/{user}/",
    )
    return objects.build_job(spec, settings())


@pytest.fixture
async def client():  # noqa: ANN201
    async with NomadClient(NomadConnection.from_env(os.environ)) as nomad:
        yield nomad
        for stub in await nomad.list_jobs("wbtest--"):
            await nomad.deregister_job(stub["ID"], purge=True)
            await nomad.delete_variable(objects.variable_path(stub["ID"]))


async def test_reads_and_missing_objects(client: NomadClient) -> None:
    assert isinstance(await client.list_jobs("wbtest--"), list)
    assert await client.read_job("wbtest--does-not-exist") is None


async def test_start_poll_stop_on_a_real_agent(client: NomadClient) -> None:
    progress: list[tuple[int, str]] = []
    server = ServerJob(client, log=log, progress=lambda p, m: progress.append((p, m)), wait=10)
    spec = job(CPU, "real")
    started = await server.start(
        spec, {"JUPYTERHUB_API_TOKEN": "real-nomad-test-token"}, profile_name=CPU.name
    )
    assert started.port > 0
    assert "real-nomad-test-token" not in str(await client.read_job(spec["ID"]))
    if os.environ.get("NOMAD_TEST_DRIVER", "raw_exec") == "raw_exec":
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://{started.ip}:{started.port}/", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the task never answered"
                time.sleep(0.2)
        assert answer["has_token"], "the token did not arrive through the Nomad Variable"
    assert await server.status(spec["ID"], spec["Namespace"], started.alloc_id) is None
    assert await server.stop(spec["ID"], spec["Namespace"], started.alloc_id, timeout=60)
    assert await server.status(spec["ID"], spec["Namespace"], started.alloc_id) == 0
    percents = [p for p, _ in progress]
    assert percents == sorted(percents)


async def test_placement_failure_on_a_real_agent(client: NomadClient) -> None:
    server = ServerJob(client, log=log, wait=10)
    began = time.monotonic()
    with pytest.raises(StartFailed) as failed:
        await server.start(job(NO_SUCH_GPU, "gpu"), None, profile_name=NO_SUCH_GPU.name)
    assert time.monotonic() - began < 15
    assert failed.value.reason == "unplaceable"
    assert "GPU" in failed.value.message
