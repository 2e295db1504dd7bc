"""What users are told about their budgets, and which notices each user sees. Pure.

Levels: the budget's ``warn_at`` fractions as percent (80, 95), 100 when an hours budget is
used up (running servers are stopped after the grace period), 101 when the quota service has
stopped servers. A notice without a user concerns every member of the account.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from .accounts import Account
from .budgets import LIMITS, Limit, LimitUse, Window, _hours, format_time
from .ledger import NoticeRecord

USED_UP = 100
STOPPED = 101


def _subject(account: Account, use: LimitUse) -> str:
    if use.user is None:
        return account.label
    return f"{use.user} (in {account.label.lower() if account.label.startswith('Project') else account.label})"


def warning_text(account: Account, use: LimitUse, level: int, window: Window, grace_minutes: float) -> str:
    info = LIMITS[use.limit]
    what = "GPU servers" if info.gpu else "servers"
    each = " (each member's allowance)" if info.per_user else ""
    reset = f"resets on {window.end_text}" if window.resets else f"ends on {window.end_text}"
    return (
        f"{_subject(account, use)} has used {level} % of its {_hours(use.allowed)} {info.unit}{each} "
        f"for {window.label} ({_hours(use.used)} used). At 100 % running {what} are stopped after "
        f"{_minutes(grace_minutes)}; the budget {reset}."
    )


def used_up_text(account: Account, use: LimitUse, window: Window, stop_at: float) -> str:
    info = LIMITS[use.limit]
    what = "GPU servers" if info.gpu else "servers"
    each = " (each member's allowance)" if info.per_user else ""
    reset = (
        f"until the budget resets on {window.end_text}" if window.resets else "in this session"
    )
    return (
        f"{_subject(account, use)} has used all of its {_hours(use.allowed)} {info.unit}{each} for "
        f"{window.label}: save your work, running {what} stop at "
        f"{format_time(stop_at, window.timezone)}. New {what} cannot start {reset}, unless a "
        "workbench admin raises the budget."
    )


def stopped_text(
    account: Account, use: LimitUse, window: Window, servers: Iterable[str], at: float
) -> str:
    info = LIMITS[use.limit]
    names = ", ".join(sorted(servers)) or "none"
    reset = f"The budget resets on {window.end_text}." if window.resets else "The session's budget is spent."
    return (
        f"The quota service stopped {names} at {format_time(at, window.timezone)} because "
        f"{_subject(account, use)} used all of its {_hours(use.allowed)} {info.unit} for {window.label} "
        f"(budget setting {use.limit.value}). {reset}"
    )


def _minutes(minutes: float) -> str:
    if minutes <= 0:
        return "no grace period"
    return f"{minutes:g} minute{'s' if minutes != 1 else ''}' grace"


def server_label(user: str, server_name: str) -> str:
    return f"{user}'s server" if not server_name else f"{user}'s server '{server_name}'"


def for_user(
    notices: Iterable[NoticeRecord], user: str, accounts: Mapping[str, Account], *, admin: bool = False
) -> list[NoticeRecord]:
    """Notices ``user`` should see: their accounts' general ones and those addressed to them.

    Only the highest level per (account, limit, addressee) is kept: a 95 % warning replaces the
    80 % one.
    """
    best: dict[tuple[str, str, str], NoticeRecord] = {}
    for notice in notices:
        account = accounts.get(notice.account)
        member = account is not None and user in account.members
        if not (admin or member):
            continue
        if notice.user and notice.user != user and not admin:
            continue
        key = (notice.account, notice.limit, notice.user)
        kept = best.get(key)
        if kept is None or (notice.level, notice.created_at) > (kept.level, kept.created_at):
            best[key] = notice
    return sorted(best.values(), key=lambda n: (-n.level, -n.created_at))


def severity(level: int) -> str:
    """'info' below the last warning, 'warning', 'error' once used up or stopped."""
    return "error" if level >= USED_UP else "warning" if level >= 90 else "info"


def announcement_html(notices: Iterable[NoticeRecord]) -> str:
    """The hub's announcement banner for a user (escaped); empty when there is nothing to say."""
    items = [f'<li class="wb-quota-{severity(n.level)}">{escape(n.message)}</li>' for n in notices]
    if not items:
        return ""
    return (
        '<div class="wb-quota-notices"><strong>Compute budget</strong>'
        f'<ul style="text-align:left">{"".join(items)}</ul></div>'
    )


def limit_of(notice: NoticeRecord) -> Limit | None:
    try:
        return Limit(notice.limit)
    except ValueError:
        return None
