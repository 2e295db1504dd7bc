"""Usage against budget per account, per user and over time: what the admin page, the REST API
and the CLI show. Reads the ledger once per account; everything else is arithmetic.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .accounts import Account
from .budgets import (
    HOURS_LIMITS,
    LIMITS,
    AnyBudget,
    Limit,
    Usage,
    Window,
    allowance,
    day_edges,
    format_time,
    timeline,
    usage_of,
)
from .ledger import ACTIVE, AllocationRecord, Ledger


@dataclass(frozen=True)
class LimitRow:
    limit: Limit
    used: float
    allowed: float | None

    @property
    def fraction(self) -> float | None:
        if self.allowed is None:
            return None
        if self.allowed <= 0:
            return math.inf if self.used > 0 else 1.0
        return self.used / self.allowed


@dataclass(frozen=True)
class AccountReport:
    account: Account
    budget: AnyBudget | None
    override: Mapping[str, Any] | None
    window: Window
    usage: Usage
    allocations: tuple[AllocationRecord, ...]
    now: float

    @property
    def limits(self) -> list[LimitRow]:
        rows = []
        for limit in (Limit.GPU_HOURS, Limit.CPU_CORE_HOURS, Limit.CONCURRENT_GPUS, Limit.CONCURRENT_SERVERS):
            allowed = allowance(self.budget, limit) if self.budget is not None else None
            rows.append(LimitRow(limit, self.usage.used(limit), allowed))
        return rows

    @property
    def active(self) -> list[AllocationRecord]:
        return [a for a in self.allocations if a.span(self.now).active and a.status in ACTIVE]

    def user_rows(self) -> list[dict[str, Any]]:
        budget = self.budget
        rows = []
        for user, use in self.usage.by_user.items():
            rows.append({
                "user": user,
                "gpu_hours": use.gpu_hours,
                "cpu_core_hours": use.cpu_core_hours,
                "active_gpus": use.active_gpus,
                "active_servers": use.active_servers,
                "per_user_gpu_hours": allowance(budget, Limit.USER_GPU_HOURS) if budget else None,
                "per_user_cpu_core_hours": allowance(budget, Limit.USER_CPU_CORE_HOURS) if budget else None,
            })
        return rows

    def daily(self) -> list[tuple[float, float, float]]:
        """(day start, GPU-hours, CPU-core-hours) per local day of the window, up to now."""
        edges = day_edges(self.window, until=self.now)
        return timeline((a.span(self.now) for a in self.allocations), edges, self.now)

    def to_json(self) -> dict[str, Any]:
        window = self.window
        return {
            "account": self.account.id,
            "title": self.account.title,
            "period": {
                "label": window.label,
                "start": window.start,
                "end": window.end,
                "resets": window.resets,
                "resets_at": window.end if window.resets else None,
                "resets_text": window.end_text,
                "timezone": window.timezone,
            },
            "budget": self.budget.model_dump(mode="json") if self.budget is not None else None,
            "override": dict(self.override) if self.override else None,
            "limits": [
                {"limit": r.limit.value, "unit": LIMITS[r.limit].unit, "used": r.used,
                 "allowed": r.allowed, "fraction": _finite(r.fraction)}
                for r in self.limits
            ],
            "users": self.user_rows(),
            "active": [
                {"id": a.id, "user": a.user, "server": a.server_name, "kind": a.kind, "profile": a.profile,
                 "gpus": a.gpus, "cpu": a.cpu, "status": a.status, "started_at": a.started_at,
                 "last_seen_at": a.last_seen_at, "stop_requested_at": a.stop_requested_at,
                 "stop_reason": a.stop_reason}
                for a in self.active
            ],
            "daily": [{"start": s, "gpu_hours": g, "cpu_core_hours": c} for s, g, c in self.daily()],
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def account_report(
    ledger: Ledger, account: Account, *, now: float, at: float | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> AccountReport:
    """The account's report for the period containing ``at`` (default: now)."""
    view = ledger.view(account.id, account.budget, now=now, at=at)
    evaluated = min(now, view.window.end)
    usage = usage_of(view.spans, view.window, evaluated)
    override = (overrides or {}).get(account.id)
    return AccountReport(account, view.budget, (override or {}).get("fields"), view.window, usage,
                         view.allocations, evaluated)


def reports(
    ledger: Ledger, accounts: Mapping[str, Account], *, now: float, at: float | None = None
) -> list[AccountReport]:
    overrides = ledger.overrides()
    return [account_report(ledger, a, now=now, at=at, overrides=overrides) for a in accounts.values()]


CSV_FIELDS = [
    "period", "period_start", "period_end", "account", "user", "gpu_hours", "cpu_core_hours",
    "gpu_hours_budget", "cpu_core_hours_budget", "gpu_hours_fraction", "cpu_core_hours_fraction",
    "active_gpus", "active_servers",
]


def report_rows(items: Iterable[AccountReport]) -> list[dict[str, Any]]:
    """One row per account (user '*') and one per user in it, like sreport's cluster/user views."""
    rows = []
    for report in items:
        window = report.window
        base = {
            "period": window.label,
            "period_start": format_time(window.start, window.timezone),
            "period_end": format_time(window.end, window.timezone),
            "account": report.account.id,
        }
        gpu_budget = allowance(report.budget, Limit.GPU_HOURS) if report.budget else None
        cpu_budget = allowance(report.budget, Limit.CPU_CORE_HOURS) if report.budget else None
        rows.append({
            **base, "user": "*",
            "gpu_hours": round(report.usage.gpu_hours, 4),
            "cpu_core_hours": round(report.usage.cpu_core_hours, 4),
            "gpu_hours_budget": gpu_budget, "cpu_core_hours_budget": cpu_budget,
            "gpu_hours_fraction": _ratio(report.usage.gpu_hours, gpu_budget),
            "cpu_core_hours_fraction": _ratio(report.usage.cpu_core_hours, cpu_budget),
            "active_gpus": report.usage.active_gpus, "active_servers": report.usage.active_servers,
        })
        for user, use in report.usage.by_user.items():
            user_gpu = allowance(report.budget, Limit.USER_GPU_HOURS) if report.budget else None
            user_cpu = allowance(report.budget, Limit.USER_CPU_CORE_HOURS) if report.budget else None
            rows.append({
                **base, "user": user,
                "gpu_hours": round(use.gpu_hours, 4), "cpu_core_hours": round(use.cpu_core_hours, 4),
                "gpu_hours_budget": user_gpu, "cpu_core_hours_budget": user_cpu,
                "gpu_hours_fraction": _ratio(use.gpu_hours, user_gpu),
                "cpu_core_hours_fraction": _ratio(use.cpu_core_hours, user_cpu),
                "active_gpus": use.active_gpus, "active_servers": use.active_servers,
            })
    return rows


def _ratio(used: float, allowed: float | None) -> float | None:
    if allowed is None or allowed <= 0:
        return None
    return round(used / allowed, 4)


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return buffer.getvalue()


__all__ = [
    "HOURS_LIMITS", "AccountReport", "LimitRow", "account_report", "report_rows", "reports", "to_csv",
]
