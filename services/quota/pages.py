"""The admin page: per-project usage against budget, usage over time, per-user breakdown.

Server-rendered, escaped HTML with inline SVG plots (no JavaScript needed); pure functions
of the reports, so tests can compare them without a browser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape

from .budgets import LIMITS, Limit, _hours, format_time
from .ledger import NoticeRecord
from .report import AccountReport, LimitRow

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; font-size: 14px; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 120px; height: 10px; background: #eee; vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #2a9d8f; }
.bar.warn > span { background: #e9c46a; } .bar.over > span { background: #d62828; }
section.account { border-top: 2px solid #ccc; margin-top: 1.5em; padding-top: .5em; }
.notice { margin: .2em 0; } .notice.error { color: #a4161a; } .notice.warning { color: #7f5539; }
.muted { color: #777; } nav a { margin-right: 1em; }
"""


def _bar(fraction: float | None) -> str:
    if fraction is None:
        return ""
    width = max(0.0, min(fraction, 1.0)) * 100
    css = "over" if fraction >= 1 else "warn" if fraction >= 0.8 else ""
    return f'<span class="bar {css}" title="{fraction:.0%}"><span style="width:{width:.1f}%"></span></span>'


def _limit_cell(row: LimitRow) -> str:
    unit = LIMITS[row.limit].unit
    if LIMITS[row.limit].hours:
        used = _hours(row.used)
        text = f"{used} of {_hours(row.allowed)}" if row.allowed is not None else f"{used} (no limit)"
    else:
        text = f"{int(row.used)} of {int(row.allowed)}" if row.allowed is not None else f"{int(row.used)} (no limit)"
    pct = f" {row.fraction:.0%}" if row.fraction is not None and LIMITS[row.limit].hours else ""
    return (
        f'<td class="num {row.limit.value}" data-used="{row.used:.4f}" title="{escape(unit)}">'
        f"{escape(text)}{pct} {_bar(row.fraction) if LIMITS[row.limit].hours else ''}</td>"
    )


def overview_page(
    reports: list[AccountReport],
    notices: Iterable[NoticeRecord],
    *,
    plot: Callable[[AccountReport], str],
    prefix: str,
    viewer: str,
    previous: str | None = None,
    following: str | None = None,
) -> str:
    notices = list(notices)
    rows = []
    for report in reports:
        by_limit = {row.limit: row for row in report.limits}
        override = ' <span class="muted" title="changed by an admin">(override)</span>' if report.override else ""
        rows.append(
            f'<tr data-account="{escape(report.account.id)}">'
            f'<td><a href="#account-{escape(report.account.id)}">{escape(report.account.id)}</a>{override}</td>'
            f"<td>{escape(report.window.label)}</td>"
            + "".join(_limit_cell(by_limit[limit]) for limit in (
                Limit.GPU_HOURS, Limit.CPU_CORE_HOURS, Limit.CONCURRENT_GPUS, Limit.CONCURRENT_SERVERS))
            + f"<td>{escape(report.window.end_text if report.window.resets else 'does not reset')}</td></tr>"
        )
    sections = [_account_section(report, [n for n in notices if n.account == report.account.id], plot)
                for report in reports]
    nav = []
    if previous:
        nav.append(f'<a href="{escape(prefix)}?at={escape(previous)}">&larr; previous period</a>')
    nav.append(f'<a href="{escape(prefix)}">current period</a>')
    if following:
        nav.append(f'<a href="{escape(prefix)}?at={escape(following)}">next period &rarr;</a>')
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Compute quotas</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Compute quotas</h1><p class='muted'>Signed in as {escape(viewer)}. "
        f"API: <code>{escape(prefix)}api/usage</code>, CSV: "
        f"<a href='{escape(prefix)}api/report?format=csv'>report.csv</a></p>"
        f"<nav>{''.join(nav)}</nav>"
        "<table id='quota-summary'><thead><tr><th>Project</th><th>Period</th><th>GPU-hours</th>"
        "<th>CPU-core-hours</th><th>GPUs now</th><th>Servers now</th><th>Resets</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        + "".join(sections)
        + "</body></html>"
    )


def _account_section(report: AccountReport, notices: list[NoticeRecord], plot: Callable[[AccountReport], str]) -> str:
    account = report.account
    users = "".join(
        f'<tr data-user="{escape(row["user"])}"><td>{escape(row["user"])}</td>'
        f'<td class="num">{_hours(row["gpu_hours"])}</td><td class="num">{_hours(row["cpu_core_hours"])}</td>'
        f'<td class="num">{row["active_gpus"]}</td><td class="num">{row["active_servers"]}</td></tr>'
        for row in report.user_rows()
    ) or "<tr><td colspan='5' class='muted'>No use in this period.</td></tr>"
    active = "".join(
        f"<tr><td>{escape(a.user)}</td><td>{escape(a.server_name or '(default)')}</td><td>{escape(a.kind)}</td>"
        f"<td>{escape(a.profile or '')}</td><td class='num'>{a.gpus}</td><td class='num'>{a.cpu:g}</td>"
        f"<td>{escape(a.status)}</td>"
        f"<td>{escape(format_time(a.started_at, report.window.timezone)) if a.started_at else ''}</td>"
        f"<td>{escape(a.stop_reason or '')}</td></tr>"
        for a in report.active
    ) or "<tr><td colspan='9' class='muted'>Nothing running.</td></tr>"
    notice_items = "".join(
        f'<div class="notice {"error" if n.level >= 100 else "warning"}">'
        f"{escape(format_time(n.created_at, report.window.timezone))}: {escape(n.message)}</div>"
        for n in notices[:10]
    )
    return (
        f'<section class="account" id="account-{escape(account.id)}">'
        f"<h2>{escape(account.id)} <small class='muted'>{escape(account.title)}</small></h2>"
        f"<figure class='usage-plot' data-account='{escape(account.id)}'>{plot(report)}</figure>"
        f"{notice_items}"
        "<h3>Per user</h3><table class='per-user'><thead><tr><th>User</th><th>GPU-hours</th>"
        "<th>CPU-core-hours</th><th>GPUs now</th><th>Servers now</th></tr></thead>"
        f"<tbody>{users}</tbody></table>"
        "<h3>Running and reserved</h3><table class='active'><thead><tr><th>User</th><th>Server</th>"
        "<th>Kind</th><th>Profile</th><th>GPUs</th><th>Cores</th><th>Status</th><th>Started</th>"
        f"<th>Stop reason</th></tr></thead><tbody>{active}</tbody></table></section>"
    )


def forbidden_page(viewer: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Compute quotas</title></head><body>"
        f"<h1>Compute quotas</h1><p>{escape(viewer)} is not a workbench admin: this page shows every "
        "project's use. Your own projects' budgets are on the spawn page.</p></body></html>"
    )
