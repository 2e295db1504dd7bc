"""Which project and compute profile a server runs for, and whether that is allowed.

Pure functions over the workbench configuration. The spawn form, the REST API and every
spawner (local, Nomad, Docker) go through :func:`resolve_selection`, so a request that skips
the form is checked exactly like one that uses it.

A teaching session is chosen like a project (``{"project": "<session id>"}``; ids never
collide): its window, its one profile and its datasets apply (:mod:`services.teaching.rules`).
The datasets of a selection are the catalogue's answer for the project on that day
(:func:`datasets_mount.catalogue.mounts_for`): requested, approved and unexpired ones are
granted; the others are listed in ``refused_datasets`` with the reason, for the progress
stream and for removing what an earlier start mounted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from datasets_mount.catalogue import DatasetStatus, mounts_for
from hub_config.model import Dataset, Profile, Project, TeachingSession, WorkbenchConfig
from services.teaching import rules as teaching


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
    refused_datasets: tuple[DatasetStatus, ...] = field(default_factory=tuple)
    session: TeachingSession | None = None


@dataclass(frozen=True)
class Choice:
    """One project (or teaching session) as the spawn form shows it: usable profiles, or why
    it cannot be used; ``notes`` are the lines shown under it."""

    project: Project
    profiles: tuple[Profile, ...]
    unavailable: str | None = None
    notes: tuple[str, ...] = ()
    unavailable_label: str = "approval expired"
    session: TeachingSession | None = None


def choices_for(
    config: WorkbenchConfig, username: str, today: dt.date, now: dt.datetime | None = None
) -> list[Choice]:
    """The user's projects with the profiles each may use (expired approvals say so), then
    the user's teaching sessions (when ``now`` is given) with their window."""
    choices = []
    for project in config.projects_of(username):
        unavailable = None
        if not project.approval_valid_on(today):
            unavailable = _expired_message(project)
        notes = [
            f"Approval {project.approval.reference}, valid until "
            f"{project.approval.expires.isoformat()}."
        ]
        notes += _dataset_notes(mounts_for(config, project.id, today))
        choices.append(
            Choice(project, tuple(config.profiles_for(project.id)), unavailable, tuple(notes))
        )
    if now is not None:
        for session in config.sessions_of(username):
            profile = config.profile(session.profile)
            starts, ends = session.window()
            role = "teacher" if username in session.teachers else "student"
            notes = [
                f"Teaching session ({role}), {teaching.fmt(starts, session)} to "
                f"{teaching.fmt(ends, session)}."
            ]
            notes += _dataset_notes(mounts_for(config, session.id, today))
            choices.append(
                Choice(
                    teaching.as_project(session),
                    (profile,) if profile else (),
                    teaching.why_not(session, username, now) or None,
                    tuple(notes),
                    unavailable_label=_WINDOW_LABELS[teaching.window_state(session, now)],
                    session=session,
                )
            )
    return choices


_WINDOW_LABELS = {"upcoming": "session not started", "open": "", "ended": "session ended"}


def _dataset_notes(mounts: Any) -> list[str]:
    notes = []
    if mounts.granted:
        notes.append("Datasets mounted read-only: " + ", ".join(d.id for d in mounts.granted) + ".")
    notes += [status.message for status in mounts.refused]
    return notes


def resolve_selection(
    config: WorkbenchConfig,
    username: str,
    user_options: dict[str, Any],
    today: dt.date,
    *,
    now: dt.datetime | None = None,
) -> Selection:
    """Check ``user_options`` (``{"project": id, "profile": slug}``) for this user and day.

    ``now`` (aware) is needed for teaching sessions; without it sessions are not offered.
    """
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
    sessions = config.sessions_of(username) if now is not None else []
    project_id = user_options.get("project")
    if not project_id:
        open_sessions = [s for s in sessions if teaching.may_use(s, username, now)]  # type: ignore[arg-type]
        candidates = [p.id for p in mine] + [s.id for s in open_sessions]
        if len(candidates) == 1:
            project_id = candidates[0]
        elif not candidates and sessions:
            raise SelectionRefused(
                teaching.why_not(sessions[0], username, now), reason="session_closed"  # type: ignore[arg-type]
            )
        elif not candidates:
            raise SelectionRefused(
                f"{username} is not a member of any project. Ask the workbench admins "
                "to add you to an approved project.",
                reason="no_project",
            )
        else:
            raise SelectionRefused(
                "Choose a project: you are a member of " + ", ".join(candidates) + ".",
                reason="bad_options",
            )
    session = next((s for s in sessions if s.id == project_id), None)
    if session is not None:
        return _session_selection(config, username, session, user_options, today, now)  # type: ignore[arg-type]
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
    mounts = mounts_for(config, project.id, today)
    return Selection(project, profile, mounts.granted, mounts.refused)


def resolve_selection_for(
    config: WorkbenchConfig,
    owner: str,
    requester: str,
    user_options: dict[str, Any],
    today: dt.date,
    *,
    now: dt.datetime,
) -> Selection:
    """:func:`resolve_selection` for a start that ``requester`` asks for on ``owner``'s
    server, when ``requester`` is neither the owner nor allowed to start anyone's servers
    (the hub's ``start:servers`` scope without a filter: admins, the hub's own services).

    That is a teacher acting on a student through the session's group scopes, and a
    teacher starts course servers, nothing else: only a session that ``requester`` teaches
    and ``owner`` attends (the default when there is one open such session). The student's
    own projects would otherwise be started, charged and mounted by the teacher; the
    refusal does not name them.
    """
    taught = [s for s in config.sessions_of(owner) if requester in s.teachers and owner in s.students]
    options = user_options if isinstance(user_options, dict) else {}
    project_id = options.get("project")
    if not project_id:  # the one open session, else the one session (its window refuses)
        open_now = [s for s in taught if teaching.may_use(s, owner, now)]
        implied = open_now if open_now else taught
        project_id = implied[0].id if len(implied) == 1 else None
    session = next((s for s in taught if s.id == project_id), None)
    if session is None:
        raise SelectionRefused(
            f"{requester} may start {owner}'s servers only for a teaching session that "
            f"{requester} teaches and {owner} attends ("
            + (", ".join(s.id for s in taught) or "there is none")
            + f"); other servers are started by {owner}.",
            reason="not_owner",
        )
    return resolve_selection(config, owner, {**options, "project": session.id}, today, now=now)


def _session_selection(
    config: WorkbenchConfig,
    username: str,
    session: TeachingSession,
    user_options: dict[str, Any],
    today: dt.date,
    now: dt.datetime,
) -> Selection:
    refusal = teaching.why_not(session, username, now)
    if refusal:
        raise SelectionRefused(refusal, reason="session_closed")
    profile = config.profile(session.profile)
    assert profile is not None, "the loader checks that the session's profile exists"
    asked = user_options.get("profile")
    if asked and asked != profile.slug:
        raise SelectionRefused(
            f"The teaching session {session.id} runs on the profile {profile.slug!r} "
            f"({profile.name}) only.",
            reason="profile_not_allowed",
        )
    mounts = mounts_for(config, session.id, today)
    return Selection(teaching.as_project(session), profile, mounts.granted, mounts.refused, session)


def selection_from_state(
    config: WorkbenchConfig, project_id: str, profile_slug: str, today: dt.date
) -> Selection | None:
    """The selection of a server that is already running (after a hub restart): no checks
    of approval or window (the next start is checked), datasets as the catalogue says now."""
    profile = config.profile(profile_slug)
    session = config.session(project_id)
    project = teaching.as_project(session) if session else config.project(project_id)
    if project is None or profile is None:
        return None
    mounts = mounts_for(config, project.id, today)
    return Selection(project, profile, mounts.granted, mounts.refused, session)


def _expired_message(project: Project) -> str:
    return (
        f"The approval for project {project.id} ({project.approval.reference}) expired on "
        f"{project.approval.expires.isoformat()}. Servers cannot start for this project until "
        "the approval is renewed; contact the project owner or the workbench admins."
    )
