"""Spawn failures that show the same, user-facing words on every path.

JupyterHub 6 shows ``str(exception)`` in the spawn page's progress stream unless the
exception carries ``jupyterhub_message``, and its error page shows ``get_message()`` (the
log message) for a SpawnException. Setting both to the user's message keeps the spawn
page, the error page and the REST answer on the same text.
"""

from __future__ import annotations

import html

from jupyterhub.spawner import SpawnException


def spawn_error(
    message: str, *, reason: str, log_message: str = "", status_code: int = 500
) -> SpawnException:
    error = SpawnException(message, reason=reason, log_message=log_message, status_code=status_code)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    error.jupyterhub_html_message = html.escape(message)  # type: ignore[attr-defined]
    return error
