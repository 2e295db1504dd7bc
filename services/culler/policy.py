"""Per-profile idle timeouts for jupyterhub-idle-culler. Pure.

jupyterhub-idle-culler has one ``--timeout`` for every server; its ``cull_arbiter_hook``
decides per server. :func:`make_arbiter` gives each server the ``idle_timeout_minutes`` of
its profile (read from the server's ``user_options``, which the workbench spawner always
fills with the resolved project and profile), and the culler's ``--timeout`` to servers
whose profile sets none or that the workbench did not start.

Busy kernels: the culler judges by the hub's ``last_activity``, which comes from the
server's own activity reports. A kernel computing without output reports nothing, so the
workbench's servers load :mod:`extensions.busy_activity`, which counts a busy kernel as
activity; the culler therefore never stops a server while a kernel is working. (The
``cull_busy`` option some configurations mention belongs to jupyter_server's *kernel*
culler, not to jupyterhub-idle-culler, and is off by default there too.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from hub_config.model import Profile, WorkbenchConfig


def profile_of(config: WorkbenchConfig, server: dict[str, Any]) -> Profile | None:
    options = server.get("user_options") or {}
    if not isinstance(options, dict):
        return None
    slug = options.get("profile")
    if slug:
        return config.profile(str(slug))
    session = config.session(str(options.get("project") or ""))
    return config.profile(session.profile) if session else None


def timeout_seconds(config: WorkbenchConfig, server: dict[str, Any], default: float) -> float:
    profile = profile_of(config, server)
    if profile is not None and profile.idle_timeout_minutes:
        return profile.idle_timeout_minutes * 60.0
    return default


def shortest_timeout(config: WorkbenchConfig, default: float) -> float:
    timeouts = [p.idle_timeout_minutes * 60.0 for p in config.profiles if p.idle_timeout_minutes]
    return min([default, *timeouts])


def make_arbiter(
    config: Callable[[], WorkbenchConfig], default: float
) -> Callable[..., bool]:
    """``c.IdleCuller.cull_arbiter_hook``: cull once inactive for the profile's timeout."""

    def arbiter(*, inactive: dt.timedelta, inactive_limit: float, server: dict[str, Any],
                **_: Any) -> bool:
        return inactive.total_seconds() >= timeout_seconds(config(), server, default)

    return arbiter
