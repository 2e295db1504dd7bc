"""Pure builders: one Dask worker (or scheduler) as a Nomad job, in the JSON API form.

No I/O. The shape follows the server jobs of :mod:`spawners.nomad.objects` (and reuses its
slugs, constraints and interpolation check), with choices of its own, each for a reason:

* One **batch** job per worker (as dask-jobqueue submits one job per worker): Nomad accounts
  and places each worker on its own, scaling down is deregistering one job, and a worker
  that exits (its scheduler gone for ``death_timeout`` seconds) completes its job instead of
  being restarted. Restarts 0, rescheduling 0: a lost worker is Dask's business (it recomputes),
  not Nomad's.
* **Host networking**, ports ``worker`` and ``nanny`` (and ``comm``/``dashboard`` for a
  scheduler) as dynamic ports; the processes listen on ``${NOMAD_IP_x}:${NOMAD_PORT_x}`` and
  advertise that address, which every node can reach. With the docker driver the container
  runs with ``network_mode = "host"`` for the same reason (Dask workers talk to each other
  directly; a bridge network would advertise container addresses).
* Job meta says whose cluster this is (``workbench_user``, ``workbench_project``,
  ``workbench_dask_cluster``), which scheduler it serves and which quota allocation it is
  charged to: the reaper (:mod:`.reaper`) decides from the meta alone.
* Job ids are ``<prefix>--<user>--<cluster>--<worker>``; ``<prefix>--<user>--`` lists one
  user's Dask jobs, ``<prefix>--`` all of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from spawners.nomad import slugs
from spawners.nomad.objects import SECOND_NS, MiB, _constraint, check_no_interpolation

META = "workbench_"
WORKER_GROUP, WORKER_TASK = "worker", "dask-worker"
SCHEDULER_GROUP, SCHEDULER_TASK = "scheduler", "dask-scheduler"

Driver = Literal["docker", "raw_exec", "exec"]


@dataclass(frozen=True)
class DaskJobSettings:
    """Where and how Dask jobs run (the operator's choices; ``WORKBENCH_DASK_*`` in the env)."""

    job_prefix: str = "dask"
    namespace: str = "default"
    region: str | None = None
    datacenters: tuple[str, ...] = ("dc1",)
    node_pool: str | None = None
    driver: Driver = "docker"
    image: str = "quay.io/jupyter/scipy-notebook:latest"
    python: str = "python"
    gpu_worker_command: tuple[str, ...] = ("dask", "cuda", "worker")
    cpu_mode: Literal["mhz", "cores"] = "mhz"
    mhz_per_core: int = 1000
    gpu_vendor: str = "nvidia"
    death_timeout_s: int = 60
    scheduler_idle_timeout_s: int = 3600
    kill_timeout_s: float = 10.0
    priority: int | None = None
    constraints: tuple[tuple[str, str, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not slugs.SAFE_PART.match(self.job_prefix) or len(self.job_prefix) > 16:
            raise ValueError(
                f"job prefix {self.job_prefix!r}: lower-case letters, digits and single dashes, "
                "at most 16 characters"
            )


@dataclass(frozen=True)
class Owner:
    """Whose cluster: the user, the project charged, and the cluster's own id."""

    username: str
    project: str
    cluster_id: str


@dataclass(frozen=True)
class WorkerSpec:
    """One worker to place."""

    name: str
    scheduler_address: str
    threads: int
    memory: int  # bytes
    gpus: int = 0
    quota_allocation: str = ""
    extra_args: tuple[str, ...] = ()  # e.g. GPU pool/spilling options for ``dask cuda worker``


def user_prefix(settings: DaskJobSettings, username: str) -> str:
    """What every Dask job id of ``username`` starts with (for ``GET /v1/jobs?prefix=``)."""
    return slugs.multi_slug([settings.job_prefix, slugs.safe_slug(username, 24)]) + "--"


def job_id(settings: DaskJobSettings, owner: Owner, name: str) -> str:
    return user_prefix(settings, owner.username) + slugs.multi_slug(
        [slugs.safe_slug(owner.cluster_id, 16), slugs.safe_slug(name, 20)], max_length=38
    )


def _resources(settings: DaskJobSettings, cores: float, memory: int, gpus: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.cpu_mode == "cores":
        out["Cores"] = max(1, math.ceil(cores))
    else:
        out["CPU"] = max(1, math.ceil(cores * settings.mhz_per_core))
    out["MemoryMB"] = max(1, math.ceil(memory / MiB))
    if gpus:
        out["Devices"] = [{"Name": f"{settings.gpu_vendor}/gpu", "Count": gpus}]
    return out


def _meta(owner: Owner, role: str, scheduler: str, allocation: str) -> dict[str, str]:
    meta = {
        f"{META}user": owner.username,
        f"{META}project": owner.project,
        f"{META}dask_cluster": owner.cluster_id,
        f"{META}dask_role": role,
        f"{META}dask_scheduler": scheduler,
    }
    if allocation:
        meta[f"{META}quota_allocation"] = allocation
    return meta


def _task_config(settings: DaskJobSettings, command: list[str]) -> dict[str, Any]:
    if settings.driver == "docker":
        return {"image": settings.image, "network_mode": "host", "command": command[0],
                "args": command[1:]}
    return {"command": command[0], "args": command[1:]}


def worker_command(settings: DaskJobSettings, spec: WorkerSpec) -> list[str]:
    base = (
        list(settings.gpu_worker_command)
        if spec.gpus
        else [settings.python, "-m", "distributed.cli.dask_worker"]
    )
    args = [
        spec.scheduler_address,
        "--name", spec.name,
        "--nthreads", str(spec.threads),
        "--memory-limit", str(spec.memory),
        "--death-timeout", str(settings.death_timeout_s),
        "--host", "${NOMAD_IP_worker}",
        "--local-directory", "${NOMAD_TASK_DIR}",
        "--no-dashboard",
    ]
    if not spec.gpus:
        # ``dask cuda worker`` picks its own ports (free ones: host networking makes them
        # reachable); ``dask worker`` takes the ports Nomad reserved.
        args += ["--worker-port", "${NOMAD_PORT_worker}", "--nanny-port", "${NOMAD_PORT_nanny}"]
    return base + args + list(spec.extra_args)


def _job(
    settings: DaskJobSettings,
    job_id_: str,
    group: str,
    task: str,
    command: list[str],
    ports: list[str],
    resources: dict[str, Any],
    meta: dict[str, str],
    env: Mapping[str, str],
) -> dict[str, Any]:
    check_no_interpolation(env)
    task_spec: dict[str, Any] = {
        "Name": task,
        "Driver": settings.driver,
        "Config": _task_config(settings, command),
        "Env": dict(env),
        "Resources": resources,
        "KillSignal": "SIGTERM",
        "KillTimeout": int(settings.kill_timeout_s * SECOND_NS),
        "LogConfig": {"MaxFiles": 2, "MaxFileSizeMB": 10},
    }
    job: dict[str, Any] = {
        "ID": job_id_,
        "Name": job_id_,
        "Namespace": settings.namespace,
        "Type": "batch",
        "Datacenters": list(settings.datacenters),
        "Meta": meta,
        "TaskGroups": [
            {
                "Name": group,
                "Count": 1,
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": p} for p in ports]}],
                "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 300 * SECOND_NS,
                                  "Delay": 5 * SECOND_NS},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [task_spec],
            }
        ],
    }
    if settings.region:
        job["Region"] = settings.region
    if settings.node_pool:
        job["NodePool"] = settings.node_pool
    if settings.priority is not None:
        job["Priority"] = settings.priority
    if settings.constraints:
        job["Constraints"] = [_constraint(*c) for c in settings.constraints]
    return job


def build_worker_job(settings: DaskJobSettings, owner: Owner, spec: WorkerSpec) -> dict[str, Any]:
    """The ``Job`` object for ``POST /v1/jobs`` of one worker."""
    env = {
        **settings.env,
        "WORKBENCH_PROJECT": owner.project,
        "WORKBENCH_DASK_CLUSTER": owner.cluster_id,
        # One thread per Dask thread in numerical libraries: no oversubscription of the share.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return _job(
        settings,
        job_id(settings, owner, spec.name),
        WORKER_GROUP,
        WORKER_TASK,
        worker_command(settings, spec),
        ["worker", "nanny"],
        _resources(settings, spec.threads, spec.memory, spec.gpus),
        _meta(owner, "worker", spec.scheduler_address, spec.quota_allocation),
        env,
    )


def build_scheduler_job(
    settings: DaskJobSettings, owner: Owner, *, cores: float = 1, memory: int = 1024 * MiB
) -> dict[str, Any]:
    """The scheduler as a job: it ends itself after ``scheduler_idle_timeout_s`` without work."""
    command = [
        settings.python, "-m", "distributed.cli.dask_scheduler",
        "--host", "${NOMAD_IP_comm}",
        "--port", "${NOMAD_PORT_comm}",
        "--dashboard-address", "${NOMAD_IP_dashboard}:${NOMAD_PORT_dashboard}",
        "--idle-timeout", f"{settings.scheduler_idle_timeout_s}s",
    ]
    return _job(
        settings,
        job_id(settings, owner, "scheduler"),
        SCHEDULER_GROUP,
        SCHEDULER_TASK,
        command,
        ["comm", "dashboard"],
        _resources(settings, cores, memory, 0),
        _meta(owner, "scheduler", "", ""),
        {**settings.env, "WORKBENCH_PROJECT": owner.project},
    )


def allocated_port(alloc: Mapping[str, Any], label: str) -> tuple[str, int] | None:
    """(host, port) of a labelled port in an allocation."""
    shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == label and port.get("HostIP") and port.get("Value"):
            return str(port["HostIP"]), int(port["Value"])
    return None
