"""``get_cluster()``: the one call a notebook makes for a Dask cluster that fits its server.

    from extensions.compute import get_cluster
    cluster = get_cluster()            # LocalCUDACluster on a GPU server, LocalCluster on CPU
    cluster = get_cluster("nomad", n_workers=8, worker_memory="8GiB")  # beyond this server
    client = cluster.get_client()

``auto`` picks a LocalCUDACluster when the server's share has GPUs and devices are visible
(one worker per GPU), else a LocalCluster sized to the share (:mod:`.sizing`); ``nomad``
places workers as Nomad jobs charged to the project (:mod:`.nomad`). The choice and the
numbers are pure (:func:`choose`, :func:`plan`); the dashboard link points at the hub's proxy
(``/user/NAME/proxy/PORT/status``), with the dashboard itself bound to loopback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dask.utils import parse_bytes

from . import gpu, sizing

log = logging.getLogger("workbench.dask")

Kind = Literal["auto", "local", "cuda", "nomad"]
LINK_TEMPLATE = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
DEFAULT_GPU_OPTIONS = gpu.GpuOptions()


class ClusterChoiceError(ValueError):
    """The cluster asked for cannot run on this server; the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """What :func:`get_cluster` will start, and why (shown by ``print(plan)``)."""

    kind: Literal["local", "cuda", "nomad"]
    reason: str
    allocation: sizing.Allocation
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind} cluster: {self.reason}; server share {self.allocation.describe()}"


def dashboard_link_template(env: Mapping[str, str]) -> str | None:
    """The proxied link template for servers behind the hub, None elsewhere."""
    return LINK_TEMPLATE if env.get("JUPYTERHUB_SERVICE_PREFIX") else None


def configure_dashboard_link(env: Mapping[str, str] | None = None) -> str | None:
    """Point dashboard links at the hub's proxy unless the environment already chose a link."""
    import dask

    env = os.environ if env is None else env
    template = dashboard_link_template(env)
    if template and "DASK_DISTRIBUTED__DASHBOARD__LINK" not in env:
        dask.config.set({"distributed.dashboard.link": template})
    return template


def proxied_dashboard_link(host: str, port: int, env: Mapping[str, str] | None = None) -> str:
    """Link to a dashboard on another host through jupyter-server-proxy (host must be allowed)."""
    env = os.environ if env is None else env
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX")
    return f"{prefix}proxy/{host}:{port}/status" if prefix else f"http://{host}:{port}/status"


def choose(
    kind: Kind, allocation: sizing.Allocation, devices: list[str], *, nomad_configured: bool
) -> tuple[Literal["local", "cuda", "nomad"], str]:
    """Which cluster, and the reason in words (pure)."""
    if kind == "nomad":
        if not nomad_configured:
            raise ClusterChoiceError(
                "Workers on Nomad need NOMAD_ADDR (and a token) in the server's environment; "
                "this server has none. Use get_cluster() for a cluster on this server."
            )
        return "nomad", "workers placed by Nomad, charged to the project"
    if kind == "cuda" or (kind == "auto" and allocation.gpus > 0 and devices):
        if allocation.gpus <= 0 or not devices:
            raise ClusterChoiceError(
                f"A GPU cluster needs a GPU: this server's share has {allocation.gpus} GPU(s) "
                f"and {len(devices)} visible device(s). Start the server with a GPU profile."
            )
        usable = min(allocation.gpus, len(devices))
        return "cuda", f"{usable} GPU(s) visible and allowed: one worker per GPU"
    if kind not in ("auto", "local"):
        raise ClusterChoiceError(f"kind must be 'auto', 'local', 'cuda' or 'nomad', not {kind!r}")
    return "local", "CPU workers inside this server's share"


def plan(
    kind: Kind = "auto",
    *,
    environ: Mapping[str, str] | None = None,
    limits: list[sizing.Limits] | None = None,
    devices: list[str] | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    gpu_options: gpu.GpuOptions = DEFAULT_GPU_OPTIONS,
) -> Plan:
    """Decide without starting anything (``limits``/``devices`` default to what is detected)."""
    env = dict(os.environ if environ is None else environ)
    sources = sizing.detect(env) if limits is None else limits
    allocation = sizing.resolve(sources)
    if devices is None:
        devices = gpu.visible_devices(env, device_count=gpu.device_count() if allocation.gpus else 0)
    chosen, reason = choose(kind, allocation, devices, nomad_configured=bool(env.get("NOMAD_ADDR")))
    if chosen == "cuda":
        kwargs: dict[str, Any] = gpu.cuda_cluster_kwargs(allocation, devices, gpu_options)
    elif chosen == "local":
        layout = sizing.local_layout(allocation, n_workers=n_workers, threads_per_worker=threads_per_worker)
        kwargs = {**layout.kwargs(), "dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"}
    else:
        kwargs = {}
    return Plan(chosen, reason, allocation, kwargs)


def nomad_options_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """NomadCluster settings from ``WORKBENCH_DASK_*`` (set by the operator in the server env)."""
    from .nomad import ClusterLimits
    from .nomad_jobs import DaskJobSettings

    def get(name: str, default: str = "") -> str:
        return env.get(f"WORKBENCH_DASK_{name}", default)

    values: dict[str, Any] = {}
    for key, name in (("driver", "DRIVER"), ("image", "IMAGE"), ("python", "PYTHON"),
                      ("namespace", "NAMESPACE"), ("node_pool", "NODE_POOL"), ("job_prefix", "JOB_PREFIX")):
        if get(name):
            values[key] = get(name)
    if not values.get("namespace") and env.get("NOMAD_NAMESPACE"):
        values["namespace"] = env["NOMAD_NAMESPACE"]
    if get("DATACENTERS"):
        values["datacenters"] = tuple(d.strip() for d in get("DATACENTERS").split(",") if d.strip())
    limits = ClusterLimits(
        max_workers=int(get("MAX_WORKERS")) if get("MAX_WORKERS") else None,
        max_cores=float(get("MAX_CORES")) if get("MAX_CORES") else None,
        max_memory=parse_bytes(get("MAX_MEMORY")) if get("MAX_MEMORY") else None,
    )
    host = get("SCHEDULER_HOST") or env.get("NOMAD_IP_http") or "127.0.0.1"
    return {"settings": DaskJobSettings(**values), "limits": limits, "scheduler_host": host,
            "scheduler": get("SCHEDULER", "local")}


def get_cluster(
    kind: Kind = "auto",
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    gpu_options: gpu.GpuOptions = DEFAULT_GPU_OPTIONS,
    worker_threads: int = 1,
    worker_memory: str | int = "2GiB",
    worker_gpus: int = 0,
    environ: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """A Dask cluster sized to what this server and its project may use (see the module doc).

    ``n_workers`` overrides the number of workers (for ``nomad``: how many to start; then
    ``cluster.scale(n)`` or ``cluster.adapt(maximum=n)``, both bounded by the quota).
    ``worker_threads``/``worker_memory``/``worker_gpus`` shape Nomad workers. Other keyword
    arguments go to the cluster class.
    """
    env = dict(os.environ if environ is None else environ)
    configure_dashboard_link(env)
    chosen = plan(kind, environ=env, n_workers=n_workers, threads_per_worker=threads_per_worker,
                  gpu_options=gpu_options)
    log.info("%s", chosen)
    if chosen.kind == "cuda":
        return gpu.make_cuda_cluster(chosen.kwargs, **kwargs)
    if chosen.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(**{**chosen.kwargs, **kwargs})
    from spawners.nomad.client import NomadConnection

    from .nomad import NomadCluster, WorkerShape, owner_from_env
    from .quota import QuotaService

    options = {**nomad_options_from_env(env), **kwargs}
    shape = WorkerShape.of(worker_threads, worker_memory, worker_gpus)
    if worker_gpus:
        shape = WorkerShape(shape.threads, shape.memory, shape.gpus, tuple(gpu.worker_cli_args(gpu_options)))
    return NomadCluster(
        connection=NomadConnection.from_env(env),
        owner=owner_from_env(env),
        shape=shape,
        accounting=options.pop("accounting", None) or QuotaService.from_env(env),
        n_workers=n_workers or 0,
        **options,
    )
