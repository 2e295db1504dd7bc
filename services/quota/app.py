"""The quota service: admin pages and REST API behind hub OAuth, and the enforcer loop.

JupyterHub runs it as a managed service (``python -m services.quota``). Access needs
``access:services!service=quota``; admin views and changes also need the custom scope
``custom:quota:admin`` (the hub config grants both to the YAML's admins): 401 without a
token, 403 without the scope. Routes (under the service prefix):

  GET    /                          admin page: usage vs budget, plots, per-user breakdown
  GET    plot/ACCOUNT.svg           usage over time as SVG                        [admin]
  GET    api/usage[?at=2026-05]     every account's usage vs budget (JSON)        [admin]
  GET    api/usage/ACCOUNT          one account, with per-user rows and daily use [admin]
  GET    api/report?format=csv      per account and per user, like sreport        [admin]
  GET    api/budgets/ACCOUNT        configured budget, override, effective budget [admin]
  PUT    api/budgets/ACCOUNT        {"gpu_hours": 300, ...} override; null removes a limit
  DELETE api/budgets/ACCOUNT        back to the YAML's budget                     [admin]
  GET    api/me                     the caller's projects: what is left, notices
  GET    api/notices                the caller's current notices (token)
  GET    notices                    the same, signing in through hub OAuth (JupyterLab polls it)
  POST   api/allocations            {"project", "kind": "batch"|"dask-worker", "gpus", "cpu"}
  GET    api/allocations/ID         one allocation (its stop request, if any)
  POST   api/allocations/ID/start   it runs: usage counts from now
  POST   api/allocations/ID/heartbeat   still running (allocations without a URL)
  DELETE api/allocations/ID         it ended (or: release the reservation)
  GET    api/health                 liveness, no details
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
)
from pydantic import ValidationError
from tornado import web
from tornado.httpserver import HTTPServer

from hub_config.loader import cached_config
from hub_config.model import Budget, WorkbenchConfig
from services.managed import is_managed, stop_when_orphaned

from .accounts import Account, all_accounts
from .budgets import (
    KINDS,
    SERVER,
    effective_budget,
    remaining_lines,
    usage_of,
)
from .enforcer import Enforcer, EnforcerSettings, HubApi
from .errors import Forbidden, NotFound, QuotaError
from .ledger import Claim, Ledger, ledger_for
from .notices import for_user, severity
from .pages import forbidden_page, overview_page
from .plots import usage_svg
from .report import account_report, report_rows, reports, to_csv

log = logging.getLogger("quota")

ADMIN_SCOPE = "custom:quota:admin"
DB_ENV = "WORKBENCH_QUOTA_DB"


def default_db_url(data_dir: str) -> str:
    return f"sqlite:///{os.path.join(data_dir, 'quota', 'ledger.sqlite')}"


@dataclass
class QuotaService:
    ledger: Ledger
    config: Callable[[], WorkbenchConfig]
    clock: Callable[[], float] = time.time
    reservation_ttl: float = 900.0
    extra_accounts: Callable[[], dict[str, Account]] = field(default=dict)

    def accounts(self) -> dict[str, Account]:
        return all_accounts(self.config(), self.extra_accounts(), known=self.ledger.accounts())

    def account(self, account_id: str) -> Account:
        account = self.accounts().get(account_id)
        if account is None:
            raise NotFound(f"There is no project or session called {account_id!r}.")
        return account


class _Handler(HubOAuthenticated, web.RequestHandler):
    service: QuotaService

    def initialize(self, service: QuotaService, hub_auth: HubOAuth) -> None:
        self.service = service
        self.hub_auth = hub_auth

    # Identity --------------------------------------------------------------------------------
    @property
    def username(self) -> str:
        return str(self.current_user["name"])  # type: ignore[index]

    @property
    def is_admin(self) -> bool:
        user = self.current_user
        return bool(user) and bool(self.hub_auth.check_scopes({ADMIN_SCOPE}, user))

    def require_user(self) -> None:
        if self.current_user is None:
            raise QuotaError("Sign in to the workbench: no valid hub token came with this request.",
                             reason="unauthenticated", status=401)

    def require_admin(self) -> None:
        self.require_user()
        if not self.is_admin:
            raise Forbidden(f"{self.username} may not see or change other projects' quotas "
                            f"(needs the scope {ADMIN_SCOPE}).")

    # Answers ---------------------------------------------------------------------------------
    def send(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def body_json(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise QuotaError("The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise QuotaError("The request body must be a JSON object.")
        return body

    def moment(self) -> float | None:
        """?at=2026-05 or 2026-05-17: a time inside the period to show (default: now)."""
        text = self.get_query_argument("at", "")
        if not text:
            return None
        return parse_moment(text)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, QuotaError):
            payload = error.to_json()
        elif isinstance(error, web.HTTPError):
            payload = {"error": {"message": error.log_message or self._reason, "reason": "http"}}
        else:
            payload = {"error": {"message": "The quota service failed; the admins can see the details "
                                            "in its log.", "reason": "internal"}}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, QuotaError):
            log.info("%s %s: %s", self.request.method, self.request.path, e.log_message)
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


def parse_moment(text: str, timezone: str = "Europe/Copenhagen") -> float:
    try:
        day = dt.date.fromisoformat(text if len(text) > 7 else f"{text}-01")
    except ValueError:
        raise QuotaError(f"'at' must be a date such as 2026-05 or 2026-05-17, not {text!r}.") from None
    return dt.datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(timezone)).timestamp()


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok"})


class IndexHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        if not self.is_admin:
            self.set_status(403)
            self.finish(forbidden_page(self.username))
            return
        at = self.moment()
        service = self.service
        prefix = self.settings["quota_prefix"]

        def render() -> str:
            now = service.clock()
            accounts = service.accounts()
            items = reports(service.ledger, accounts, now=now, at=at)
            notices = service.ledger.notices(accounts=accounts.keys())
            moment = dt.datetime.fromtimestamp(at or now, ZoneInfo("Europe/Copenhagen")).date()
            first = moment.replace(day=1)
            previous = (first - dt.timedelta(days=1)).strftime("%Y-%m")
            following = (first + dt.timedelta(days=32)).strftime("%Y-%m")
            return overview_page(
                items, notices, plot=usage_svg, prefix=prefix, viewer=self.username,
                previous=previous, following=following if at is not None else None,
            )

        self.set_header("Cache-Control", "no-store")
        self.finish(await asyncio.to_thread(render))


class PlotHandler(_Handler):
    async def get(self, account_id: str) -> None:
        self.require_admin()
        account = self.service.account(account_id)
        at = self.moment()

        def render() -> str:
            report = account_report(self.service.ledger, account, now=self.service.clock(), at=at,
                                    overrides=self.service.ledger.overrides())
            return usage_svg(report)

        self.set_header("Content-Type", "image/svg+xml")
        self.finish(await asyncio.to_thread(render))


class UsageHandler(_Handler):
    async def get(self, account_id: str | None = None) -> None:
        self.require_admin()
        at = self.moment()
        service = self.service

        def read() -> Any:
            now = service.clock()
            if account_id is not None:
                account = service.account(account_id)
                return account_report(service.ledger, account, now=now, at=at,
                                      overrides=service.ledger.overrides()).to_json()
            return {"accounts": [r.to_json() for r in reports(service.ledger, service.accounts(), now=now, at=at)]}

        self.send(await asyncio.to_thread(read))


class ReportHandler(_Handler):
    async def get(self) -> None:
        self.require_admin()
        at = self.moment()
        service = self.service
        rows = await asyncio.to_thread(
            lambda: report_rows(reports(service.ledger, service.accounts(), now=service.clock(), at=at))
        )
        if self.get_query_argument("format", "json") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="quota-report.csv"')
            self.finish(to_csv(rows))
            return
        self.send({"rows": rows})


class BudgetHandler(_Handler):
    def check_xsrf_cookie(self) -> None:
        # Token-authenticated API; browser requests carry the OAuth cookie and HubAuth's checks.
        return None

    async def get(self, account_id: str) -> None:
        self.require_admin()
        account = self.service.account(account_id)
        override = self.service.ledger.overrides().get(account.id)
        view = self.service.ledger.view(account.id, account.budget, now=self.service.clock())
        self.send({
            "account": account.id,
            "configured": account.budget.model_dump(mode="json") if account.budget else None,
            "override": override,
            "effective": view.budget.model_dump(mode="json") if view.budget else None,
        })

    async def put(self, account_id: str) -> None:
        self.require_admin()
        account = self.service.account(account_id)
        fields = self.body_json()
        note = str(fields.pop("note", "") or "")
        validate_override(account, fields)
        merged = self.service.ledger.set_override(account.id, fields, by=self.username,
                                                  now=self.service.clock(), note=note)
        log.warning("budget of %s changed by %s: %s", account.id, self.username, fields)
        self.send({"account": account.id, "override": merged})

    async def delete(self, account_id: str) -> None:
        self.require_admin()
        account = self.service.account(account_id)
        removed = self.service.ledger.clear_override(account.id)
        log.warning("budget override of %s removed by %s", account.id, self.username)
        self.send({"account": account.id, "removed": removed})


def validate_override(account: Account, fields: dict[str, Any]) -> None:
    """Only budget fields, and values the budget model accepts (readable message otherwise)."""
    allowed = set(type(account.budget).model_fields) if account.budget else set(Budget.model_fields)
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise QuotaError(f"Unknown budget field(s): {', '.join(unknown)}. Known: {', '.join(sorted(allowed))}.",
                         reason="bad_budget", status=422)
    try:
        effective_budget(account.budget, fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise QuotaError(f"Invalid budget: {problems}", reason="bad_budget", status=422) from None


class MeHandler(_Handler):
    async def get(self) -> None:
        self.require_user()
        service, user = self.service, self.username

        def read() -> Any:
            now = service.clock()
            accounts = service.accounts()
            mine = {k: a for k, a in accounts.items() if user in a.members}
            projects = []
            for account in mine.values():
                view = service.ledger.view(account.id, account.budget, now=now)
                usage = usage_of(view.spans, view.window, now)
                projects.append({
                    "account": account.id,
                    "title": account.title,
                    "period": view.window.label,
                    "resets_at": view.window.end if view.window.resets else None,
                    "remaining": remaining_lines(view.budget, view.window, usage, user),
                    "used": {"gpu_hours": usage.gpu_hours, "cpu_core_hours": usage.cpu_core_hours,
                             "mine_gpu_hours": usage.of(user).gpu_hours,
                             "mine_cpu_core_hours": usage.of(user).cpu_core_hours},
                })
            return {"user": user, "projects": projects, "notices": _notices_json(service, user, accounts, now)}

        self.send(await asyncio.to_thread(read))


class NoticesHandler(_Handler):
    async def get(self) -> None:
        self.require_user()
        await self.answer()

    async def answer(self) -> None:
        service, user = self.service, self.username

        def read() -> Any:
            now = service.clock()
            return {"notices": _notices_json(service, user, service.accounts(), now)}

        self.send(await asyncio.to_thread(read))


class BrowserNoticesHandler(NoticesHandler):
    """``notices``: the same for JupyterLab in the browser, signing in through hub OAuth."""

    @web.authenticated
    async def get(self) -> None:
        await self.answer()


def _notices_json(service: QuotaService, user: str, accounts: dict[str, Account], now: float) -> list[dict[str, Any]]:
    current = []
    for account in accounts.values():
        if user not in account.members:
            continue
        window = service.ledger.view(account.id, account.budget, now=now).window
        current.extend(service.ledger.notices(accounts=[account.id], since=window.start))
    return [
        {"id": n.id, "account": n.account, "level": n.level, "severity": severity(n.level),
         "message": n.message, "created_at": n.created_at}
        for n in for_user(current, user, accounts)
    ]


class AllocationsHandler(_Handler):
    """Batch runs and Dask workers placed for a project are accounted like servers."""

    def check_xsrf_cookie(self) -> None:
        return None

    async def post(self) -> None:
        self.require_user()
        body = self.body_json()
        account = self.service.account(str(body.get("project") or ""))
        user = self.username
        if user not in account.members and not self.is_admin:
            raise Forbidden(f"{user} is not a member of {account.label}.")
        kind = body.get("kind")
        if kind not in KINDS or kind == SERVER:
            raise QuotaError("'kind' must be 'batch' or 'dask-worker' (servers are accounted by the hub).",
                             status=422)
        try:
            gpus, cpu = int(body.get("gpus", 0)), float(body.get("cpu", 0))
        except (TypeError, ValueError):
            raise QuotaError("'gpus' must be an integer and 'cpu' a number.", status=422) from None
        if gpus < 0 or cpu < 0:
            raise QuotaError("'gpus' and 'cpu' cannot be negative.", status=422)
        claim = Claim(account.id, user, gpus=gpus, cpu=cpu, kind=kind, server_name=str(body.get("name", "")))
        service = self.service
        allocation_id = await asyncio.to_thread(
            service.ledger.reserve, claim, account.budget, now=service.clock(),
            ttl=service.reservation_ttl, account_label=account.label,
        )
        self.send(service.ledger.get(allocation_id).to_json(), status=201)  # type: ignore[union-attr]


class AllocationHandler(_Handler):
    def check_xsrf_cookie(self) -> None:
        return None

    def owned(self, allocation_id: str) -> Any:
        self.require_user()
        record = self.service.ledger.get(allocation_id)
        if record is None or (record.user != self.username and not self.is_admin):
            raise NotFound(f"There is no allocation {allocation_id} of yours.")
        return record

    async def get(self, allocation_id: str, action: str | None = None) -> None:
        self.send(self.owned(allocation_id).to_json())

    async def post(self, allocation_id: str, action: str | None = None) -> None:
        record = self.owned(allocation_id)
        ledger, now = self.service.ledger, self.service.clock()
        if action == "start":
            await asyncio.to_thread(ledger.mark_started, record.id, now=now, url=self.body_json().get("url"))
        elif action == "heartbeat":
            await asyncio.to_thread(ledger.heartbeat, [record.id], now=now)
        else:
            raise NotFound("Use .../start or .../heartbeat.")
        self.send(ledger.get(record.id).to_json())  # type: ignore[union-attr]

    async def delete(self, allocation_id: str, action: str | None = None) -> None:
        record = self.owned(allocation_id)
        ledger, now = self.service.ledger, self.service.clock()
        await asyncio.to_thread(ledger.finish, record.id, at=now, now=now, reason="ended by its owner")
        self.send(ledger.get(record.id).to_json())  # type: ignore[union-attr]


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The OAuth callback, with the same HubOAuth as the other handlers (not a singleton)."""

    def initialize(self, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


def make_app(service: QuotaService, prefix: str, hub_auth: HubOAuth, cookie_secret: bytes) -> web.Application:
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    args = {"service": service, "hub_auth": hub_auth}
    return web.Application(
        [
            (prefix, IndexHandler, args),
            (prefix + "oauth_callback", OAuthCallbackHandler, {"hub_auth": hub_auth}),
            (prefix + "api/health", HealthHandler),
            (prefix + r"plot/([^/]+)\.svg", PlotHandler, args),
            (prefix + "api/usage", UsageHandler, args),
            (prefix + r"api/usage/([^/]+)", UsageHandler, args),
            (prefix + "api/report", ReportHandler, args),
            (prefix + r"api/budgets/([^/]+)", BudgetHandler, args),
            (prefix + "api/me", MeHandler, args),
            (prefix + "api/notices", NoticesHandler, args),
            (prefix + "notices", BrowserNoticesHandler, args),
            (prefix + "api/allocations", AllocationsHandler, args),
            (prefix + r"api/allocations/([0-9a-f]{32})", AllocationHandler, args),
            (prefix + r"api/allocations/([0-9a-f]{32})/(start|heartbeat)", AllocationHandler, args),
        ],
        cookie_secret=cookie_secret,
        login_url=hub_auth.login_url,
        quota_prefix=prefix,
        xsrf_cookies=False,
    )


EXTRA_ACCOUNTS_ENV = "WORKBENCH_QUOTA_EXTRA_ACCOUNTS"
# The teaching sessions of the same YAML: the service and the CLI both default to them, so
# the admin page and `cli show` list the same accounts.
DEFAULT_EXTRA_ACCOUNTS = "services.teaching.quota:teaching_accounts"


def extra_accounts_loader(spec: str, config: Callable[[], WorkbenchConfig]) -> Callable[[], dict[str, Account]]:
    """Accounts besides the projects, from ``"module:function"`` (function(config) -> {id: Account}),
    e.g. the teaching sessions' ``services.teaching.quota:teaching_accounts``. A loader that
    fails is logged and yields no accounts: projects stay enforced."""
    if not spec:
        return dict
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        log.exception("%s=%r cannot be loaded; only projects are accounted", EXTRA_ACCOUNTS_ENV, spec)
        return dict

    def load() -> dict[str, Account]:
        try:
            return dict(function(config()))
        except Exception:  # a broken extra source must not stop project quotas
            log.exception("extra quota accounts from %s failed", spec)
            return {}

    return load


def enforcer_settings_from_env() -> EnforcerSettings:
    def number(name: str, default: float) -> float:
        return float(os.environ.get(name, default))

    return EnforcerSettings(
        interval=number("WORKBENCH_QUOTA_INTERVAL", 30.0),
        probe_timeout=number("WORKBENCH_QUOTA_PROBE_TIMEOUT", 5.0),
        gone_after=number("WORKBENCH_QUOTA_GONE_AFTER", 120.0),
        heartbeat_timeout=number("WORKBENCH_QUOTA_HEARTBEAT_TIMEOUT", 300.0),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a probe per server per tick is noise
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/quota/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8091"))
    asyncio.run(_serve(prefix, url.hostname or "127.0.0.1", url.port or 8091))


async def _serve(prefix: str, host: str, port: int) -> None:
    from hub_config.storage import default_data_dir

    db_url = os.environ.get(DB_ENV) or default_db_url(str(default_data_dir()))
    ledger = ledger_for(db_url)
    def config() -> WorkbenchConfig:
        return cached_config(log=log)

    service = QuotaService(ledger, config,
                           reservation_ttl=float(os.environ.get("WORKBENCH_QUOTA_RESERVATION_TTL", "900")),
                           extra_accounts=extra_accounts_loader(
                               os.environ.get(EXTRA_ACCOUNTS_ENV, DEFAULT_EXTRA_ACCOUNTS), config))
    hub_auth = HubOAuth(cache_max_age=60)
    server = HTTPServer(make_app(service, prefix, hub_auth, secrets.token_bytes(32)))
    server.listen(port, address=host)
    hub = HubApi(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]) if (
        os.environ.get("JUPYTERHUB_API_URL") and os.environ.get("JUPYTERHUB_API_TOKEN")
    ) else None
    enforcer = Enforcer(ledger, service.accounts, hub, enforcer_settings_from_env())
    log.info("quota service on http://%s:%d%s, ledger %s, enforcer every %g s", host, port, prefix,
             ledger.engine.url.render_as_string(hide_password=True), enforcer.settings.interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(stop_when_orphaned(stop, "quota service")) if is_managed() else None
    await enforcer.run(stop)
    if watcher is not None:
        watcher.cancel()
    server.stop()
    if hub is not None:
        await hub.aclose()
