"""Which project and compute profile a server runs for, and whether that is allowed.

Pure functions over the workbench configuration. The spawn form, the REST API and every
spawner (local, Nomad, Docker) go through :func:`resolve_selection`, so a request that skips
the form is checked exactly like one that uses it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from hub_config.model import Dataset, Profile, Project, WorkbenchConfig


class SelectionRefused(Exception):
    """The user may not start a server with these options; ``message`` says why and what to do."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Selection:
    project: Project
    profile: Profile
    datasets: tuple[Dataset, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Choice:
    """One project as the spawn form shows it: usable profiles, or why it cannot be used."""

    project: Project
    profiles: tuple[Profile, ...]
    unavailable: str | None = None


def choices_for(config: WorkbenchConfig, username: str, today: dt.date) -> list[Choice]:
    """The user's projects with the profiles each may use (expired approvals say so)."""
    choices = []
    for project in config.projects_of(username):
        unavailable = None
        if not project.approval_valid_on(today):
            unavailable = _expired_message(project)
        choices.append(Choice(project, tuple(config.profiles_for(project.id)), unavailable))
    return choices


def resolve_selection(
    config: WorkbenchConfig, username: str, user_options: dict[str, Any], today: dt.date
) -> Selection:
    """Check ``user_options`` (``{"project": id, "profile": slug}``) for this user and day."""
    if not isinstance(user_options, dict):
        raise SelectionRefused("Server options must be a JSON object.", reason="bad_options")
    unknown = set(user_options) - {"project", "profile"}
    if unknown:
        raise SelectionRefused(
            f"Unknown server option(s): {', '.join(sorted(unknown))}. "
            "Choose a 'project' and a 'profile'.",
            reason="bad_options",
        )
    mine = config.projects_of(username)
    project_id = user_options.get("project")
    if not project_id:
        if len(mine) == 1:
            project_id = mine[0].id
        elif not mine:
            raise SelectionRefused(
                f"{username} is not a member of any project. Ask the workbench admins "
                "to add you to an approved project.",
                reason="no_project",
            )
        else:
            raise SelectionRefused(
                "Choose a project: you are a member of "
                + ", ".join(p.id for p in mine) + ".",
                reason="bad_options",
            )
    project = config.project(str(project_id))
    if project is None or project not in mine:
        # Same message for 'unknown' and 'not yours': do not reveal other projects' names.
        raise SelectionRefused(
            f"You are not a member of a project called {project_id!r}. Your projects: "
            + (", ".join(p.id for p in mine) or "none") + ".",
            reason="not_member",
        )
    if not project.approval_valid_on(today):
        raise SelectionRefused(_expired_message(project), reason="approval_expired")

    allowed = config.profiles_for(project.id)
    profile_slug = user_options.get("profile") or (allowed[0].slug if allowed else None)
    profile = config.profile(str(profile_slug)) if profile_slug else None
    if profile is None:
        raise SelectionRefused(
            f"There is no compute profile called {profile_slug!r}. "
            f"Profiles for {project.id}: {', '.join(p.slug for p in allowed) or 'none'}.",
            reason="bad_profile",
        )
    if not profile.allows(project.id):
        raise SelectionRefused(
            f"Project {project.id} may not use the profile {profile.slug!r} "
            f"({profile.name}). Choose one of: {', '.join(p.slug for p in allowed)}.",
            reason="profile_not_allowed",
        )
    datasets = tuple(d for d in (config.dataset(i) for i in project.datasets) if d is not None)
    return Selection(project=project, profile=profile, datasets=datasets)


def _expired_message(project: Project) -> str:
    return (
        f"The approval for project {project.id} ({project.approval.reference}) expired on "
        f"{project.approval.expires.isoformat()}. Servers cannot start for this project until "
        "the approval is renewed; contact the project owner or the workbench admins."
    )
