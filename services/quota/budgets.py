"""Quota arithmetic: periods, weighted usage, limits, what is left and why a start is refused.

Pure functions over plain values (no I/O, no clock): the ledger, the spawner hook, the
enforcer, the admin pages and the CLI all call these, and the tests check them with golden
values and with hypothesis. Times are UNIX seconds (floats); calendar periods are computed in
the budget's time zone, so a Danish month starts at local midnight whatever the server's clock
zone is.

Usage is weighted by the resources held: an hour of a server with 8 cores and 1 GPU counts
8 CPU-core-hours and 1 GPU-hour (as Slurm's TRES-minutes count). A reservation that never
started uses nothing; a running allocation counts up to ``now``.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from hub_config.model import Budget, BudgetLimits, TeachingBudget

HOUR = 3600.0

#: Allocation kinds: servers count towards max_concurrent_servers; every kind holds GPUs.
SERVER = "server"
KINDS = (SERVER, "batch", "dask-worker")


class Limit(str, enum.Enum):
    """Every limit a budget can set, named as its field in the YAML."""

    GPU_HOURS = "gpu_hours"
    CPU_CORE_HOURS = "cpu_core_hours"
    CONCURRENT_GPUS = "max_concurrent_gpus"
    CONCURRENT_SERVERS = "max_concurrent_servers"
    USER_GPU_HOURS = "per_user_gpu_hours"
    USER_CPU_CORE_HOURS = "per_user_cpu_core_hours"
    USER_CONCURRENT_GPUS = "per_user_max_concurrent_gpus"
    USER_CONCURRENT_SERVERS = "per_user_max_concurrent_servers"
    SESSION_WINDOW = "session_window"


@dataclass(frozen=True)
class LimitInfo:
    unit: str
    hours: bool  # an hours budget (warned, exhausted, enforced while running) or a concurrency cap
    per_user: bool
    gpu: bool  # concerns GPUs only (a CPU-only server is never refused or stopped for it)


#: The status table of quota outcomes: what each limit counts and whom it concerns.
LIMITS: Mapping[Limit, LimitInfo] = {
    Limit.GPU_HOURS: LimitInfo("GPU-hours", True, False, True),
    Limit.CPU_CORE_HOURS: LimitInfo("CPU-core-hours", True, False, False),
    Limit.CONCURRENT_GPUS: LimitInfo("GPUs at a time", False, False, True),
    Limit.CONCURRENT_SERVERS: LimitInfo("servers at a time", False, False, False),
    Limit.USER_GPU_HOURS: LimitInfo("GPU-hours", True, True, True),
    Limit.USER_CPU_CORE_HOURS: LimitInfo("CPU-core-hours", True, True, False),
    Limit.USER_CONCURRENT_GPUS: LimitInfo("GPUs at a time", False, True, True),
    Limit.USER_CONCURRENT_SERVERS: LimitInfo("servers at a time", False, True, False),
    Limit.SESSION_WINDOW: LimitInfo("", False, False, False),
}

HOURS_LIMITS = tuple(limit for limit, info in LIMITS.items() if info.hours)
AnyBudget = Budget | TeachingBudget


# Periods -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """The time a budget counts over: [start, end) in UNIX seconds."""

    start: float
    end: float
    label: str
    timezone: str
    resets: bool = True  # False for a teaching session: nothing comes back at the end

    def contains(self, at: float) -> bool:
        return self.start <= at < self.end

    def local(self, at: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(at, ZoneInfo(self.timezone))

    @property
    def end_text(self) -> str:
        return format_time(self.end, self.timezone)


def format_time(at: float, timezone: str) -> str:
    """'2026-06-01 00:00 CEST': what a researcher in that zone reads on the wall clock."""
    local = dt.datetime.fromtimestamp(at, ZoneInfo(timezone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def _midnight(day: dt.date, zone: ZoneInfo) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def period_window(period: str, timezone: str, at: float) -> Window:
    """The calendar month, ISO week or quarter containing ``at``, in ``timezone``."""
    zone = ZoneInfo(timezone)
    today = dt.datetime.fromtimestamp(at, zone).date()
    if period == "month":
        first = today.replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        label = f"{first:%B %Y}"
    elif period == "quarter":
        quarter = (today.month - 1) // 3
        first = dt.date(today.year, 3 * quarter + 1, 1)
        following = (first + dt.timedelta(days=95)).replace(day=1)
        label = f"Q{quarter + 1} {today.year}"
    elif period == "week":
        first = today - dt.timedelta(days=today.weekday())
        following = first + dt.timedelta(days=7)
        year, week, _ = first.isocalendar()
        label = f"week {week} of {year}"
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return Window(_midnight(first, zone), _midnight(following, zone), label, timezone)


def budget_window(budget: AnyBudget, at: float) -> Window:
    """The window ``budget`` counts over at time ``at``."""
    if isinstance(budget, TeachingBudget):
        zone = ZoneInfo(budget.timezone)
        starts, ends = (
            (moment if moment.tzinfo else moment.replace(tzinfo=zone)).timestamp()
            for moment in (budget.starts, budget.ends)
        )
        label = f"the session {format_time(starts, budget.timezone)} to {format_time(ends, budget.timezone)}"
        return Window(starts, ends, label, budget.timezone, resets=False)
    return period_window(budget.period, budget.timezone, at)


def day_edges(window: Window, until: float | None = None) -> list[float]:
    """Local midnights from the window's start to its end (or ``until``), both ends included."""
    zone = ZoneInfo(window.timezone)
    stop = min(window.end, until) if until is not None else window.end
    day = dt.datetime.fromtimestamp(window.start, zone).date()
    edges = [window.start]
    while edges[-1] < stop:
        day += dt.timedelta(days=1)
        edges.append(min(_midnight(day, zone), window.end))
    return edges


# Usage -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """One allocation as the arithmetic sees it."""

    id: str
    user: str
    gpus: int
    cpu: float
    kind: str = SERVER
    started: float | None = None  # None: reserved, not started (uses nothing)
    ended: float | None = None  # None while it holds resources
    active: bool = True  # reserved or running: counts towards concurrency


def span_seconds(span: Span, start: float, end: float, now: float) -> float:
    """Seconds of ``span`` inside [start, end), a running span counting up to ``now``."""
    if span.started is None:
        return 0.0
    stop = span.ended if span.ended is not None else now
    return max(0.0, min(stop, end, now) - max(span.started, start))


@dataclass(frozen=True)
class UserUsage:
    gpu_hours: float = 0.0
    cpu_core_hours: float = 0.0
    active_gpus: int = 0
    active_servers: int = 0


@dataclass(frozen=True)
class Usage:
    gpu_hours: float = 0.0
    cpu_core_hours: float = 0.0
    active_gpus: int = 0
    active_servers: int = 0
    by_user: Mapping[str, UserUsage] = field(default_factory=dict)

    def of(self, user: str) -> UserUsage:
        return self.by_user.get(user, UserUsage())

    def used(self, limit: Limit, user: str | None = None) -> float:
        """The amount ``limit`` compares with its allowance."""
        scope: Usage | UserUsage = self.of(user or "") if LIMITS[limit].per_user else self
        attribute = {
            Limit.GPU_HOURS: "gpu_hours",
            Limit.USER_GPU_HOURS: "gpu_hours",
            Limit.CPU_CORE_HOURS: "cpu_core_hours",
            Limit.USER_CPU_CORE_HOURS: "cpu_core_hours",
            Limit.CONCURRENT_GPUS: "active_gpus",
            Limit.USER_CONCURRENT_GPUS: "active_gpus",
            Limit.CONCURRENT_SERVERS: "active_servers",
            Limit.USER_CONCURRENT_SERVERS: "active_servers",
        }.get(limit)
        return float(getattr(scope, attribute)) if attribute else 0.0


def usage_of(spans: Iterable[Span], window: Window, now: float) -> Usage:
    """Weighted hours inside ``window`` and what is held now, for the account and per user."""
    totals: dict[str, list[float]] = {}
    for span in spans:
        row = totals.setdefault(span.user, [0.0, 0.0, 0, 0])
        hours = span_seconds(span, window.start, window.end, now) / HOUR
        row[0] += hours * span.gpus
        row[1] += hours * span.cpu
        if span.active:
            row[2] += span.gpus
            row[3] += 1 if span.kind == SERVER else 0
    by_user = {
        user: UserUsage(row[0], row[1], int(row[2]), int(row[3])) for user, row in sorted(totals.items())
    }
    return Usage(
        gpu_hours=math.fsum(u.gpu_hours for u in by_user.values()),
        cpu_core_hours=math.fsum(u.cpu_core_hours for u in by_user.values()),
        active_gpus=sum(u.active_gpus for u in by_user.values()),
        active_servers=sum(u.active_servers for u in by_user.values()),
        by_user=by_user,
    )


def timeline(spans: Iterable[Span], edges: list[float], now: float) -> list[tuple[float, float, float]]:
    """(bucket start, GPU-hours, CPU-core-hours) per bucket between consecutive ``edges``."""
    spans = list(spans)
    rows = []
    for start, end in itertools.pairwise(edges):
        gpu = cpu = 0.0
        for span in spans:
            hours = span_seconds(span, start, end, now) / HOUR
            gpu += hours * span.gpus
            cpu += hours * span.cpu
        rows.append((start, gpu, cpu))
    return rows


# Budgets and limits ------------------------------------------------------------------------------
def allowance(budget: BudgetLimits, limit: Limit) -> float | None:
    value = getattr(budget, limit.value, None) if limit is not Limit.SESSION_WINDOW else None
    return None if value is None else float(value)


def effective_budget(configured: AnyBudget | None, override: Mapping[str, Any] | None) -> AnyBudget | None:
    """The YAML budget with an admin's override (from the CLI or API) laid over it."""
    if not override:
        return configured
    if configured is None:
        return Budget.model_validate(dict(override))
    return type(configured).model_validate({**configured.model_dump(), **override})


@dataclass(frozen=True)
class Request:
    """What a start asks for."""

    user: str
    gpus: int = 0
    cpu: float = 0.0
    kind: str = SERVER


@dataclass(frozen=True)
class Refusal:
    """Why a start may not go ahead; ``message`` is shown to the researcher as is."""

    limit: Limit
    account_label: str
    allowed: float
    used: float
    requested: float
    window: Window
    user: str | None = None

    @property
    def resets_at(self) -> float | None:
        return self.window.end if self.window.resets else None

    @property
    def message(self) -> str:
        info = LIMITS[self.limit]
        window = self.window
        reset = (
            f"The budget for {window.label} resets on {window.end_text}."
            if window.resets
            else f"The session's budget does not reset; it ends on {window.end_text}."
        )
        if self.limit is Limit.SESSION_WINDOW:
            return (
                f"{self.account_label} runs from {format_time(window.start, window.timezone)} to "
                f"{window.end_text}; servers can only start inside that window."
            )
        who = f"{self.user} has" if info.per_user else f"{self.account_label} has"
        if info.hours:
            each = " of the allowance of each member" if info.per_user else ""
            what = "GPU servers" if info.gpu else "servers"
            return (
                f"{who} used {_hours(self.used)} of {_hours(self.allowed)} {info.unit}{each} for "
                f"{window.label} (budget setting {self.limit.value}). {reset} {what[0].upper() + what[1:]} can start "
                "again then, or sooner if a workbench admin raises the budget."
            )
        scope = f"{self.user} may" if info.per_user else f"{self.account_label} may"
        thing = "GPU" if info.gpu else "server"
        asks = f" and this server asks for {_count(self.requested)}" if info.gpu else ""
        return (
            f"{scope} use at most {_things(self.allowed, thing)} at a time (budget setting "
            f"{self.limit.value}); {_things(self.used, thing)} {'is' if self.used == 1 else 'are'} "
            f"in use now{asks}. Try again when one of them stops. {reset}"
        )


def _hours(value: float) -> str:
    """200.4, 9.60, 0.0042: enough digits to see a difference at every scale."""
    if value >= 10 or value == 0:
        return f"{value:,.1f}"
    if value >= 0.1:
        return f"{value:,.2f}"
    return f"{value:.2g}"


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _things(value: float, thing: str) -> str:
    """'1 GPU', '2 GPUs', '0 servers'."""
    return f"{_count(value)} {thing}{'' if value == 1 else 's'}"


def check_request(
    budget: AnyBudget | None,
    window: Window,
    usage: Usage,
    request: Request,
    now: float,
    account_label: str,
) -> Refusal | None:
    """The first limit that ``request`` would break, or None when it may start.

    Order: the session window, then used-up hours (they do not clear by waiting), then
    concurrency. Hours are refused once used up; a start is never refused for what it might use.
    """
    if budget is None:
        return None

    def refuse(limit: Limit, used: float, requested: float) -> Refusal:
        allowed = allowance(budget, limit)
        assert allowed is not None
        user = request.user if LIMITS[limit].per_user else None
        return Refusal(limit, account_label, allowed, used, requested, window, user)

    if not window.resets and not window.contains(now):
        return Refusal(Limit.SESSION_WINDOW, account_label, 0, 0, 0, window)
    for limit in HOURS_LIMITS:
        allowed = allowance(budget, limit)
        if allowed is None or (LIMITS[limit].gpu and request.gpus <= 0):
            continue
        used = usage.used(limit, request.user)
        if used >= allowed:
            return refuse(limit, used, 0)
    for limit in (
        Limit.CONCURRENT_GPUS,
        Limit.USER_CONCURRENT_GPUS,
        Limit.CONCURRENT_SERVERS,
        Limit.USER_CONCURRENT_SERVERS,
    ):
        allowed = allowance(budget, limit)
        info = LIMITS[limit]
        if allowed is None:
            continue
        asked = request.gpus if info.gpu else (1 if request.kind == SERVER else 0)
        if asked <= 0:
            continue
        used = usage.used(limit, request.user)
        if used + asked > allowed:
            return refuse(limit, used, asked)
    return None


@dataclass(frozen=True)
class LimitUse:
    """How far one hours limit is used, for warnings, the admin page and enforcement."""

    limit: Limit
    user: str | None
    used: float
    allowed: float

    @property
    def fraction(self) -> float:
        if self.allowed <= 0:
            return math.inf if self.used > 0 else 1.0
        return self.used / self.allowed


def hours_use(budget: AnyBudget | None, usage: Usage) -> list[LimitUse]:
    """Every hours limit of ``budget`` with its use: the account's, then each user's."""
    if budget is None:
        return []
    uses = []
    for limit in HOURS_LIMITS:
        allowed = allowance(budget, limit)
        if allowed is None:
            continue
        if LIMITS[limit].per_user:
            uses.extend(LimitUse(limit, user, usage.used(limit, user), allowed) for user in usage.by_user)
        else:
            uses.append(LimitUse(limit, None, usage.used(limit), allowed))
    return uses


def levels_reached(fraction: float, warn_at: Iterable[float]) -> list[int]:
    """Warning levels (percent) reached at ``fraction``, with 100 once the budget is used up."""
    levels = [round(level * 100) for level in sorted(warn_at) if fraction >= level]
    if fraction >= 1.0:
        levels.append(100)
    return levels


def spans_to_stop(use: LimitUse, spans: Iterable[Span]) -> list[Span]:
    """The running allocations a used-up limit stops (GPU limits stop only GPU work)."""
    info = LIMITS[use.limit]
    return [
        span
        for span in spans
        if span.active
        and span.ended is None
        and (not info.gpu or span.gpus > 0)
        and (use.user is None or span.user == use.user)
    ]


def remaining_lines(
    budget: AnyBudget | None, window: Window, usage: Usage, user: str
) -> list[str]:
    """What the spawn form says under a project: hours left, free GPUs and servers, reset."""
    if budget is None:
        return ["No compute budget is set for this project."]
    parts = []
    for limit, per_user in (
        (Limit.GPU_HOURS, Limit.USER_GPU_HOURS),
        (Limit.CPU_CORE_HOURS, Limit.USER_CPU_CORE_HOURS),
    ):
        allowed = allowance(budget, limit)
        if allowed is not None:
            left = max(0.0, allowed - usage.used(limit))
            parts.append(f"{_hours(left)} of {_hours(allowed)} {LIMITS[limit].unit} left")
        mine = allowance(budget, per_user)
        if mine is not None:
            left = max(0.0, mine - usage.used(per_user, user))
            parts.append(f"{_hours(left)} of your {_hours(mine)} {LIMITS[per_user].unit} left")
    for limit in (Limit.CONCURRENT_GPUS, Limit.CONCURRENT_SERVERS):
        allowed = allowance(budget, limit)
        if allowed is not None:
            free = max(0, int(allowed) - int(usage.used(limit)))
            noun = "GPU" if LIMITS[limit].gpu else "server"
            parts.append(f"{free} of {_count(allowed)} {noun}s free now")
    head = f"Budget for {window.label}: " + ("; ".join(parts) if parts else "no limits") + "."
    tail = (
        f"Resets on {window.end_text}." if window.resets else f"The session ends on {window.end_text}."
    )
    return [head, tail]
