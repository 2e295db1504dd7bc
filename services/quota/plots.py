"""Usage over time as an inline SVG (matplotlib, Agg): cumulative hours against the budget."""

from __future__ import annotations

import datetime as dt
import io
import threading
from itertools import accumulate
from zoneinfo import ZoneInfo

from .budgets import Limit, allowance
from .report import AccountReport

_lock = threading.Lock()  # pyplot's state is process-wide


def usage_svg(report: AccountReport) -> str:
    """Two panels (GPU-hours, CPU-core-hours): cumulative use per day with the budget line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib import pyplot as plt

    zone = ZoneInfo(report.window.timezone)
    daily = report.daily()
    days = [dt.datetime.fromtimestamp(start, zone) for start, _, _ in daily]
    if days:
        days.append(dt.datetime.fromtimestamp(min(report.now, report.window.end), zone))
    series = [
        ("GPU-hours", [0.0, *accumulate(g for _, g, _ in daily)], Limit.GPU_HOURS, "#b5179e"),
        ("CPU-core-hours", [0.0, *accumulate(c for _, _, c in daily)], Limit.CPU_CORE_HOURS, "#3a86ff"),
    ]
    with _lock:
        figure, axes = plt.subplots(1, 2, figsize=(9, 2.8), dpi=80)
        try:
            for axis, (label, values, limit, colour) in zip(axes, series):
                if days:
                    axis.step(days, values[: len(days)], where="post", color=colour, linewidth=2, label="used")
                budget = allowance(report.budget, limit) if report.budget is not None else None
                if budget is not None:
                    axis.axhline(budget, color="#d62828", linestyle="--", linewidth=1, label=f"budget {budget:g}")
                axis.set_title(f"{label}, {report.window.label}", fontsize=10)
                axis.set_xlim(
                    dt.datetime.fromtimestamp(report.window.start, zone),
                    dt.datetime.fromtimestamp(report.window.end, zone),
                )
                axis.set_ylim(bottom=0)
                axis.xaxis.set_major_formatter(mdates.DateFormatter("%d %b", tz=zone))
                axis.tick_params(labelsize=8)
                axis.grid(alpha=0.3)
                axis.legend(fontsize=8, loc="upper left")
            figure.autofmt_xdate()
            figure.tight_layout()
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg")
        finally:
            plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
