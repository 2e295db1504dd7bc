"""The data catalogue as questions and answers: which datasets a project may use, and why not.

Pure functions over the workbench model (no I/O, no clock: the day is an argument). The
spawners (through :mod:`spawners.selection`), the CLI, the notebook widget and the airlock
service's catalogue API all ask here, so "may project P use dataset D today" has one answer.

A server of project P mounts dataset D when all of these hold:

  1. P lists D in ``projects[].datasets`` (or the teaching session lists it);
  2. the catalogue entry approves D for P (``datasets[].projects`` names P, or is '*');
  3. the entry's approval has not expired (valid through its last day).

Each outcome has a code in :data:`STATUSES` with the words users read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hub_config.model import Dataset, WorkbenchConfig

MOUNTED = "mounted"
AVAILABLE = "available"  # approved for the project, not in its list
APPROVED = "approved"  # seen from no project: the approval is in force
APPROVAL_EXPIRED = "approval_expired"
OTHER_PROJECT = "other_project"
NOT_APPROVED = "not_approved"  # listed in the catalogue only, no approval for anyone

#: Status table: code -> (may mount, short label for tables).
STATUSES: dict[str, tuple[bool, str]] = {
    MOUNTED: (True, "mounted"),
    APPROVED: (False, "approved"),
    AVAILABLE: (False, "approved, not requested"),
    APPROVAL_EXPIRED: (False, "approval expired"),
    OTHER_PROJECT: (False, "not approved for this project"),
    NOT_APPROVED: (False, "not approved for use"),
}


@dataclass(frozen=True)
class DatasetStatus:
    """One catalogue entry seen from one project on one day."""

    dataset: Dataset
    project_id: str | None
    code: str
    message: str
    requested: bool = False

    @property
    def mounted(self) -> bool:
        return self.code == MOUNTED

    @property
    def label(self) -> str:
        return STATUSES[self.code][1]


def requested_ids(config: WorkbenchConfig, project_id: str) -> list[str]:
    """The datasets a project (or teaching session) asks to mount, in its order."""
    project = config.project(project_id)
    if project is not None:
        return list(project.datasets)
    session = config.session(project_id)
    return list(session.datasets) if session is not None else []


def status_of(
    dataset: Dataset, project_id: str | None, today: dt.date, *, requested: bool = False
) -> DatasetStatus:
    """Whether ``project_id`` may use ``dataset`` on ``today``, with the reason in words."""
    approval = dataset.approval
    if approval is None or not dataset.projects:
        return DatasetStatus(
            dataset, project_id, NOT_APPROVED,
            f"Dataset {dataset.id} is listed in the catalogue but not approved for any project; "
            f"ask its owner ({dataset.owner or 'not recorded'}) or a data steward.",
            requested,
        )
    if project_id is None:
        code = APPROVED if approval.valid_on(today) else APPROVAL_EXPIRED
        return DatasetStatus(dataset, None, code, _approval_text(dataset, today), requested)
    if not dataset.approved_for(project_id):
        return DatasetStatus(
            dataset, project_id, OTHER_PROJECT,
            f"Dataset {dataset.id} is not approved for {project_id}; its use needs an approval "
            f"that names {project_id} (ask the data owner: {dataset.owner}).",
            requested,
        )
    if not approval.valid_on(today):
        return DatasetStatus(
            dataset, project_id, APPROVAL_EXPIRED,
            f"Dataset {dataset.id}: approval {approval.reference} expired on "
            f"{approval.expires.isoformat()}; it is not mounted until the approval is renewed "
            f"(data owner: {dataset.owner}).",
            requested,
        )
    if not requested:
        return DatasetStatus(
            dataset, project_id, AVAILABLE,
            f"Dataset {dataset.id} is approved for {project_id} until "
            f"{approval.expires.isoformat()} but the project does not list it; an admin adds it "
            "to the project's datasets to have it mounted.",
            requested,
        )
    return DatasetStatus(
        dataset, project_id, MOUNTED,
        f"Dataset {dataset.id} is mounted read-only (approval {approval.reference}, valid until "
        f"{approval.expires.isoformat()}).",
        requested,
    )


def _approval_text(dataset: Dataset, today: dt.date) -> str:
    approval = dataset.approval
    assert approval is not None
    state = "valid until" if approval.valid_on(today) else "expired on"
    return f"Approval {approval.reference} {state} {approval.expires.isoformat()}."


@dataclass(frozen=True)
class Mounts:
    """What a project's server gets: the datasets to mount and the requested ones left out."""

    granted: tuple[Dataset, ...]
    refused: tuple[DatasetStatus, ...]


def mounts_for(config: WorkbenchConfig, project_id: str, today: dt.date) -> Mounts:
    """Exactly the project's requested, approved, unexpired datasets; the rest with reasons."""
    granted: list[Dataset] = []
    refused: list[DatasetStatus] = []
    for dataset_id in requested_ids(config, project_id):
        dataset = config.dataset(dataset_id)
        if dataset is None:  # the loader refuses this; a stale state could still name one
            continue
        status = status_of(dataset, project_id, today, requested=True)
        if status.mounted:
            granted.append(dataset)
        else:
            refused.append(status)
    return Mounts(tuple(granted), tuple(refused))


def usable_anywhere(config: WorkbenchConfig, today: dt.date) -> set[str]:
    """Datasets at least one project or teaching session may mount today.

    Local mode runs every server as one account, so a folder is either open to all servers
    or to none: this is the set that stays open (see ``datasets_mount.local.guard_datasets``).
    """
    users = [p.id for p in config.projects] + [s.id for s in config.teaching]
    return {d.id for user in users for d in mounts_for(config, user, today).granted}


def catalogue_for(
    config: WorkbenchConfig, project_id: str | None, today: dt.date
) -> list[DatasetStatus]:
    """Every catalogue entry, seen from ``project_id`` (or from no project)."""
    wanted = set(requested_ids(config, project_id)) if project_id else set()
    return [
        status_of(d, project_id, today, requested=d.id in wanted) for d in config.datasets
    ]


def find(config: WorkbenchConfig, dataset_id: str) -> Dataset:
    dataset = config.dataset(dataset_id)
    if dataset is None:
        known = ", ".join(d.id for d in config.datasets) or "none"
        raise KeyError(f"There is no dataset {dataset_id!r} in the catalogue (known: {known}).")
    return dataset


def dataset_json(dataset: Dataset, *, with_projects: bool) -> dict[str, Any]:
    """The entry as JSON; which projects are approved only for those who may see it."""
    data = dataset.model_dump(mode="json")
    if not with_projects:
        data.pop("projects", None)
    return data


def status_json(status: DatasetStatus, *, with_projects: bool) -> dict[str, Any]:
    return {
        "dataset": dataset_json(status.dataset, with_projects=with_projects),
        "project": status.project_id,
        "status": status.code,
        "label": status.label,
        "message": status.message,
        "requested": status.requested,
    }


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def describe(dataset: Dataset) -> list[tuple[str, str]]:
    """(label, value) rows of one entry, as the CLI and widget show it."""
    approval = dataset.approval
    projects = "every project" if dataset.projects == "*" else ", ".join(dataset.projects) or "none"
    location = dataset.path
    if dataset.volume is not None:
        location += f" (Nomad {dataset.volume.type} volume {dataset.volume.source})"
    rows = [
        ("Title", dataset.title),
        ("Description", dataset.description),
        ("Owner", dataset.owner or "not recorded"),
        ("Kind", dataset.kind or "not recorded"),
        ("Sensitivity", dataset.sensitivity or "not recorded"),
        ("Legal basis", dataset.legal_basis or "not recorded"),
        ("Approval", f"{approval.reference}, valid until {approval.expires.isoformat()}"
                     if approval else "none"),
        ("Projects allowed", projects),
        ("Location", location),
        ("Format", dataset.format),
        ("Size", human_size(dataset.size)),
        ("Retention", " ".join(filter(None, [
            f"Kept until {dataset.retain_until.isoformat()}." if dataset.retain_until else "",
            dataset.retention,
        ]))),
    ]
    return [(label, value) for label, value in rows if value]


def ids(statuses: Iterable[DatasetStatus]) -> list[str]:
    return [s.dataset.id for s in statuses]
