"""Errors of the run machinery that carry the user's message, a reason, a log message and a status.

Only these messages are shown to researchers (CLI, widget); anything else is a bug and keeps
its traceback. ``status`` is the HTTP status an endpoint would answer with.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub_config.public_errors import PublicError


class RunError(PublicError):
    """A run that cannot start or finish; ``exit_code`` is the CLI's status."""

    exit_code = 2


class ParameterError(RunError):
    """Parameters that do not fit the notebook's ``parameters`` cell; nothing was started."""

    status = 422
    reason = "bad_parameters"

    def __init__(self, problems: Sequence[str], *, notebook: str = "") -> None:
        self.problems = list(problems)
        where = f" for {notebook}" if notebook else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Parameters do not fit the notebook{where}; nothing was run:\n{lines}")


class RunRefused(RunError):
    """Not allowed or not possible (project, profile, approval, quota, no workspace)."""

    status = 403
    reason = "refused"


class RunNotFound(RunError):
    status = 404
    reason = "not_found"


class NomadRunFailed(RunError):
    """The Nomad batch job could not be placed or started (the notebook did not run)."""

    status = 502
    reason = "nomad_failed"
    exit_code = 1
