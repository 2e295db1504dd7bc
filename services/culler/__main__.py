"""``python -m services.culler [idle-culler options]``: jupyterhub-idle-culler, per-profile.

Run by the hub as a managed service (its token: list users, read activity and servers, stop
servers; nothing else). ``--timeout`` is the default for profiles without
``idle_timeout_minutes``; the culler checks every ``--cull-every`` seconds (default: a
quarter of the shortest timeout, at most 5 minutes).
"""

from __future__ import annotations

import logging
import os
import sys

from jupyterhub_idle_culler import IdleCuller
from tornado.ioloop import IOLoop, PeriodicCallback

from hub_config.loader import cached_config

from .policy import make_arbiter, shortest_timeout

log = logging.getLogger("idle-culler")


def main(argv: list[str] | None = None) -> None:
    app = IdleCuller()
    app.config_file = ""  # no idle_culler_config.py from the working directory
    app.parse_command_line(sys.argv[1:] if argv is None else argv)
    config = cached_config(log=log)
    if "cull_every" not in app.config.get("IdleCuller", {}):
        app.cull_every = int(max(10, min(300, shortest_timeout(config, app.timeout) / 4)))
    app.cull_arbiter_hook = make_arbiter(lambda: cached_config(log=log), float(app.timeout))
    if os.environ.get("JUPYTERHUB_SERVICE_NAME"):
        _stop_with_the_hub()
    app.start()


def _stop_with_the_hub(every: float = 2.0) -> None:
    """A crashed hub skips its clean-up: do not outlive it (the restarted hub starts another)."""
    parent = os.getppid()

    def check() -> None:
        if os.getppid() != parent:
            log.warning("the hub (pid %d) is gone; the idle culler stops with it", parent)
            IOLoop.current().stop()

    PeriodicCallback(check, every * 1000).start()


if __name__ == "__main__":
    main()
