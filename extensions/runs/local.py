"""Execute a notebook with papermill in this process's machine, reporting cell n of m.

:func:`execute` calls ``papermill.execute_notebook`` with a papermill engine of its own
(:class:`RunEngine`, registered as ``workbench-run``): papermill still parameterises, saves
the executed notebook after every cell and marks the failing cell, as with plain papermill.
The engine adds three things around papermill's cell loop:

* progress: each code cell's start and end go to a :data:`~.progress.Sink`;
* before the first cell, a silent execution in the kernel installs the audit hook of
  :data:`~.provenance.TRACKER_SETUP`, and after the last one a silent execution reads which
  files under ``samples/`` the notebook opened (neither shows up in the notebook);
* the kernel's CPU time and peak memory, read from its process before it shuts down.

It is the same code in the user's server (``--where local``) and inside a Nomad batch job.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .progress import Progress, Sink, first_line
from .provenance import TRACKER_QUERY, TRACKER_SETUP

ENGINE_NAME = "workbench-run"


@dataclass
class Execution:
    """What one execution gave, beyond the executed notebook on disk."""

    ok: bool
    started: float
    ended: float
    opened: list[str] = field(default_factory=list)
    kernel_cpu_seconds: float | None = None
    kernel_peak_rss: int | None = None
    failure: dict[str, Any] | None = None  # set when execution itself broke (kernel died, ...)


@dataclass
class _Hooks:
    run_id: str
    sink: Sink | None
    opened: list[str] = field(default_factory=list)
    cpu_seconds: float | None = None
    peak_rss: int | None = None


def _engine_classes() -> tuple[type, type]:
    """Built on first use: importing papermill costs 1-2 s, and the kernel side never needs it."""
    from nbclient.exceptions import CellExecutionError  # noqa: F401 - papermill's own import
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class TrackingClient(PapermillNotebookClient):
        def __init__(self, nb_man: Any, *, run_hooks: _Hooks, kernel_env: Mapping[str, str] | None,
                     **kw: Any) -> None:
            super().__init__(nb_man, **kw)
            self.run_hooks = run_hooks
            self.kernel_env = kernel_env

        def execute(self, **kwargs: Any) -> Any:
            if self.kernel_env is not None:
                kwargs.setdefault("env", dict(self.kernel_env))
            return super().execute(**kwargs)

        def papermill_execute_cells(self) -> None:
            spec = getattr(self.km, "kernel_spec", None)
            python = spec is not None and str(spec.language).lower() == "python"
            if python:  # the tracker is Python; other kernels record parameter inputs only
                self._silent(TRACKER_SETUP)
            try:
                super().papermill_execute_cells()
            finally:
                try:
                    if python:
                        reply = self._silent("pass", {"opened": TRACKER_QUERY})
                        self.run_hooks.opened = _expression_list(reply, "opened")
                except Exception:  # noqa: BLE001 - a dead kernel must not hide the cell's error
                    self.run_hooks.opened = []
                self.run_hooks.cpu_seconds, self.run_hooks.peak_rss = _kernel_usage(self.km)

        def _silent(self, code: str, expressions: dict[str, str] | None = None) -> dict[str, Any]:
            msg_id = self.kc.execute(code, silent=True, store_history=False,
                                     user_expressions=expressions or {})
            return self.wait_for_reply(msg_id) or {}

    class RunEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls, nb_man: Any, kernel_name: str, log_output: bool = False, stdout_file: Any = None,
            stderr_file: Any = None, start_timeout: int = 60, execution_timeout: int | None = None,
            **kwargs: Any,
        ) -> Any:
            hooks: _Hooks = kwargs.pop("run_hooks")
            kernel_env = kwargs.pop("kernel_env", None)
            _report_cells(nb_man, hooks)
            # As NBClientEngine.execute_managed_notebook (papermill 2.7), with our client.
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            return TrackingClient(nb_man, run_hooks=hooks, kernel_env=kernel_env, **final_kwargs).execute()

    return TrackingClient, RunEngine


_registered: list[type] = []


def _engine() -> str:
    if not _registered:
        from papermill.engines import papermill_engines

        _, engine = _engine_classes()
        papermill_engines.register(ENGINE_NAME, engine)
        _registered.append(engine)
    return ENGINE_NAME


def _report_cells(nb_man: Any, hooks: _Hooks) -> None:
    """Wrap papermill's per-cell bookkeeping so each code cell also reports progress."""
    if hooks.sink is None:
        return
    sink = hooks.sink
    code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
    number = {index: n for n, index in enumerate(code, start=1)}
    total = len(code)
    start, complete = nb_man.cell_start, nb_man.cell_complete
    sink(Progress(hooks.run_id, 0, total, "starting"))

    def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
        if cell_index in number:
            sink(Progress(hooks.run_id, number[cell_index], total, "running", first_line(cell.source)))
        return start(cell, cell_index, **kw)

    def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
        result = complete(cell, cell_index, **kw)
        if cell_index in number:
            failed = cell.metadata.get("papermill", {}).get("status") == "failed"
            last = number[cell_index] == total
            if failed or last:
                sink(Progress(hooks.run_id, number[cell_index], total, "failed" if failed else "done"))
        return result

    nb_man.cell_start = cell_start
    nb_man.cell_complete = cell_complete


def _expression_list(reply: Mapping[str, Any], name: str) -> list[str]:
    result = (reply.get("content", {}).get("user_expressions") or {}).get(name) or {}
    if result.get("status") != "ok":
        return []
    try:
        value = ast.literal_eval(result.get("data", {}).get("text/plain", "[]"))
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _kernel_usage(km: Any) -> tuple[float | None, int | None]:
    """CPU seconds (with reaped children) and peak resident memory of the kernel process."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    pid = getattr(process, "pid", None)
    if pid is None:
        return None, None
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        cpu = times.user + times.system + times.children_user + times.children_system
    except Exception:  # noqa: BLE001 - the kernel may be gone; usage is best effort
        cpu = None
    peak = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return cpu, peak


def execute(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    kernel_name: str,
    cwd: Path,
    run_id: str,
    sink: Sink | None = None,
    kernel_env: Mapping[str, str] | None = None,
    start_timeout: int = 120,
) -> Execution:
    """Run ``notebook`` into ``output``; a failing cell gives ``ok=False``, never an exception."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    hooks = _Hooks(run_id, sink)
    started = time.time()
    failure = None
    ok = True
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=dict(parameters) or None,
            engine_name=_engine(), kernel_name=kernel_name, cwd=str(cwd), progress_bar=False,
            start_timeout=start_timeout, run_hooks=hooks, kernel_env=kernel_env,
        )
    except PapermillExecutionError:
        ok = False  # the executed notebook marks the cell; outputs.error_cell reads it
    except Exception as exc:  # noqa: BLE001 - a dead kernel, a timeout: recorded, not raised
        ok = False
        failure = {"ename": type(exc).__name__, "evalue": str(exc)[:2000]}
    return Execution(ok, started, time.time(), hooks.opened, hooks.cpu_seconds, hooks.peak_rss, failure)
