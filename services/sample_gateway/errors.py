"""Errors the gateway shows to researchers, with a reason code and an HTTP status.

Like Dask Gateway's PublicException: only these messages reach the user; anything else
becomes a generic 500 with the detail in the gateway's log (which never holds patient data).
"""

from __future__ import annotations

from hub_config.public_errors import PublicError


class GatewayError(PublicError):
    """A search or pull the gateway refuses or cannot complete."""


class NotAllowed(GatewayError):
    """Not a member, approval expired, archive access not granted, modality not approved."""

    status = 403
    reason = "not_allowed"


class LimitExceeded(GatewayError):
    """A request above the project's sample limits; the message names limit and usage."""

    status = 422
    reason = "limit_exceeded"


class BadRequest(GatewayError):
    status = 422
    reason = "bad_request"


class ArchiveUnavailable(GatewayError):
    """The archive is down, refused us, or answered garbage."""

    status = 502
    reason = "archive_unavailable"


class ArchiveTimeout(GatewayError):
    status = 504
    reason = "archive_timeout"


class NotFound(GatewayError):
    status = 404
    reason = "not_found"


class Conflict(GatewayError):
    """A request that does not fit the pull's state (deleting one still running)."""

    status = 409
    reason = "conflict"


class WorkspaceUnusable(GatewayError):
    """A project folder the gateway would write through is a symbolic link, not a folder, or
    was changed under it while a pull filled it: nothing is delivered there."""

    status = 409
    reason = "workspace_unusable"


class BodyTooLarge(GatewayError):
    status = 413
    reason = "body_too_large"


class AuditUnavailable(GatewayError):
    """The audit trail cannot take a record: the gateway does nothing it could not audit."""

    status = 503
    reason = "audit_unavailable"

    def __init__(self, message: str | None = None, *, log_message: str | None = None) -> None:
        super().__init__(
            message or "The sample gateway cannot write its audit trail right now, so it "
            "searches and pulls nothing until that is fixed. The workbench admins have been "
            "told in the gateway log.",
            log_message=log_message,
        )


def shown(value: object, limit: int = 60) -> str:
    """``value`` as an error message may quote it: repr, cut to about ``limit`` characters.

    Messages quote what a user sent (a project id, a study key) so they can see the typo;
    never all of it, so an error cannot become a mirror for megabytes of input.
    """
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
