"""``python -m datasets_mount.cli list|show ID [--project P]``: browse the data catalogue.

Reads the workbench YAML ($WORKBENCH_CONFIG, or ``--config``): admins, stewards and the hub
machine. ``--project`` (default: $WORKBENCH_PROJECT, set in every workbench server) shows,
for each dataset, whether that project may use it and why not otherwise; ``--date`` checks
another day (when does an approval lapse). ``--json`` prints what the airlock service's
catalogue API returns. Exit status: 0, or 2 for a bad argument or an unknown dataset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import textwrap

from hub_config.loader import ConfigError, load_config

from . import catalogue


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datasets_mount.cli", description="Browse the workbench's data catalogue."
    )
    parser.add_argument("--config", help="workbench YAML (default: $WORKBENCH_CONFIG or the demo)")
    parser.add_argument("--project", default=os.environ.get("WORKBENCH_PROJECT"),
                        help="show what this project (or teaching session) may use")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=None,
                        help="check approvals on this day (YYYY-MM-DD; default today)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every dataset, with its status for the project")
    show = commands.add_parser("show", help="one dataset in full")
    show.add_argument("dataset")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    today = args.date or dt.date.today()
    project = args.project or None
    if project and config.project(project) is None and config.session(project) is None:
        print(f"There is no project or teaching session called {project!r}.", file=sys.stderr)
        return 2
    if args.command == "list":
        statuses = catalogue.catalogue_for(config, project, today)
        if args.json:
            print(json.dumps([catalogue.status_json(s, with_projects=True) for s in statuses], indent=2))
        else:
            print(_table(statuses, project))
        return 0
    try:
        dataset = catalogue.find(config, args.dataset)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return 2
    wanted = set(catalogue.requested_ids(config, project)) if project else set()
    status = catalogue.status_of(dataset, project, today, requested=dataset.id in wanted)
    if args.json:
        print(json.dumps(catalogue.status_json(status, with_projects=True), indent=2))
        return 0
    print(f"{dataset.id}")
    for label, value in catalogue.describe(dataset):
        print(_field(label, value))
    print(_field("Status" + (f" for {project}" if project else ""), status.message))
    return 0


def _field(label: str, value: str) -> str:
    lines = textwrap.wrap(value, 72) or [""]
    return "\n".join(
        f"  {label + ':' if i == 0 else '':<18} {line}" for i, line in enumerate(lines)
    )


def _table(statuses: list[catalogue.DatasetStatus], project: str | None) -> str:
    header = ("ID", "KIND", "SENSITIVITY", "APPROVAL", "SIZE", "STATUS" + (f" ({project})" if project else ""))
    rows = [header]
    for status in statuses:
        d = status.dataset
        approval = f"{d.approval.reference} to {d.approval.expires.isoformat()}" if d.approval else "-"
        rows.append((d.id, d.kind or "-", d.sensitivity or "-", approval,
                     catalogue.human_size(d.size) or "-", status.label))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    if not statuses:
        lines.append("(the catalogue is empty)")
    return "\n".join(lines)


if __name__ == "__main__":
    from hub_config.console import run_tool

    raise SystemExit(run_tool(main))
