"""What every workbench spawner shares: project/profile choice, checks, environment, progress.

Mixed into a JupyterHub ``Spawner`` (local processes here, Nomad jobs in
``spawners.nomad``). The mixin only orchestrates: the rules live in
:mod:`spawners.selection` and the form in :mod:`spawners.form`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from jupyterhub.scopes import has_scope
from jupyterhub.utils import maybe_future
from traitlets import Bool, Callable, Float, HasTraits, Unicode, default

from extensions import busy_activity
from hub_config.loader import cached_config
from hub_config.model import Profile, WorkbenchConfig
from hub_config.storage import StorageLayout, default_data_dir
from services.quota.accounts import project_accounts
from services.quota.errors import QuotaError
from services.quota.spawning import SpawnQuota
from services.teaching import rules as teaching
from services.teaching.quota import account_of

from .errors import spawn_error
from .form import options_from_formdata, render_options_form
from .selection import (
    Selection,
    SelectionRefused,
    choices_for,
    resolve_selection,
    resolve_selection_for,
    selection_from_state,
)

STATE_VERSION = 2  # 2: adds the quota allocation id


class WorkbenchSpawnerMixin(HasTraits):
    """Put before the concrete Spawner class: ``class X(WorkbenchSpawnerMixin, Spawner)``."""

    workbench_config_file = Unicode(
        "",
        config=True,
        help="""Path of the workbench YAML (projects, profiles, approvals).

        Empty means $WORKBENCH_CONFIG, else the bundled demo file. The file is re-read when
        it changes; an invalid edit keeps the last good version and is logged.
        """,
    )

    data_dir = Unicode(
        config=True,
        help="""Root of the workbench storage (homes, project workspaces, datasets).

        Defaults to $WORKBENCH_DATA_DIR, else ./var beside the checkout.
        """,
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(default_data_dir())

    gateway_url = Unicode(
        "",
        config=True,
        help="""URL at which single-user servers reach the sample gateway service.

        Passed to servers as WORKBENCH_GATEWAY_URL; requests to it carry the server's own
        hub token, never archive credentials.
        """,
    )

    project_notes_hook = Callable(
        None,
        allow_none=True,
        config=True,
        help="""Optional ``async (spawner, project_ids) -> {project_id: [line, ...]}``.

        Adds lines under each project in the spawn form (the quota service uses it to show
        the remaining budget). Must not raise: failures are logged and the form still renders.
        """,
    )

    quota_db_url = Unicode(
        "",
        config=True,
        help="""SQLAlchemy URL of the quota ledger; empty turns quota enforcement off.

        'sqlite:////path/ledger.sqlite' (the default the hub config sets) or
        'postgresql://user:password@host/db'. The quota service and its CLI must use the same
        database. With a ledger, every start is reserved against the project's budget and
        refused when a limit is reached; when the ledger cannot be reached, starts are refused
        (not started unaccounted).
        """,
    )

    quota_reservation_ttl = Float(
        900.0,
        config=True,
        help="""Seconds a quota reservation holds its GPUs and server slot before the server
        has started. Keep it above start_timeout: a reservation whose start never comes (a hub
        that died mid-spawn) is released after this time by the quota service.""",
    )

    busy_kernels_are_active = Bool(
        True,
        config=True,
        help="""Enable the server extension ``extensions.busy_activity`` (through
        JUPYTER_CONFIG_PATH): a busy kernel counts as activity, so the hub's idle culler never
        stops a server mid-computation. Needs the workbench package in the server's
        environment (the local spawner's has it); a container image without this checkout
        skips the path and must enable the extension in its own Jupyter config.""",
    )

    slow_spawn_message_after = Float(
        20.0,
        config=True,
        help="Seconds after which the progress stream says the start is slower than usual.",
    )

    # Spawner-facing state ------------------------------------------------------------------
    selection: Selection | None = None
    quota_allocation: str | None = None  # the ledger row this server is accounted on
    _quota_stop_requested = False

    @property
    def workbench(self) -> WorkbenchConfig:
        return cached_config(self.workbench_config_file or None, log=self.log)

    @property
    def storage(self) -> StorageLayout:
        return StorageLayout(Path(self.data_dir).resolve())

    def today(self) -> dt.date:
        return dt.date.today()

    def now(self) -> dt.datetime:
        """The time teaching-session windows are checked against (aware)."""
        return dt.datetime.now(dt.timezone.utc)

    def profile_unavailable(self, profile: Profile) -> str | None:
        """Why this hub cannot run ``profile`` (e.g. no GPUs on a local hub); None if it can."""
        return None

    # Options form ---------------------------------------------------------------------------
    @default("options_form")
    def _default_options_form(self):  # noqa: ANN202 - JupyterHub accepts a callable here
        return _render_form

    @default("options_from_form")
    def _default_options_from_form(self):  # noqa: ANN202
        return options_from_formdata

    @default("apply_user_options")
    def _applied_by_the_selection(self):  # noqa: ANN202
        """user_options (project, profile, ...) are checked and applied as one selection in
        run_pre_spawn_hook, not key by key; saying so stops JupyterHub logging them as
        unhandled at every start."""
        return _options_applied_by_selection

    # Checks before start (form and REST API alike) --------------------------------------------
    def run_pre_spawn_hook(self):  # noqa: ANN201 - JupyterHub's signature
        self.selection = self.check_selection(self.user_options or {})
        self._record_resolved_options(self.selection)
        self._set_default_url(self.selection)
        self._set_access_scopes(self.selection)
        profile = self.selection.profile
        self.mem_limit = profile.memory
        self.cpu_limit = profile.cpu
        self.cpu_guarantee = profile.cpu
        self.mem_guarantee = profile.memory
        self._reset_progress()
        if self.quota is not None:
            return self._reserve_quota_then_pre_spawn_hook()
        return super().run_pre_spawn_hook()  # type: ignore[misc]

    async def _reserve_quota_then_pre_spawn_hook(self) -> Any:
        await self.reserve_quota()
        return await maybe_future(super().run_pre_spawn_hook())  # type: ignore[misc]

    def check_selection(self, user_options: dict[str, Any]) -> Selection:
        owner = self.user.name  # type: ignore[attr-defined]
        requester = self.requester()
        try:
            if requester is None:
                selection = resolve_selection(
                    self.workbench, owner, user_options, self.today(), now=self.now()
                )
            else:  # a teacher starting a student's server: the session's server only
                selection = resolve_selection_for(
                    self.workbench, owner, requester, user_options, self.today(), now=self.now()
                )
        except SelectionRefused as refusal:
            status = 403 if refusal.reason == "not_owner" else 400
            raise spawn_error(refusal.message, reason=refusal.reason, status_code=status) from None
        why_not = self.profile_unavailable(selection.profile)
        if why_not:
            raise spawn_error(why_not, reason="profile_unavailable", status_code=400)
        return selection

    def requester(self) -> str | None:
        """Who asked for this start when it is limited to teaching sessions: None for the
        owner, for admins and services holding ``start:servers`` without a filter, and for
        starts without a request (the hub's handler is gone); else the user's name.

        JupyterHub hands the requesting handler to the spawner for the spawn
        (``Spawner.handler``); its ``current_user`` is the token's or the cookie's owner
        alike (a ``User``, or an ``orm.Service`` with ``kind == "service"``), and its
        ``parsed_scopes`` are that request's scopes. Stopping cannot be limited this way:
        the hub runs no spawner hook that may refuse a stop, and its scopes filter by user,
        group or server name, never by what a server runs (see
        :func:`services.teaching.rules.teacher_scopes`).
        """
        handler = getattr(self, "handler", None)
        if handler is None:
            return None
        try:
            who = handler.current_user
        except RuntimeError:  # a handler that never authenticated (not a hub request)
            who = None
        if who is None:
            return ""  # nobody may start someone else's server anonymously
        if getattr(who, "kind", "user") == "user" and who.name == self.user.name:  # type: ignore[attr-defined]
            return None
        if has_scope("start:servers", getattr(handler, "parsed_scopes", None) or {}):
            return None
        return str(who.name)

    def _record_resolved_options(self, selection: Selection) -> None:
        """Options left implicit (one project, the default profile, a student's session)
        are saved as chosen: the idle culler, the admin page and a restart read them."""
        resolved = {"project": selection.project.id, "profile": selection.profile.slug}
        if (self.user_options or {}) == resolved:  # type: ignore[has-type]
            return
        self.user_options = resolved
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None:
            orm_spawner.user_options = resolved

    def _set_default_url(self, selection: Selection) -> None:
        """A teaching session's server opens on the course notebook (or nbgitpuller's pull)."""
        if not hasattr(self, "_workbench_default_url"):
            self._workbench_default_url = self.default_url  # type: ignore[has-type]
        session = selection.session
        self.default_url = (
            teaching.course_url(session) if session and session.notebooks
            else self._workbench_default_url
        )

    def _set_access_scopes(self, selection: Selection) -> None:
        """A student's session server also accepts ``access:servers!group=<session group>``:
        the scope the session's teachers hold. A server checks a visitor's token on its own
        and cannot resolve a group filter to its user, so it must be told the group scope
        (as JupyterHub's RBAC documentation advises). Other students do not hold that scope."""
        if not hasattr(self, "_workbench_access_scopes"):
            self._workbench_access_scopes = list(self.oauth_access_scopes)  # type: ignore[has-type]
        scopes = list(self._workbench_access_scopes)
        session = selection.session
        if session is not None and self.user.name in session.students:  # type: ignore[attr-defined]
            scopes.append(f"access:servers!group={session.group}")
        self.oauth_access_scopes = scopes

    def dataset_messages(self) -> list[str]:
        """Progress lines for the requested datasets this server does not get, and why."""
        if self.selection is None:
            return []
        return [status.message for status in self.selection.refused_datasets]

    # Quota: reserve before start, account from start to stop --------------------------------
    @property
    def quota(self) -> SpawnQuota | None:
        if not self.quota_db_url:
            return None
        return SpawnQuota(self.quota_db_url, self.quota_reservation_ttl)

    async def reserve_quota(self) -> None:
        """Reserve the profile's GPUs and cores against the project's budget, or refuse."""
        assert self.quota is not None and self.selection is not None
        project, profile = self.selection.project, self.selection.profile
        session = self.selection.session
        account = account_of(session) if session else project_accounts(self.workbench)[project.id]
        self._quota_stop_requested = False
        try:
            self.quota_allocation = await self.quota.reserve(
                account,
                user=self.user.name,  # type: ignore[attr-defined]
                server_name=self.name or "",  # type: ignore[attr-defined]
                profile=profile.slug,
                gpus=profile.gpus,
                cpu=profile.cpu,
            )
        except QuotaError as error:
            raise _spawn_refusal(error) from None
        # Saved at once: a hub killed before the start returns finds the reservation in the
        # server's state on restart, and its post-stop hook releases it.
        save_state_now(self)
        held = f"{profile.gpus} GPU(s) and {_number(profile.cpu)} core(s)" if profile.gpus else (
            f"{_number(profile.cpu)} core(s)"
        )
        self.emit_progress(5, f"Quota: {held} reserved for project {project.id}")

    async def start(self):  # noqa: ANN201 - returns what the concrete spawner's start returns
        result = await super().start()  # type: ignore[misc]
        if self.quota is not None and self.quota_allocation:
            # Unaccounted use is not allowed: the hub stops a server it cannot account for.
            try:
                accounted = await self.quota.started(self.quota_allocation, self._quota_probe_url(result))
            except QuotaError as error:
                raise _spawn_refusal(error) from None
            if not accounted:
                raise spawn_error(
                    f"The server took longer to start than its quota reservation lasts "
                    f"({self.quota_reservation_ttl:g} s), so its GPUs and slot may have gone to "
                    "another start. Please start it again.",
                    reason="quota_reservation_expired",
                    status_code=503,
                )
        return result

    async def get_url(self) -> str:
        """Where the server is, asked by JupyterHub after a restart for each server whose
        ``poll()`` says it runs (``init_spawners``), before it waits ``http_timeout`` for it.

        A start the old hub did not see through (killed mid-spawn) is picked up here: the
        concrete spawner's ``recovered_url()`` finds the server (Nomad: waits for its
        allocation within what is left of ``start_timeout``), and its quota reservation
        becomes the running interval, as the end of ``start()`` would have done. Never raises
        (JupyterHub does not catch errors here): without a URL, the one in the database is
        returned, the hub finds nothing there and stops the server, which closes its quota.
        """
        recovered = getattr(self, "recovered_url", None)
        url = None
        if recovered is not None:
            try:
                url = await recovered()
            except Exception:
                self.log.exception("could not find %s after the hub restart", self._log_name)  # type: ignore[attr-defined]
        if url is None:
            return await super().get_url()  # type: ignore[misc]
        if self.quota is not None and self.quota_allocation:
            try:
                accounted = await self.quota.adopt(self.quota_allocation, url)
            except QuotaError as error:
                self.log.error("quota: cannot account %s: %s", self._log_name, error.log_message)  # type: ignore[attr-defined]
                accounted = False
            if not accounted:
                # Unaccounted use is not allowed (as in start()): stop it; the hub then finds
                # nothing at the URL and removes the server.
                self.log.warning(  # type: ignore[attr-defined]
                    "%s: its quota reservation %s lapsed while the hub was down; stopping it",
                    self._log_name,  # type: ignore[attr-defined]
                    self.quota_allocation,
                )
                await self.stop(now=True)
        return url

    def _quota_probe_url(self, result: Any) -> str | None:
        """Where the quota service checks that the server is alive (its unauthenticated /api)."""
        if isinstance(result, tuple) and len(result) == 2:
            server = getattr(self, "server", None)
            base = server.base_url if server is not None else "/"
            return f"http://{result[0]}:{int(result[1])}{base}"
        return result if isinstance(result, str) else None

    async def stop(self, now: bool = False) -> None:
        self._quota_stop_requested = True
        await super().stop(now=now)  # type: ignore[misc]

    def run_post_stop_hook(self):  # noqa: ANN201 - JupyterHub's signature
        if self.quota is not None and self.quota_allocation:
            return self._close_quota_then_post_stop_hook()
        return super().run_post_stop_hook()  # type: ignore[misc]

    async def _close_quota_then_post_stop_hook(self) -> Any:
        assert self.quota is not None and self.quota_allocation
        requested = self._quota_stop_requested
        try:
            await self.quota.ended(
                self.quota_allocation,
                requested=requested,
                reason="stopped" if requested else "server died (seen by the hub's poll)",
            )
        except QuotaError as error:
            # The quota service's reconciler closes it once the ledger is back.
            self.log.error("quota: could not close %s: %s", self.quota_allocation, error.log_message)  # type: ignore[attr-defined]
        self.quota_allocation = None
        self._quota_stop_requested = False
        return await maybe_future(super().run_post_stop_hook())  # type: ignore[misc]

    # Environment ---------------------------------------------------------------------------
    def get_env(self) -> dict[str, str]:
        env = super().get_env()  # type: ignore[misc]
        env.update(self.workbench_env())
        if self.busy_kernels_are_active:
            env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
                filter(None, [str(busy_activity.jupyter_config_dir()), env.get("JUPYTER_CONFIG_PATH")])
            )
        return env

    def workbench_env(self) -> dict[str, str]:
        """What the server and its notebooks need to know about their project (no secrets)."""
        if self.selection is None:
            return {}
        project, profile = self.selection.project, self.selection.profile
        env = {
            "WORKBENCH_PROJECT": project.id,
            "WORKBENCH_PROJECT_TITLE": project.title,
            "WORKBENCH_PROFILE": profile.slug,
            "WORKBENCH_CPU_LIMIT": _number(profile.cpu),
            "WORKBENCH_MEM_LIMIT": str(profile.memory),
            "WORKBENCH_GPUS": str(profile.gpus),
            "WORKBENCH_DATASETS": ",".join(d.id for d in self.selection.datasets),
            # Dask formats this with the environment plus {host}/{port}: dashboard links point
            # at the server's jupyter-server-proxy, behind the hub's login.
            "DASK_DISTRIBUTED__DASHBOARD__LINK": "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status",
        }
        if self.selection.session is not None:
            env["WORKBENCH_SESSION"] = self.selection.session.id
        if self.gateway_url:
            env["WORKBENCH_GATEWAY_URL"] = self.gateway_url
        return env

    # Progress: kept on the spawner and replayed to every listener ------------------------------
    def _reset_progress(self) -> None:
        self._progress_events: list[dict[str, Any]] = []
        self._progress_changed = asyncio.Event()
        self._progress_started = time.monotonic()

    def emit_progress(self, percent: int, message: str) -> None:
        """Record an event; percentages only go up and stay below 100 until the server is up."""
        if not hasattr(self, "_progress_events"):
            self._reset_progress()
        last = self._progress_events[-1]["progress"] if self._progress_events else 0
        event = {"progress": max(last, min(int(percent), 99)), "message": message}
        self._progress_events.append(event)
        self.log.info("spawn progress for %s: %s%% %s", self._log_name, event["progress"], message)  # type: ignore[attr-defined]
        self._progress_changed.set()

    async def progress(self):  # noqa: ANN201 - async generator, JupyterHub's signature
        if not hasattr(self, "_progress_events"):
            self._reset_progress()
        sent = 0
        slow_said = False
        while True:
            events = self._progress_events
            while sent < len(events):
                yield events[sent]
                sent += 1
            if not self._spawn_pending:  # type: ignore[attr-defined]
                return
            self._progress_changed.clear()
            try:
                await asyncio.wait_for(self._progress_changed.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            waited = time.monotonic() - self._progress_started
            if not slow_said and waited > self.slow_spawn_message_after:
                slow_said = True
                self.emit_progress(
                    events[-1]["progress"] if events else 10,
                    f"Still starting after {waited:.0f} s: this is slower than usual. "
                    "The page will update as soon as the server answers.",
                )

    # State that survives a hub restart ----------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        if self.selection is not None:
            state["workbench"] = {
                "version": STATE_VERSION,
                "project": self.selection.project.id,
                "profile": self.selection.profile.slug,
            }
            if self.quota_allocation:
                state["workbench"]["allocation"] = self.quota_allocation
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        saved = (state or {}).get("workbench")
        if not isinstance(saved, dict):
            return
        # Version 1 had no allocation: such a server started before quotas were on.
        allocation = saved.get("allocation")
        self.quota_allocation = allocation if isinstance(allocation, str) else None
        # A server that is already running keeps its project even if the approval lapsed
        # since; the next start is checked again.
        selection = selection_from_state(
            self.workbench, str(saved.get("project")), str(saved.get("profile")), self.today()
        )
        if selection is not None:
            self.selection = selection
        else:
            self.log.warning(  # type: ignore[attr-defined]
                "saved workbench state of %s names project %r / profile %r, no longer configured",
                self._log_name,  # type: ignore[attr-defined]
                saved.get("project"),
                saved.get("profile"),
            )

    def clear_state(self) -> None:
        super().clear_state()  # type: ignore[misc]
        self.selection = None
        # quota_allocation is not cleared here: LocalProcessSpawner.poll() clears the state of a
        # server that never got a pid, before the post-stop hook that must release its
        # reservation. The hook clears it once the ledger has the end; a new reservation
        # replaces it.


def save_state_now(spawner: Any) -> None:
    """Write the spawner's state to the hub database now, mid-start.

    JupyterHub saves it only after ``start()`` returns; a hub killed before that would find
    neither the quota reservation, the Nomad job nor the process of the start it cut short.
    """
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is None:
        return
    try:
        from sqlalchemy import inspect

        session = inspect(orm_spawner).session
        if session is not None:
            orm_spawner.state = spawner.get_state()
            session.commit()
    except Exception:
        spawner.log.warning("could not save the state of %s early", spawner._log_name, exc_info=True)


async def _render_form(spawner: WorkbenchSpawnerMixin) -> str:
    config = spawner.workbench
    choices = choices_for(config, spawner.user.name, spawner.today(), spawner.now())  # type: ignore[attr-defined]
    usable = [c for c in choices if c.unavailable is None]
    if len(usable) == 1 and all(c.session is not None for c in choices):
        # A student (or teacher) whose one choice is the session: no form, straight to the
        # course notebook (the hub spawns with default options when the form is empty).
        return ""
    notes: dict[str, list[str]] = {}
    if spawner.project_notes_hook is not None:
        try:
            notes = await spawner.project_notes_hook(spawner, [c.project.id for c in choices])
        except Exception:  # the form must still render when the quota service is down
            spawner.log.exception("project_notes_hook failed")  # type: ignore[attr-defined]
    unavailable = {
        p.slug: why for p in config.profiles if (why := spawner.profile_unavailable(p)) is not None
    }
    previous = spawner.user_options or {}  # type: ignore[attr-defined]
    return render_options_form(
        choices,
        project_notes=notes,
        unavailable_profiles=unavailable,
        selected_project=previous.get("project"),
        selected_profile=previous.get("profile"),
        elsewhere=_pages_for(config, spawner.user.name, spawner.hub.base_url) if not choices else (),  # type: ignore[attr-defined]
    )


def _pages_for(config: WorkbenchConfig, username: str, hub_base_url: str) -> list[tuple[str, str]]:
    """The pages of a steward or admin who has no project (and so nothing to start)."""
    prefix = hub_base_url.rstrip("/").removesuffix("hub")  # "/hub/" -> "/"
    pages = []
    if username in config.data_stewards or any(username in p.stewards for p in config.projects):
        pages.append(("Export requests to review (the airlock)", f"{prefix}services/airlock/"))
    if username in config.admins:
        pages.append(("Users and servers (the hub's admin page)", f"{prefix}hub/admin"))
        pages.append(("Quotas of loaned compute", f"{prefix}services/quota/"))
    return pages


def _spawn_refusal(error: QuotaError) -> Exception:
    """The quota's message on the spawn page, the error page and the REST answer alike."""
    return spawn_error(
        error.message, reason=error.reason, log_message=error.log_message, status_code=error.status
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _options_applied_by_selection(spawner: Any, user_options: dict[str, Any]) -> None:
    """See WorkbenchSpawnerMixin._applied_by_the_selection."""
