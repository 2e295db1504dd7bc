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
    stewards: list[Username] = Field(
        default_factory=list, description="Data stewards who review this project's exports."
    )
    approval: Approval
    datasets: list[Slug] = Field(
        default_factory=list,
        description="Catalogue entries the project's servers mount, each only while the "
        "catalogue approves it for the project.",
    )
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


DataKind = Literal["imaging", "pathology", "genomics", "tabular", "real-time"]
"""The kinds of data the region's plan names."""

Sensitivity = Literal["public", "anonymised", "pseudonymised", "personal", "special-category"]
"""GDPR terms: 'special-category' is health data about identifiable people (art. 9)."""

OPEN_SENSITIVITIES = ("public", "anonymised")


class DatasetVolume(_Strict):
    """The Nomad volume that holds a dataset (overrides the spawner's ``dataset_volume`` source)."""

    type: Literal["host", "csi"] = Field(description="'host' (a node's host volume) or 'csi'.")
    source: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="Host volume name or CSI volume id, e.g. 'ripa-head-ct-2026'.",
    )


class Dataset(_Strict):
    """One entry of the data catalogue: what the data is, whose, on what basis, for whom.

    An entry approved for projects (``projects`` not empty) must name its owner, kind,
    sensitivity, legal basis and approval; an entry without projects is listed only. Servers
    mount an entry read-only when their project lists it, the entry is approved for that
    project and its approval has not expired (:mod:`datasets_mount.catalogue`).
    """

    id: Slug
    title: str = Field(min_length=1)
    path: str = Field(
        description="Location on the workbench storage (relative to $WORKBENCH_DATA_DIR, or "
        "absolute); local and Docker servers link or bind it read-only at ~/datasets/<id>."
    )
    description: str = ""
    owner: str | None = Field(
        None, description="Who answers for the data: department and responsible person."
    )
    kind: DataKind | None = Field(
        None, description="imaging, pathology, genomics, tabular or real-time."
    )
    sensitivity: Sensitivity | None = Field(
        None,
        description="public, anonymised, pseudonymised, personal or special-category (health "
        "data about identifiable people).",
    )
    legal_basis: str | None = Field(
        None,
        description="The legal basis of the processing, e.g. 'GDPR art. 6(1)(e) and 9(2)(j); "
        "Danish Health Act s. 46'.",
    )
    approval: Approval | None = Field(
        None, description="The data-use approval (reference and last valid day)."
    )
    projects: list[Slug] | Literal["*"] = Field(
        default_factory=list,
        description="Projects (or teaching sessions) approved to use the data; '*' (every "
        "project) only for public or anonymised data.",
    )
    volume: DatasetVolume | None = Field(
        None, description="Nomad host or CSI volume with the data; None: the spawner's rule."
    )
    format: str = Field("", description="File format(s), e.g. 'DICOM', 'NIfTI', 'VCF', 'Parquet'.")
    size: int | None = Field(None, description="Approximate size in bytes; accepts '120G'.")
    retain_until: dt.date | None = Field(
        None, description="Last day the data may be kept; the approval cannot run past it."
    )
    retention: str = Field("", description="What happens at the end (deleted, archived, returned).")

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: str | int | None) -> int | None:
        return None if value is None else parse_bytes(value)

    def catalogue_problems(self) -> list[tuple[str, str]]:
        """(field, message) for rules between fields (checked with the whole file, so that
        the loader can name the field and its line)."""
        problems: list[tuple[str, str]] = []
        if self.projects:
            for name in ("owner", "kind", "sensitivity", "legal_basis", "approval"):
                if getattr(self, name) in (None, ""):
                    problems.append((name, f"an entry approved for projects must give {name} "
                                           "(or list no projects until it is approved)"))
        if self.projects == "*" and self.sensitivity not in OPEN_SENSITIVITIES:
            problems.append(("projects", "'*' (every project) is only for public or anonymised "
                                         f"data; this entry is {self.sensitivity or 'of unstated sensitivity'}"))
        if self.approval and self.retain_until and self.approval.expires > self.retain_until:
            problems.append(("retain_until", f"the approval runs to {self.approval.expires.isoformat()}, "
                                             f"past the retention end {self.retain_until.isoformat()}"))
        return problems

    def approved_for(self, project_id: str) -> bool:
        return self.projects == "*" or project_id in self.projects


class GitNotebooks(_Strict):
    """Course notebooks pulled into each student's home by nbgitpuller on first open."""

    repo: str = Field(
        pattern=r"^(https://|http://|file://|git@)\S+$",
        description="Git URL the servers can reach (https://gitlab.example/course.git).",
    )
    branch: str = Field("main", pattern=r"^[A-Za-z0-9._/-]{1,100}$")


class CourseNotebooks(_Strict):
    """Where a session's notebooks come from: a folder under notebooks/, or a git repository."""

    folder: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="Folder under the workbench's notebooks/ directory, copied into each "
        "student's home (never over a student's edits).",
    )
    git: GitNotebooks | None = None
    open: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._ -]+(/[A-Za-z0-9._ -]+)*\.ipynb$",
        description="Notebook (relative to the course folder) that opens at a student's "
        "first login; None: the file browser.",
    )

    @field_validator("folder")
    @classmethod
    def _inside(cls, value: str | None) -> str | None:
        if value and ".." in value.split("/"):
            raise ValueError("folder must stay inside notebooks/")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> CourseNotebooks:
        if (self.folder is None) == (self.git is None):
            raise ValueError("give exactly one of folder (under notebooks/) or git")
        return self


class TeachingSession(_Strict):
    """A course: a cohort, its teachers, a time window, one profile, a budget, notebooks.

    Students may log in and start a server only inside the window; teachers can open, start
    and stop their students' servers (a hub group per session); at the end servers stop and
    access ends. Naive times are read in ``timezone``.
    """

    id: Slug
    title: str = Field(min_length=1)
    teachers: list[Username] = Field(min_length=1)
    students: list[Username] = Field(default_factory=list)
    starts: dt.datetime
    ends: dt.datetime
    timezone: str = Field("Europe/Copenhagen", description="IANA zone of starts and ends.")
    profile: Slug = Field(description="The one compute profile of the session's servers.")
    budget: BudgetLimits | None = Field(
        None,
        description="Compute for the whole window (no period; per_user_* limits apply per "
        "student); charged to the account 'session:<id>'.",
    )
    notebooks: CourseNotebooks | None = None
    datasets: list[Slug] = Field(
        default_factory=list,
        description="Catalogue entries to mount; each must be approved for the session's id.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Copenhagen'") from None
        return value

    def session_problems(self) -> list[tuple[Loc, str]]:
        """(field path, message) for rules between fields (the loader names the line)."""
        problems: list[tuple[Loc, str]] = []
        if self.window()[1] <= self.window()[0]:
            problems.append((("ends",), "a teaching session must end after it starts"))
        both = sorted(set(self.teachers) & set(self.students))
        if both:
            problems.append((("students",), f"{', '.join(both)} cannot be both teacher and student"))
        if self.budget is not None and "timezone" in self.budget.model_fields_set:
            problems.append((("budget", "timezone"), "set the session's timezone, not the budget's"))
        return problems

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """(starts, ends) as aware datetimes."""
        zone = ZoneInfo(self.timezone)
        return tuple(  # type: ignore[return-value]
            moment if moment.tzinfo else moment.replace(tzinfo=zone)
            for moment in (self.starts, self.ends)
        )

    def teaching_budget(self) -> TeachingBudget | None:
        """The quota service's budget type for this session's window."""
        if self.budget is None:
            return None
        starts, ends = self.window()
        fields = self.budget.model_dump(exclude={"timezone"})
        return TeachingBudget(starts=starts, ends=ends, timezone=self.timezone, **fields)

    @property
    def group(self) -> str:
        """The hub group of the session's students (teachers' scopes are limited to it)."""
        return f"teaching-{self.id}"

    def members(self) -> set[str]:
        return set(self.teachers) | set(self.students)


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
    data_stewards: list[Username] = Field(
        default_factory=list,
        description="People who review export requests of every project (the airlock); a "
        "project's own stewards are in projects[].stewards. Nobody reviews their own request.",
    )
    archive: ArchiveConnection | None = None
    profiles: list[Profile] = Field(min_length=1)
    projects: list[Project] = Field(default_factory=list)
    datasets: list[Dataset] = Field(default_factory=list)
    teaching: list[TeachingSession] = Field(default_factory=list)

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

    def session(self, session_id: str) -> TeachingSession | None:
        return next((s for s in self.teaching if s.id == session_id), None)

    def sessions_of(self, username: str) -> list[TeachingSession]:
        """Sessions in which ``username`` teaches or studies (whatever their window)."""
        return [s for s in self.teaching if username in s.members()]

    def stewards_of(self, project_id: str) -> set[str]:
        """Who may review the project's export requests."""
        project = self.project(project_id)
        return set(self.data_stewards) | (set(project.stewards) if project else set())

    def all_users(self) -> set[str]:
        """People who may always log in: admins, stewards and project members.

        Teaching-session people are not here: their access follows the session's window
        (:mod:`services.teaching.rules`).
        """
        users = set(self.admins) | set(self.data_stewards)
        for project in self.projects:
            users.update(project.members)
            users.update(project.stewards)
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
    for section, key in (
        ("profiles", "slug"), ("projects", "id"), ("datasets", "id"), ("teaching", "id")
    ):
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
    problems += _catalogue_problems(config, project_ids, dataset_ids)
    problems += _teaching_problems(config, project_ids, dataset_ids)
    return problems


def _catalogue_problems(
    config: WorkbenchConfig, project_ids: set[str], dataset_ids: set[str]
) -> list[tuple[Loc, str]]:
    # A project listing an entry the catalogue does not approve for it is no error: that is
    # how a steward revokes (the next spawn leaves it out and says why).
    problems: list[tuple[Loc, str]] = []
    session_ids = {s.id for s in config.teaching}
    for index, dataset in enumerate(config.datasets):
        for name, message in dataset.catalogue_problems():
            problems.append((("datasets", index, name), message))
        if dataset.projects == "*":
            continue
        for pos, pid in enumerate(dataset.projects):
            if pid not in project_ids and pid not in session_ids:
                problems.append(
                    (
                        ("datasets", index, "projects", pos),
                        f"project {pid!r} is not defined (neither a project nor a teaching session)",
                    )
                )
    return problems


def _teaching_problems(
    config: WorkbenchConfig, project_ids: set[str], dataset_ids: set[str]
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    profile_slugs = {p.slug for p in config.profiles}
    for index, session in enumerate(config.teaching):
        for loc, message in session.session_problems():
            problems.append((("teaching", index, *loc), message))
        if session.id in project_ids:
            problems.append(
                (("teaching", index, "id"), f"{session.id!r} is already a project id; "
                 "a session needs an id of its own")
            )
        if session.profile not in profile_slugs:
            problems.append(
                (("teaching", index, "profile"), f"profile {session.profile!r} is not defined")
            )
        for pos, did in enumerate(session.datasets):
            if did not in dataset_ids:
                problems.append(
                    (("teaching", index, "datasets", pos), f"dataset {did!r} is not in datasets")
                )
    return problems
