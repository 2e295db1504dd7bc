"""Errors the airlock shows to users, each with a reason code and an HTTP status."""

from __future__ import annotations

from typing import Any


class AirlockError(Exception):
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
        return {"error": {"message": self.message, "reason": self.reason, **self.detail}}


class Unauthenticated(AirlockError):
    status = 401
    reason = "unauthenticated"


class Forbidden(AirlockError):
    status = 403
    reason = "forbidden"


class NotFound(AirlockError):
    status = 404
    reason = "not_found"


class Conflict(AirlockError):
    status = 409
    reason = "conflict"


class Invalid(AirlockError):
    status = 422
    reason = "invalid"


class AuditDown(AirlockError):
    """The audit trail cannot be written: nothing happens without its record."""

    status = 503
    reason = "audit_unavailable"
