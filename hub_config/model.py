"""The workbench's domain, as one typed model.

Projects, their members and approvals, compute profiles, admins, the dataset catalogue and
the archive connection live in one declarative YAML file (see ``workbench.yaml``). Every
part of the workbench (hub, spawners, sample gateway, CLIs) reads it through
:func:`hub_config.loader.load_config`, so a rule such as "this profile is for these projects"
is written once. Nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
]
"""Lower-case ids used in URLs, job names, paths and environment values."""

Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
}


def parse_bytes(value: str | int) -> int:
    """'4G', '512Mi', '2 GB' or a plain integer -> bytes (G means GiB, as Nomad and Docker read it)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size such as '4G', '512M' or '2Gi'")
    number, unit = match.groups()
    unit = (unit or "").lower()
    # JupyterHub's own convention (Spawner.mem_limit): K, M, G, T are binary.
    if unit in {"k", "m", "g", "t"}:
        unit += "i"
    return int(float(number) * _SIZE_FACTORS[unit])


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in the YAML must not silently drop a rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Approval(_Strict):
    reference: str = Field(min_length=1, description="Ethics/DPIA/data-use approval reference.")
    expires: dt.date = Field(description="Last day on which the approval is valid.")

    def valid_on(self, day: dt.date) -> bool:
        return day <= self.expires


class SampleLimits(_Strict):
    """How much a project may pull from the archive (the gateway enforces these)."""

    max_studies_per_pull: int = Field(5, ge=1)
    max_instances_per_pull: int = Field(500, ge=1)
    max_bytes_per_pull: int = Field(parse_bytes("2G"), ge=1)
    max_studies_per_day: int = Field(50, ge=1)
    max_instances_per_day: int | None = Field(
        None, ge=1, description="Images per day over all pulls of the project; None: no daily cap."
    )
    max_bytes_per_day: int | None = Field(
        None, ge=1, description="Bytes per day over all pulls ('20G'); None: no daily cap."
    )

    @field_validator("max_bytes_per_pull", mode="before")
    @classmethod
    def _size(cls, value: str | int) -> int:
        return parse_bytes(value)

    @field_validator("max_bytes_per_day", mode="before")
    @classmethod
    def _daily_size(cls, value: str | int | None) -> int | None:
        return None if value is None else parse_bytes(value)


class ArchiveAccess(_Strict):
    enabled: bool = False
    modalities: list[str] | None = Field(
        None, description="Modalities this project may pull; None means any."
    )
    allow_burned_in_annotation: bool = Field(
        False,
        description="Whether the approval covers images that may carry text in the pixels.",
    )
    limits: SampleLimits = SampleLimits()


class BudgetLimits(_Strict):
    """What a budget caps, shared by project budgets and teaching-session budgets.

    Hours are weighted by the profile's resources: one hour of a server with 8 cores and 1 GPU
    uses 8 CPU-core-hours and 1 GPU-hour. ``None`` means no limit of that kind.
    """

    gpu_hours: float | None = Field(None, ge=0, description="GPU-hours per period.")
    cpu_core_hours: float | None = Field(None, ge=0, description="CPU-core-hours per period.")
    max_concurrent_gpus: int | None = Field(None, ge=0)
    max_concurrent_servers: int | None = Field(None, ge=0)
    per_user_gpu_hours: float | None = Field(None, ge=0)
    per_user_cpu_core_hours: float | None = Field(None, ge=0)
    per_user_max_concurrent_gpus: int | None = Field(None, ge=0)
    per_user_max_concurrent_servers: int | None = Field(None, ge=0)
    warn_at: list[float] = Field(
        default_factory=lambda: [0.8, 0.95],
        description="Fractions of an hours budget at which users are warned (0 < f < 1).",
    )
    grace_minutes: float = Field(
        15.0,
        ge=0,
        description="Minutes servers keep running after an hours budget is used up before the "
        "quota service stops them (0: at once).",
    )
    timezone: str = Field(
        "Europe/Copenhagen",
        description="IANA time zone in which periods start (a month starts at local midnight).",
    )

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value):
            raise ValueError("warn_at takes fractions between 0 and 1, e.g. [0.8, 0.95]")
        return sorted(set(value))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Copenhagen'")
        return value


class Budget(BudgetLimits):
    """Loaned compute of a project per calendar period; enforced by :mod:`services.quota`."""

    period: Literal["month", "week", "quarter"] = "month"


class TeachingBudget(BudgetLimits):
    """Compute of a teaching session: one window instead of a repeating period.

    ``per_user_*`` limits apply per student. Naive datetimes are read in ``timezone``.
    Servers cannot start outside the window; the budget does not reset.
    """

    starts: dt.datetime
    ends: dt.datetime

    @model_validator(mode="after")
    def _window(self) -> TeachingBudget:
        if self.ends <= self.starts:
            raise ValueError("a teaching session must end after it starts")
        return self


class Project(_Strict):
    id: Slug
    title: str = Field(min_length=1)
    department: str | None = None
    members: list[Username] = Field(default_factory=list)
    approval: Approval
    datasets: list[Slug] = Field(default_factory=list)
    archive: ArchiveAccess = ArchiveAccess()
    budget: Budget | None = None

    def approval_valid_on(self, day: dt.date) -> bool:
        return self.approval.valid_on(day)


class NomadConstraint(_Strict):
    """One Nomad constraint, as in a job file: ``attribute operator value``."""

    attribute: str = Field(
        min_length=1,
        description="Node property to test, e.g. '${attr.kernel.name}', '${meta.gpu_class}', "
        "'${node.class}'.",
    )
    operator: Literal[
        "=", "!=", ">", ">=", "<", "<=", "regexp", "set_contains", "set_contains_any",
        "version", "semver", "is_set", "is_not_set", "distinct_hosts", "distinct_property",
    ] = Field("=", description="Nomad constraint operator.")
    value: str = Field("", description="Right-hand side; empty for is_set / is_not_set.")


class GpuPlacement(_Strict):
    """Which GPUs a GPU profile may use (only read when the profile asks for GPUs)."""

    vendor: str = Field("nvidia", min_length=1, description="Device plugin vendor ('nvidia').")
    model: str | None = Field(
        None,
        description="GPU model as the device plugin reports it (${device.model}), e.g. "
        "'NVIDIA H100 80GB HBM3'; None accepts any model.",
    )
    min_memory: int | None = Field(
        None,
        description="Least GPU memory per device ('16G', '40Gi'); None accepts any size.",
    )

    @field_validator("min_memory", mode="before")
    @classmethod
    def _memory(cls, value: str | int | None) -> int | None:
        return None if value is None else parse_bytes(value)


class NomadPlacement(_Strict):
    """Where and how a profile's servers run on Nomad. Empty fields use the spawner's defaults."""

    image: str | None = Field(
        None,
        description="Container image for the docker driver, e.g. "
        "'quay.io/jupyter/scipy-notebook:2025-06-02'; None: the spawner's default image.",
    )
    driver: Literal["docker", "raw_exec", "exec"] | None = Field(
        None,
        description="Task driver. 'docker' isolates servers and mounts volumes; 'exec' is an "
        "isolated chroot; 'raw_exec' runs unisolated on the node (development only).",
    )
    datacenters: list[str] = Field(
        default_factory=list, description="Datacenters the server may run in; empty: the spawner's."
    )
    node_pool: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="Nomad node pool (Nomad 1.6+), e.g. 'gpu'; None: the spawner's.",
    )
    namespace: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]{1,128}$",
        description="Nomad namespace for this profile's jobs; None: the spawner's namespace.",
    )
    priority: int | None = Field(
        None, ge=1, le=100, description="Job priority (1-100; Nomad's default is 50)."
    )
    constraints: list[NomadConstraint] = Field(
        default_factory=list, description="Extra placement constraints for this profile."
    )
    gpu: GpuPlacement = Field(
        default_factory=GpuPlacement, description="GPU model and memory requirements."
    )


class Profile(_Strict):
    slug: Slug
    name: str = Field(min_length=1)
    description: str = ""
    cpu: float = Field(gt=0, description="CPU cores guaranteed to the server.")
    memory: int = Field(description="Memory limit in bytes; accepts '4G', '512M'.")
    gpus: int = Field(0, ge=0)
    projects: list[Slug] | Literal["*"] = Field(
        "*", description="Projects that may use this profile; '*' means every project."
    )
    idle_timeout_minutes: int | None = Field(None, ge=1)
    nomad: NomadPlacement = Field(
        default_factory=NomadPlacement,
        description="Nomad placement for this profile (image, driver, datacenters, node pool, "
        "constraints, GPU model/memory, namespace, priority); empty uses the spawner's defaults.",
    )

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: str | int) -> int:
        return parse_bytes(value)

    def allows(self, project_id: str) -> bool:
        return self.projects == "*" or project_id in self.projects


class Dataset(_Strict):
    id: Slug
    title: str
    path: str = Field(description="Where the dataset lives on the storage the servers see.")
    description: str = ""


AeTitle = Annotated[str, StringConstraints(pattern=r"^[\x20-\x5b\x5d-\x7e]{1,16}$")]
"""A DICOM AE title: 1-16 printable ASCII characters, no backslash."""


class DimseEndpoint(_Strict):
    """The archive's DICOM port (C-FIND, C-GET, C-MOVE) and the gateway's side of it."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    called_aet: AeTitle = Field(description="The archive's AE title.")
    calling_aet: AeTitle = Field(
        "WBGATEWAY", description="The gateway's AE title; the archive must know it (and its host)."
    )
    retrieve: Literal["c-get", "c-move"] = Field(
        "c-get",
        description="'c-get': the archive sends the images back on the gateway's own association. "
        "'c-move': the archive opens an association to the gateway's storage SCP "
        "(storage_port), which the archive must have registered as a destination.",
    )
    move_destination: AeTitle | None = Field(
        None,
        description="AE title the archive sends C-MOVE results to (the gateway's storage SCP "
        "answers to it); default: calling_aet.",
    )
    storage_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the gateway's storage SCP (C-MOVE only)."
    )
    storage_bind: str = Field(
        "127.0.0.1",
        description="Address the storage SCP listens on. It accepts associations only from the "
        "archive's AE title and host, and only objects the gateway asked for.",
    )
    max_results: int = Field(
        1000, ge=1, description="Most C-FIND matches read for one query; more are cancelled."
    )

    @model_validator(mode="after")
    def _move_needs_a_port(self) -> DimseEndpoint:
        if self.retrieve == "c-move" and self.storage_port is None:
            raise ValueError("retrieve: c-move needs storage_port (the gateway's storage SCP)")
        return self

    @property
    def destination_aet(self) -> str:
        return self.move_destination or self.calling_aet


class ArchiveConnection(_Strict):
    """How the sample gateway reaches the PACS. Only the gateway reads the credentials."""

    name: str = "RIPA"
    integration: Literal["dicomweb", "dimse"] | None = Field(
        None,
        description="Which integration the gateway uses: 'dicomweb' (QIDO-RS, WADO-RS) or "
        "'dimse' (C-FIND with C-GET or C-MOVE). Default: dicomweb when dicomweb_url is set.",
    )
    dicomweb_url: str | None = Field(None, description="Base URL of the DICOMweb service.")
    credentials_file: str | None = Field(
        None,
        description="File holding 'user:password' for the archive; kept out of this YAML.",
    )
    dimse: DimseEndpoint | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    page_size: int = Field(
        100, ge=1, le=1000, description="Studies asked for per search page (QIDO-RS limit=)."
    )
    max_results: int | None = Field(
        None,
        ge=1,
        description="The archive's own cap on results per query, if it has one (Orthanc: "
        "LimitFindResults). A page of that many is never taken for the last page.",
    )
    text_matching: Literal["case-sensitive", "case-insensitive"] = Field(
        "case-sensitive",
        description="How the archive matches text such as StudyDescription. 'case-sensitive' "
        "(safe for any archive): the gateway also asks for the upper-case, lower-case and "
        "capitalised spelling. 'case-insensitive' (Orthanc's DICOMweb; not its C-FIND): one query.",
    )

    @model_validator(mode="after")
    def _needs_an_integration(self) -> ArchiveConnection:
        if not self.dicomweb_url and not self.dimse:
            raise ValueError("set dicomweb_url or dimse: the gateway needs a way to the archive")
        if self.integration == "dicomweb" and not self.dicomweb_url:
            raise ValueError("integration is dicomweb but dicomweb_url is not set")
        if self.integration == "dimse" and not self.dimse:
            raise ValueError("integration is dimse but the dimse section is missing")
        return self

    @property
    def used_integration(self) -> Literal["dicomweb", "dimse"]:
        if self.integration:
            return self.integration
        return "dicomweb" if self.dicomweb_url else "dimse"


class WorkbenchConfig(_Strict):
    admins: list[Username] = Field(default_factory=list)
    archive: ArchiveConnection | None = None
    profiles: list[Profile] = Field(min_length=1)
    projects: list[Project] = Field(default_factory=list)
    datasets: list[Dataset] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_references(self) -> WorkbenchConfig:
        problems = cross_reference_problems(self)
        if problems:
            raise CrossReferenceError(problems)
        return self

    # Look-ups used by the spawners and services -------------------------------------------
    def project(self, project_id: str) -> Project | None:
        return next((p for p in self.projects if p.id == project_id), None)

    def profile(self, slug: str) -> Profile | None:
        return next((p for p in self.profiles if p.slug == slug), None)

    def dataset(self, dataset_id: str) -> Dataset | None:
        return next((d for d in self.datasets if d.id == dataset_id), None)

    def projects_of(self, username: str) -> list[Project]:
        return [p for p in self.projects if username in p.members]

    def profiles_for(self, project_id: str) -> list[Profile]:
        return [p for p in self.profiles if p.allows(project_id)]

    def all_users(self) -> set[str]:
        users = set(self.admins)
        for project in self.projects:
            users.update(project.members)
        return users


Loc = tuple[str | int, ...]


class CrossReferenceError(ValueError):
    """Broken references between sections, each with the path of the offending field."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def cross_reference_problems(config: WorkbenchConfig) -> list[tuple[Loc, str]]:
    """Ids that repeat or point nowhere, as (field path, message) pairs."""
    problems: list[tuple[Loc, str]] = []
    for section, key in (("profiles", "slug"), ("projects", "id"), ("datasets", "id")):
        seen: set[str] = set()
        for index, item in enumerate(getattr(config, section)):
            value = getattr(item, key)
            if value in seen:
                problems.append(((section, index, key), f"{key} {value!r} appears more than once"))
            seen.add(value)
    project_ids = {p.id for p in config.projects}
    dataset_ids = {d.id for d in config.datasets}
    for index, profile in enumerate(config.profiles):
        if profile.projects != "*":
            for pos, pid in enumerate(profile.projects):
                if pid not in project_ids:
                    problems.append(
                        (("profiles", index, "projects", pos), f"project {pid!r} is not defined")
                    )
    for index, project in enumerate(config.projects):
        for pos, did in enumerate(project.datasets):
            if did not in dataset_ids:
                problems.append(
                    (("projects", index, "datasets", pos), f"dataset {did!r} is not in datasets")
                )
        if project.archive.enabled and config.archive is None:
            problems.append(
                (
                    ("projects", index, "archive", "enabled"),
                    "this project may pull from the archive, but no archive is configured",
                )
            )
    return problems
