"""The airlock's page and REST API, run by JupyterHub as a managed service.

Access needs ``access:services!service=airlock`` (every user and server has it); reviewing
also needs the custom scope ``custom:airlock:review`` (the hub grants it to the YAML's data
stewards) and stewardship of the request's project. 401 without a token, 403 without the
scope. Browsers sign in through hub OAuth; form posts carry the XSRF token. Routes (under
the service prefix):

  GET  /                          page: your requests, a new request, the review queue
  GET  api/health                 liveness, no details
  GET  api/catalogue[?project=P]  the data catalogue seen from project P (the widget's data)
  GET  api/files?project=P        files of the project workspace that can be exported
  GET  api/requests               requests you may see (yours, your projects', to review)
  POST api/requests               {"project", "paths": [...], "note"} -> 201 pending_review,
                                  or 422 refused with the findings
  GET  api/requests/ID            one request
  POST api/requests/ID/review     {"decision": "approve"|"reject", "reason",
                                   "acknowledge_flags"} (stewards)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import secrets
import signal
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.httpserver import HTTPServer

from datasets_mount import catalogue
from hub_config.loader import cached_config
from hub_config.storage import StorageLayout, default_data_dir
from services.managed import is_managed, stop_when_orphaned

from .airlock import Airlock
from .errors import AirlockError, Forbidden, Invalid, Unauthenticated
from .pages import airlock_page

log = logging.getLogger("airlock")

REVIEW_SCOPE = "custom:airlock:review"


class _Handler(HubOAuthenticated, web.RequestHandler):
    airlock: Airlock

    def initialize(self, airlock: Airlock, hub_auth: HubOAuth) -> None:
        self.airlock = airlock
        self.hub_auth = hub_auth

    @property
    def username(self) -> str:
        return str(self.current_user["name"])  # type: ignore[index]

    def require_user(self) -> None:
        if self.current_user is not None:
            return
        if self.hub_auth.get_user(self) is not None:
            raise Forbidden("This token does not grant access to the airlock "
                            "(access:services!service=airlock).", reason="missing_scope")
        raise Unauthenticated("Sign in to the workbench: this request carries no valid hub token.")

    def require_reviewer(self) -> None:
        self.require_user()
        if not self.hub_auth.check_scopes({REVIEW_SCOPE}, self.current_user):
            raise Forbidden(f"Reviewing exports needs the scope {REVIEW_SCOPE} (data stewards).",
                            reason="missing_scope")

    def can_review(self) -> bool:
        return bool(self.hub_auth.check_scopes({REVIEW_SCOPE}, self.current_user))

    def body_json(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise Invalid("The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise Invalid("The request body must be a JSON object.")
        return body

    def send(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, AirlockError):
            payload = error.to_json()
        elif isinstance(error, web.HTTPError):
            payload = {"error": {"message": error.log_message or self._reason, "reason": "http"}}
        else:
            payload = {"error": {"message": "The airlock failed; the admins can see the details "
                                            "in its log.", "reason": "internal"}}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, AirlockError):
            log.info("%s %s: %s", self.request.method, self.request.path, e.log_message)
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok"})


class CatalogueHandler(_Handler):
    def get(self) -> None:
        self.require_user()
        config = self.airlock.config()
        project = self.get_query_argument("project", "") or None
        if project and self.username not in _members(config, project):
            raise Forbidden(f"You are not in a project or session called {project!r}.")
        steward = self.username in config.admins or self.airlock.is_steward(self.username)
        today = self.airlock.clock().date()
        self.send({
            "project": project,
            "date": today.isoformat(),
            "datasets": [catalogue.status_json(s, with_projects=steward)
                         for s in catalogue.catalogue_for(config, project, today)],
        })


def _members(config: Any, project_id: str) -> set[str]:
    project = config.project(project_id)
    if project is not None:
        return set(project.members)
    session = config.session(project_id)
    return session.members() if session else set()


class FilesHandler(_Handler):
    async def get(self) -> None:
        self.require_user()
        project = self.get_query_argument("project", "")
        files = await asyncio.to_thread(self.airlock.workspace_files, self.username, project)
        self.send({"project": project, "files": files})


class RequestsHandler(_Handler):
    def get(self) -> None:
        self.require_user()
        self.send({"requests": [r.to_json() for r in self.airlock.requests_for(self.username)]})

    async def post(self) -> None:
        self.require_user()
        body = self.body_json()
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise Invalid("Give 'paths' as a list of paths in the project workspace.")
        project = body.get("project") or ""
        record = await asyncio.to_thread(
            self.airlock.submit, self.username, str(project), paths, str(body.get("note") or "")
        )
        self.set_header("Location", self.request.path.rstrip("/") + "/" + record.id)
        self.send(record.to_json(), status=201 if record.status != "refused" else 422)


class RequestHandler(_Handler):
    def get(self, request_id: str) -> None:
        self.require_user()
        self.send(self.airlock.get(self.username, request_id).to_json())


class ReviewHandler(_Handler):
    async def post(self, request_id: str) -> None:
        self.require_reviewer()
        body = self.body_json()
        record = await asyncio.to_thread(
            self.airlock.review, self.username, request_id, str(body.get("decision") or ""),
            str(body.get("reason") or ""), bool(body.get("acknowledge_flags")),
        )
        self.send(record.to_json())


class PageHandler(_Handler):
    """The page, and its two forms (new request, review): cookie auth with XSRF."""

    @web.authenticated
    def get(self) -> None:
        self.render_page()

    def render_page(self, message: str = "", error: str = "") -> None:
        config = self.airlock.config()
        user = self.username
        projects = [p.id for p in config.projects_of(user)]
        self.set_header("Cache-Control", "no-store")
        self.finish(airlock_page(
            user=user, projects=projects, requests=self.airlock.requests_for(user),
            may_review=lambda r: self.can_review() and self.airlock.may_review(user, r),
            xsrf=self.xsrf_form_html(), prefix=self.settings["airlock_prefix"],
            message=message, error=error,
        ))

    @web.authenticated
    async def post(self) -> None:
        action = self.get_body_argument("action", "")
        try:
            if action == "request":
                paths = [p for p in self.get_body_argument("paths", "").splitlines() if p.strip()]
                record = await asyncio.to_thread(
                    self.airlock.submit, self.username, self.get_body_argument("project", ""),
                    paths, self.get_body_argument("note", ""))
                message = (f"Request {record.id} refused by the checks: see its findings."
                           if record.status == "refused" else
                           f"Request {record.id} is waiting for a data steward's review.")
            elif action == "review":
                self.require_reviewer()
                record = await asyncio.to_thread(
                    self.airlock.review, self.username, self.get_body_argument("request", ""),
                    self.get_body_argument("decision", ""), self.get_body_argument("reason", ""),
                    self.get_body_argument("acknowledge_flags", "") == "yes")
                message = f"Request {record.id}: {record.status}."
            else:
                raise Invalid("Unknown action.")
        except AirlockError as error:
            self.set_status(error.status)
            self.render_page(error=error.message)
            return
        self.render_page(message=message)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    def initialize(self, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


def make_app(airlock: Airlock, prefix: str, hub_auth: HubOAuth, cookie_secret: bytes) -> web.Application:
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    args = {"airlock": airlock, "hub_auth": hub_auth}
    return web.Application(
        [
            (prefix, PageHandler, args),
            (prefix + "oauth_callback", OAuthCallbackHandler, {"hub_auth": hub_auth}),
            (prefix + "api/health", HealthHandler),
            (prefix + "api/catalogue", CatalogueHandler, args),
            (prefix + "api/files", FilesHandler, args),
            (prefix + "api/requests", RequestsHandler, args),
            (prefix + r"api/requests/([A-Za-z0-9-]+)", RequestHandler, args),
            (prefix + r"api/requests/([A-Za-z0-9-]+)/review", ReviewHandler, args),
        ],
        cookie_secret=cookie_secret,
        login_url=hub_auth.login_url,
        airlock_prefix=prefix,
        # Cookie-authenticated posts are XSRF-checked by HubOAuth itself (the page's forms
        # carry the token); token-authenticated API calls need none.
        xsrf_cookies=False,
        xsrf_cookie_kwargs={"path": prefix},
    )


def build_airlock() -> Airlock:
    data = default_data_dir().resolve()
    return Airlock(
        config=lambda: cached_config(log=log),
        storage=StorageLayout(data),
        root=data / "airlock",
        egress=data / os.environ.get("WORKBENCH_EGRESS_DIR", "egress"),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/airlock/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8092"))
    asyncio.run(_serve(prefix, url.hostname or "127.0.0.1", url.port or 8092))


async def _serve(prefix: str, host: str, port: int) -> None:
    airlock = build_airlock()
    delivered = await asyncio.to_thread(airlock.recover)
    if delivered:
        log.warning("delivered %d approved export(s) a restart had interrupted", len(delivered))
    hub_auth = HubOAuth(cache_max_age=60)
    server = HTTPServer(make_app(airlock, prefix, hub_auth, secrets.token_bytes(32)))
    server.listen(port, address=host)
    log.info("airlock on http://%s:%d%s (egress %s) at %s", host, port, prefix, airlock.egress,
             dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(stop_when_orphaned(stop, "airlock")) if is_managed() else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    server.stop()
