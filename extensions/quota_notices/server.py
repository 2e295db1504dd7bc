"""The server half: ``<server>/workbench/quota/notices`` relays the user's notices.

JupyterLab's page cannot call the quota service itself: a cookie-authenticated ``fetch`` to
another hub service needs that service's XSRF token, which the page cannot read. The user's
own server can: it asks the quota service's ``api/notices`` with its own hub token
(``JUPYTERHUB_API_TOKEN``; the hub's ``server`` role grants ``access:services!service=quota``),
which identifies the same user. The browser reaches this handler with JupyterLab's usual
login and XSRF header.
"""

from __future__ import annotations

import json
import os

import httpx
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web


class NoticesHandler(JupyterHandler):
    @web.authenticated
    async def get(self) -> None:
        url = os.environ.get("WORKBENCH_QUOTA_URL", "")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if not (url and token):
            self.finish(json.dumps({"notices": [], "available": False}))
            return
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(url.rstrip("/") + "/api/notices",
                                          headers={"Authorization": f"token {token}"})
            answer.raise_for_status()
            notices = answer.json().get("notices", [])
        except (httpx.HTTPError, ValueError) as exc:
            self.log.warning("quota notices unavailable: %s", exc)
            self.finish(json.dumps({"notices": [], "available": False}))
            return
        self.finish(json.dumps({"notices": notices, "available": True}))


def _load_jupyter_server_extension(serverapp) -> None:  # noqa: ANN001 - jupyter_server's ServerApp
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, "workbench/quota/notices"), NoticesHandler)])
