"""A single-user server extension: a busy kernel counts as activity.

jupyter_server counts a kernel's IOPub messages as activity, and a cell that computes for an
hour without printing sends none after its first 'busy' status. The server then reports no
activity to the hub, and the hub's idle culler stops it mid-computation. This extension
marks the server active (``busy_kernels_last_activity``, a setting that
``ServerWebApplication.last_activity`` includes) at every check while any kernel is busy, so
idle culling never stops a server whose kernel is working. A kernel stuck busy forever keeps
its server alive: the quota service's budget enforcement is what ends that.

The workbench spawners enable it by putting :func:`jupyter_config_dir` first on the server's
``JUPYTER_CONFIG_PATH`` (a path that does not exist, as in a container image without this
checkout, is skipped by Jupyter: such images enable the extension in their own config).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback

SETTING = "busy_kernels_last_activity"
INTERVAL_ENV = "WORKBENCH_BUSY_CHECK_SECONDS"


def jupyter_config_dir() -> Path:
    """The workbench's Jupyter server config directory: ``jupyter_server_config.d`` enables
    this extension; ``jupyter_server_config.json`` makes terminals plain interactive shells (a
    login shell would reset PATH from /etc/profile and lose the workbench's Python). Server
    settings must be in the .json: Jupyter reads ``.d`` folders only to enable extensions."""
    return Path(__file__).resolve().parent / "busy_activity_config"


def busy_kernels(kernel_manager: Any) -> list[str]:
    """Ids of the kernels whose last status was 'busy'."""
    busy = []
    for kernel_id in list(kernel_manager.list_kernel_ids()):
        try:
            kernel = kernel_manager.get_kernel(kernel_id)
        except KeyError:  # shut down meanwhile
            continue
        if getattr(kernel, "execution_state", None) == "busy":
            busy.append(kernel_id)
    return busy


def mark_if_busy(serverapp: Any, now: dt.datetime | None = None) -> bool:
    if not busy_kernels(serverapp.kernel_manager):
        return False
    serverapp.web_app.settings[SETTING] = now or dt.datetime.now(dt.timezone.utc)
    return True


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "extensions.busy_activity"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    seconds = float(os.environ.get(INTERVAL_ENV, "60"))
    callback = PeriodicCallback(lambda: mark_if_busy(serverapp), seconds * 1000)
    callback.start()
    serverapp.log.info("workbench: busy kernels count as activity (checked every %g s)", seconds)
