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

Request bodies are JSON objects of at most 1 MiB: a larger one is read and dropped as it
comes, then answered 413 (so that a client still sending gets the answer, not a reset); the
server closes the connection of one above 64 MiB. Not JSON: 400. Error messages quote at
most some 60 characters of what was sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth, HubAuthenticated
from pydantic import ValidationError
from tornado import web
from tornado.httpserver import HTTPServer

from services.managed import is_managed, stop_when_orphaned

from .errors import BadRequest, BodyTooLarge, GatewayError
from .gateway import Gateway, build_gateway
from .logsafety import configure_logging
from .queries import StudyCriteria

log = logging.getLogger("sample_gateway")

MAX_BODY_BYTES = 1024 * 1024  # a search or a selection of studies is a few kB
DROP_BODY_BYTES = 64 * 1024 * 1024  # up to this, a larger body is read and dropped (413)
MAX_STUDY_KEYS = 1000
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STUDY_KEY = re.compile(r"[0-9][0-9.]{0,63}")


@web.stream_request_body  # a body too large is never held in memory, and answered in JSON
class _Handler(HubAuthenticated, web.RequestHandler):
    gateway: Gateway

    def initialize(self, gateway: Gateway, hub_auth: HubAuth) -> None:
        self.gateway = gateway
        self.hub_auth = hub_auth
        self._body = bytearray()
        self._too_large = False

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

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._too_large = True
        elif not self._too_large:
            self._body += chunk

    def body_json(self) -> dict[str, Any]:
        if self._too_large:
            raise _too_large()
        try:
            body = json.loads(bytes(self._body) or b"{}")
        except (ValueError, RecursionError):  # RecursionError: arrays nested 100 000 deep
            raise GatewayError("The request body must be JSON (and not nested that deeply).",
                               reason="bad_json", status=400) from None
        if not isinstance(body, dict):
            raise GatewayError("The request body must be a JSON object.", reason="bad_json", status=400)
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
            who = (self.current_user or {}).get("name") or "someone not signed in"
            log.warning("%s %s by %s: %s", self.request.method, self.request.path, who, e.log_message)
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
        self.send(await self.gateway.thumbnails(self.username, project, _study_keys(body)))


class PullsHandler(_Handler):
    async def post(self) -> None:
        body = self.body_json()
        project = _project_field(body)
        pull = await self.gateway.start_pull(self.username, project, _study_keys(body))
        self.set_header("Location", self.request.path.rstrip("/") + "/" + pull["id"])
        self.send(pull, status=202)

    def get(self) -> None:
        project = _project_field({"project": self.get_query_argument("project", "")})
        self.send({"pulls": self.gateway.list_pulls(self.username, project)})


class PullHandler(_Handler):
    def get(self, pull_id: str) -> None:
        self.send(self.gateway.pull_status(self.username, pull_id))

    async def delete(self, pull_id: str) -> None:
        self.send(await self.gateway.delete_pull(self.username, pull_id))


def _project_field(body: dict[str, Any]) -> str:
    project = body.get("project") or os.environ.get("WORKBENCH_PROJECT")
    if not isinstance(project, str) or not project:
        raise BadRequest("Say which project this is for: 'project' is missing.")
    if not _PROJECT_ID.fullmatch(project):
        raise BadRequest("'project' is not a project id (letters, digits, '.', '_' and '-', "
                         "at most 64).", reason="bad_project")
    return project


def _study_keys(body: dict[str, Any]) -> list[str]:
    keys = body.get("study_keys")
    if not isinstance(keys, list) or not keys or len(keys) > MAX_STUDY_KEYS:
        raise BadRequest(f"Give 'study_keys' as a list of 1 to {MAX_STUDY_KEYS} study keys from a search.")
    if not all(isinstance(k, str) and _STUDY_KEY.fullmatch(k) for k in keys):
        raise BadRequest("'study_keys' holds something that is not a study key from a search "
                         "(such as 2.25.1234...).", reason="unknown_study_key")
    return keys


def _validation_message(exc: ValidationError, shown_errors: int = 3) -> str:
    parts = []
    errors = exc.errors(include_input=False, include_url=False)
    for error in errors[:shown_errors]:
        where = ".".join(_cut(str(p), 40) for p in error["loc"]) or "criteria"
        parts.append(f"{where}: {_cut(error['msg'].removeprefix('Value error, '), 120)}")
    if len(errors) > shown_errors:
        parts.append(f"{len(errors) - shown_errors} more")
    return "Invalid search criteria: " + "; ".join(parts)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _too_large() -> BodyTooLarge:
    return BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB; a search "
                        "or a selection of studies never needs that much.")


def make_app(gateway: Gateway, prefix: str, hub_auth: HubAuth) -> web.Application:
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    args = {"gateway": gateway, "hub_auth": hub_auth}
    return web.Application(
        [
            # The hub checks its services' health at their root every minute: answer it.
            (prefix, HealthHandler),
            (prefix + "api/health", HealthHandler),
            (prefix + "api/projects", ProjectsHandler, args),
            (prefix + "api/search", SearchHandler, args),
            (prefix + "api/thumbnails", ThumbnailsHandler, args),
            (prefix + "api/pulls", PullsHandler, args),
            (prefix + r"api/pulls/([A-Za-z0-9_.-]+)", PullHandler, args),
        ]
    )


def make_server(app: web.Application) -> HTTPServer:
    """The gateway's HTTP server. The handlers keep at most :data:`MAX_BODY_BYTES` of a body
    and answer 413 to a larger one; the server drops a connection whose body passes
    :data:`DROP_BODY_BYTES` (tornado's 400, no JSON: nobody sends that by mistake)."""
    return HTTPServer(app, max_body_size=DROP_BODY_BYTES)


def main() -> None:
    configure_logging()  # no DICOM value in the log, pydicom's warnings included
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
    server = make_server(make_app(gateway, prefix, hub_auth))
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
