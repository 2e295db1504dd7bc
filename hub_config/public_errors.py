"""The one shape of error whose message is meant for the user (Dask Gateway's PublicException).

The gateway, the quota service, the airlock and the run machinery each subclass it: only
these messages reach people (pages, REST answers, CLIs, widgets), with a reason code that
programs can match and the HTTP status an endpoint answers with. Anything else is a bug: it
is logged with its detail and answered with a generic message.
"""

from __future__ import annotations

from typing import Any


class PublicError(Exception):
    status = 400
    reason = "bad_request"

    def __init__(
        self, message: str, *, reason: str | None = None, status: int | None = None,
        log_message: str | None = None, detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.reason
        self.status = status or self.status
        self.log_message = log_message or message
        self.detail = detail or {}

    def to_json(self) -> dict[str, Any]:
        """``{"error": {"message", "reason", ...detail}}``, the body every workbench API answers with."""
        return {"error": {"message": self.message, "reason": self.reason, **self.detail}}
