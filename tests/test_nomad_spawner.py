"""NomadSpawner against the test double: the Spawner contract, state across restarts, orphans."""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.spawner import SpawnException
from sqlalchemy.orm import Session
from traitlets import TraitError

from spawners.nomad import orphans
from spawners.nomad.client import NomadClient, NomadConnection
from spawners.nomad.spawner import NomadSpawner
from tests.nomad_double import NomadDouble
from tests.nomad_double.fixtures import echo_command, nomad_fixture  # noqa: F401 - fixture

WORKBENCH = """\
profiles:
  - slug: cpu-small
    name: Small CPU
    cpu: 1
    memory: 1G
    nomad: {driver: raw_exec}
  - slug: h100
    name: One H100
    cpu: 4
    memory: 8G
    gpus: 1
    nomad: {driver: raw_exec, gpu: {model: NVIDIA H100 80GB HBM3}}
projects:
  - id: magi
    title: MAGI
    members: [anna, bo]
    approval: {reference: R-1, expires: 2030-01-01}
"""


@pytest.fixture
def workbench_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "workbench.yaml"
    path.write_text(WORKBENCH)
    return path


@pytest.fixture
def db():  # noqa: ANN201 - a JupyterHub database in memory, for the spawners' ORM rows
    session = orm.new_session_factory("sqlite://")()
    yield session
    session.close()


def make_spawner(
    nomad: NomadDouble,
    yaml: Path,
    user: str = "anna",
    name: str = "",
    db: Session | None = None,
    **config: object,
) -> NomadSpawner:
    orm_spawner = orm.Spawner(name=name)
    if db is not None:
        orm_user = db.query(orm.User).filter_by(name=user).first() or orm.User(name=user)
        db.add(orm_user)
        orm_spawner.user = orm_user
        db.add(orm_spawner)
        db.commit()
    spawner = NomadSpawner(
        user=types.SimpleNamespace(name=user, url=f"/user/{user}/", escaped_name=user, id=1),
        hub=Hub(),
        orm_spawner=orm_spawner,
        workbench_config_file=str(yaml),
        nomad_address=nomad.address,
        nomad_retries=2,
        cmd=list(echo_command()),
        **config,
    )
    spawner.api_token = f"token-of-{user}"
    return spawner


async def spawn(spawner: NomadSpawner, profile: str = "cpu-small") -> tuple[str, int]:
    spawner.user_options = {"project": "magi", "profile": profile}
    spawner._spawn_pending = True
    spawner.run_pre_spawn_hook()
    try:
        return await spawner.start()
    finally:
        spawner._spawn_pending = False


async def test_start_poll_stop_and_progress(nomad, workbench_yaml: Path) -> None:  # noqa: ANN001
    spawner = make_spawner(nomad, workbench_yaml)
    ip, port = await spawn(spawner)
    assert ip == "127.0.0.1" and port > 0
    assert await spawner.poll() is None
    events = [e async for e in spawner.progress()]
    percents = [e["progress"] for e in events]
    assert percents == sorted(percents) and max(percents) < 100
    assert events[0]["message"] == "Submitted to Nomad as job jupyter--anna (default)"
    assert events[-1]["message"] == f"Running on cpu-1 at 127.0.0.1:{port}"
    job = nomad.job("jupyter--anna")
    assert job["Meta"]["workbench_project"] == "magi"
    assert "token-of-anna" not in str(job)
    env = job["TaskGroups"][0]["Tasks"][0]["Env"]
    assert env["WORKBENCH_PROJECT"] == "magi" and "PATH" not in env  # env_keep is empty
    await spawner.stop()
    assert await spawner.poll() == 0
    assert nomad.variable("nomad/jobs/jupyter--anna") is None


async def test_state_survives_a_hub_restart(nomad, workbench_yaml: Path) -> None:  # noqa: ANN001
    first = make_spawner(nomad, workbench_yaml, name="gpu-work")
    await spawn(first)
    state = first.get_state()
    assert state["nomad"] == {
        "version": 1,
        "job_id": "jupyter--anna--gpu-work",
        "namespace": "default",
        "eval_id": first.eval_id,
        "alloc_id": first.alloc_id,
    }
    assert state["workbench"]["project"] == "magi"
    # the hub restarts: a new spawner object gets the saved state
    again = make_spawner(nomad, workbench_yaml, name="gpu-work")
    again.load_state(state)
    assert again.selection is not None and again.selection.profile.slug == "cpu-small"
    assert await again.poll() is None
    await again.stop()
    assert await again.poll() == 0
    again.clear_state()
    assert again.get_state() == {}


async def test_job_id_is_saved_the_moment_nomad_has_it(nomad, workbench_yaml: Path, db) -> None:  # noqa: ANN001
    spawner = make_spawner(nomad, workbench_yaml, db=db)
    nomad.stall_requests(1.5, path="^/allocation/", times=1)
    starting = asyncio.ensure_future(spawn(spawner))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (spawner.orm_spawner.state or {}).get("nomad"):
            break
    assert not starting.done()
    db.expire_all()
    saved = db.query(orm.Spawner).one().state
    assert saved["nomad"]["job_id"] == "jupyter--anna" and saved["nomad"]["eval_id"]
    await starting
    await spawner.stop()


async def test_load_state_accepts_empty_and_old_versions(nomad, workbench_yaml: Path) -> None:  # noqa: ANN001
    spawner = make_spawner(nomad, workbench_yaml)
    spawner.load_state({})
    assert spawner.job_id is None
    assert await spawner.poll() == 0
    await spawner.stop()  # nothing to stop: no error
    await spawn(spawner)
    job_id, alloc_id = spawner.job_id, spawner.alloc_id
    old = make_spawner(nomad, workbench_yaml)
    old.load_state({"job_id": job_id, "namespace": "default"})  # version 0: flat, no alloc
    assert (old.job_id, old.job_namespace, old.alloc_id) == (job_id, "default", None)
    assert await old.poll() is None
    public = make_spawner(nomad, workbench_yaml)
    public.load_state({"job_id": job_id, "job_namespace": "default", "alloc_id": alloc_id})
    assert public.alloc_id == alloc_id
    await old.stop()
    assert await public.poll() == 0


async def test_placement_failure_becomes_a_spawn_exception(nomad, workbench_yaml: Path) -> None:  # noqa: ANN001
    spawner = make_spawner(nomad, workbench_yaml)
    with pytest.raises(SpawnException) as raised:
        await spawn(spawner, "h100")
    assert raised.value.reason == "unplaceable"
    assert raised.value.message.startswith(
        "No node can start the profile 'One H100' right now: 2 nodes have no GPU"
    )
    assert "placement failed" in raised.value.log_message
    assert raised.value.jupyterhub_message == raised.value.message  # the spawn page shows it
    assert await spawner.poll() == 0  # nothing left behind
    assert nomad.job_ids() == []


async def test_unsafe_environment_is_refused(nomad, workbench_yaml: Path) -> None:  # noqa: ANN001
    spawner = make_spawner(nomad, workbench_yaml, environment={"X": "${NOMAD_TOKEN}"})
    with pytest.raises(SpawnException) as raised:
        await spawn(spawner)
    assert raised.value.status_code == 400 and "interpolate" in raised.value.message


def test_configuration_is_checked_with_readable_messages(workbench_yaml: Path) -> None:
    with pytest.raises(TraitError, match="lower-case letters"):
        NomadSpawner(job_prefix="Jupyter Hub")
    with pytest.raises(TraitError, match="absolute"):
        NomadSpawner(dataset_volume={"type": "host", "source": "d-{dataset}", "destination": "x"})
    with pytest.raises(TraitError, match="use only"):
        NomadSpawner(home_volume={"type": "csi", "source": "{user.__dict__}", "destination": "/h"})


async def test_orphans_are_found_by_meta_and_removed(nomad, workbench_yaml: Path) -> None:  # noqa: ANN001
    anna = make_spawner(nomad, workbench_yaml, user="anna")
    bo = make_spawner(nomad, workbench_yaml, user="bo")
    other_hub = make_spawner(nomad, workbench_yaml, user="bo", name="x", hub_id="other-hub")
    for spawner in (anna, bo, other_hub):
        await spawn(spawner)
    async with NomadClient(NomadConnection(address=nomad.address)) as client:
        # the hub knows anna's server only; bo's job is an orphan, the other hub's is not ours
        young = await orphans.reconcile(
            client,
            {("anna", "")},
            hub_id="jupyterhub",
            job_prefix="jupyter",
            namespaces=["default"],
            grace_s=3600,
        )
        assert young.removed == [] and {j.job_id for j in young.kept} == {
            "jupyter--anna",
            "jupyter--bo",
        }
        report = await orphans.reconcile(
            client,
            {("anna", "")},
            hub_id="jupyterhub",
            job_prefix="jupyter",
            namespaces=["default"],
            grace_s=0,
            now_ns=time.time_ns() + 1,
        )
    assert [j.job_id for j in report.removed] == ["jupyter--bo"]
    assert [(j.user, j.server) for j in report.kept] == [("anna", "")]
    assert nomad.job("jupyter--bo") is None
    assert nomad.variable("nomad/jobs/jupyter--bo") is None
    assert nomad.job("jupyter--bo--x")["Status"] == "running"
    assert await anna.poll() is None


def test_find_orphans_rule() -> None:
    now = 10_000_000_000_000
    jobs = [
        orphans.HubJob("j1", "default", "anna", "", "running", now - 10**12),
        orphans.HubJob("j2", "default", "bo", "", "running", now - 10**12),
        orphans.HubJob("j3", "default", "cy", "", "pending", now - 10**9),
        orphans.HubJob("j4", "default", "anna", "gpu", "dead", now - 10**12),
    ]
    gone, kept = orphans.find_orphans(jobs, {("anna", "")}, now_ns=now, grace_s=120)
    assert [j.job_id for j in gone] == ["j2", "j4"]
    assert [j.job_id for j in kept] == ["j1", "j3"]


def test_service_config_has_least_privilege_role() -> None:
    service, role = orphans.service_config(
        hub_id="wb",
        job_prefix="jupyter",
        namespaces=["default", "gpu"],
        environment={"NOMAD_ADDR": "https://nomad:4646"},
        python="/venv/bin/python",
    )
    assert service["command"] == [
        "/venv/bin/python",
        "-m",
        "spawners.nomad.orphans",
        "--hub-id",
        "wb",
        "--job-prefix",
        "jupyter",
        "--interval",
        "600.0",
        "--grace",
        "120.0",
        "--namespace",
        "default",
        "--namespace",
        "gpu",
    ]
    assert role == {
        "name": "nomad-orphans",
        "scopes": ["list:users", "read:servers"],
        "services": ["nomad-orphans"],
    }
