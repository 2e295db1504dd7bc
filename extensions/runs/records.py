"""Run records: the model, where they live, and comparing two of them.

Every run has a folder in the project workspace, visible to every member of the project::

    <workspace>/runs/<run id>/
        record.json        the record (this module's RunRecord), rewritten atomically
        notebook.ipynb     the notebook exactly as submitted (re-runs execute this copy)
        executed.ipynb     the executed notebook (saved after every cell while running)
        environment.lock   the kernel's package list the environment hash is taken over
        progress.json      cell n of m, while running

Run ids sort by creation time (``20250611-142233-3f9a1c``) and are valid Nomad job id parts.
A record moves ``queued -> running -> succeeded | failed``; a run whose executor vanished is
found by :func:`extensions.runs.execute.reconcile` and marked ``lost``. Whoever executes the
notebook (this server, or the Nomad job) owns ``record.json`` while it runs; the submitter only
writes it before the job starts and after it has ended.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import RunNotFound

SCHEMA_VERSION = 1
RECORD = "record.json"
NOTEBOOK = "notebook.ipynb"
EXECUTED = "executed.ipynb"
LOCK = "environment.lock"
PROGRESS = "progress.json"

Status = Literal["queued", "running", "succeeded", "failed", "lost"]
TERMINAL = frozenset({"succeeded", "failed", "lost"})


class _Model(BaseModel):
    # Newer writers may add fields: an older reader keeps working and ignores them.
    model_config = ConfigDict(extra="ignore")


class NotebookInfo(_Model):
    source: str = Field(description="Where the notebook was run from (as given).")
    name: str
    sha256: str = Field(description="Of the notebook as submitted, before parameters.")
    kernel: str


class CodeVersion(_Model):
    repo: str | None = None
    commit: str | None = None
    dirty: bool = False
    changes_sha256: str | None = None
    changed_files: list[str] = Field(default_factory=list)
    remote: str | None = None
    path_in_repo: str | None = None
    note: str | None = None


class KernelInfo(_Model):
    name: str | None = None
    display_name: str | None = None
    language: str | None = None
    executable: str | None = None


class Environment(_Model):
    sha256: str
    python: str | None = None
    platform: str | None = None
    packages: list[str] = Field(default_factory=list)
    kernel: KernelInfo = Field(default_factory=KernelInfo)
    note: str | None = None


class InputData(_Model):
    kind: Literal["parameter", "sample"]
    name: str
    path: str
    sha256: str
    files: int = 0
    bytes: int = 0
    method: Literal["sha256", "manifest", "listing"] = Field(
        "sha256", description="content hash; the pull's manifest (per-file sha256); or, beyond "
        "the size limit, a listing of relative paths, sizes and modification times")


class CellOutput(_Model):
    cell: int
    sha256: str
    outputs: int = 0


class Outputs(_Model):
    sha256: str
    values: dict[str, Any] = Field(default_factory=dict)
    cells: list[CellOutput] = Field(default_factory=list)


class ErrorCell(_Model):
    cell: int | None = None
    execution_count: int | None = None
    ename: str
    evalue: str = ""
    source: str = ""
    traceback: list[str] = Field(default_factory=list)


class Resources(_Model):
    profile: str | None = None
    cpu: float | None = Field(None, description="Cores the profile guarantees.")
    memory: int | None = Field(None, description="Bytes the profile allows.")
    gpus: int = 0
    wall_seconds: float | None = None
    kernel_cpu_seconds: float | None = None
    kernel_peak_rss: int | None = Field(None, description="Bytes (Linux VmHWM of the kernel).")
    cpu_core_hours: float | None = Field(None, description="cpu x wall time, as quotas count.")
    gpu_hours: float | None = None


class NomadInfo(_Model):
    job_id: str
    namespace: str
    eval_id: str | None = None
    alloc_id: str | None = None
    node: str | None = None
    exit_code: int | None = None


class RunRecord(_Model):
    schema_version: int = SCHEMA_VERSION
    id: str
    project: str
    profile: str | None = None
    user: str
    where: Literal["local", "nomad"]
    status: Status = "queued"
    message: str = ""
    created: str
    started: str | None = None
    ended: str | None = None
    notebook: NotebookInfo
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Values passed (injected into the notebook)."
    )
    effective_parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Every declared parameter: the value passed or the notebook's default.",
    )
    cwd: str | None = None
    code: CodeVersion = Field(default_factory=CodeVersion)
    environment: Environment | None = None
    inputs: list[InputData] = Field(default_factory=list)
    outputs: Outputs | None = None
    error: ErrorCell | None = None
    resources: Resources = Field(default_factory=Resources)
    nomad: NomadInfo | None = None
    executor: dict[str, Any] | None = Field(None, description="host and pid executing it")
    quota_allocation: str | None = None
    quota: str | None = Field(None, description="How a Nomad run was charged (or that it was not).")
    rerun_of: str | None = None
    papermill: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def reproducibility(self) -> dict[str, Any]:
        """What two runs of the same work must share: same notebook, parameters, code,
        environment, inputs, and then outputs, status and error cell. Not ids, times, place."""
        return {
            "notebook": self.notebook.sha256,
            "kernel": self.notebook.kernel,
            "parameters": self.parameters,
            "effective_parameters": self.effective_parameters,
            "code": {"commit": self.code.commit, "changes_sha256": self.code.changes_sha256},
            "environment": self.environment.sha256 if self.environment else None,
            "inputs": sorted((i.kind, i.name, i.path, i.sha256) for i in self.inputs),
            "status": self.status,
            "outputs": self.outputs.model_dump() if self.outputs else None,
            "error": (self.error.cell, self.error.ename, self.error.evalue) if self.error else None,
        }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _instant(text: str) -> dt.datetime:
    """A record's ISO timestamp as an aware time (a naive one is taken as UTC); an
    unreadable one sorts first rather than hiding the record."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o664)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunStore:
    """The runs of one project workspace."""

    workspace: Path

    @property
    def root(self) -> Path:
        return self.workspace / "runs"

    def folder(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunNotFound(f"{run_id!r} is not a run id")
        return self.root / run_id

    def create(self, run_id: str) -> Path:
        """Make the run's folder; an existing one is an error (ids never repeat)."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.folder(run_id)
        folder.mkdir(mode=0o775)
        return folder

    def save(self, record: RunRecord) -> None:
        write_atomic(self.folder(record.id) / RECORD, record.model_dump_json(indent=2) + "\n")

    def load(self, run_id: str) -> RunRecord:
        path = self.folder(self.resolve(run_id)) / RECORD
        try:
            return RunRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} in {self.root}") from None

    def resolve(self, run_id: str) -> str:
        """A full id, or a unique prefix/suffix of one (``3f9a1c`` is enough)."""
        if (self.root / run_id / RECORD).is_file():
            return run_id
        matches = [i for i in self.ids() if i.startswith(run_id) or i.endswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        raise RunNotFound(f"{run_id!r} matches several runs: {', '.join(matches[:5])}")

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / RECORD).is_file())

    def records(self) -> Iterator[RunRecord]:
        """Oldest first, by creation time to the millisecond (ids name the second only, so
        two runs made in one second would otherwise come in the order of their random
        suffixes); unreadable records are skipped (one bad file must not hide the rest)."""
        found = []
        for run_id in self.ids():
            try:
                found.append(RunRecord.model_validate_json((self.root / run_id / RECORD).read_text("utf-8")))
            except (OSError, ValueError):
                continue
        yield from sorted(found, key=lambda record: (_instant(record.created), record.id))


# Comparing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    name: str
    a: Any
    b: Any

    @property
    def same(self) -> bool:
        return json.dumps(self.a, sort_keys=True) == json.dumps(self.b, sort_keys=True)


@dataclass(frozen=True)
class Comparison:
    a: RunRecord
    b: RunRecord
    parameters: list[Row]
    outputs: list[Row]
    provenance: list[Row]
    cells_differing: list[int]
    packages_added: list[str]
    packages_removed: list[str]

    @property
    def same_outputs(self) -> bool:
        return all(r.same for r in self.outputs) and not self.cells_differing


_ABSENT = "(absent)"


def compare(a: RunRecord, b: RunRecord) -> Comparison:
    """Parameters and outputs side by side, then what differs in code, environment and data."""
    names = list(dict.fromkeys([*a.effective_parameters, *b.effective_parameters]))
    parameters = [Row(n, a.effective_parameters.get(n, _ABSENT), b.effective_parameters.get(n, _ABSENT))
                  for n in names]
    values_a = a.outputs.values if a.outputs else {}
    values_b = b.outputs.values if b.outputs else {}
    outputs = [Row(n, values_a.get(n, _ABSENT), values_b.get(n, _ABSENT))
               for n in dict.fromkeys([*values_a, *values_b])]
    cells_a = {c.cell: c.sha256 for c in (a.outputs.cells if a.outputs else [])}
    cells_b = {c.cell: c.sha256 for c in (b.outputs.cells if b.outputs else [])}
    differing = sorted(i for i in set(cells_a) | set(cells_b) if cells_a.get(i) != cells_b.get(i))

    def inputs(record: RunRecord) -> dict[str, str]:
        return {f"{i.kind} {i.path}": i.sha256[:12] for i in record.inputs}

    env_a, env_b = a.environment, b.environment
    provenance = [
        Row("status", a.status, b.status),
        Row("notebook sha256", a.notebook.sha256[:12], b.notebook.sha256[:12]),
        Row("code commit", a.code.commit, b.code.commit),
        Row("uncommitted changes", a.code.changes_sha256, b.code.changes_sha256),
        Row("environment", env_a.sha256[:12] if env_a else None, env_b.sha256[:12] if env_b else None),
        Row("python", env_a.python if env_a else None, env_b.python if env_b else None),
        Row("inputs", inputs(a), inputs(b)),
        Row("where", a.where, b.where),
        Row("profile", a.profile, b.profile),
        Row("wall seconds", a.resources.wall_seconds, b.resources.wall_seconds),
        Row("error", f"{a.error.ename} in cell {a.error.cell}" if a.error else None,
            f"{b.error.ename} in cell {b.error.cell}" if b.error else None),
    ]
    packages_a = set(env_a.packages if env_a else [])
    packages_b = set(env_b.packages if env_b else [])
    return Comparison(
        a, b, parameters, outputs, provenance, differing,
        packages_added=sorted(packages_b - packages_a),
        packages_removed=sorted(packages_a - packages_b),
    )
