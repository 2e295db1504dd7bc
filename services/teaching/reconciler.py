"""Keeps the hub in line with the teaching sessions: the reconciler service.

Each round compares what the YAML and the clock say (:func:`plan`, pure) with what the hub
has, and acts through the hub's REST API:

* a session's group holds its students until the end of the window, then nobody (teachers'
  scopes are limited to that group, so their reach ends with it); students with research
  access are never in it, and are named in a warning (:func:`.rules.member_students`);
* at the end of the window every server started for the session is stopped;
* logins end by themselves (the authenticator refuses outside the window and on refresh).

Rounds are idempotent and start from the hub's state, so a restart (of the service or the
hub) just resumes; a failed call is retried at the next round. Run by the hub as a managed
service (``python -m services.teaching``) with a token that may list users and servers,
stop servers and manage groups, nothing else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from hub_config.loader import cached_config
from hub_config.model import WorkbenchConfig
from services.managed import is_managed, stop_when_orphaned

from .rules import group_members, member_students, window_state

log = logging.getLogger("teaching")

ActionKind = Literal["create_group", "add_to_group", "remove_from_group", "stop_server"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    session: str
    group: str = ""
    users: tuple[str, ...] = ()
    user: str = ""
    server: str = ""

    def __str__(self) -> str:
        if self.kind == "stop_server":
            name = f"{self.user}/{self.server}" if self.server else self.user
            return f"stop server {name} (session {self.session} ended)"
        return f"{self.kind.replace('_', ' ')} {self.group}: {', '.join(self.users)}".rstrip(": ")


def plan(
    config: WorkbenchConfig,
    now: dt.datetime,
    users: Iterable[Mapping[str, Any]],
    groups: Mapping[str, set[str] | None],
) -> list[Action]:
    """What to do now. ``users``: hub user models with their servers; ``groups``: the
    session groups' members as the hub has them (None: the group does not exist)."""
    users = list(users)
    actions: list[Action] = []
    for session in config.teaching:
        want = set(group_members(config, session, now))
        have = groups.get(session.group)
        if have is None:
            actions.append(Action("create_group", session.id, session.group))
            have = set()
        if want - have:
            actions.append(Action("add_to_group", session.id, session.group, tuple(sorted(want - have))))
        if have - want:
            actions.append(Action("remove_from_group", session.id, session.group,
                                  tuple(sorted(have - want))))
        if window_state(session, now) != "ended":
            continue
        for user in users:
            for name, server in (user.get("servers") or {}).items():
                options = server.get("user_options") or {}
                stopping = (server.get("pending") == "stop") or server.get("stopped")
                if isinstance(options, dict) and options.get("project") == session.id and not stopping:
                    actions.append(Action("stop_server", session.id, user=user["name"], server=name))
    return actions


class HubClient:
    """The few hub API calls the reconciler makes."""

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.http = httpx.AsyncClient(
            base_url=api_url.rstrip("/") + "/",
            headers={"Authorization": f"token {token}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def active_users(self) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = []
        offset = 0
        while True:
            response = await self.http.get(
                "users", params={"state": "active", "offset": offset, "limit": 200},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            response.raise_for_status()
            body = response.json()
            items = body["items"] if isinstance(body, dict) else body
            users.extend(items)
            following = (body.get("_pagination") or {}).get("next") if isinstance(body, dict) else None
            if not following:
                return users
            offset = following["offset"]

    async def group_members(self, name: str) -> set[str] | None:
        response = await self.http.get(f"groups/{quote(name)}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return set(response.json().get("users") or [])

    async def apply(self, action: Action) -> None:
        if action.kind == "create_group":
            response = await self.http.post(f"groups/{quote(action.group)}")
            if response.status_code == 409:  # made meanwhile: fine
                return
        elif action.kind == "add_to_group":
            for user in action.users:  # students not yet known to the hub are created first
                await self.http.post(f"users/{quote(user)}")
            response = await self.http.post(f"groups/{quote(action.group)}/users",
                                            json={"users": list(action.users)})
        elif action.kind == "remove_from_group":
            response = await self.http.request("DELETE", f"groups/{quote(action.group)}/users",
                                               json={"users": list(action.users)})
        else:
            path = (f"users/{quote(action.user)}/servers/{quote(action.server)}" if action.server
                    else f"users/{quote(action.user)}/server")
            response = await self.http.delete(path)
            if response.status_code in (400, 404):  # already stopped or gone
                return
        response.raise_for_status()


async def reconcile_once(
    hub: HubClient, config: WorkbenchConfig, now: dt.datetime
) -> list[Action]:
    """One round: read the hub, plan, act. Returns what was done (failures are logged and
    left for the next round)."""
    groups = {s.group: await hub.group_members(s.group) for s in config.teaching}
    users = await hub.active_users() if any(
        window_state(s, now) == "ended" for s in config.teaching
    ) else []
    done = []
    for action in plan(config, now, users, groups):
        try:
            await hub.apply(action)
        except httpx.HTTPError as exc:
            log.error("teaching: could not %s: %s", action, exc)
            continue
        log.info("teaching: %s", action)
        done.append(action)
    return done


async def run(
    hub: HubClient,
    config: Callable[[], WorkbenchConfig],
    stop: asyncio.Event,
    interval: float,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
) -> None:
    warned: set[str] = set()
    while not stop.is_set():
        try:
            current = config()
            warned = warn_once(member_students(current), warned)
            await reconcile_once(hub, current, clock())
        except Exception:  # the loop must survive a hub restart or a bad round
            log.exception("teaching: reconcile round failed; retrying next round")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass


def warn_once(warnings: list[str], said: set[str]) -> set[str]:
    """Log the warnings not logged yet (at start, and after an edit of the YAML)."""
    for line in warnings:
        if line not in said:
            log.warning("teaching: %s", line)
    return set(warnings)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    asyncio.run(_serve())


async def _serve() -> None:
    hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    interval = float(os.environ.get("WORKBENCH_TEACHING_INTERVAL", "30"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("teaching reconciler: a round every %g s", interval)
    watcher = asyncio.create_task(stop_when_orphaned(stop, "teaching")) if is_managed() else None
    try:
        await run(hub, lambda: cached_config(log=log), stop, interval)
    finally:
        if watcher is not None:
            watcher.cancel()
        await hub.aclose()
