"""Placeholder: replaced by the gateway's HTTP app in the next commit."""

import asyncio
import os
from urllib.parse import urlparse

from tornado import web


class Health(web.RequestHandler):
    def get(self) -> None:
        self.write({"status": "ok"})


def main() -> None:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8090"))
    app = web.Application([(prefix + "api/health", Health)])
    app.listen(url.port, address="127.0.0.1")
    asyncio.get_event_loop().run_forever()
