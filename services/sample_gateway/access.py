"""Who may search and pull for which project, and within which limits (pure rules).

Every refusal names the rule, and for limits the current usage, so the researcher knows
what to change (a smaller selection, tomorrow, or a request to the project owner).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from hub_config.model import Project, SampleLimits, WorkbenchConfig

from .errors import LimitExceeded, NotAllowed, shown


def project_for_pull(
    config: WorkbenchConfig, username: str, project_id: str, today: dt.date
) -> Project:
    """The project, if ``username`` is a member, its approval is valid and it may pull."""
    project = config.project(project_id)
    if project is None or username not in project.members:
        raise NotAllowed(
            f"You are not a member of a project called {shown(project_id)}; only members of an "
            "approved project can search or pull from the archive. Ask your project lead to have "
            "the workbench's admins add you.",
            reason="not_member",
        )
    if not project.approval_valid_on(today):
        raise NotAllowed(
            f"The approval for project {project.id} ({project.approval.reference}) expired on "
            f"{project.approval.expires.isoformat()}: no searches or pulls until it is renewed. "
            "The project lead renews it with the approving body; the workbench's admins then "
            "enter the new approval.",
            reason="approval_expired",
        )
    if not project.archive.enabled:
        raise NotAllowed(
            f"Project {project.id} is not approved to pull samples from the archive. The "
            "project owner can apply for archive access.",
            reason="archive_not_approved",
        )
    return project


def check_modality(project: Project, modality: str | None) -> None:
    allowed = project.archive.modalities
    if modality and allowed is not None and modality not in allowed:
        raise NotAllowed(
            f"Project {project.id} is approved for {', '.join(allowed)} only, not {modality}.",
            reason="modality_not_approved",
        )


def series_allowed(project: Project, modality: str) -> bool:
    """Whether a series the archive lists may be retrieved (a pull, a preview): any, unless
    the approval names modalities; then only one of those (a series without one is not)."""
    allowed = project.archive.modalities
    return allowed is None or (bool(modality) and modality in allowed)


def allowed_modalities(project: Project, modalities: Iterable[str]) -> list[str]:
    allowed = project.archive.modalities
    return [m for m in modalities if allowed is None or m in allowed]


def check_pull_size(
    limits: SampleLimits, *, studies: int, instances: int, studies_today: int,
    instances_today: int = 0, bytes_today: int = 0,
) -> None:
    """Refuse before anything is fetched if the selection breaks a per-pull or daily limit
    (or the day's bytes are used up: how many a pull will bring is known only as it comes)."""
    if studies > limits.max_studies_per_pull:
        raise LimitExceeded(
            f"You selected {studies} studies; this project may pull at most "
            f"{limits.max_studies_per_pull} per pull. Select fewer studies.",
            reason="max_studies_per_pull",
        )
    if instances > limits.max_instances_per_pull:
        raise LimitExceeded(
            f"The selected studies hold {instances} images; this project may pull at most "
            f"{limits.max_instances_per_pull} per pull. Select fewer or smaller studies.",
            reason="max_instances_per_pull",
        )
    if studies_today + studies > limits.max_studies_per_day:
        left = max(limits.max_studies_per_day - studies_today, 0)
        raise LimitExceeded(
            f"This project has pulled {studies_today} studies today; the daily limit is "
            f"{limits.max_studies_per_day}, so {left} more can be pulled today "
            "(the count resets at midnight UTC).",
            reason="max_studies_per_day",
        )
    daily = limits.max_instances_per_day
    if daily is not None and instances_today + instances > daily:
        left = max(daily - instances_today, 0)
        raise LimitExceeded(
            f"This project has pulled {instances_today} images today and the selection holds "
            f"{instances}; the daily limit is {daily}, so {left} more can be pulled today "
            "(the count resets at midnight UTC).",
            reason="max_instances_per_day",
        )
    daily_bytes = limits.max_bytes_per_day
    if daily_bytes is not None and bytes_today >= daily_bytes:
        raise LimitExceeded(
            f"This project has pulled {_size(bytes_today)} today, its daily limit of "
            f"{_size(daily_bytes)}; try again tomorrow (the count resets at midnight UTC).",
            reason="max_bytes_per_day",
        )


def check_pull_bytes(limits: SampleLimits, received: int, bytes_today: int = 0) -> None:
    if received > limits.max_bytes_per_pull:
        raise LimitExceeded(
            f"The pull passed this project's limit of {_size(limits.max_bytes_per_pull)} per "
            f"pull after {_size(received)}; nothing was delivered. Select fewer studies.",
            reason="max_bytes_per_pull",
        )
    daily = limits.max_bytes_per_day
    if daily is not None and bytes_today + received > daily:
        raise LimitExceeded(
            f"This project has pulled {_size(bytes_today)} today; this pull passed the daily "
            f"limit of {_size(daily)} after {_size(received)}, so nothing was delivered. Try "
            "again tomorrow (the count resets at midnight UTC) or select less.",
            reason="max_bytes_per_day",
        )


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} B"
