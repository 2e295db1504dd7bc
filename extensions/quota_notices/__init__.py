"""Quota notices in JupyterLab: a small labextension and a server extension, no build step.

On start and every minute the labextension asks the user's own server
(``workbench/quota/notices``, :mod:`.server`) for the user's current notices (80/95 %
warnings, "used up, servers stop at ...", "stopped because ...") and shows each new one as a
JupyterLab notification (the bell in the status bar; toasts for warnings and errors). The
server relays the quota service's ``api/notices`` with its own hub token. Seen notices are
remembered in the browser's localStorage.

Why a hand-written extension: JupyterLab has no server-side way to notify the user, and a
TypeScript build would add Node tooling to every install for ~60 lines. The file follows the
module-federation container contract JupyterLab's loader uses (``init``/``get`` on
``window._JUPYTERLAB[name]``) and only calls the ``apputils:notify`` command, so it depends on
no shared package versions.

Installed two ways: a regular (non-editable) install puts the labextension in
``<prefix>/share/jupyter`` and the server extension's switch in ``<prefix>/etc/jupyter``
through pyproject's data-files; the hub config adds :func:`jupyter_data_dir` to the servers'
``JUPYTER_PATH`` and :func:`jupyter_config_dir` to their ``JUPYTER_CONFIG_PATH`` so an
editable checkout (the demo, CI) finds both too.
"""

from __future__ import annotations

from pathlib import Path

NAME = "@workbench/quota-notices"


def jupyter_data_dir() -> Path:
    """A Jupyter data directory holding ``labextensions/@workbench/quota-notices``."""
    return Path(__file__).resolve().parent / "share" / "jupyter"


def jupyter_config_dir() -> Path:
    """A Jupyter config directory whose ``jupyter_server_config.d`` enables :mod:`.server`."""
    return Path(__file__).resolve().parent / "etc" / "jupyter"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "extensions.quota_notices.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """For ``jupyter labextension develop``/``install`` tooling."""
    return [{"src": str(jupyter_data_dir() / "labextensions" / NAME), "dest": NAME}]
