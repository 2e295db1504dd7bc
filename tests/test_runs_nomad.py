"""Runs as Nomad batch jobs: the job builder (pure), and real runs against the Nomad double.

The double runs the job's ``raw_exec`` task as a local process: ``python -m extensions.runs
execute <run folder>``, the same executor a local run uses, so the two records must agree on
everything but ids, times and place.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from extensions.runs import execute
from extensions.runs.errors import NomadRunFailed, RunRefused
from extensions.runs.nomad import (
    NomadRuns,
    RunJobSettings,
    RunJobSpec,
    build_run_job,
    run_job_id,
)
from extensions.runs.progress import Progress
from extensions.runs.quota import LedgerQuota, RunQuota
from extensions.runs.records import RunStore
from hub_config.loader import parse_config
from hub_config.model import Profile, Project
from spawners.nomad.client import NomadConnection
from spawners.nomad.objects import JobSettings, VolumeRule
from tests.nomad_double import NomadDouble
from tests.nomad_double.fixtures import cluster_nodes
from tests.runs_support import deterministic_notebook, sample_pull

CONFIG = parse_config(
    """\
profiles:
  - {slug: cpu-small, name: Small CPU, cpu: 1, memory: 1G, nomad: {driver: raw_exec}}
  - {slug: h100, name: H100, cpu: 2, memory: 4G, gpus: 1,
     nomad: {driver: raw_exec, gpu: {model: NVIDIA H100 80GB HBM3}}}
projects:
  - id: magi
    title: MAGI
    members: [anna]
    approval: {reference: R-1, expires: 2099-12-31}
    budget: {cpu_core_hours: 100}
  - id: kina
    title: KINA
    members: [anna]
    approval: {reference: R-2, expires: 2099-12-31}
    budget: {max_concurrent_gpus: 0}
""",
    "test-runs.yaml",
)
PROJECT: Project = CONFIG.project("magi")  # type: ignore[assignment]
CPU: Profile = CONFIG.profile("cpu-small")  # type: ignore[assignment]


# The job, as Nomad receives it -----------------------------------------------------------------
def test_run_job_is_a_batch_job_with_the_profiles_resources() -> None:
    settings = RunJobSettings(job=JobSettings(datacenters=("dc1",)), command=("python", "-m", "extensions.runs", "execute"))
    spec = RunJobSpec("20250101-120000-abcdef", "anna", PROJECT, CPU, "/data/projects/magi/runs/20250101-120000-abcdef")
    assert build_run_job(spec, settings) == {
        "ID": "wbrun--magi--20250101-120000-abcdef",
        "Name": "wbrun--magi--20250101-120000-abcdef",
        "Namespace": "default",
        "Type": "batch",
        "Datacenters": ["dc1"],
        "Meta": {"workbench_hub": "jupyterhub", "workbench_run": "20250101-120000-abcdef",
                 "workbench_user": "anna", "workbench_project": "magi", "workbench_profile": "cpu-small"},
        "TaskGroups": [{
            "Name": "run",
            "Count": 1,
            "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 300_000_000_000, "Delay": 15_000_000_000},
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
            "Tasks": [{
                "Name": "notebook",
                "Driver": "raw_exec",
                "Config": {"command": "python",
                           "args": ["-m", "extensions.runs", "execute", "/data/projects/magi/runs/20250101-120000-abcdef"]},
                "Env": {"WORKBENCH_PROJECT": "magi", "WORKBENCH_PROJECT_TITLE": "MAGI",
                        "WORKBENCH_PROFILE": "cpu-small", "WORKBENCH_CPU_LIMIT": "1",
                        "WORKBENCH_MEM_LIMIT": str(1024**3), "WORKBENCH_GPUS": "0", "WORKBENCH_DATASETS": "",
                        "WORKBENCH_RUN_ID": "20250101-120000-abcdef", "JUPYTERHUB_USER": "anna"},
                "Resources": {"CPU": 1000, "MemoryMB": 1024},
                "KillSignal": "SIGTERM",
                "KillTimeout": 20_000_000_000,
                "LogConfig": {"MaxFiles": 3, "MaxFileSizeMB": 10},
            }],
        }],
    }


def test_docker_run_job_mounts_the_workspace_not_the_home_and_keeps_the_token_out_of_env() -> None:
    settings = RunJobSettings(job=JobSettings(
        project_workspace=VolumeRule("csi", "project-{project}", "/home/jovyan/projects/{project}"),
        home=VolumeRule("csi", "home-{user}", "/home/jovyan"),
    ))
    gpu = CONFIG.profile("h100")
    spec = RunJobSpec("r1", "anna", PROJECT, gpu, "/srv/projects/magi/runs/r1")  # type: ignore[arg-type]
    job = build_run_job(spec, settings, {"JUPYTERHUB_API_TOKEN": "secret-token"})
    group = job["TaskGroups"][0]
    task = group["Tasks"][0]
    assert job["ID"] == run_job_id(settings, "magi", "r1") == "wbrun--magi--r1"
    assert task["Driver"] == "raw_exec"  # the profile's driver wins over the cluster default
    assert task["Resources"]["Devices"] == [{"Name": "nvidia/gpu", "Count": 1, "Constraints": [
        {"LTarget": "${device.model}", "Operand": "=", "RTarget": "NVIDIA H100 80GB HBM3"}]}]
    assert "JUPYTERHUB_API_TOKEN" not in task["Env"] and "secret-token" not in str(task["Env"])
    assert "nomadVar \"nomad/jobs/wbrun--magi--r1\"" in task["Templates"][0]["EmbeddedTmpl"]
    assert "Volumes" not in group  # raw_exec mounts nothing: the run folder is the host path
    assert task["Config"]["args"][-1] == "/srv/projects/magi/runs/r1"

    docker = Profile.model_validate({"slug": "d", "name": "D", "cpu": 1, "memory": "1G"})
    job = build_run_job(RunJobSpec("r1", "anna", PROJECT, docker, "/srv/projects/magi/runs/r1"), settings)
    group = job["TaskGroups"][0]
    task = group["Tasks"][0]
    assert set(group["Volumes"]) == {"project"}  # never the home: a second writer of a CSI volume
    assert task["VolumeMounts"][0]["Destination"] == "/home/jovyan/projects/magi"
    assert task["Config"]["args"][-1] == "/home/jovyan/projects/magi/runs/r1"
    assert "ports" not in task["Config"]


def test_run_job_prefix_must_differ_from_the_spawners() -> None:
    with pytest.raises(ValueError, match="orphan reconciler"):
        RunJobSettings(job=JobSettings(job_prefix="wbrun"))


# Real runs on the double -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadDouble]:
    with NomadDouble(cluster_nodes(tmp_path_factory.mktemp("nodes"))) as nomad:
        yield nomad
        assert nomad.violations == [], "requests that do not match Nomad's API"


def _runs(double: NomadDouble, quota: RunQuota) -> NomadRuns:
    settings = RunJobSettings(job=JobSettings(datacenters=("dc1",), driver="raw_exec"),
                              command=(sys.executable, "-m", "extensions.runs", "execute"))
    return NomadRuns(NomadConnection(address=double.address), settings, quota, wait=5.0,
                     progress_every=0.2)


def test_a_run_on_nomad_gives_the_same_record_as_a_local_run(double: NomadDouble, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    pull = sample_pull(workspace)
    (workspace / "table.csv").write_text("a,b\n1,2\n")
    nb = deterministic_notebook(tmp_path / "code" / "analysis.ipynb")
    parameters = {"n": 4, "data_file": str(workspace / "table.csv"), "pull": str(pull)}

    def request(where: str) -> execute.RunRequest:
        return execute.RunRequest(nb, parameters, project="magi", profile="cpu-small", where=where,  # type: ignore[arg-type]
                                  workspace=workspace, user="anna")

    local = execute.run(request("local"), config=lambda: CONFIG)
    quota = LedgerQuota(f"sqlite:///{tmp_path / 'ledger.sqlite'}", CONFIG)
    seen: list[Progress] = []
    remote = execute.run(request("nomad"), sink=seen.append, config=lambda: CONFIG, nomad=_runs(double, quota))

    assert local.status == remote.status == "succeeded", remote.message
    assert remote.reproducibility() == local.reproducibility()
    assert remote.outputs.values == {"total": 3.0, "label": "a"}  # type: ignore[union-attr]
    assert {(i.kind, i.path) for i in remote.inputs} == {
        ("parameter", "workspace:table.csv"), ("parameter", "workspace:samples/pull-1"),
        ("sample", "workspace:samples/pull-1/manifest.json")}
    assert remote.where == "nomad" and remote.nomad is not None
    assert remote.nomad.job_id == f"wbrun--magi--{remote.id}"
    assert remote.nomad.alloc_id and remote.nomad.node == "cpu-1" and remote.nomad.exit_code == 0
    assert remote.resources.cpu == 1 and remote.resources.memory == 1024**3
    assert seen[0].state == "starting" and (seen[-1].cell, seen[-1].cells, seen[-1].state) == (7, 7, "done")
    charged = quota.ledger.get(remote.quota_allocation)
    assert (charged.kind, charged.account, charged.user, charged.server_name) == (
        "batch", "magi", "anna", f"run:{remote.id}")
    assert (charged.status, charged.cpu, charged.gpus) == ("ended", 1.0, 0)
    assert charged.started_at <= charged.ended_at  # from Nomad's task start to its end
    assert charged.ended_at - charged.started_at < remote.resources.wall_seconds + 10
    assert remote.quota == "charged in the quota ledger"
    job = double.call(lambda: double.cluster.jobs[("default", remote.nomad.job_id)])  # type: ignore[union-attr]
    assert job["Type"] == "batch" and job["TaskGroups"][0]["Tasks"][0]["Resources"]["CPU"] == 1000


def test_a_run_nomad_cannot_place_fails_at_once_and_releases_its_quota(
    double: NomadDouble, tmp_path: Path
) -> None:
    nb = deterministic_notebook(tmp_path / "analysis.ipynb")
    quota = LedgerQuota(f"sqlite:///{tmp_path / 'ledger.sqlite'}", CONFIG)
    request = execute.RunRequest(nb, {}, project="magi", profile="h100", where="nomad",
                                 workspace=tmp_path, user="anna")
    with pytest.raises(NomadRunFailed, match="No node can start the profile 'h100'") as failure:
        execute.run(request, config=lambda: CONFIG, nomad=_runs(double, quota))
    (record,) = RunStore(tmp_path).records()
    assert record.status == "failed" and "No node can start" in record.message
    assert record.environment is None and record.started is None  # the notebook never ran
    released = quota.ledger.get(record.quota_allocation)
    assert released.status == "released" and released.started_at is None  # costs nothing
    assert record.id in failure.value.message
    assert double.call(lambda: ("default", record.nomad.job_id) not in double.cluster.jobs)  # type: ignore[union-attr]


def test_a_run_the_budget_refuses_is_neither_created_nor_submitted(double: NomadDouble, tmp_path: Path) -> None:
    nb = deterministic_notebook(tmp_path / "analysis.ipynb")
    quota = LedgerQuota(f"sqlite:///{tmp_path / 'ledger.sqlite'}", CONFIG)
    double.clear_requests()
    request = execute.RunRequest(nb, {}, project="kina", profile="h100", where="nomad",
                                 workspace=tmp_path, user="anna")
    with pytest.raises(RunRefused) as refused:
        execute.run(request, config=lambda: CONFIG, nomad=_runs(double, quota))
    assert refused.value.reason == "quota_exceeded" and "GPU" in refused.value.message
    assert not (tmp_path / "runs").exists()
    assert [r for r in double.requests if r.method != "GET"] == []
