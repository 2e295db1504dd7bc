"""Pure builders: one user server as a Nomad job (JSON API form, never HCL).

No I/O here. :func:`build_job` turns a :class:`ServerSpec` (who, which project, profile and
datasets, which environment) and the cluster-wide :class:`JobSettings` into the ``Job``
object of ``POST /v1/jobs``. Because the job is JSON built from dicts, a user or server name
cannot inject anything into it; names that become Nomad identifiers go through
:mod:`.slugs`. Tests compare the output with literal dicts (``tests/test_nomad_objects.py``).

Choices made here, each for a reason an operator should know:

* One ``service`` job per server, one group ``server`` with one task ``notebook``; the port is
  a dynamic group port labelled ``http``.
* Restart attempts 0 (mode ``fail``) and no rescheduling: a broken server fails at once with
  its own message instead of looping while the user watches a spinner.
* The hub API token is not in the task's ``Env`` (readable by anyone with ``read-job``): it is
  written to the Nomad Variable ``nomad/jobs/<job id>``, which only this job's workload
  identity (and the hub) can read, and a ``template`` block renders it into the task's
  environment (``secrets/hub.env``, ``env = true``). ``token_delivery="env"`` is the
  documented fallback for clusters without Variables (Nomad < 1.4).
* ``raw_exec`` cannot mount volumes (Nomad rejects ``volume_mount`` for drivers without
  mount support): homes and datasets are only attached with ``docker`` and ``exec``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from hub_config.model import Dataset, Profile, Project

from . import slugs

MiB = 1024 * 1024
SECOND_NS = 1_000_000_000
GROUP = "server"
TASK = "notebook"

SECRET_ENV_KEYS = frozenset({"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"})
"""Environment values that must never sit in plain job ``Env``."""

META_PREFIX = "workbench_"
"""Job meta keys: ``workbench_hub``, ``workbench_user``, ``workbench_server``, ..."""

Driver = Literal["docker", "raw_exec", "exec"]
MOUNTING_DRIVERS = frozenset({"docker", "exec"})

_TEMPLATE_FIELDS = frozenset({"user", "server", "project", "dataset", "hub"})


class UnsafeValue(ValueError):
    """A value would be changed by Nomad's ``${...}`` interpolation; refused, not guessed."""


@dataclass(frozen=True)
class VolumeRule:
    """How one kind of workbench storage becomes a Nomad volume.

    ``source`` and ``destination`` are templates with the fields ``{user}``, ``{server}``,
    ``{project}``, ``{dataset}`` and ``{hub}``, each filled with a slug (never raw text).
    """

    type: Literal["host", "csi"]
    source: str
    destination: str
    access_mode: str = "single-node-writer"
    attachment_mode: str = "file-system"

    def __post_init__(self) -> None:
        for template in (self.source, self.destination):
            check_template(template)


def check_template(template: str) -> None:
    """Only plain ``{field}`` names from the known set: no attribute or index access."""
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in _TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"template {template!r}: use only {{user}}, {{server}}, {{project}}, "
                f"{{dataset}} or {{hub}} (found {{{name}}})"
            )


@dataclass(frozen=True)
class JobSettings:
    """Cluster-wide choices (the spawner's configuration), overridable per profile."""

    hub_id: str = "jupyterhub"
    job_prefix: str = "jupyter"
    namespace: str = "default"
    region: str | None = None
    datacenters: tuple[str, ...] = ("dc1",)
    node_pool: str | None = None
    driver: Driver = "docker"
    image: str = "quay.io/jupyter/base-notebook:latest"
    command: tuple[str, ...] = ("jupyterhub-singleuser",)
    cpu_mode: Literal["mhz", "cores"] = "mhz"
    mhz_per_core: int = 1000
    memory_max_factor: float | None = None
    container_port: int = 8888
    home: VolumeRule | None = None
    project_workspace: VolumeRule | None = None
    dataset: VolumeRule | None = None
    token_delivery: Literal["variable", "env"] = "variable"
    register_service: bool = True
    kill_timeout_s: float = 20.0
    task_user: str | None = None
    constraints: tuple[tuple[str, str, str], ...] = ()
    docker_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerSpec:
    """One server to start: the user's choice (already checked) and its environment."""

    username: str
    server_name: str
    project: Project
    profile: Profile
    datasets: tuple[Dataset, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    base_url: str = "/"


@dataclass(frozen=True)
class Placement:
    """Where the job goes after the profile's overrides are applied to the settings."""

    namespace: str
    driver: Driver
    image: str
    datacenters: tuple[str, ...]
    node_pool: str | None
    priority: int | None


def placement(profile: Profile, settings: JobSettings) -> Placement:
    nomad = profile.nomad
    return Placement(
        namespace=nomad.namespace or settings.namespace,
        driver=nomad.driver or settings.driver,
        image=nomad.image or settings.image,
        datacenters=tuple(nomad.datacenters) or settings.datacenters,
        node_pool=nomad.node_pool or settings.node_pool,
        priority=nomad.priority,
    )


def job_id_for(spec: ServerSpec, settings: JobSettings) -> str:
    return slugs.job_id(settings.job_prefix, spec.username, spec.server_name)


def variable_path(job_id: str) -> str:
    """The Nomad Variable this job's workload identity may read without any extra policy."""
    return f"nomad/jobs/{job_id}"


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain environment, secrets) from a spawner's ``get_env()``; ``JPY_API_TOKEN`` dropped."""
    plain = {k: v for k, v in env.items() if k not in SECRET_ENV_KEYS}
    secrets = {k: v for k, v in env.items() if k == "JUPYTERHUB_API_TOKEN"}
    return plain, secrets


def secret_template(job_id: str, keys: list[str]) -> dict[str, Any]:
    """The template block that renders the job's Variable into the task's environment."""
    lines = "".join(f"{key}={{{{ .{key} }}}}\n" for key in sorted(keys))
    return {
        "EmbeddedTmpl": (
            f'{{{{ with nomadVar "{variable_path(job_id)}" }}}}\n{lines}{{{{ end }}}}\n'
        ),
        "DestPath": "secrets/hub.env",
        "Envvars": True,
        "ChangeMode": "noop",
        "Perms": "0600",
    }


def variable_body(job_id: str, namespace: str, secrets: Mapping[str, str]) -> dict[str, Any]:
    """Body of ``PUT /v1/var/nomad/jobs/<job id>``."""
    return {"Namespace": namespace, "Path": variable_path(job_id), "Items": dict(secrets)}


def job_meta(spec: ServerSpec, settings: JobSettings) -> dict[str, str]:
    return {
        f"{META_PREFIX}hub": settings.hub_id,
        f"{META_PREFIX}user": spec.username,
        f"{META_PREFIX}server": spec.server_name,
        f"{META_PREFIX}project": spec.project.id,
        f"{META_PREFIX}profile": spec.profile.slug,
    }


def resources(profile: Profile, settings: JobSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.cpu_mode == "cores":
        out["Cores"] = max(1, math.ceil(profile.cpu))
    else:
        out["CPU"] = max(1, math.ceil(profile.cpu * settings.mhz_per_core))
    memory_mb = max(1, math.ceil(profile.memory / MiB))
    out["MemoryMB"] = memory_mb
    if settings.memory_max_factor and settings.memory_max_factor > 1:
        out["MemoryMaxMB"] = math.ceil(memory_mb * settings.memory_max_factor)
    if profile.gpus:
        gpu = profile.nomad.gpu
        device: dict[str, Any] = {"Name": f"{gpu.vendor}/gpu", "Count": profile.gpus}
        constraints = []
        if gpu.model:
            constraints.append(_constraint("${device.model}", "=", gpu.model))
        if gpu.min_memory:
            mib = math.ceil(gpu.min_memory / MiB)
            constraints.append(_constraint("${device.attr.memory}", ">=", f"{mib} MiB"))
        if constraints:
            device["Constraints"] = constraints
        out["Devices"] = [device]
    return out


def _constraint(attribute: str, operator: str, value: str) -> dict[str, str]:
    return {"LTarget": attribute, "Operand": operator, "RTarget": value}


def _fill(template: str, fields: Mapping[str, str]) -> str:
    return template.format_map(fields)


def volumes(
    spec: ServerSpec, settings: JobSettings, driver: Driver
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(group ``Volumes``, task ``VolumeMounts``); datasets are always read-only."""
    if driver not in MOUNTING_DRIVERS:
        return {}, []
    fields = {
        "user": slugs.safe_slug(spec.username),
        "server": slugs.safe_slug(spec.server_name) if spec.server_name else "default",
        "project": spec.project.id,
        "hub": settings.hub_id,
        "dataset": "",
    }
    wanted: list[tuple[str, VolumeRule, dict[str, str], bool, str]] = []
    if settings.home:
        wanted.append(("home", settings.home, fields, False, settings.home.access_mode))
    if settings.project_workspace:
        rule = settings.project_workspace
        wanted.append(("project", rule, fields, False, "multi-node-multi-writer"))
    if settings.dataset:
        for dataset in spec.datasets:
            ds_fields = {**fields, "dataset": dataset.id}
            rule = settings.dataset
            if dataset.volume is not None:
                # The catalogue names the volume that holds this dataset.
                rule = replace(rule, type=dataset.volume.type, source=dataset.volume.source)
            wanted.append(
                (
                    f"dataset-{dataset.id}",
                    rule,
                    ds_fields,
                    True,
                    "multi-node-reader-only",
                )
            )
    group: dict[str, Any] = {}
    mounts: list[dict[str, Any]] = []
    for name, rule, values, read_only, access_mode in wanted:
        request: dict[str, Any] = {
            "Name": name,
            "Type": rule.type,
            "Source": _fill(rule.source, values),
            "ReadOnly": read_only,
        }
        if rule.type == "csi":
            request["AccessMode"] = access_mode
            request["AttachmentMode"] = rule.attachment_mode
        group[name] = request
        mounts.append(
            {
                "Volume": name,
                "Destination": _fill(rule.destination, values),
                "ReadOnly": read_only,
                "PropagationMode": "private",
            }
        )
    return group, mounts


def task_config(driver: Driver, image: str, settings: JobSettings) -> dict[str, Any]:
    command = list(settings.command)
    if driver == "docker":
        config: dict[str, Any] = {**settings.docker_options, "image": image, "ports": ["http"]}
        if command:
            config["command"] = command[0]
            config["args"] = command[1:]
        return config
    if not command:
        raise ValueError(f"the {driver} driver needs a command (Spawner.cmd is empty)")
    return {"command": command[0], "args": command[1:]}


def check_no_interpolation(env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if "${" in key or "${" in value:
            raise UnsafeValue(
                f"environment variable {key} contains '${{', which Nomad would interpolate; "
                "remove it from the name or setting it comes from"
            )


def task_env(spec: ServerSpec, driver: Driver, plain_env: Mapping[str, str]) -> dict[str, str]:
    check_no_interpolation(plain_env)
    env = dict(plain_env)
    # jupyterhub-singleuser binds to the host and port in JUPYTERHUB_SERVICE_URL. Inside a
    # container that is all interfaces on the mapped port; on the node (raw_exec, exec) it is
    # the address Nomad allocated the port on.
    bind_ip = "0.0.0.0" if driver == "docker" else "${NOMAD_IP_http}"  # noqa: S104
    env["JUPYTERHUB_SERVICE_URL"] = f"http://{bind_ip}:${{NOMAD_PORT_http}}{spec.base_url}"
    return env


def build_job(spec: ServerSpec, settings: JobSettings) -> dict[str, Any]:
    """The ``Job`` object for ``POST /v1/jobs`` (wrap it with :func:`register_request`)."""
    where = placement(spec.profile, settings)
    job_id = job_id_for(spec, settings)
    plain_env, secrets = split_env(spec.env)
    if settings.token_delivery == "env":
        plain_env = {**plain_env, **secrets}
        secrets = {}
    group_volumes, mounts = volumes(spec, settings, where.driver)

    task: dict[str, Any] = {
        "Name": TASK,
        "Driver": where.driver,
        "Config": task_config(where.driver, where.image, settings),
        "Env": task_env(spec, where.driver, plain_env),
        "Resources": resources(spec.profile, settings),
        "KillSignal": "SIGTERM",
        "KillTimeout": int(settings.kill_timeout_s * SECOND_NS),
        "LogConfig": {"MaxFiles": 3, "MaxFileSizeMB": 10},
    }
    if secrets:
        task["Templates"] = [secret_template(job_id, list(secrets))]
    if mounts:
        task["VolumeMounts"] = mounts
    if settings.task_user:
        task["User"] = settings.task_user

    port: dict[str, Any] = {"Label": "http"}
    if where.driver == "docker":
        port["To"] = settings.container_port
    group: dict[str, Any] = {
        "Name": GROUP,
        "Count": 1,
        "Networks": [{"Mode": "host", "DynamicPorts": [port]}],
        "RestartPolicy": {
            "Attempts": 0,
            "Mode": "fail",
            "Interval": 300 * SECOND_NS,
            "Delay": 15 * SECOND_NS,
        },
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "Tasks": [task],
    }
    if group_volumes:
        group["Volumes"] = group_volumes
    if settings.register_service:
        group["Services"] = [
            {
                "Name": job_id,
                "PortLabel": "http",
                "Provider": "nomad",
                "Tags": ["jupyterhub", settings.hub_id],
            }
        ]

    constraints = [_constraint(*c) for c in settings.constraints] + [
        _constraint(c.attribute, c.operator, c.value) for c in spec.profile.nomad.constraints
    ]
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": job_id,
        "Namespace": where.namespace,
        "Type": "service",
        "Datacenters": list(where.datacenters),
        "Meta": job_meta(spec, settings),
        "TaskGroups": [group],
    }
    if settings.region:
        job["Region"] = settings.region
    if where.node_pool:
        job["NodePool"] = where.node_pool
    if where.priority is not None:
        job["Priority"] = where.priority
    if constraints:
        job["Constraints"] = constraints
    return job


def register_request(job: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``POST /v1/jobs``."""
    return {"Job": dict(job)}
