"""Who may do what in a teaching session, and when. Pure: the time is always an argument.

A session's window is [starts, ends). Students may log in and start servers only inside it.
Teachers may log in and start their own session server from any time until the end (to
prepare), and can open, start and stop their students' servers through hub scopes limited
to the session's group (:func:`teacher_role`). People who are also project members or admins
log in as usual; a session adds to what they may do, it never takes away, and it gives the
teachers no reach over them: they stay out of the session's group (:func:`member_students`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode

from hub_config.model import Approval, Project, TeachingSession, WorkbenchConfig

WindowState = Literal["upcoming", "open", "ended"]


def window_state(session: TeachingSession, now: dt.datetime) -> WindowState:
    starts, ends = session.window()
    if now < starts:
        return "upcoming"
    return "open" if now < ends else "ended"


def fmt(moment: dt.datetime, session: TeachingSession) -> str:
    """'2026-09-01 08:00 CEST': the session's wall clock."""
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo(session.timezone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def may_use(session: TeachingSession, username: str, now: dt.datetime) -> bool:
    """Whether ``username`` may log in for, and start a server in, ``session`` now."""
    state = window_state(session, now)
    if username in session.teachers:
        return state != "ended"
    return username in session.students and state == "open"


def why_not(session: TeachingSession, username: str, now: dt.datetime) -> str:
    """The user's words for a refused session (or '' when it may be used)."""
    if may_use(session, username, now):
        return ""
    starts, ends = session.window()
    state = window_state(session, now)
    if state == "ended":
        return (
            f"The teaching session {session.title} ({session.id}) ended on {fmt(ends, session)}; "
            "its servers have stopped and access has ended."
        )
    if state == "upcoming":
        return (
            f"The teaching session {session.title} ({session.id}) runs from {fmt(starts, session)} "
            f"to {fmt(ends, session)}; servers can start only inside that window."
        )
    return f"You are not in the teaching session {session.id}."


def usable_sessions(config: WorkbenchConfig, username: str, now: dt.datetime) -> list[TeachingSession]:
    return [s for s in config.sessions_of(username) if may_use(s, username, now)]


@dataclass(frozen=True)
class LoginDecision:
    allowed: bool
    reason: str  # 'member' | 'teacher' | 'student' | 'outside_window' | 'unknown'
    message: str = ""


def login_decision(config: WorkbenchConfig, username: str, now: dt.datetime) -> LoginDecision:
    """Whether ``username`` may log in now, and why (the authenticator asks on each login
    and on each auth refresh, so access ends with the window without anyone acting)."""
    if username in config.all_users():
        return LoginDecision(True, "member")
    sessions = config.sessions_of(username)
    for session in sessions:
        if may_use(session, username, now):
            return LoginDecision(True, "teacher" if username in session.teachers else "student")
    if sessions:
        return LoginDecision(False, "outside_window", why_not(sessions[0], username, now))
    return LoginDecision(False, "unknown")


def as_project(session: TeachingSession) -> Project:
    """The session seen where a project is expected (workspace names, environment, Nomad
    job metadata): its id, its people, no archive access, the window's last day as expiry."""
    _, ends = session.window()
    return Project(
        id=session.id,
        title=f"{session.title} (teaching)",
        department="Teaching",
        members=sorted(session.members()),
        approval=Approval(reference=f"teaching session {session.id}", expires=ends.date()),
        datasets=list(session.datasets),
    )


# Course notebooks ---------------------------------------------------------------------------
def course_dir(session: TeachingSession) -> str:
    """Folder in the student's home holding the course notebooks."""
    return session.id


def course_url(session: TeachingSession) -> str:
    """The server's default URL: the course notebook to land in (JupyterLab path), or
    nbgitpuller's ``git-pull`` link that clones/merges the course repository first."""
    notebooks = session.notebooks
    if notebooks is None:
        return "/lab"
    target = course_dir(session)
    path = f"{target}/{notebooks.open}" if notebooks.open else target
    if notebooks.git is None:
        return "/lab/tree/" + quote(path)
    query = urlencode(
        {
            "repo": notebooks.git.repo,
            "branch": notebooks.git.branch,
            "targetpath": target,
            "urlpath": "lab/tree/" + path,
        }
    )
    return f"/git-pull?{query}"


# Hub roles and groups -----------------------------------------------------------------------
def teacher_scopes(session: TeachingSession) -> list[str]:
    """What a session's teachers may do to the session's students, and nothing more.

    Open and use their servers (``access:servers``), start and stop them (``servers``), see
    them and their servers (``read:users``, ``read:servers``), list the group (``read:groups``,
    ``list:users``) and use the hub's admin page filtered to them (``admin-ui``).

    JupyterHub filters scopes by user, group or server name, never by what a server runs,
    so these reach every server of the group's members: a student with research access is
    therefore never in the group (:func:`member_students`), and the spawner lets a teacher
    start the session's server only (``spawners.selection.resolve_selection_for``).
    Stopping cannot be narrowed per server: the hub runs no hook that may refuse a stop,
    and a ``servers!server=`` filter would have to name a server before it exists.
    """
    group = session.group
    return [
        f"access:servers!group={group}",
        f"servers!group={group}",
        f"read:users!group={group}",
        f"read:servers!group={group}",
        f"list:users!group={group}",
        f"read:groups!group={group}",
        "admin-ui",
    ]


def research_students(config: WorkbenchConfig, session: TeachingSession) -> list[str]:
    """The session's students who also have research access (project members, stewards,
    admins: :meth:`WorkbenchConfig.all_users`). They stay out of the session's group."""
    research = config.all_users()
    return sorted(s for s in session.students if s in research)


def member_students(config: WorkbenchConfig) -> list[str]:
    """Warnings (for the hub's log) naming the students kept out of their session's group.

    JupyterHub's scopes filter by user, group or server name, never by what a server runs:
    through ``servers!group=`` a teacher could stop any server of a student in the group,
    and through ``access:servers!group=`` open any of them in a browser (the hub resolves
    the group when it authorizes OAuth), a research server with its project's datasets
    mounted included. Starting is narrowed by the spawner (a teacher starts the session's
    server only), but stopping and opening cannot be. So a student who also has research
    access is not put in the session's group: the teachers cannot reach any of their
    servers, the course server included. Not a configuration error: a researcher taking a
    course is ordinary; a separate course account gives the teachers their usual reach.
    """
    warnings = []
    for session in config.teaching:
        teachers = ", ".join(sorted(session.teachers))
        for student in research_students(config, session):
            projects = ", ".join(p.id for p in config.projects_of(student)) or "no project"
            warnings.append(
                f"{student} is a student of teaching session {session.id} and has research "
                f"access ({projects}): kept out of group {session.group}, so the teachers "
                f"({teachers}) cannot open, stop or start any of {student}'s servers, the "
                f"course server included. Give {student} a separate course account if they must."
            )
    return warnings


def teacher_role(session: TeachingSession) -> dict[str, object]:
    return {
        "name": f"teaching-{session.id}-teachers",
        "description": f"Teachers of {session.title}: their students' servers only.",
        "users": sorted(session.teachers),
        "scopes": teacher_scopes(session),
    }


def group_members(config: WorkbenchConfig, session: TeachingSession, now: dt.datetime) -> list[str]:
    """Who is in the session's group now: the students until the end, nobody after; never
    a student with research access (:func:`member_students` says why)."""
    if window_state(session, now) == "ended":
        return []
    return sorted(set(session.students) - set(research_students(config, session)))


def hub_roles(config: WorkbenchConfig) -> list[dict[str, object]]:
    return [teacher_role(session) for session in config.teaching]


def hub_groups(config: WorkbenchConfig, now: dt.datetime) -> dict[str, dict[str, object]]:
    """``c.JupyterHub.load_groups``: one group per session (the reconciler keeps it current)."""
    return {
        s.group: {"users": group_members(config, s, now), "properties": {"teaching_session": s.id}}
        for s in config.teaching
    }
