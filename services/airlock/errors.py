"""Errors the airlock shows to users, each with a reason code and an HTTP status."""

from __future__ import annotations

from hub_config.public_errors import PublicError


class AirlockError(PublicError):
    """An export request the airlock refuses or cannot handle."""


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
