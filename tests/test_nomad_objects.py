"""The pure job builder: golden dicts, per-profile overrides, and the API description."""

from __future__ import annotations

import json

import pytest

from hub_config.model import Dataset, Profile, Project
from spawners.nomad.objects import (
    JobSettings,
    ServerSpec,
    UnsafeValue,
    VolumeRule,
    build_job,
    register_request,
    split_env,
    variable_body,
)
from tests.nomad_double.spec import load_validator

PROJECT = Project.model_validate(
    {
        "id": "magi",
        "title": "MAGI",
        "members": ["anna"],
        "approval": {"reference": "R-1", "expires": "2027-01-01"},
        "datasets": ["head-ct"],
    }
)
DATASETS = (Dataset(id="head-ct", title="Head CT", path="datasets/head-ct"),)
ENV = {
    "JUPYTERHUB_API_TOKEN": "s3cret-token",
    "JPY_API_TOKEN": "s3cret-token",
    "JUPYTERHUB_USER": "anna",
    "WORKBENCH_PROJECT": "magi",
}
GPU_PROFILE = Profile.model_validate(
    {
        "slug": "gpu-1",
        "name": "One GPU",
        "cpu": 8,
        "memory": "32G",
        "gpus": 1,
        "nomad": {
            "image": "registry.region/jupyter-gpu:2026.1",
            "node_pool": "gpu",
            "namespace": "research",
            "priority": 60,
            "constraints": [{"attribute": "${attr.kernel.name}", "value": "linux"}],
            "gpu": {"model": "NVIDIA H100 80GB HBM3", "min_memory": "40G"},
        },
    }
)
CPU_PROFILE = Profile.model_validate(
    {"slug": "cpu-small", "name": "Small CPU", "cpu": 0.5, "memory": "2G"}
)
VOLUMES = dict(
    home=VolumeRule("csi", "home-{user}", "/home/jovyan"),
    project_workspace=VolumeRule("csi", "project-{project}", "/home/jovyan/projects/{project}"),
    dataset=VolumeRule("host", "dataset-{dataset}", "/home/jovyan/datasets/{dataset}"),
)

GOLDEN_GPU_DOCKER = {
    "ID": "jupyter--anna",
    "Name": "jupyter--anna",
    "Namespace": "research",
    "Type": "service",
    "Datacenters": ["dc1", "dc2"],
    "NodePool": "gpu",
    "Priority": 60,
    "Constraints": [{"LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"}],
    "Meta": {
        "workbench_hub": "wb",
        "workbench_user": "anna",
        "workbench_server": "",
        "workbench_project": "magi",
        "workbench_profile": "gpu-1",
    },
    "TaskGroups": [
        {
            "Name": "server",
            "Count": 1,
            "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http", "To": 8888}]}],
            "RestartPolicy": {
                "Attempts": 0,
                "Mode": "fail",
                "Interval": 300_000_000_000,
                "Delay": 15_000_000_000,
            },
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Volumes": {
                "home": {
                    "Name": "home",
                    "Type": "csi",
                    "Source": "home-anna",
                    "ReadOnly": False,
                    "AccessMode": "single-node-writer",
                    "AttachmentMode": "file-system",
                },
                "project": {
                    "Name": "project",
                    "Type": "csi",
                    "Source": "project-magi",
                    "ReadOnly": False,
                    "AccessMode": "multi-node-multi-writer",
                    "AttachmentMode": "file-system",
                },
                "dataset-head-ct": {
                    "Name": "dataset-head-ct",
                    "Type": "host",
                    "Source": "dataset-head-ct",
                    "ReadOnly": True,
                },
            },
            "Services": [
                {
                    "Name": "jupyter--anna",
                    "PortLabel": "http",
                    "Provider": "nomad",
                    "Tags": ["jupyterhub", "wb"],
                }
            ],
            "Tasks": [
                {
                    "Name": "notebook",
                    "Driver": "docker",
                    "Config": {
                        "image": "registry.region/jupyter-gpu:2026.1",
                        "ports": ["http"],
                        "command": "jupyterhub-singleuser",
                        "args": [],
                    },
                    "Env": {
                        "JUPYTERHUB_USER": "anna",
                        "WORKBENCH_PROJECT": "magi",
                        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:${NOMAD_PORT_http}/user/anna/",
                    },
                    "Resources": {
                        "CPU": 8000,
                        "MemoryMB": 32768,
                        "Devices": [
                            {
                                "Name": "nvidia/gpu",
                                "Count": 1,
                                "Constraints": [
                                    {
                                        "LTarget": "${device.model}",
                                        "Operand": "=",
                                        "RTarget": "NVIDIA H100 80GB HBM3",
                                    },
                                    {
                                        "LTarget": "${device.attr.memory}",
                                        "Operand": ">=",
                                        "RTarget": "40960 MiB",
                                    },
                                ],
                            }
                        ],
                    },
                    "KillSignal": "SIGTERM",
                    "KillTimeout": 20_000_000_000,
                    "LogConfig": {"MaxFiles": 3, "MaxFileSizeMB": 10},
                    "Templates": [
                        {
                            "EmbeddedTmpl": '{{ with nomadVar "nomad/jobs/jupyter--anna" }}\n'
                            "JUPYTERHUB_API_TOKEN={{ .JUPYTERHUB_API_TOKEN }}\n"
                            "{{ end }}\n",
                            "DestPath": "secrets/hub.env",
                            "Envvars": True,
                            "ChangeMode": "noop",
                            "Perms": "0600",
                        }
                    ],
                    "VolumeMounts": [
                        {
                            "Volume": "home",
                            "Destination": "/home/jovyan",
                            "ReadOnly": False,
                            "PropagationMode": "private",
                        },
                        {
                            "Volume": "project",
                            "Destination": "/home/jovyan/projects/magi",
                            "ReadOnly": False,
                            "PropagationMode": "private",
                        },
                        {
                            "Volume": "dataset-head-ct",
                            "Destination": "/home/jovyan/datasets/head-ct",
                            "ReadOnly": True,
                            "PropagationMode": "private",
                        },
                    ],
                }
            ],
        }
    ],
}

GOLDEN_CPU_RAW_EXEC = {
    "ID": "jupyter--anna--scratch",
    "Name": "jupyter--anna--scratch",
    "Namespace": "default",
    "Region": "dk-central",
    "Type": "service",
    "Datacenters": ["dc1"],
    "Meta": {
        "workbench_hub": "jupyterhub",
        "workbench_user": "anna",
        "workbench_server": "scratch",
        "workbench_project": "magi",
        "workbench_profile": "cpu-small",
    },
    "TaskGroups": [
        {
            "Name": "server",
            "Count": 1,
            "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http"}]}],
            "RestartPolicy": {
                "Attempts": 0,
                "Mode": "fail",
                "Interval": 300_000_000_000,
                "Delay": 15_000_000_000,
            },
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Tasks": [
                {
                    "Name": "notebook",
                    "Driver": "raw_exec",
                    "Config": {
                        "command": "/opt/venv/bin/jupyterhub-singleuser",
                        "args": ["--allow-root"],
                    },
                    "Env": {
                        "JUPYTERHUB_USER": "anna",
                        "WORKBENCH_PROJECT": "magi",
                        "JUPYTERHUB_SERVICE_URL": (
                            "http://${NOMAD_IP_http}:${NOMAD_PORT_http}/user/anna/scratch/"
                        ),
                    },
                    "Resources": {"Cores": 1, "MemoryMB": 2048, "MemoryMaxMB": 3072},
                    "KillSignal": "SIGTERM",
                    "KillTimeout": 20_000_000_000,
                    "LogConfig": {"MaxFiles": 3, "MaxFileSizeMB": 10},
                    "Templates": [
                        {
                            "EmbeddedTmpl": (
                                '{{ with nomadVar "nomad/jobs/jupyter--anna--scratch" }}\n'
                                "JUPYTERHUB_API_TOKEN={{ .JUPYTERHUB_API_TOKEN }}\n{{ end }}\n"
                            ),
                            "DestPath": "secrets/hub.env",
                            "Envvars": True,
                            "ChangeMode": "noop",
                            "Perms": "0600",
                        }
                    ],
                }
            ],
        }
    ],
}


def _gpu_spec() -> ServerSpec:
    return ServerSpec("anna", "", PROJECT, GPU_PROFILE, DATASETS, ENV, "/user/anna/")


def test_gpu_docker_job_golden() -> None:
    settings = JobSettings(hub_id="wb", datacenters=("dc1", "dc2"), **VOLUMES)
    assert build_job(_gpu_spec(), settings) == GOLDEN_GPU_DOCKER


def test_cpu_raw_exec_job_golden_without_volumes() -> None:
    settings = JobSettings(
        driver="raw_exec",
        region="dk-central",
        command=("/opt/venv/bin/jupyterhub-singleuser", "--allow-root"),
        cpu_mode="cores",
        memory_max_factor=1.5,
        register_service=False,
        **VOLUMES,  # raw_exec cannot mount: none are attached
    )
    spec = ServerSpec("anna", "scratch", PROJECT, CPU_PROFILE, DATASETS, ENV, "/user/anna/scratch/")
    assert build_job(spec, settings) == GOLDEN_CPU_RAW_EXEC


def test_token_never_in_plain_env_and_goes_to_the_variable() -> None:
    job = build_job(_gpu_spec(), JobSettings())
    text = json.dumps(job)
    assert "s3cret-token" not in text
    plain, secrets = split_env(ENV)
    assert secrets == {"JUPYTERHUB_API_TOKEN": "s3cret-token"}
    assert "JPY_API_TOKEN" not in plain
    assert variable_body(job["ID"], "research", secrets) == {
        "Namespace": "research",
        "Path": "nomad/jobs/jupyter--anna",
        "Items": {"JUPYTERHUB_API_TOKEN": "s3cret-token"},
    }


def test_env_delivery_is_the_documented_fallback() -> None:
    job = build_job(_gpu_spec(), JobSettings(token_delivery="env"))
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Env"]["JUPYTERHUB_API_TOKEN"] == "s3cret-token"
    assert "Templates" not in task


def test_mhz_mode_rounds_up_and_profile_defaults_apply() -> None:
    spec = ServerSpec("anna", "", PROJECT, CPU_PROFILE, (), {}, "/user/anna/")
    job = build_job(spec, JobSettings(mhz_per_core=2400, datacenters=("aarhus",)))
    assert job["Datacenters"] == ["aarhus"]
    assert job["TaskGroups"][0]["Tasks"][0]["Resources"] == {"CPU": 1200, "MemoryMB": 2048}
    assert "NodePool" not in job and "Priority" not in job and "Constraints" not in job


def test_values_nomad_would_interpolate_are_refused() -> None:
    spec = ServerSpec("anna", "", PROJECT, CPU_PROFILE, (), {"X": "${NOMAD_TOKEN}"}, "/")
    with pytest.raises(UnsafeValue, match="X contains"):
        build_job(spec, JobSettings())


def test_names_cannot_inject_into_the_job() -> None:
    evil = 'x" } task "y" { driver = "raw_exec'
    spec = ServerSpec(evil, evil, PROJECT, CPU_PROFILE, (), {}, "/")
    job = build_job(spec, JobSettings())
    assert job["ID"].startswith("jupyter--x-task-y-driver-raw-exec")
    assert job["Meta"]["workbench_user"] == evil  # kept verbatim as data, never as syntax
    assert len(job["TaskGroups"]) == 1


def test_volume_templates_accept_only_known_fields() -> None:
    with pytest.raises(ValueError, match="use only"):
        VolumeRule("host", "{user.__class__}", "/home")
    with pytest.raises(ValueError, match="use only"):
        VolumeRule("host", "{secret}", "/home")


def test_built_jobs_match_nomads_api_description_strictly() -> None:
    validator, how = load_validator()
    if validator is None:
        pytest.skip(how)
    for job in (GOLDEN_GPU_DOCKER, GOLDEN_CPU_RAW_EXEC):
        body = json.dumps(register_request(job)).encode()
        assert validator.check_request("POST", "/jobs", {"namespace": ["default"]}, body) == []
    broken = json.loads(json.dumps(GOLDEN_CPU_RAW_EXEC))
    broken["TaskGroups"][0]["Tasks"][0]["Resoures"] = {}
    problems = validator.check_request(
        "POST", "/jobs", {}, json.dumps(register_request(broken)).encode()
    )
    assert problems and "Resoures" in problems[0]
