"""The workbench profiles as DockerSpawner settings (pure; the real class when installed)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from hub_config.model import Dataset, Profile, Project
from hub_config.storage import StorageLayout
from spawners.docker import DockerSettings, docker_settings

PROJECT = Project.model_validate(
    {
        "id": "magi",
        "title": "MAGI",
        "members": ["anna"],
        "approval": {"reference": "R-1", "expires": "2030-01-01"},
        "datasets": ["head-ct"],
    }
)
DATASETS = (
    Dataset(id="head-ct", title="Head CT", path="datasets/head-ct"),
    Dataset(id="atlas", title="Atlas", path="/srv/atlas"),
)
GPU = Profile.model_validate(
    {
        "slug": "gpu-1",
        "name": "One GPU",
        "cpu": 8,
        "memory": "32G",
        "gpus": 1,
        "nomad": {
            "image": "registry.region/jupyter-gpu:2026.1",
            "node_pool": "gpu",
            "gpu": {"model": "NVIDIA H100 80GB HBM3"},
        },
    }
)
CPU = Profile.model_validate({"slug": "cpu-small", "name": "Small", "cpu": 0.5, "memory": "2G"})


def test_gpu_profile_translates_to_limits_mounts_and_a_device_request() -> None:
    settings = docker_settings(
        GPU,
        PROJECT,
        DATASETS,
        username="anna",
        storage=StorageLayout(Path("/srv/wb")),
        default_image="quay.io/jupyter/base-notebook:2026-01",
    )
    assert settings == DockerSettings(
        image="registry.region/jupyter-gpu:2026.1",
        cpu_limit=8.0,
        mem_limit=32 * 1024**3,
        volumes={
            "/srv/wb/homes/anna": {"bind": "/home/jovyan", "mode": "rw"},
            "/srv/wb/projects/magi": {"bind": "/home/jovyan/projects/magi", "mode": "rw"},
            "/srv/wb/datasets/head-ct": {"bind": "/home/jovyan/datasets/head-ct", "mode": "ro"},
            "/srv/atlas": {"bind": "/home/jovyan/datasets/atlas", "mode": "ro"},
        },
        extra_host_config={
            "device_requests": [{"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}]
        },
        notes=(
            "GPU model/memory requirements are not enforced on a single Docker host; the "
            "host's GPUs are used as they are",
            "Nomad placement not applicable on one Docker host: node_pool",
        ),
    )


def test_cpu_profile_uses_the_default_image_and_braces_stay_literal() -> None:
    settings = docker_settings(
        CPU,
        PROJECT,
        (),
        username="anna",
        storage=StorageLayout(Path("/srv/{odd}")),
        default_image="quay.io/jupyter/base-notebook:2026-01",
        home_mount="/home/user",
    )
    assert settings.trait_values() == {
        "image": "quay.io/jupyter/base-notebook:2026-01",
        "cpu_limit": 0.5,
        "mem_limit": 2 * 1024**3,
        "volumes": {
            "/srv/{{odd}}/homes/anna": {"bind": "/home/user", "mode": "rw"},
            "/srv/{{odd}}/projects/magi": {"bind": "/home/user/projects/magi", "mode": "rw"},
        },
        "extra_host_config": {},
    }
    assert settings.notes == ()


async def test_real_dockerspawner_gets_the_settings(tmp_path: Path) -> None:
    pytest.importorskip("dockerspawner", reason="dockerspawner is not installed")
    from jupyterhub import orm
    from jupyterhub.objects import Hub

    from spawners.docker import WorkbenchDockerSpawner

    yaml = tmp_path / "workbench.yaml"
    yaml.write_text(
        "profiles:\n"
        "  - {slug: gpu-1, name: One GPU, cpu: 8, memory: 32G, gpus: 1}\n"
        "  - {slug: cpu-small, name: Small, cpu: 1, memory: 2G}\n"
        "projects:\n"
        "  - {id: magi, title: MAGI, members: [anna], datasets: [scans],\n"
        "     approval: {reference: R-1, expires: 2030-01-01}}\n"
        "datasets:\n"
        "  - {id: scans, title: Scans, path: datasets/scans, owner: Radiology, kind: imaging,\n"
        "     sensitivity: pseudonymised, legal_basis: GDPR 6(1)(e),\n"
        "     approval: {reference: DUA-1, expires: 2030-01-01}, projects: [magi]}\n"
    )
    spawner = WorkbenchDockerSpawner(
        user=types.SimpleNamespace(name="anna", url="/user/anna/", escaped_name="anna", id=1),
        hub=Hub(),
        orm_spawner=orm.Spawner(name=""),
        workbench_config_file=str(yaml),
        data_dir=str(tmp_path / "data"),
        client_kwargs={"version": "1.43"},  # no engine here: do not ask it for its version
        docker_gpus=0,
    )
    spawner.api_token = "token"
    assert "needs 1 GPU(s)" in spawner.profile_unavailable(spawner.workbench.profile("gpu-1"))
    spawner.user_options = {"project": "magi", "profile": "cpu-small"}
    spawner.run_pre_spawn_hook()
    spawner.apply_profile()
    created: dict = {}

    async def fake_docker(method: str, *args: object, **kwargs: object) -> dict:
        created[method] = kwargs
        return {"Id": "c0ffee", "Config": {"Cmd": ["start-notebook.py"]}}

    spawner.docker = fake_docker  # type: ignore[method-assign]
    await spawner.create_object()
    create = created["create_container"]
    host = create["host_config"]
    assert host["Memory"] == 2 * 1024**3
    assert host["CpuQuota"] == 100000 and host["CpuPeriod"] == 100000
    data = tmp_path / "data"
    assert sorted(host["Binds"]) == sorted(
        [
            f"{data}/homes/anna:/home/jovyan:rw",
            f"{data}/projects/magi:/home/jovyan/projects/magi:rw",
            f"{data}/datasets/scans:/home/jovyan/datasets/scans:ro",
        ]
    )
    assert create["environment"]["WORKBENCH_PROJECT"] == "magi"
    assert create["image"].startswith("quay.io/jupyterhub/singleuser:")  # DockerSpawner's default
