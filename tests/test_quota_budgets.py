"""Quota arithmetic (pure): periods in Copenhagen time, weighted usage, refusals, warnings."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_config.loader import ConfigError, parse_config
from hub_config.model import Budget, TeachingBudget
from services.quota.budgets import (
    Limit,
    LimitUse,
    Request,
    Span,
    Usage,
    budget_window,
    check_request,
    day_edges,
    effective_budget,
    format_time,
    hours_use,
    levels_reached,
    period_window,
    remaining_lines,
    span_seconds,
    spans_to_stop,
    timeline,
    usage_of,
)

CPH = "Europe/Copenhagen"
H = 3600.0


def at(*args: int, zone: str = CPH) -> float:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize(
    ("period", "moment", "label", "start", "end", "hours"),
    [
        # March has the spring DST change: 743 hours, starting CET and resetting CEST.
        ("month", at(2026, 3, 29, 12), "March 2026", "2026-03-01 00:00 CET", "2026-04-01 00:00 CEST", 743),
        ("month", at(2026, 12, 31, 23, 59), "December 2026", "2026-12-01 00:00 CET", "2027-01-01 00:00 CET", 744),
        ("month", at(2026, 10, 1, 0, 0), "October 2026", "2026-10-01 00:00 CEST", "2026-11-01 00:00 CET", 745),
        ("week", at(2026, 3, 29, 12), "week 13 of 2026", "2026-03-23 00:00 CET", "2026-03-30 00:00 CEST", 167),
        ("week", at(2027, 1, 1, 8), "week 53 of 2026", "2026-12-28 00:00 CET", "2027-01-04 00:00 CET", 168),
        ("quarter", at(2026, 5, 17), "Q2 2026", "2026-04-01 00:00 CEST", "2026-07-01 00:00 CEST", 2184),
        ("quarter", at(2026, 12, 17), "Q4 2026", "2026-10-01 00:00 CEST", "2027-01-01 00:00 CET", 2209),
    ],
)
def test_period_windows_in_copenhagen(period, moment, label, start, end, hours) -> None:
    window = period_window(period, CPH, moment)
    assert window.label == label
    assert format_time(window.start, CPH) == start
    assert window.end_text == end
    assert (window.end - window.start) / H == hours
    assert window.contains(moment)


def test_a_month_starts_at_local_midnight_not_utc() -> None:
    just_before = at(2026, 5, 31, 23, 30)  # 21:30 UTC: still May in Copenhagen
    just_after = at(2026, 6, 1, 0, 30)  # 22:30 UTC on 31 May: already June here
    assert period_window("month", CPH, just_before).label == "May 2026"
    assert period_window("month", CPH, just_after).label == "June 2026"
    assert period_window("month", "UTC", just_after).label == "May 2026"


def test_teaching_window_does_not_reset() -> None:
    budget = TeachingBudget(starts=dt.datetime(2026, 9, 7, 9), ends=dt.datetime(2026, 9, 7, 16), cpu_core_hours=40)
    window = budget_window(budget, at(2026, 9, 7, 10))
    assert (window.start, window.end) == (at(2026, 9, 7, 9), at(2026, 9, 7, 16))
    assert not window.resets
    assert window.label == "the session 2026-09-07 09:00 CEST to 2026-09-07 16:00 CEST"
    early = check_request(budget, window, Usage(), Request("stud1", cpu=1), at(2026, 9, 7, 8), "Teaching session intro")
    assert early is not None and early.limit is Limit.SESSION_WINDOW
    assert early.message == (
        "Teaching session intro runs from 2026-09-07 09:00 CEST to 2026-09-07 16:00 CEST; servers "
        "can only start inside that window."
    )
    assert check_request(budget, window, Usage(), Request("stud1", cpu=1), at(2026, 9, 7, 10), "T") is None


def test_usage_is_weighted_by_resources_and_clipped_to_the_window() -> None:
    window = period_window("month", CPH, at(2026, 5, 10))
    spans = [
        # 2 h of 1 GPU + 8 cores
        Span("a", "anna", 1, 8, started=at(2026, 5, 2, 10), ended=at(2026, 5, 2, 12), active=False),
        # started in April: only the May part counts (1 h of 4 cores)
        Span("b", "bo", 0, 4, started=at(2026, 4, 30, 23), ended=at(2026, 5, 1, 1), active=False),
        # running: counts up to now (3 h of 2 GPUs + 16 cores), holds 2 GPUs
        Span("c", "anna", 2, 16, started=at(2026, 5, 10, 9)),
        # reserved, not started: uses nothing, holds a GPU
        Span("d", "bo", 1, 8),
    ]
    usage = usage_of(spans, window, now=at(2026, 5, 10, 12))
    assert usage.gpu_hours == pytest.approx(2 + 6)
    assert usage.cpu_core_hours == pytest.approx(16 + 4 + 48)
    assert (usage.active_gpus, usage.active_servers) == (3, 2)
    assert usage.of("anna").gpu_hours == pytest.approx(8)
    assert usage.of("bo").cpu_core_hours == pytest.approx(4)
    assert usage.of("nobody").gpu_hours == 0


BUDGET = Budget(gpu_hours=200, cpu_core_hours=5000, max_concurrent_gpus=2, max_concurrent_servers=6,
                per_user_gpu_hours=20)
MAY = period_window("month", CPH, at(2026, 5, 10))


def test_refusal_messages_name_limit_usage_and_reset() -> None:
    now = at(2026, 5, 10, 12)
    busy = Usage(active_gpus=2, active_servers=2)
    refusal = check_request(BUDGET, MAY, busy, Request("anna", gpus=1, cpu=8), now, "Project magi")
    assert refusal is not None and refusal.limit is Limit.CONCURRENT_GPUS
    assert refusal.message == (
        "Project magi may use at most 2 GPUs at a time (budget setting max_concurrent_gpus); 2 GPUs are in use now "
        "and this server asks for 1. Try again when one of them stops. The budget for May 2026 resets "
        "on 2026-06-01 00:00 CEST."
    )
    assert refusal.resets_at == at(2026, 6, 1)
    # a CPU server is not refused for GPUs
    assert check_request(BUDGET, MAY, busy, Request("anna", gpus=0, cpu=1), now, "Project magi") is None

    spent = Usage(gpu_hours=200.4, by_user={})
    refusal = check_request(BUDGET, MAY, spent, Request("anna", gpus=1, cpu=8), now, "Project magi")
    assert refusal is not None and refusal.limit is Limit.GPU_HOURS
    assert refusal.message == (
        "Project magi has used 200.4 of 200.0 GPU-hours for May 2026 (budget setting gpu_hours). The budget for "
        "May 2026 resets on 2026-06-01 00:00 CEST. GPU servers can start again then, or sooner if a "
        "workbench admin raises the budget."
    )
    from services.quota.budgets import UserUsage

    mine = Usage(gpu_hours=30, by_user={"anna": UserUsage(gpu_hours=20.5)})
    refusal = check_request(BUDGET, MAY, mine, Request("anna", gpus=1, cpu=8), now, "Project magi")
    assert refusal is not None and refusal.limit is Limit.USER_GPU_HOURS and refusal.user == "anna"
    assert refusal.message.startswith("anna has used 20.5 of 20.0 GPU-hours of the allowance of each member")
    assert check_request(BUDGET, MAY, mine, Request("bo", gpus=1, cpu=8), now, "Project magi") is None
    full = Usage(active_servers=6)
    refusal = check_request(BUDGET, MAY, full, Request("bo", cpu=1), now, "Project magi")
    assert refusal is not None and refusal.limit is Limit.CONCURRENT_SERVERS
    assert "at most 6 servers at a time (budget setting max_concurrent_servers); 6 servers are in use now." in refusal.message
    assert check_request(None, MAY, full, Request("bo", cpu=1), now, "Project magi") is None


def test_zero_budget_refuses_at_once() -> None:
    budget = Budget(gpu_hours=0)
    refusal = check_request(budget, MAY, Usage(), Request("a", gpus=1, cpu=1), at(2026, 5, 2), "Project p")
    assert refusal is not None and refusal.limit is Limit.GPU_HOURS


def test_warning_levels_and_what_a_used_up_limit_stops() -> None:
    assert levels_reached(0.79, [0.8, 0.95]) == []
    assert levels_reached(0.8, [0.95, 0.8]) == [80]
    assert levels_reached(0.97, [0.8, 0.95]) == [80, 95]
    assert levels_reached(1.0, [0.8, 0.95]) == [80, 95, 100]
    spans = [
        Span("g", "anna", 1, 8, started=1.0),
        Span("c", "anna", 0, 1, started=1.0),
        Span("b", "bo", 1, 8, started=1.0),
        Span("done", "bo", 1, 8, started=1.0, ended=2.0, active=False),
    ]
    gpu = LimitUse(Limit.GPU_HOURS, None, 201, 200)
    assert [s.id for s in spans_to_stop(gpu, spans)] == ["g", "b"]
    cpu = LimitUse(Limit.CPU_CORE_HOURS, None, 5001, 5000)
    assert [s.id for s in spans_to_stop(cpu, spans)] == ["g", "c", "b"]
    mine = LimitUse(Limit.USER_GPU_HOURS, "anna", 21, 20)
    assert [s.id for s in spans_to_stop(mine, spans)] == ["g"]
    usage = usage_of(spans, MAY, now=3600.0)
    uses = hours_use(BUDGET, usage)
    assert [(u.limit, u.user) for u in uses] == [
        (Limit.GPU_HOURS, None), (Limit.CPU_CORE_HOURS, None),
        (Limit.USER_GPU_HOURS, "anna"), (Limit.USER_GPU_HOURS, "bo"),
    ]


def test_remaining_lines_for_the_spawn_form() -> None:
    usage = Usage(gpu_hours=76.6, cpu_core_hours=1000, active_gpus=1, active_servers=2)
    head = (
        "Budget for May 2026: 123.4 of 200.0 GPU-hours left; 20.0 of your 20.0 GPU-hours left; "
        "4,000.0 of 5,000.0 CPU-core-hours left; 1 of 2 GPUs free now; 4 of 6 servers free now."
    )
    assert remaining_lines(BUDGET, MAY, usage, "anna") == [head, "Resets on 2026-06-01 00:00 CEST."]
    assert remaining_lines(None, MAY, usage, "anna") == ["No compute budget is set for this project."]


def test_overrides_lay_over_the_yaml_budget_and_are_validated() -> None:
    merged = effective_budget(BUDGET, {"gpu_hours": 300, "max_concurrent_gpus": None})
    assert merged.gpu_hours == 300 and merged.max_concurrent_gpus is None and merged.cpu_core_hours == 5000
    assert effective_budget(None, {"gpu_hours": 5}).gpu_hours == 5
    assert effective_budget(BUDGET, None) is BUDGET
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        effective_budget(BUDGET, {"gpu_hours": -1})


def test_budget_yaml_errors_name_the_field() -> None:
    text = """\
profiles: [{slug: s, name: S, cpu: 1, memory: 1G}]
projects:
  - id: p
    title: P
    approval: {reference: R, expires: 2030-01-01}
    budget: {gpu_hours: 10, warn_at: [0.8, 1.5], timezone: Mars/Olympus}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "wb.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any("projects[0].budget.warn_at" in p and "fractions between 0 and 1" in p for p in problems)
    assert any("projects[0].budget.timezone = 'Mars/Olympus'" in p for p in problems)


def test_daily_timeline_sums_to_the_usage() -> None:
    now = at(2026, 5, 3, 6)
    spans = [Span("a", "anna", 1, 2, started=at(2026, 5, 1, 22), ended=at(2026, 5, 2, 2), active=False),
             Span("b", "bo", 0, 1, started=at(2026, 5, 2, 23))]
    edges = day_edges(MAY, until=now)
    assert len(edges) == 4  # 1, 2, 3 May and now's day end
    rows = timeline(spans, edges, now)
    assert [round(g, 6) for _, g, _ in rows] == [2, 2, 0]
    assert sum(c for _, _, c in rows) == pytest.approx(usage_of(spans, MAY, now).cpu_core_hours)


times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(start=times, length=times, cut=st.floats(0, 1), w0=times, wlen=times, now=times)
def test_splitting_a_span_never_changes_what_it_uses(start, length, cut, w0, wlen, now) -> None:
    """A server stopped and restarted at any moment uses exactly what one long run uses."""
    end = start + length
    middle = start + length * cut
    whole = Span("w", "u", 1, 1, started=start, ended=end, active=False)
    first = Span("f", "u", 1, 1, started=start, ended=middle, active=False)
    second = Span("s", "u", 1, 1, started=middle, ended=end, active=False)
    for lo, hi in ((w0, w0 + wlen), (-1.0, 2e6)):
        now_ = max(now, 0.0)
        assert span_seconds(first, lo, hi, now_) + span_seconds(second, lo, hi, now_) == pytest.approx(
            span_seconds(whole, lo, hi, now_), abs=1e-6
        )
        assert 0 <= span_seconds(whole, lo, hi, now_) <= max(0.0, min(hi, now_) - lo) + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(times, times, st.integers(0, 4), st.integers(1, 16)), max_size=12),
       st.floats(0, 3e6))
def test_consecutive_windows_add_up(raw, now) -> None:
    """Usage of two adjacent periods equals the usage of their union (nothing lost or doubled)."""
    from services.quota.budgets import Window

    spans = [Span(str(i), f"u{i % 3}", g, c, started=s, ended=s + d, active=False)
             for i, (s, d, g, c) in enumerate(raw)]
    a, b, c = 0.0, 1e6, 2.5e6
    first = usage_of(spans, Window(a, b, "a", "UTC"), now)
    second = usage_of(spans, Window(b, c, "b", "UTC"), now)
    both = usage_of(spans, Window(a, c, "ab", "UTC"), now)
    assert first.gpu_hours + second.gpu_hours == pytest.approx(both.gpu_hours, rel=1e-9, abs=1e-9)
    assert first.cpu_core_hours + second.cpu_core_hours == pytest.approx(both.cpu_core_hours, rel=1e-9, abs=1e-9)
    assert sum(u.gpu_hours for u in both.by_user.values()) == pytest.approx(both.gpu_hours)
