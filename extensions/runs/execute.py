"""The run pipeline: check, prepare, execute, record. Coordination only; the rules live in the
modules it calls, in this order (as papermill's ``execute_notebook`` calls its own):

1. :func:`prepare` — read the notebook's parameters and check the given values
   (:mod:`.parameters`); resolve project, user, profile and workspace; take the code version
   (:mod:`.provenance`). Any problem raises a :class:`~.errors.RunError` **before anything
   is created**. Then the run's folder is made, with the notebook as submitted and a record in
   state ``queued``.
2. :func:`execute_prepared` — in this server or inside a Nomad job (the same function): take
   the kernel's environment, execute with papermill (:mod:`.local`), then record outputs, the
   error cell, input data and resources, and the final status.
3. :func:`run` ties them together for ``--where local``; ``--where nomad`` hands the prepared
   run to :mod:`.nomad`, which submits it as a batch job whose task calls step 2.

:func:`rerun` repeats a recorded run: the notebook copy kept in the record's folder, the same
parameters, project, profile and kernel. :func:`reconcile` finds runs whose executor vanished.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat

from hub_config.model import Profile, WorkbenchConfig
from hub_config.storage import StorageLayout, default_data_dir

from . import local, outputs, provenance
from .errors import RunError, RunRefused
from .parameters import check_parameters, declared_parameters
from .progress import Sink, fan_out, file_sink
from .records import (
    EXECUTED,
    LOCK,
    NOTEBOOK,
    PROGRESS,
    CodeVersion,
    Environment,
    ErrorCell,
    InputData,
    NotebookInfo,
    Outputs,
    Resources,
    RunRecord,
    RunStore,
    new_run_id,
    now_iso,
    write_atomic,
)

Where = Literal["local", "nomad"]
ConfigLoader = Callable[[], WorkbenchConfig]


def _default_config() -> WorkbenchConfig:
    from hub_config.loader import cached_config

    return cached_config()


@dataclass(frozen=True)
class RunRequest:
    notebook: Path
    parameters: Mapping[str, Any] = field(default_factory=dict)
    text_parameters: frozenset[str] = frozenset()  # names given as text on the command line
    project: str | None = None
    profile: str | None = None
    where: Where = "local"
    kernel: str | None = None
    workspace: Path | None = None
    cwd: Path | None = None
    user: str | None = None
    rerun_of: str | None = None
    source: str | None = None  # a re-run: where the original notebook was


@dataclass(frozen=True)
class Prepared:
    store: RunStore
    record: RunRecord
    profile: Profile | None
    datasets: tuple[Any, ...] = ()

    @property
    def folder(self) -> Path:
        return self.store.folder(self.record.id)


@dataclass(frozen=True)
class Context:
    project: str
    user: str
    workspace: Path
    profile: Profile | None
    resources: Resources
    datasets: tuple[Any, ...] = ()


# 1. Prepare -----------------------------------------------------------------------------------
def resolve_context(
    request: RunRequest, config: ConfigLoader = _default_config,
    environ: Mapping[str, str] | None = None, today: dt.date | None = None,
) -> Context:
    """Project, user, profile and workspace of a run, or a RunRefused saying what to pass."""
    from spawners.selection import SelectionRefused, resolve_selection

    env = os.environ if environ is None else environ
    project = request.project or env.get("WORKBENCH_PROJECT")
    if not project:
        raise RunRefused("Which project is this run for? Pass --project (servers set "
                         "WORKBENCH_PROJECT for the project they were started for).",
                         reason="no_project", status=400)
    user = request.user or env.get("JUPYTERHUB_USER") or getpass.getuser()
    server_profile = env.get("WORKBENCH_PROFILE")
    profile: Profile | None = None
    datasets: tuple[Any, ...] = ()
    if request.where == "nomad":
        try:
            selection = resolve_selection(
                config(), user, {"project": project, "profile": request.profile or server_profile},
                today or dt.date.today(),
            )
        except SelectionRefused as refusal:
            raise RunRefused(refusal.message, reason=refusal.reason) from None
        profile, datasets = selection.profile, selection.datasets
    else:
        if request.profile and server_profile and request.profile != server_profile:
            raise RunRefused(
                f"A local run uses this server's own resources (profile {server_profile!r}). "
                f"To run with the profile {request.profile!r}, use --where nomad.",
                reason="profile_mismatch", status=400,
            )
        slug = request.profile or server_profile
        if slug:
            try:
                profile = config().profile(slug)
            except Exception:  # noqa: BLE001 - no readable YAML in this server: use its env
                profile = None
    resources = _resources(profile, request.profile or server_profile, env)
    workspace = _workspace(request.workspace, project)
    return Context(project, user, workspace, profile, resources, datasets)


def _resources(profile: Profile | None, slug: str | None, env: Mapping[str, str]) -> Resources:
    if profile is not None:
        return Resources(profile=profile.slug, cpu=profile.cpu, memory=profile.memory, gpus=profile.gpus)

    def number(name: str) -> float | None:
        try:
            return float(env[name])
        except (KeyError, ValueError):
            return None

    memory = number("WORKBENCH_MEM_LIMIT")
    return Resources(profile=slug, cpu=number("WORKBENCH_CPU_LIMIT"),
                     memory=int(memory) if memory is not None else None,
                     gpus=int(number("WORKBENCH_GPUS") or 0))


def _workspace(explicit: Path | None, project: str) -> Path:
    if explicit is not None:
        if not explicit.is_dir():
            raise RunRefused(f"The workspace {explicit} does not exist.", reason="no_workspace")
        return explicit
    candidates = [Path.home() / "projects" / project, StorageLayout(default_data_dir()).project_dir(project)]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise RunRefused(
        f"No workspace for project {project!r} here (looked for "
        + " and ".join(str(c) for c in candidates) + "). Pass --workspace.",
        reason="no_workspace",
    )


@dataclass(frozen=True)
class Checked:
    """A request that passed every check; nothing exists on disk yet."""

    request: RunRequest
    notebook: Path
    values: dict[str, Any]
    effective: dict[str, Any]
    kernel: str
    context: Context
    source: str
    cwd: Path
    code: dict[str, Any]


def check(
    request: RunRequest, config: ConfigLoader = _default_config,
    environ: Mapping[str, str] | None = None,
) -> Checked:
    """Every check a run needs before anything is created (raises a RunError)."""
    notebook = request.notebook
    if not notebook.is_file():
        raise RunError(f"No notebook at {notebook}.", reason="no_notebook", status=404)
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several kinds
        raise RunError(f"{notebook} is not a readable notebook: {exc}", reason="bad_notebook") from None
    declared = declared_parameters(notebook)
    checked = check_parameters(declared, request.parameters, as_text=request.text_parameters,
                               notebook=str(request.source or notebook))
    kernel = request.kernel or (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    if request.where == "local":
        try:
            provenance.kernel_launch(kernel)
        except Exception:  # noqa: BLE001 - jupyter_client's NoSuchKernel and friends
            raise RunRefused(f"There is no Jupyter kernel called {kernel!r} here. Pass --kernel.",
                             reason="no_kernel", status=400) from None
    context = resolve_context(request, config, environ)
    source = request.source or str(notebook.resolve())
    cwd = request.cwd or Path(source).parent
    code = provenance.code_version(Path(source))
    return Checked(request, notebook, checked.values, checked.effective, kernel, context, source,
                   cwd, code)


def create(checked: Checked, run_id: str | None = None, **extra: Any) -> Prepared:
    """The run's folder, the notebook as submitted, and the queued record (``extra`` fields)."""
    import papermill

    context = checked.context
    store = RunStore(context.workspace)
    run_id = run_id or new_run_id()
    folder = store.create(run_id)
    shutil.copyfile(checked.notebook, folder / NOTEBOOK)
    record = RunRecord(
        id=run_id, project=context.project, profile=context.resources.profile, user=context.user,
        where=checked.request.where, created=now_iso(),
        notebook=NotebookInfo(source=checked.source, name=Path(checked.source).name,
                              sha256=provenance.sha256_file(folder / NOTEBOOK), kernel=checked.kernel),
        parameters=checked.values, effective_parameters=checked.effective, cwd=str(checked.cwd),
        code=CodeVersion(**checked.code), resources=context.resources,
        rerun_of=checked.request.rerun_of, papermill=papermill.__version__, message="queued",
        **extra,
    )
    store.save(record)
    return Prepared(store, record, context.profile, context.datasets)


def prepare(
    request: RunRequest, config: ConfigLoader = _default_config,
    environ: Mapping[str, str] | None = None, run_id: str | None = None,
) -> Prepared:
    """Check everything, then create the run's folder and its queued record."""
    return create(check(request, config, environ), run_id)


# 2. Execute ------------------------------------------------------------------------------------
def execute_prepared(folder: Path, sink: Sink | None = None) -> RunRecord:
    """Execute a prepared run in this process's machine and complete its record."""
    store = RunStore(folder.parent.parent)
    record = store.load(folder.name)
    record.status, record.started, record.message = "running", now_iso(), "running"
    record.executor = {"host": socket.gethostname(), "pid": os.getpid()}
    if record.nomad is not None and os.environ.get("NOMAD_ALLOC_ID"):
        record.nomad.alloc_id = os.environ["NOMAD_ALLOC_ID"]
    store.save(record)
    try:
        launch = provenance.kernel_launch(record.notebook.kernel)
    except Exception as exc:  # noqa: BLE001 - jupyter_client's NoSuchKernel: recorded
        return _finish(store, record, "failed", f"no kernel {record.notebook.kernel!r} here: {exc}",
                       error=ErrorCell(ename=type(exc).__name__, evalue=str(exc)))
    cwd = Path(record.cwd) if record.cwd and Path(record.cwd).is_dir() else folder
    kernel_env = {**os.environ, "WORKBENCH_RUN_ID": record.id, "WORKBENCH_RUN_DIR": str(folder),
                  "WORKBENCH_PROJECT": record.project}
    # The kernel's package list is read by a second interpreter while the kernel starts and
    # runs (it is the kernel's environment at the start that counts): ~0.3 s off every run.
    with ThreadPoolExecutor(1, thread_name_prefix="run-environment") as pool:
        probe = pool.submit(provenance.environment_for, launch)
        execution = local.execute(
            folder / NOTEBOOK, folder / EXECUTED, record.parameters, kernel_name=record.notebook.kernel,
            cwd=cwd, run_id=record.id, sink=fan_out(sink, file_sink(folder / PROGRESS)),
            kernel_env=kernel_env,
        )
        try:
            env = probe.result()
        except Exception as exc:  # noqa: BLE001 - recorded: a run without its environment
            env, environment_problem = None, f"{type(exc).__name__}: {exc}"
        else:
            environment_problem = ""
    if env is not None:
        record.environment = Environment(**env)
        write_atomic(folder / LOCK, provenance.lock_text(env["python"] or "", env["platform"] or "",
                                                         env["packages"]))
    workspace = store.workspace
    executed = nbformat.read(str(folder / EXECUTED), as_version=4) if (folder / EXECUTED).is_file() else None
    if executed is not None:
        record.outputs = Outputs(**outputs.notebook_outputs(executed))
    literal = {k: v for k, v in record.effective_parameters.items()
               if not (isinstance(v, dict) and set(v) == {"expression"})}
    inputs = provenance.parameter_inputs(literal, cwd, workspace)
    inputs += provenance.sample_inputs(execution.opened, workspace)
    record.inputs = [InputData(**i) for i in inputs]
    wall = execution.ended - execution.started
    resources = record.resources
    resources.wall_seconds = round(wall, 3)
    resources.kernel_cpu_seconds = execution.kernel_cpu_seconds
    resources.kernel_peak_rss = execution.kernel_peak_rss
    if resources.cpu is not None:
        resources.cpu_core_hours = round(resources.cpu * wall / 3600, 6)
    resources.gpu_hours = round(resources.gpus * wall / 3600, 6)
    if execution.ok and environment_problem:
        return _finish(store, record, "failed", "the notebook ran, but the kernel's environment "
                       f"could not be recorded ({environment_problem}), so the run is not reproducible")
    if execution.ok:
        return _finish(store, record, "succeeded", f"succeeded in {wall:.1f} s")
    error = outputs.error_cell(executed) if executed is not None else None
    if error is None and execution.failure is not None:
        error = {**execution.failure, "cell": None}
    cell = f" in cell {error['cell']}" if error and error.get("cell") is not None else ""
    what = f"{error['ename']}: {error['evalue']}" if error else "execution failed"
    return _finish(store, record, "failed", f"failed{cell}: {what}"[:500],
                   error=ErrorCell(**error) if error else None)


def _finish(store: RunStore, record: RunRecord, status: str, message: str,
            error: ErrorCell | None = None) -> RunRecord:
    record.status, record.message, record.ended = status, message, now_iso()  # type: ignore[assignment]
    record.error = error
    store.save(record)
    return record


# 3. Run, re-run, reconcile ------------------------------------------------------------------------
def run(
    request: RunRequest, sink: Sink | None = None, config: ConfigLoader = _default_config,
    nomad: Any = None,
) -> RunRecord:
    """Check, prepare and execute (here, or as a Nomad batch job through ``nomad``)."""
    if request.where == "nomad":
        from .nomad import NomadRuns, run_on_nomad

        runs = nomad or NomadRuns.from_env(config())
        return run_on_nomad(request, runs, sink=sink, config=config)
    prepared = prepare(request, config)
    return execute_prepared(prepared.folder, sink)


def rerun_request(record: RunRecord, store: RunStore, where: Where | None = None) -> RunRequest:
    """The request that repeats ``record``: its notebook copy, parameters, project, profile."""
    return RunRequest(
        notebook=store.folder(record.id) / NOTEBOOK, parameters=record.parameters,
        project=record.project, profile=record.profile, where=where or record.where,
        kernel=record.notebook.kernel, workspace=store.workspace,
        cwd=Path(record.cwd) if record.cwd else None, user=None, rerun_of=record.id,
        source=record.notebook.source,
    )


def rerun(store: RunStore, run_id: str, *, where: Where | None = None, sink: Sink | None = None,
          config: ConfigLoader = _default_config, nomad: Any = None) -> RunRecord:
    record = store.load(run_id)
    return run(rerun_request(record, store, where), sink=sink, config=config, nomad=nomad)


def reconcile(store: RunStore, *, host: str | None = None) -> list[str]:
    """Mark local runs whose executing process is gone as ``lost``; returns their ids.

    Only runs executed on this host are judged (a pid means nothing elsewhere); Nomad runs are
    settled from Nomad's side by :func:`extensions.runs.nomad.collect`.
    """
    import psutil

    host = host or socket.gethostname()
    lost = []
    for record in store.records():
        if record.finished or record.where != "local" or not record.executor:
            continue
        if record.executor.get("host") != host:
            continue
        pid = record.executor.get("pid")
        if isinstance(pid, int) and psutil.pid_exists(pid):
            continue
        record.status, record.ended = "lost", now_iso()
        record.message = "the process executing this run ended before it finished (lost)"
        store.save(record)
        lost.append(record.id)
    return lost
