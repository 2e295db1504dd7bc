"""The sample gateway's HTTP API, run by JupyterHub as a managed service.

Callers authenticate with their hub token (a user's server token or a browser's OAuth
cookie); the hub must have granted ``access:services!service=sample-gateway``. The gateway
alone holds the archive credentials. Routes (under the service prefix):

  GET  api/health               liveness, no details
  GET  api/projects             the caller's projects that may pull, with limits and usage
  POST api/search               {"project", "criteria": {...}} -> de-identified study list,
                                next_page (a token for criteria.page), complete, notices
  POST api/thumbnails           {"project", "study_keys": [...]} -> PNG previews (base64),
                                rendered from de-identified pixels, or why not
  POST api/pulls                {"project", "study_keys": [...]} -> 202 and the pull record
  GET  api/pulls?project=ID     recent pulls of a project
  GET  api/pulls/ID             one pull: progress, result path or error
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth, HubAuthenticated
from pydantic import ValidationError
from tornado import web
from tornado.httpserver import HTTPServer

from services.managed import is_managed, stop_when_orphaned

from .errors import BadRequest, GatewayError
from .gateway import Gateway, build_gateway
from .queries import StudyCriteria

log = logging.getLogger("sample_gateway")


class _Handler(HubAuthenticated, web.RequestHandler):
    gateway: Gateway

    def initialize(self, gateway: Gateway, hub_auth: HubAuth) -> None:
        self.gateway = gateway
        self.hub_auth = hub_auth

    def check_xsrf_cookie(self) -> None:
        # Token-authenticated API; browser (cookie) requests are checked by HubAuth itself.
        return None

    def prepare(self) -> None:
        if self.current_user is None:
            raise GatewayError(
                "Sign in to the workbench: this request carries no valid hub token, or the "
                "token does not grant access to the sample gateway.",
                reason="unauthenticated",
                status=401,
            )

    @property
    def username(self) -> str:
        return str(self.current_user["name"])  # type: ignore[index]

    def body_json(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise BadRequest("The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        return body

    def send(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, GatewayError):
            payload = error.to_json()
        elif isinstance(error, web.HTTPError):
            payload = {"error": {"message": error.log_message or self._reason, "reason": "http"}}
        else:
            payload = {
                "error": {
                    "message": "The sample gateway failed unexpectedly; the admins can see "
                    "the details in its log.",
                    "reason": "internal",
                }
            }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, GatewayError):
            log.warning("%s %s by %s: %s", self.request.method, self.request.path,
                        (self.current_user or {}).get("name"), e.log_message)
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok"})


class ProjectsHandler(_Handler):
    def get(self) -> None:
        self.send({"projects": self.gateway.projects_for(self.username)})


class SearchHandler(_Handler):
    async def post(self) -> None:
        body = self.body_json()
        project = _project_field(body)
        try:
            criteria = StudyCriteria.model_validate(body.get("criteria") or {})
        except ValidationError as exc:
            raise BadRequest(_validation_message(exc), reason="bad_criteria") from None
        self.send(await self.gateway.search(self.username, project, criteria))


class ThumbnailsHandler(_Handler):
    async def post(self) -> None:
        body = self.body_json()
        project = _project_field(body)
        keys = body.get("study_keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise BadRequest("Give 'study_keys' as a non-empty list of study keys from a search.")
        self.send(await self.gateway.thumbnails(self.username, project, keys))


class PullsHandler(_Handler):
    async def post(self) -> None:
        body = self.body_json()
        project = _project_field(body)
        keys = body.get("study_keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise BadRequest("Give 'study_keys' as a non-empty list of study keys from a search.")
        pull = await self.gateway.start_pull(self.username, project, keys)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + pull["id"])
        self.send(pull, status=202)

    def get(self) -> None:
        project = self.get_query_argument("project", "")
        self.send({"pulls": self.gateway.list_pulls(self.username, project)})


class PullHandler(_Handler):
    def get(self, pull_id: str) -> None:
        self.send(self.gateway.pull_status(self.username, pull_id))


def _project_field(body: dict[str, Any]) -> str:
    project = body.get("project") or os.environ.get("WORKBENCH_PROJECT")
    if not isinstance(project, str) or not project:
        raise BadRequest("Say which project this is for: 'project' is missing.")
    return project


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "criteria"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "Invalid search criteria: " + "; ".join(parts)


def make_app(gateway: Gateway, prefix: str, hub_auth: HubAuth) -> web.Application:
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    args = {"gateway": gateway, "hub_auth": hub_auth}
    return web.Application(
        [
            (prefix + "api/health", HealthHandler),
            (prefix + "api/projects", ProjectsHandler, args),
            (prefix + "api/search", SearchHandler, args),
            (prefix + "api/thumbnails", ThumbnailsHandler, args),
            (prefix + "api/pulls", PullsHandler, args),
            (prefix + r"api/pulls/([A-Za-z0-9_.-]+)", PullHandler, args),
        ]
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/sample-gateway/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8090"))
    asyncio.run(_serve(prefix, url.hostname or "127.0.0.1", url.port or 8090))


async def _serve(prefix: str, host: str, port: int) -> None:
    gateway = build_gateway()
    # Start the de-identification workers in the background: the API answers meanwhile.
    warm = asyncio.create_task(asyncio.to_thread(gateway.workers.warm_up))
    recovered = gateway.recover()
    if recovered:
        log.warning("marked %d interrupted pull(s) failed and removed their partial files", len(recovered))
    # Configured from the environment the hub gives its managed services; caches look-ups.
    hub_auth = HubAuth(cache_max_age=60)
    server = HTTPServer(make_app(gateway, prefix, hub_auth))
    server.listen(port, address=host)
    log.info("sample gateway listening on http://%s:%d%s", host, port, prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(stop_when_orphaned(stop, "sample gateway")) if is_managed() else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    server.stop()
    await asyncio.gather(warm, return_exceptions=True)
    await gateway.aclose()
