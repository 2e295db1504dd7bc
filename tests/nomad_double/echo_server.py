"""A stand-in single-user server for lifecycle tests: answers on $NOMAD_PORT_http.

GET / returns what the task saw: the port, whether a hub token arrived (never its value),
and the service URL. It exits on SIGTERM like jupyter-server does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps(
            {
                "port": int(os.environ["NOMAD_PORT_http"]),
                "has_token": bool(os.environ.get("JUPYTERHUB_API_TOKEN")),
                "token_length": len(os.environ.get("JUPYTERHUB_API_TOKEN", "")),
                "service_url": os.environ.get("JUPYTERHUB_SERVICE_URL", ""),
                "alloc_id": os.environ.get("NOMAD_ALLOC_ID", ""),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def main() -> None:
    ip = os.environ.get("NOMAD_IP_http", "127.0.0.1")
    server = ThreadingHTTPServer((ip, int(os.environ["NOMAD_PORT_http"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
