"""Errors of the quota service that carry a user's message, a reason, a log message and a status.

Only these messages reach users (the spawn page, the REST API, the CLI); anything else is
logged and answered with a generic message.
"""

from __future__ import annotations

from typing import Any

from hub_config.public_errors import PublicError

from .budgets import Refusal


class QuotaError(PublicError):
    """A quota refusal or a bad request to the quota service."""


class QuotaExceeded(QuotaError):
    """A start refused by a budget; ``refusal`` names the limit, the usage and the reset."""

    status = 429
    reason = "quota_exceeded"

    def __init__(self, refusal: Refusal, account: str) -> None:
        self.refusal = refusal
        self.account = account
        super().__init__(
            refusal.message,
            reason="quota_exceeded",
            log_message=f"quota refused for {account}/{refusal.user or '-'}: {refusal.limit.value} "
            f"used {refusal.used:g} of {refusal.allowed:g}",
        )

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["error"].update(
            limit=self.refusal.limit.value,
            account=self.account,
            used=self.refusal.used,
            allowed=self.refusal.allowed,
            resets_at=self.refusal.resets_at,
        )
        return body


class LedgerUnavailable(QuotaError):
    """The ledger database cannot be reached; starts are refused rather than unaccounted."""

    status = 503
    reason = "quota_unavailable"


class NotFound(QuotaError):
    status = 404
    reason = "not_found"


class Forbidden(QuotaError):
    status = 403
    reason = "forbidden"
