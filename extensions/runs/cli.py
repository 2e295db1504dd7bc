"""``python -m extensions.runs``: run notebooks reproducibly, and list, show, compare, re-run.

    python -m extensions.runs run NOTEBOOK -p name value ... [-f params.yaml]
                                  [--project P] [--profile S] [--where local|nomad]
    python -m extensions.runs list
    python -m extensions.runs show ID
    python -m extensions.runs compare A B
    python -m extensions.runs rerun ID [--where local|nomad]
    python -m extensions.runs collect [ID]        settle Nomad runs whose submitter went away

Project and profile default to the server's own (``WORKBENCH_PROJECT``, ``WORKBENCH_PROFILE``);
records live in the project workspace (``~/projects/<project>/runs``). IDs may be shortened to
any unique prefix or suffix. Exit status: 0 succeeded, 1 the notebook failed, 2 refused (bad
parameters, unknown project...; nothing was run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import RunError
from .progress import terminal_sink
from .records import Comparison, RunRecord, RunStore, compare


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extensions.runs", description=__doc__.split("\n\n")[0].replace("``", ""))
    # 'execute' (the Nomad task's entry point) is left out of the listing: no help=, and a
    # metavar that names only the commands people type (argparse lists SUPPRESS literally).
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{run,list,show,compare,rerun,collect}")

    def where_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--project", help="project id (default: $WORKBENCH_PROJECT)")
        p.add_argument("--workspace", type=Path, help="project workspace (default: ~/projects/<project>)")

    run = sub.add_parser("run", help="run a notebook with parameters and record it")
    run.add_argument("notebook", type=Path)
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a parameter (converted to the type the parameters cell declares)")
    run.add_argument("-f", "--parameters-file", type=Path, help="YAML file of parameters")
    run.add_argument("--profile", help="compute profile (default: $WORKBENCH_PROFILE)")
    run.add_argument("--where", choices=["local", "nomad"], default="local")
    run.add_argument("--kernel", help="kernel name (default: the notebook's)")
    run.add_argument("--cwd", type=Path, help="working directory (default: the notebook's folder)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--json", action="store_true", help="print the record as JSON")
    where_options(run)

    listing = sub.add_parser("list", help="runs of the project, oldest first")
    listing.add_argument("--json", action="store_true")
    where_options(listing)

    show = sub.add_parser("show", help="one run's record")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    where_options(show)

    comparison = sub.add_parser("compare", help="two runs side by side")
    comparison.add_argument("a")
    comparison.add_argument("b")
    comparison.add_argument("--json", action="store_true")
    where_options(comparison)

    again = sub.add_parser("rerun", help="run a recorded run again (same notebook copy and parameters)")
    again.add_argument("run_id")
    again.add_argument("--where", choices=["local", "nomad"])
    again.add_argument("--quiet", action="store_true")
    again.add_argument("--json", action="store_true")
    where_options(again)

    execute = sub.add_parser("execute")
    execute.add_argument("run_dir", type=Path)

    collect = sub.add_parser("collect", help="settle Nomad runs whose submitter went away")
    collect.add_argument("run_id", nargs="?")
    where_options(collect)
    return parser


def _store(args: argparse.Namespace) -> RunStore:
    import os

    from .execute import _workspace

    project = args.project or os.environ.get("WORKBENCH_PROJECT")
    if args.workspace is None and not project:
        raise RunError("Which project? Pass --project (or --workspace).", reason="no_project")
    return RunStore(_workspace(args.workspace, project or ""))


def _parameters(args: argparse.Namespace) -> tuple[dict[str, Any], frozenset[str]]:
    values: dict[str, Any] = {}
    if args.parameters_file:
        import yaml

        try:
            loaded = yaml.safe_load(args.parameters_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RunError(f"cannot read parameters from {args.parameters_file}: {exc}") from None
        if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
            raise RunError(f"{args.parameters_file} must hold a mapping of parameter names to values")
        values.update(loaded)
    text = set()
    for name, value in args.parameter:
        values[name] = value
        text.add(name)
    return values, frozenset(text)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args, out, err)
    except RunError as error:
        err.write(f"error: {error.message}\n")
        return error.exit_code
    except KeyboardInterrupt:
        err.write("interrupted. A local run stops with this process (`list` marks it lost); a "
                  "Nomad run keeps running: `python -m extensions.runs collect` settles it later.\n")
        return 130


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from . import execute

    if args.command == "execute":
        record = execute.execute_prepared(args.run_dir.resolve(), terminal_sink(err))
        err.write(f"[{record.id}] {record.status}: {record.message}\n")
        return 0 if record.status == "succeeded" else 1
    if args.command == "run":
        values, text = _parameters(args)
        request = execute.RunRequest(
            notebook=args.notebook, parameters=values, text_parameters=text, project=args.project,
            profile=args.profile, where=args.where, kernel=args.kernel,
            workspace=args.workspace.resolve() if args.workspace else None,
            cwd=args.cwd.resolve() if args.cwd else None,
        )
        record = execute.run(request, sink=None if args.quiet else terminal_sink(err))
        return _finished(record, args, out, err)
    if args.command == "rerun":
        store = _store(args)
        record = execute.rerun(store, args.run_id, where=args.where,
                               sink=None if args.quiet else terminal_sink(err))
        return _finished(record, args, out, err)
    store = _store(args)
    if args.command == "list":
        execute.reconcile(store)
        records = list(store.records())
        if args.json:
            out.write(json.dumps([r.model_dump(exclude={"environment"}) for r in records], indent=2) + "\n")
        else:
            out.write(format_list(records))
        return 0
    if args.command == "show":
        record = store.load(args.run_id)
        out.write(record.model_dump_json(indent=2) + "\n" if args.json else format_record(record, store))
        return 0
    if args.command == "compare":
        comparison = compare(store.load(args.a), store.load(args.b))
        if args.json:
            out.write(json.dumps(comparison_json(comparison), indent=2) + "\n")
        else:
            out.write(format_comparison(comparison))
        return 0
    if args.command == "collect":
        from hub_config.loader import cached_config

        from .nomad import NomadRuns, collect

        runs = NomadRuns.from_env(cached_config())
        ids = [store.resolve(args.run_id)] if args.run_id else [
            r.id for r in store.records() if r.where == "nomad" and not r.finished]
        for run_id in ids:
            record = asyncio.run(collect(store, run_id, runs))
            out.write(f"{record.id}  {record.status}  {record.message}\n")
        return 0
    raise AssertionError(args.command)


def _finished(record: RunRecord, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.json:
        out.write(record.model_dump_json(indent=2) + "\n")
    else:
        out.write(f"run {record.id} {record.status}: {record.message}\n")
        if record.error:
            out.write(_error_text(record))
    return 0 if record.status == "succeeded" else 1


# Text -------------------------------------------------------------------------------------------
def _short(value: Any, width: int = 28, quote: bool = False) -> str:
    text = value if isinstance(value, str) and not quote else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)


def format_list(records: list[RunRecord]) -> str:
    if not records:
        return "no runs yet\n"
    rows = [["ID", "STATUS", "WHERE", "NOTEBOOK", "SECONDS", "PARAMETERS"]]
    for r in records:
        seconds = f"{r.resources.wall_seconds:.1f}" if r.resources.wall_seconds is not None else "-"
        params = " ".join(f"{k}={_short(v, 16)}" for k, v in r.parameters.items())
        rows.append([r.id, r.status, r.where, r.notebook.name, seconds, _short(params, 50) or "-"])
    return _table(rows)


def _error_text(record: RunRecord) -> str:
    error = record.error
    if error is None:
        return ""
    lines = [f"error in cell {error.cell} (In [{error.execution_count}]): {error.ename}: {error.evalue}"]
    lines += ["  | " + line for line in error.source.splitlines()[:8]]
    return "\n".join(lines) + "\n"


def format_record(record: RunRecord, store: RunStore | None = None) -> str:
    lines = [
        f"run       {record.id}  ({record.status}) {record.message}",
        f"notebook  {record.notebook.source}  sha256 {record.notebook.sha256[:12]}  kernel {record.notebook.kernel}",
        f"project   {record.project}  profile {record.profile}  user {record.user}  where {record.where}",
        f"times     created {record.created}  started {record.started}  ended {record.ended}",
    ]
    code = record.code
    if code.repo:
        dirty = f"+ uncommitted changes {code.changes_sha256[:12]} ({len(code.changed_files)} files)" if code.dirty and code.changes_sha256 else "(clean)"
        lines.append(f"code      {code.remote or code.repo} @ {code.commit or '(no commit)'} {dirty}")
    else:
        lines.append(f"code      {code.note or 'not in git'}")
    if record.environment:
        env = record.environment
        lines.append(f"env       {env.sha256[:12]}  {env.python}  {len(env.packages)} packages  kernel {env.kernel.name} ({env.kernel.executable})")
    for name, value in record.effective_parameters.items():
        mark = "" if name in record.parameters else "  (default)"
        lines.append(f"param     {name} = {_short(value, 60, quote=True)}{mark}")
    for item in record.inputs:
        lines.append(f"input     {item.kind} {item.path}  sha256 {item.sha256[:12]}  {item.files} files, {item.bytes} bytes")
    if record.outputs:
        for name, value in record.outputs.values.items():
            lines.append(f"output    {name} = {_short(value, 60, quote=True)}")
        lines.append(f"outputs   {len(record.outputs.cells)} code cells, sha256 {record.outputs.sha256[:12]}")
    res = record.resources
    lines.append(
        f"resources {res.cpu} cpu, {res.memory} bytes, {res.gpus} gpu; wall {res.wall_seconds} s; "
        f"kernel cpu {res.kernel_cpu_seconds} s; peak rss {res.kernel_peak_rss}; "
        f"{res.cpu_core_hours} cpu-core-hours, {res.gpu_hours} gpu-hours"
    )
    if record.nomad:
        n = record.nomad
        lines.append(f"nomad     job {n.job_id} ({n.namespace}) alloc {n.alloc_id} node {n.node} exit {n.exit_code}")
    if record.rerun_of:
        lines.append(f"rerun of  {record.rerun_of}")
    if store is not None:
        lines.append(f"files     {store.folder(record.id)}")
    text = "\n".join(lines) + "\n"
    return text + _error_text(record)


def format_comparison(c: Comparison) -> str:
    def section(title: str, rows: list[Any]) -> str:
        if not rows:
            return f"{title}: none\n"
        table = [[title.upper(), c.a.id, c.b.id, ""]]
        table += [[r.name, _short(r.a), _short(r.b), "" if r.same else "<- differs"] for r in rows]
        return _table(table)

    text = section("parameters", c.parameters) + "\n" + section("outputs", c.outputs) + "\n"
    text += section("provenance", c.provenance)
    if c.cells_differing:
        text += f"\ncode cells whose outputs differ: {', '.join(map(str, c.cells_differing))}\n"
    else:
        text += "\nevery code cell's outputs are identical\n"
    for label, packages in (("added in B", c.packages_added), ("removed in B", c.packages_removed)):
        if packages:
            text += f"packages {label}: {', '.join(packages[:20])}{' …' if len(packages) > 20 else ''}\n"
    return text


def comparison_json(c: Comparison) -> dict[str, Any]:
    def rows(items: list[Any]) -> list[dict[str, Any]]:
        return [{"name": r.name, "a": r.a, "b": r.b, "same": r.same} for r in items]

    return {"a": c.a.id, "b": c.b.id, "parameters": rows(c.parameters), "outputs": rows(c.outputs),
            "provenance": rows(c.provenance), "cells_differing": c.cells_differing,
            "packages_added": c.packages_added, "packages_removed": c.packages_removed,
            "same_outputs": c.same_outputs}


__all__ = ["main"]
