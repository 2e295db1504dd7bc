"""Runs from JupyterLab: an ipywidgets panel listing the project's runs and starting new ones.

    from extensions.runs.widget import RunsPanel
    RunsPanel()            # in any notebook of a workbench server

Why a widget and not a jupyter-server extension: a server endpoint alone is not a way to start
a run from JupyterLab, it also needs a JupyterLab front-end extension (TypeScript, a build
step, a version pinned to JupyterLab's). The widget needs neither, renders in JupyterLab as
the sample picker does, runs with the researcher's own identity and environment, and goes
through exactly the CLI a terminal uses: it starts ``python -m extensions.runs run ...`` as a
child process, so the run survives a busy or restarted notebook kernel's widgets, and reads
progress (cell n of m) and results from the files every run writes (``progress.json``,
``record.json``). Runs started elsewhere (a terminal, a Nomad job) show their progress too.
"""

from __future__ import annotations

import asyncio
import html
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import ipywidgets as w

from .progress import Progress, read_progress
from .records import PROGRESS, RunRecord, RunStore

_STATUS_COLOUR = {"succeeded": "#2e7d32", "failed": "#c62828", "lost": "#6d4c41",
                  "running": "#1565c0", "queued": "#757575"}


_SKIP = {"runs", "samples", "datasets", "node_modules", "__pycache__"}


def _notebooks(root: Path, limit: int = 200, max_folders: int = 2000) -> list[str]:
    """Notebooks under ``root`` for the picker: no hidden folders, run folders, samples or
    datasets, no symbolic links followed, and a bounded walk (homes can hold large trees)."""
    found: list[str] = []
    for visited, (folder, subfolders, files) in enumerate(os.walk(root), start=1):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in _SKIP)
        found.extend(str(Path(folder) / f) for f in sorted(files) if f.endswith(".ipynb"))
        if len(found) >= limit or visited >= max_folders:
            break
    return found[:limit]


class RunsPanel(w.VBox):
    """Start a run (notebook, parameters as YAML, where) and follow the project's runs."""

    def __init__(self, project: str | None = None, workspace: Path | None = None,
                 notebooks_root: Path | None = None, refresh_seconds: float = 1.0,
                 **kwargs: Any) -> None:
        from .execute import _workspace

        self.project = project or os.environ.get("WORKBENCH_PROJECT", "")
        self.store = RunStore(workspace or _workspace(None, self.project))
        self.refresh_seconds = refresh_seconds
        root = notebooks_root or Path.home()
        self.notebook = w.Combobox(options=_notebooks(root), placeholder="path/to/notebook.ipynb",
                                   description="Notebook", ensure_option=False,
                                   layout=w.Layout(width="60%"))
        self.parameters = w.Textarea(placeholder="epochs: 3\nlearning_rate: 0.01",
                                     description="Parameters", layout=w.Layout(width="60%", height="6em"))
        self.where = w.ToggleButtons(options=[("This server", "local"), ("Nomad job", "nomad")],
                                     description="Where")
        self.profile = w.Text(value=os.environ.get("WORKBENCH_PROFILE", ""), description="Profile",
                              placeholder="for Nomad: a profile of the project")
        self.start_button = w.Button(description="Run", button_style="primary", icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="",
                                      layout=w.Layout(visibility="hidden", width="40%"))
        self.progress_text = w.HTML()
        self.status = w.HTML()
        self.table = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.start_button.on_click(lambda _: self.start())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        super().__init__(
            [w.HTML(f"<b>Runs of project {html.escape(self.project or '?')}</b> "
                    f"<small>({html.escape(str(self.store.root))})</small>"),
             self.notebook, self.parameters, w.HBox([self.where, self.profile]),
             w.HBox([self.start_button, self.progress, self.progress_text]), self.status,
             w.HBox([self.refresh_button]), self.table],
            **kwargs,
        )
        self.add_class("workbench-runs-panel")
        self.refresh()

    # What the panel shows ---------------------------------------------------------------------
    def refresh(self) -> list[RunRecord]:
        records = list(self.store.records())[-20:][::-1]
        rows = []
        for record in records:
            colour = _STATUS_COLOUR.get(record.status, "#000")
            state = record.status
            if not record.finished:
                live = read_progress(self.store.folder(record.id) / PROGRESS)
                if live is not None:
                    state += f" ({html.escape(live.text())})"
            params = ", ".join(f"{k}={v!r}" for k, v in record.parameters.items())
            outputs = ", ".join(f"{k}={v!r}" for k, v in (record.outputs.values if record.outputs else {}).items())
            rows.append(
                f"<tr><td><code>{record.id}</code></td><td style='color:{colour}'>{state}</td>"
                f"<td>{record.where}</td><td>{html.escape(record.notebook.name)}</td>"
                f"<td>{html.escape(params[:80])}</td><td>{html.escape(outputs[:80])}</td>"
                f"<td>{html.escape(record.message[:120])}</td></tr>"
            )
        head = ("<tr><th>Run</th><th>Status</th><th>Where</th><th>Notebook</th><th>Parameters</th>"
                "<th>Outputs</th><th>Message</th></tr>")
        self.table.value = (f"<table class='workbench-runs'>{head}{''.join(rows)}</table>" if rows
                            else "<i>No runs yet.</i>")
        return records

    def show_progress(self, progress: Progress | None) -> None:
        """Cell n of m on the bar and in words."""
        if progress is None:
            return
        self.progress.layout.visibility = "visible"
        self.progress.max = max(progress.cells, 1)
        self.progress.value = progress.cell
        self.progress.bar_style = {"failed": "danger", "done": "success"}.get(progress.state, "info")
        self.progress_text.value = html.escape(f"{progress.run_id}: {progress.text()}")

    def _say(self, message: str, error: bool = False) -> None:
        colour = "#c62828" if error else "inherit"
        self.status.value = f"<span style='color:{colour}; white-space: pre-wrap'>{html.escape(message)}</span>"

    # Starting a run -------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The CLI call for what the form says (parameters go through a YAML file)."""
        notebook = self.notebook.value.strip()
        if not notebook:
            raise ValueError("Choose a notebook to run.")
        argv = [sys.executable, "-m", "extensions.runs", "run", notebook, "--where", self.where.value,
                "--workspace", str(self.store.workspace)]
        if self.project:
            argv += ["--project", self.project]
        if self.profile.value.strip() and self.where.value == "nomad":
            argv += ["--profile", self.profile.value.strip()]
        if self.parameters.value.strip():
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="run-parameters-",
                                             delete=False) as handle:
                handle.write(self.parameters.value)
            argv += ["-f", handle.name]
        return argv

    def start(self) -> asyncio.Task[int] | None:
        """Start the run in the background of the kernel's event loop; returns its task."""
        try:
            argv = self.command()
        except ValueError as exc:
            self._say(str(exc), error=True)
            return None
        self.start_button.disabled = True
        self._say("Starting…")
        return asyncio.ensure_future(self._run(argv))

    async def _run(self, argv: list[str]) -> int:
        before = set(self.store.ids())
        process = self.process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        watcher = asyncio.ensure_future(self._follow(before))
        try:
            out, err = await process.communicate()
        finally:
            watcher.cancel()
            self.start_button.disabled = False
            self._cleanup(argv)
        new = sorted(set(self.store.ids()) - before)
        if new:
            self.show_progress(read_progress(self.store.folder(new[-1]) / PROGRESS))
        if process.returncode == 2:  # refused before anything ran: say why, in place
            self._say(err.decode(errors="replace").replace("error: ", "", 1).strip(), error=True)
        else:
            self._say(out.decode(errors="replace").strip().splitlines()[0] if out.strip() else
                      err.decode(errors="replace").strip()[-500:], error=process.returncode != 0)
        self.refresh()
        return process.returncode or 0

    async def _follow(self, before: set[str]) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            new = sorted(set(self.store.ids()) - before)
            if new:
                self.show_progress(read_progress(self.store.folder(new[-1]) / PROGRESS))
            self.refresh()

    @staticmethod
    def _cleanup(argv: list[str]) -> None:
        if "-f" in argv:
            Path(argv[argv.index("-f") + 1]).unlink(missing_ok=True)
