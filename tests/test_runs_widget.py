"""The JupyterLab panel: lists runs with their progress, starts runs through the CLI."""

from __future__ import annotations

import html
from pathlib import Path

from extensions.runs.progress import Progress, file_sink
from extensions.runs.records import NotebookInfo, RunRecord, RunStore
from extensions.runs.widget import RunsPanel
from tests.runs_support import deterministic_notebook


def _panel(tmp_path: Path) -> RunsPanel:
    (tmp_path / "ws").mkdir(exist_ok=True)
    return RunsPanel(project="magi", workspace=tmp_path / "ws", notebooks_root=tmp_path / "home",
                     refresh_seconds=0.2)


def test_the_panel_lists_runs_with_live_progress(tmp_path: Path) -> None:
    panel = _panel(tmp_path)
    assert "No runs yet" in panel.table.value
    store = RunStore(tmp_path / "ws")
    record = RunRecord(id="20250101-000000-aaaaaa", project="magi", user="anna", where="nomad",
                       created="2025-01-01T00:00:00Z", status="running", parameters={"n": 4},
                       notebook=NotebookInfo(source="/x/a.ipynb", name="a.ipynb", sha256="0", kernel="k"))
    store.create(record.id)
    store.save(record)
    file_sink(store.folder(record.id) / "progress.json")(Progress(record.id, 3, 7, "running", "fit()"))
    panel.refresh()
    assert "20250101-000000-aaaaaa" in panel.table.value and "n=4" in panel.table.value
    assert "running (cell 3 of 7: fit())" in panel.table.value
    panel.show_progress(Progress(record.id, 3, 7, "running", "fit()"))
    assert (panel.progress.value, panel.progress.max) == (3, 7)
    assert "cell 3 of 7" in panel.progress_text.value


async def test_the_panel_starts_a_run_and_shows_refusals_in_place(tmp_path: Path) -> None:
    notebook = deterministic_notebook(tmp_path / "home" / "analysis.ipynb")
    panel = _panel(tmp_path)
    assert panel.notebook.options == (str(notebook),)

    panel.notebook.value = str(notebook)
    panel.parameters.value = "n: many\n"
    assert await panel.start() == 2
    assert "n: expects int, got str 'many'" in html.unescape(panel.status.value)
    assert list(RunStore(tmp_path / "ws").records()) == []

    panel.parameters.value = "n: 5\nlabel: widget\n"
    assert await panel.start() == 0
    (record,) = RunStore(tmp_path / "ws").records()
    assert record.status == "succeeded" and record.parameters == {"n": 5, "label": "widget"}
    assert record.outputs.values == {"total": 5.0, "label": "widget"}  # type: ignore[union-attr]
    assert f"run {record.id} succeeded" in panel.status.value
    assert panel.progress.value == panel.progress.max == 7 and "done" in panel.progress_text.value
    assert record.id in panel.table.value and not panel.start_button.disabled
