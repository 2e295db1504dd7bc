"""``python -m services.culler [idle-culler options]``: jupyterhub-idle-culler, per-profile.

Run by the hub as a managed service (its token: list users, read activity and servers, stop
servers; nothing else). ``--timeout`` is the default for profiles without
``idle_timeout_minutes``; the culler checks every ``--cull-every`` seconds (default: a
quarter of the shortest timeout, at most 5 minutes).
"""

from __future__ import annotations

import logging
import sys

from jupyterhub_idle_culler import IdleCuller

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
    app.start()


if __name__ == "__main__":
    main()
