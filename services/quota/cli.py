"""``python -m services.quota.cli``: show, set and report budgets from a shell.

    show   [ACCOUNT] [--at 2026-05] [--json]   usage against budget, what runs now
    set    ACCOUNT --gpu-hours 300 ...          override the YAML's budget (takes effect at once)
    set    ACCOUNT --clear                      back to the YAML's budget
    report [--at 2026-05] [--csv]               per account and per user (sreport-like)

Reads the same ledger as the hub (``--db``, else $WORKBENCH_QUOTA_DB, else the SQLite file
under $WORKBENCH_DATA_DIR) and the same workbench YAML (``--config``, else $WORKBENCH_CONFIG).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from hub_config.loader import ConfigError, load_config
from hub_config.storage import default_data_dir

from .accounts import all_accounts
from .app import (
    DB_ENV,
    DEFAULT_EXTRA_ACCOUNTS,
    EXTRA_ACCOUNTS_ENV,
    default_db_url,
    extra_accounts_loader,
    parse_moment,
    validate_override,
)
from .budgets import LIMITS, _hours
from .errors import QuotaError
from .ledger import Ledger
from .report import AccountReport, report_rows, reports, to_csv

SETTABLE = {
    "gpu_hours": float, "cpu_core_hours": float, "max_concurrent_gpus": int,
    "max_concurrent_servers": int, "per_user_gpu_hours": float, "per_user_cpu_core_hours": float,
    "per_user_max_concurrent_gpus": int, "per_user_max_concurrent_servers": int,
    "grace_minutes": float, "period": str, "timezone": str,
}


def _value(kind: type) -> Any:
    def parse(text: str) -> Any:
        if text.lower() in {"none", "unlimited", "null"}:
            return None
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.quota.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help=f"ledger URL (default: ${DB_ENV} or the SQLite file in the data dir)")
    parser.add_argument("--config", help="workbench YAML (default: $WORKBENCH_CONFIG or the demo file)")
    commands = parser.add_subparsers(dest="command", required=True)

    show = commands.add_parser("show", help="usage against budget")
    show.add_argument("account", nargs="?")
    show.add_argument("--at", help="a date in the period to show, e.g. 2026-05 (default: now)")
    show.add_argument("--json", action="store_true")

    setter = commands.add_parser("set", help="override a project's budget ('none' removes a limit)")
    setter.add_argument("account")
    for name, kind in SETTABLE.items():
        setter.add_argument("--" + name.replace("_", "-"), dest=name, type=_value(kind), default=argparse.SUPPRESS)
    setter.add_argument("--clear", action="store_true", help="remove the override: the YAML's budget applies")
    setter.add_argument("--note", default="", help="why (kept with the override)")
    setter.add_argument("--by", default=os.environ.get("SUDO_USER") or getpass.getuser())

    report = commands.add_parser("report", help="per account and per user")
    report.add_argument("--at", help="a date in the period, e.g. 2026-05 (default: now)")
    report.add_argument("--csv", action="store_true", help="CSV on stdout")
    report.add_argument("--account")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    ledger = Ledger(args.db or os.environ.get(DB_ENV) or default_db_url(str(default_data_dir())))
    extra = extra_accounts_loader(os.environ.get(EXTRA_ACCOUNTS_ENV, DEFAULT_EXTRA_ACCOUNTS), lambda: config)
    accounts = all_accounts(config, extra(), known=ledger.accounts())
    now = time.time()
    try:
        if args.command == "set":
            return _set(args, ledger, accounts, now)
        at = parse_moment(args.at) if args.at else None
        chosen = {k: v for k, v in accounts.items() if getattr(args, "account", None) in (None, k)}
        if not chosen:
            print(f"no project or session called {args.account!r}", file=sys.stderr)
            return 1
        items = reports(ledger, chosen, now=now, at=at)
        if args.command == "show":
            if args.json:
                print(json.dumps([r.to_json() for r in items], indent=2))
            else:
                print(show_table(items))
            return 0
        rows = report_rows(items)
        if args.csv:
            sys.stdout.write(to_csv(rows))
        else:
            print(report_table(rows))
        return 0
    except QuotaError as error:
        print(error.message, file=sys.stderr)
        return 1
    finally:
        ledger.dispose()


def _set(args: argparse.Namespace, ledger: Ledger, accounts: dict, now: float) -> int:
    account = accounts.get(args.account)
    if account is None:
        print(f"no project or session called {args.account!r}", file=sys.stderr)
        return 1
    if args.clear:
        removed = ledger.clear_override(account.id)
        print(f"{account.id}: override removed" if removed else f"{account.id}: had no override")
        return 0
    fields = {name: getattr(args, name) for name in SETTABLE if hasattr(args, name)}
    if not fields:
        print("nothing to set: give e.g. --gpu-hours 300 (or --clear)", file=sys.stderr)
        return 2
    validate_override(account, fields)
    merged = ledger.set_override(account.id, fields, by=args.by, now=now, note=args.note)
    print(f"{account.id}: override now {json.dumps(merged, sort_keys=True)}")
    return 0


def _cell(used: float, allowed: float | None, hours: bool) -> str:
    shown = _hours(used) if hours else str(int(used))
    if allowed is None:
        return shown
    limit = _hours(allowed) if hours else str(int(allowed))
    percent = f" ({used / allowed:.0%})" if hours and allowed > 0 else ""
    return f"{shown}/{limit}{percent}"


def show_table(items: Sequence[AccountReport]) -> str:
    header = ["ACCOUNT", "PERIOD", "GPU-H", "CPU-CORE-H", "GPUS NOW", "SERVERS NOW", "RESETS", "OVERRIDE"]
    rows = [header]
    for report in items:
        cells = {row.limit: _cell(row.used, row.allowed, LIMITS[row.limit].hours) for row in report.limits}
        rows.append([
            report.account.id, report.window.label, *cells.values(),
            report.window.end_text if report.window.resets else "-",
            "yes" if report.override else "",
        ])
    lines = _align(rows)
    for report in items:
        for allocation in report.active:
            lines.append(
                f"  {report.account.id}: {allocation.user}/{allocation.server_name or '(default)'} "
                f"{allocation.kind} {allocation.profile or ''} {allocation.gpus} GPU {allocation.cpu:g} cores "
                f"{allocation.status}" + (" STOP REQUESTED" if allocation.stop_requested_at else "")
            )
    return "\n".join(lines)


def report_table(rows: Sequence[dict[str, Any]]) -> str:
    table = [["PERIOD", "ACCOUNT", "USER", "GPU-H", "CPU-CORE-H"]]
    for row in rows:
        table.append([row["period"], row["account"], row["user"],
                      _cell(row["gpu_hours"], row["gpu_hours_budget"], True),
                      _cell(row["cpu_core_hours"], row["cpu_core_hours_budget"], True)])
    return "\n".join(_align(table))


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


if __name__ == "__main__":
    from hub_config.console import run_tool

    raise SystemExit(run_tool(main))
