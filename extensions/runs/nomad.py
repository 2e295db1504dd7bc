"""A run as a Nomad batch job with the profile's resources: build, submit, follow, collect.

The job (:func:`build_run_job`, pure, tested against literal dicts) reuses the Nomad spawner's
builders (:mod:`spawners.nomad.objects`): the same placement rules per profile (driver, image,
datacenters, node pool, namespace, priority, constraints, GPU model and memory), the same
``Resources`` from the profile, the same volume rules (the project workspace; approved
datasets read-only; never the home, which a CSI single-node-writer volume would refuse to a
second node), and the same token handling (a Nomad Variable rendered by a template, never in
``Env``). It differs where a batch job must: ``Type: batch``, no ports or service, and a task
that runs ``python -m extensions.runs execute <run folder>``, i.e.
:func:`extensions.runs.execute.execute_prepared`, the code a local run uses.

:func:`run_on_nomad` coordinates: check the request (nothing is created on a refusal),
reserve the quota, create the run's folder and queued record (with the job id, saved before
the job is registered), register, follow the evaluation (an infeasible placement fails at
once with the spawner's wording; a busy cluster keeps the job queued, saying so), follow the
allocation with blocking queries while relaying ``progress.json`` as cell n of m, answer the
quota service's stop request, and on the end settle the quota and complete the record. The
executing task owns ``record.json`` while it runs; this side writes it only before the job is
registered and after the allocation is terminal (:func:`collect`, also used to settle runs
whose submitter went away).

Settings come from the environment (read when a run starts, never at import): Nomad's own
``NOMAD_ADDR``, ``NOMAD_TOKEN``, ``NOMAD_NAMESPACE``, ``NOMAD_REGION``, ``NOMAD_CACERT``...,
and ``WORKBENCH_RUNS_DRIVER`` (docker), ``WORKBENCH_RUNS_IMAGE``, ``WORKBENCH_RUNS_DATACENTERS``
(comma-separated), ``WORKBENCH_RUNS_COMMAND`` (the executor command, shell-quoted),
``WORKBENCH_RUNS_PROJECT_VOLUME`` and ``WORKBENCH_RUNS_DATASET_VOLUME`` (JSON volume rules as
the spawner's ``project_volume``/``dataset_volume``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hub_config.model import Dataset, Profile, Project, WorkbenchConfig
from spawners.nomad import events, objects, slugs
from spawners.nomad.client import (
    NomadClient,
    NomadConnection,
    NomadError,
    NomadNotFound,
)
from spawners.nomad.placement import explain

from .errors import NomadRunFailed, RunError
from .progress import Progress, Sink, read_progress
from .quota import NoQuota, RunClaim, RunQuota, quota_from_env
from .records import PROGRESS, NomadInfo, RunRecord, RunStore, now_iso

GROUP = "run"
TASK = "notebook"
JOB_PREFIX = "wbrun"
TERMINAL_CLIENT = frozenset({"complete", "failed", "lost"})
EXECUTOR = ("python", "-m", "extensions.runs", "execute")


@dataclass(frozen=True)
class RunJobSettings:
    """Cluster-wide choices for run jobs; ``job`` is the spawner's :class:`JobSettings`."""

    job: objects.JobSettings = field(default_factory=objects.JobSettings)
    command: tuple[str, ...] = EXECUTOR
    job_prefix: str = JOB_PREFIX
    forward_env: tuple[str, ...] = ("WORKBENCH_GATEWAY_URL",)
    token_env: str = "JUPYTERHUB_API_TOKEN"

    def __post_init__(self) -> None:
        if not slugs.SAFE_PART.match(self.job_prefix) or self.job_prefix == self.job.job_prefix:
            raise ValueError(
                f"run job prefix {self.job_prefix!r} must be a safe slug and differ from the "
                f"spawner's {self.job.job_prefix!r} (its orphan reconciler owns those jobs)"
            )


@dataclass(frozen=True)
class RunJobSpec:
    run_id: str
    user: str
    project: Project
    profile: Profile
    run_dir: str  # the run's folder as this machine sees it
    datasets: tuple[Dataset, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def run_job_id(settings: RunJobSettings, project: str, run_id: str) -> str:
    return slugs.multi_slug([settings.job_prefix, project, run_id])


def task_run_dir(spec: RunJobSpec, settings: RunJobSettings, driver: str) -> str:
    """Where the task finds the run's folder: under the mounted workspace, else the same path
    (``raw_exec`` on nodes that share the workspace's file system at the same place)."""
    rule = settings.job.project_workspace
    if rule is not None and driver in objects.MOUNTING_DRIVERS:
        destination = rule.destination.format_map({
            "user": slugs.safe_slug(spec.user), "server": f"run-{spec.run_id}",
            "project": spec.project.id, "hub": settings.job.hub_id, "dataset": "",
        })
        return f"{destination.rstrip('/')}/runs/{spec.run_id}"
    return spec.run_dir


def run_env(spec: RunJobSpec) -> dict[str, str]:
    """What the task's notebook sees: the names a workbench server gets, plus the run id."""
    profile = spec.profile
    cpu = str(int(profile.cpu)) if float(profile.cpu).is_integer() else str(profile.cpu)
    return {
        **spec.env,
        "WORKBENCH_PROJECT": spec.project.id,
        "WORKBENCH_PROJECT_TITLE": spec.project.title,
        "WORKBENCH_PROFILE": profile.slug,
        "WORKBENCH_CPU_LIMIT": cpu,
        "WORKBENCH_MEM_LIMIT": str(profile.memory),
        "WORKBENCH_GPUS": str(profile.gpus),
        "WORKBENCH_DATASETS": ",".join(d.id for d in spec.datasets),
        "WORKBENCH_RUN_ID": spec.run_id,
        "JUPYTERHUB_USER": spec.user,
    }


def build_run_job(
    spec: RunJobSpec, settings: RunJobSettings, secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``Job`` of ``POST /v1/jobs`` for one run (pure)."""
    job_settings = replace(settings.job, home=None)
    where = objects.placement(spec.profile, job_settings)
    job_id = run_job_id(settings, spec.project.id, spec.run_id)
    env = run_env(spec)
    objects.check_no_interpolation(env)
    run_dir = task_run_dir(spec, settings, where.driver)
    objects.check_no_interpolation({"run_dir": run_dir})
    config = objects.task_config(where.driver, where.image,
                                 replace(job_settings, command=(*settings.command, run_dir)))
    config.pop("ports", None)  # a batch run listens on nothing
    server_spec = objects.ServerSpec(
        username=spec.user, server_name=f"run-{spec.run_id}", project=spec.project,
        profile=spec.profile, datasets=spec.datasets,
    )
    group_volumes, mounts = objects.volumes(server_spec, job_settings, where.driver)
    task: dict[str, Any] = {
        "Name": TASK,
        "Driver": where.driver,
        "Config": config,
        "Env": env,
        "Resources": objects.resources(spec.profile, job_settings),
        "KillSignal": "SIGTERM",
        "KillTimeout": int(job_settings.kill_timeout_s * objects.SECOND_NS),
        "LogConfig": {"MaxFiles": 3, "MaxFileSizeMB": 10},
    }
    if secrets:
        task["Templates"] = [objects.secret_template(job_id, list(secrets))]
    if mounts:
        task["VolumeMounts"] = mounts
    if job_settings.task_user:
        task["User"] = job_settings.task_user
    group: dict[str, Any] = {
        "Name": GROUP,
        "Count": 1,
        # A notebook is not retried behind the researcher's back: a failure is a result.
        "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 300 * objects.SECOND_NS,
                          "Delay": 15 * objects.SECOND_NS},
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "Tasks": [task],
    }
    if group_volumes:
        group["Volumes"] = group_volumes
    constraints = [{"LTarget": a, "Operand": o, "RTarget": v} for a, o, v in job_settings.constraints]
    constraints += [{"LTarget": c.attribute, "Operand": c.operator, "RTarget": c.value}
                    for c in spec.profile.nomad.constraints]
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": job_id,
        "Namespace": where.namespace,
        "Type": "batch",
        "Datacenters": list(where.datacenters),
        "Meta": {
            f"{objects.META_PREFIX}hub": job_settings.hub_id,
            f"{objects.META_PREFIX}run": spec.run_id,
            f"{objects.META_PREFIX}user": spec.user,
            f"{objects.META_PREFIX}project": spec.project.id,
            f"{objects.META_PREFIX}profile": spec.profile.slug,
        },
        "TaskGroups": [group],
    }
    if job_settings.region:
        job["Region"] = job_settings.region
    if where.node_pool:
        job["NodePool"] = where.node_pool
    if where.priority is not None:
        job["Priority"] = where.priority
    if constraints:
        job["Constraints"] = constraints
    return job


def settings_from_env(environ: Mapping[str, str]) -> RunJobSettings:
    job = objects.JobSettings()
    driver = environ.get("WORKBENCH_RUNS_DRIVER")
    if driver:
        if driver not in {"docker", "raw_exec", "exec"}:
            raise ValueError(f"WORKBENCH_RUNS_DRIVER={driver!r}: use docker, exec or raw_exec")
        job = replace(job, driver=driver)  # type: ignore[arg-type]
    if environ.get("WORKBENCH_RUNS_IMAGE"):
        job = replace(job, image=environ["WORKBENCH_RUNS_IMAGE"])
    if environ.get("WORKBENCH_RUNS_DATACENTERS"):
        job = replace(job, datacenters=tuple(
            d.strip() for d in environ["WORKBENCH_RUNS_DATACENTERS"].split(",") if d.strip()))
    for env_name, attribute in (("WORKBENCH_RUNS_PROJECT_VOLUME", "project_workspace"),
                                ("WORKBENCH_RUNS_DATASET_VOLUME", "dataset")):
        if environ.get(env_name):
            job = replace(job, **{attribute: objects.VolumeRule(**json.loads(environ[env_name]))})
    command = tuple(shlex.split(environ["WORKBENCH_RUNS_COMMAND"])) if environ.get(
        "WORKBENCH_RUNS_COMMAND") else EXECUTOR
    return RunJobSettings(job=job, command=command)


# Following a job ------------------------------------------------------------------------------
def _epoch(text: str | None) -> float | None:
    """Nomad's RFC 3339 times (nanoseconds) as epoch seconds."""
    if not text or text.startswith("0001-"):
        return None
    head, _, rest = text.partition(".")
    zone = ""
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        head += "." + digits[:6]
    else:
        head, zone = text[:19], text[19:]
    try:
        return dt.datetime.fromisoformat(head + (zone.replace("Z", "+00:00") or "+00:00")).timestamp()
    except ValueError:
        return None


def _exit_code(alloc: Mapping[str, Any]) -> int | None:
    for event in reversed(((alloc.get("TaskStates") or {}).get(TASK) or {}).get("Events") or []):
        if event.get("Type") == "Terminated" and event.get("ExitCode") is not None:
            return int(event["ExitCode"])
    return None


@dataclass
class NomadRuns:
    """How this workbench reaches Nomad for runs, and how runs are charged."""

    connection: NomadConnection
    settings: RunJobSettings = field(default_factory=RunJobSettings)
    quota: RunQuota = field(default_factory=NoQuota)
    wait: float = 30.0  # blocking-query wait
    progress_every: float = 0.5
    heartbeat_every: float = 60.0

    @classmethod
    def from_env(cls, config: WorkbenchConfig, environ: Mapping[str, str] | None = None) -> NomadRuns:
        environ = os.environ if environ is None else environ
        return cls(NomadConnection.from_env(environ), settings_from_env(environ),
                   quota_from_env(config, environ))

    def client(self) -> NomadClient:
        return NomadClient(self.connection)


def run_on_nomad(request: Any, runs: NomadRuns, *, sink: Sink | None = None,
                 config: Any = None) -> RunRecord:
    """Check, reserve, submit, follow and collect one run (blocking; for the CLI)."""
    from .execute import _default_config, check

    loader = config or _default_config
    checked = check(request, loader)  # every refusal before anything is reserved or created
    if checked.context.profile is None:
        raise RunError("A run on Nomad needs a compute profile: pass --profile.", reason="no_profile")
    project = loader().project(checked.context.project)
    return asyncio.run(_reserve_and_submit(checked, project, runs, sink))


async def _reserve_and_submit(checked: Any, project: Project, runs: NomadRuns,
                              sink: Sink | None) -> RunRecord:
    from .execute import create
    from .records import new_run_id

    context = checked.context
    run_id = new_run_id()
    allocation = await runs.quota.reserve(RunClaim(context.project, context.user, run_id, context.profile))
    settings = runs.settings
    try:
        namespace = objects.placement(context.profile, settings.job).namespace
        job_id = run_job_id(settings, context.project, run_id)
        prepared = create(checked, run_id, quota_allocation=allocation, quota=runs.quota.description,
                          nomad=NomadInfo(job_id=job_id, namespace=namespace))
        forwarded = {k: os.environ[k] for k in settings.forward_env if os.environ.get(k)}
        secrets = {}
        token = os.environ.get(settings.token_env)
        if token and settings.job.token_delivery == "variable":
            secrets[settings.token_env] = token
        elif token:
            forwarded[settings.token_env] = token
        spec = RunJobSpec(run_id, context.user, project, context.profile, str(prepared.folder),
                          tuple(context.datasets), forwarded)
        job = build_run_job(spec, settings, secrets)
    except BaseException:
        if allocation:
            await runs.quota.ended(allocation, "the run could not be prepared")
        raise
    return await submit_and_follow(prepared.store, prepared.record, job, runs, sink, secrets)


async def submit_and_follow(
    store: RunStore, record: RunRecord, job: Mapping[str, Any], runs: NomadRuns,
    sink: Sink | None = None, secrets: Mapping[str, str] | None = None,
) -> RunRecord:
    job_id, namespace = str(job["ID"]), str(job["Namespace"])
    async with runs.client() as client:
        try:
            if secrets:
                await client.put_variable(objects.variable_path(job_id), secrets, namespace=namespace)
            registered = await client.register_job(job)
        except NomadError as exc:
            await _cleanup(client, job_id, namespace, bool(secrets))
            return await _settle(store, record, runs, None, f"Nomad refused the run: {exc}")
        eval_id = str(registered.get("EvalID") or "")
        if sink:
            sink(Progress(record.id, 0, 0, "starting", f"submitted to Nomad as job {job_id}"))
        try:
            refusal = await _placement(client, record, eval_id, int(registered.get("EvalCreateIndex") or 0),
                                       namespace, runs, sink)
            if refusal is not None:
                await _cleanup(client, job_id, namespace, bool(secrets))
                return await _settle(store, record, runs, None, refusal)
            alloc = await _follow(client, store, record, job_id, namespace, runs, sink)
        except NomadError as exc:
            # Nomad went away while we followed: the job may still run; collect() settles it later.
            raise NomadRunFailed(
                f"Lost contact with Nomad while following run {record.id} ({exc}). The job may "
                f"still be running: 'python -m extensions.runs collect {record.id}' settles it.",
                reason="nomad_unreachable",
            ) from None
        if secrets:
            try:
                await client.delete_variable(objects.variable_path(job_id), namespace=namespace)
            except NomadError:
                pass
    return await _settle(store, record, runs, alloc, None)


async def _placement(client: NomadClient, record: RunRecord, eval_id: str, index: int,
                     namespace: str, runs: NomadRuns, sink: Sink | None) -> str | None:
    """None when placed or queued for capacity; the user's message when it can never run."""
    if not eval_id:
        return None
    while True:
        reply = await client.evaluation(eval_id, namespace=namespace, index=index, wait=runs.wait)
        evaluation = reply.data or {}
        if evaluation.get("Status") not in {"pending", None}:
            break
        if reply.index > index:
            index = reply.index
        else:
            await asyncio.sleep(0.05)
    if evaluation.get("Status") in {"failed", "canceled"}:
        return "Nomad could not schedule the run: " + str(evaluation.get("StatusDescription") or evaluation.get("Status"))
    failed = evaluation.get("FailedTGAllocs") or {}
    if failed:
        failure = explain(failed, profile_name=record.profile or "", queued=True)
        if not failure.busy:
            return failure.message.replace(" The request stays queued in Nomad until capacity frees up.", "")
        if sink:
            sink(Progress(record.id, 0, 0, "starting", failure.message))
    return None


async def _follow(client: NomadClient, store: RunStore, record: RunRecord, job_id: str,
                  namespace: str, runs: NomadRuns, sink: Sink | None) -> Mapping[str, Any]:
    """Blocking queries on the job's allocation until it is terminal; progress relayed."""
    progress_path = store.folder(record.id) / PROGRESS
    relay = asyncio.create_task(_relay_progress(progress_path, runs.progress_every, sink))
    allocation = record.quota_allocation
    started = False
    last_beat = time.monotonic()
    index = 0
    alloc: Mapping[str, Any] = {}
    try:
        while True:
            reply = await client.job_allocations(job_id, namespace=namespace, index=index,
                                                 wait=min(runs.wait, runs.heartbeat_every))
            allocs = [a for a in reply.data or [] if a.get("TaskGroup", GROUP) == GROUP]
            alloc = max(allocs, key=lambda a: a.get("CreateIndex", 0), default={})
            state = ((alloc.get("TaskStates") or {}).get(TASK) or {})
            if allocation and not started and state.get("StartedAt") and _epoch(state.get("StartedAt")):
                started = True
                await runs.quota.started(allocation, _epoch(state["StartedAt"]))
            if alloc.get("ClientStatus") in TERMINAL_CLIENT:
                return alloc
            if allocation and time.monotonic() - last_beat >= runs.heartbeat_every:
                last_beat = time.monotonic()
                stop = await runs.quota.heartbeat(allocation)
                if stop:
                    await client.deregister_job(job_id, namespace=namespace)
                    record.message = f"stopped by the quota service: {stop}"
            if reply.index > index:
                index = reply.index
            else:
                await asyncio.sleep(0.05)
    finally:
        relay.cancel()
        last = read_progress(progress_path)
        if sink and last is not None:
            sink(last)


async def _relay_progress(path: Path, every: float, sink: Sink | None) -> None:
    if sink is None:
        return
    seen: tuple[int, str] | None = None
    while True:
        progress = read_progress(path)
        if progress is not None and (progress.cell, progress.state) != seen:
            seen = (progress.cell, progress.state)
            sink(progress)
        await asyncio.sleep(every)


async def _cleanup(client: NomadClient, job_id: str, namespace: str, had_secrets: bool) -> None:
    try:
        await client.deregister_job(job_id, purge=True, namespace=namespace)
        if had_secrets:
            await client.delete_variable(objects.variable_path(job_id), namespace=namespace)
    except NomadError:
        pass


async def _settle(store: RunStore, record: RunRecord, runs: NomadRuns, alloc: Mapping[str, Any] | None,
            refusal: str | None) -> RunRecord:
    """Complete the record from what the task wrote and what Nomad says; close the quota."""
    current = store.load(record.id)
    if alloc:
        state = ((alloc.get("TaskStates") or {}).get(TASK) or {})
        nomad = current.nomad or NomadInfo(job_id=str(alloc.get("JobID")), namespace=str(alloc.get("Namespace")))
        nomad.alloc_id = str(alloc.get("ID") or "") or nomad.alloc_id
        nomad.eval_id = str(alloc.get("EvalID") or "") or nomad.eval_id
        nomad.node = str(alloc.get("NodeName") or "") or nomad.node
        nomad.exit_code = _exit_code(alloc)
        current.nomad = nomad
        if not current.finished:
            outcome = events.allocation_outcome(alloc, TASK)
            current.status = "failed"
            current.message = (record.message if record.message.startswith("stopped by the quota")
                               else f"the Nomad job ended before the run finished: {outcome.message}")
            current.ended = now_iso()
        ended_at = _epoch(state.get("FinishedAt"))
    else:
        current.status, current.message, current.ended = "failed", refusal or "not run", now_iso()
        ended_at = None
    store.save(current)
    if current.quota_allocation:
        await runs.quota.ended(current.quota_allocation, f"run {current.status}", ended_at)
    if refusal is not None:
        raise NomadRunFailed(refusal + f" (run {current.id} recorded as failed; nothing ran)")
    return current


async def collect(store: RunStore, run_id: str, runs: NomadRuns) -> RunRecord:
    """Settle a Nomad run whose submitter went away: complete it if its job has ended."""
    record = store.load(run_id)
    if record.finished or record.nomad is None:
        return record
    async with runs.client() as client:
        try:
            reply = await client.job_allocations(record.nomad.job_id, namespace=record.nomad.namespace)
        except NomadNotFound:
            return await _lost(store, record, runs)
    allocs = [a for a in reply.data or [] if a.get("TaskGroup", GROUP) == GROUP]
    alloc = max(allocs, key=lambda a: a.get("CreateIndex", 0), default=None)
    if alloc is None or alloc.get("ClientStatus") not in TERMINAL_CLIENT:
        return record
    return await _settle(store, record, runs, alloc, None)


async def _lost(store: RunStore, record: RunRecord, runs: NomadRuns) -> RunRecord:
    record.status, record.ended = "lost", now_iso()
    record.message = "Nomad no longer knows this run's job (garbage-collected or purged)"
    store.save(record)
    if record.quota_allocation:
        await runs.quota.ended(record.quota_allocation, "run lost")
    return record
