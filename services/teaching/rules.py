"""Who may do what in a teaching session, and when. Pure: the time is always an argument.

A session's window is [starts, ends). Students may log in and start servers only inside it.
Teachers may log in and start their own session server from any time until the end (to
prepare), and can open, start and stop their students' servers through hub scopes limited
to the session's group (:func:`teacher_role`). People who are also project members or admins
log in as usual; a session adds to what they may do, it never takes away.
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


def teacher_role(session: TeachingSession) -> dict[str, object]:
    return {
        "name": f"teaching-{session.id}-teachers",
        "description": f"Teachers of {session.title}: their students' servers only.",
        "users": sorted(session.teachers),
        "scopes": teacher_scopes(session),
    }


def group_members(session: TeachingSession, now: dt.datetime) -> list[str]:
    """Who is in the session's group now: the students until the end, nobody after."""
    return [] if window_state(session, now) == "ended" else sorted(session.students)


def hub_roles(config: WorkbenchConfig) -> list[dict[str, object]]:
    return [teacher_role(session) for session in config.teaching]


def hub_groups(config: WorkbenchConfig, now: dt.datetime) -> dict[str, dict[str, object]]:
    """``c.JupyterHub.load_groups``: one group per session (the reconciler keeps it current)."""
    return {
        s.group: {"users": group_members(s, now), "properties": {"teaching_session": s.id}}
        for s in config.teaching
    }
