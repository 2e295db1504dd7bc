"""Run records: storage, ids, comparison, and reading outputs from executed notebooks (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from extensions.runs import outputs
from extensions.runs.cli import format_comparison, format_list
from extensions.runs.errors import RunNotFound
from extensions.runs.records import (
    CellOutput,
    Environment,
    NotebookInfo,
    Outputs,
    RunRecord,
    RunStore,
    compare,
    new_run_id,
)


def record(run_id: str, **fields: object) -> RunRecord:
    base: dict[str, object] = {
        "id": run_id, "project": "magi", "user": "anna", "where": "local", "created": "2025-01-01T00:00:00Z",
        "notebook": NotebookInfo(source="/home/anna/a.ipynb", name="a.ipynb", sha256="ab" * 32, kernel="python3"),
        "parameters": {"n": 3}, "effective_parameters": {"n": 3, "rate": 0.5},
        "status": "succeeded",
    }
    base.update(fields)
    return RunRecord.model_validate(base)


def test_run_ids_sort_by_time_and_are_nomad_safe() -> None:
    first = new_run_id(dt.datetime(2025, 6, 11, 14, 22, 33, tzinfo=dt.UTC))
    later = new_run_id(dt.datetime(2025, 6, 11, 14, 22, 34, tzinfo=dt.UTC))
    assert first.startswith("20250611-142233-") and len(first) == 22 and first < later
    assert first.replace("-", "").isalnum() and first == first.lower()


def test_runs_made_in_one_second_are_listed_in_the_order_they_were_made(tmp_path: Path) -> None:
    # Ids name the second only; within it the random suffix must not decide the order.
    store = RunStore(tmp_path)
    made = [("20250101-120000-ffffff", "2025-01-01T12:00:00.100+00:00"),
            ("20250101-120000-000000", "2025-01-01T12:00:00.450+00:00"),
            ("20250101-120000-888888", "2025-01-01T12:00:00.900+00:00"),
            ("20250101-120001-111111", "2025-01-01T12:00:01.000+00:00")]
    for run_id, created in made:
        store.create(run_id)
        store.save(record(run_id, created=created))
    assert store.ids() != [run_id for run_id, _ in made]  # what sorting by id alone gives
    assert [r.id for r in store.records()] == [run_id for run_id, _ in made]
    assert format_list(list(store.records())).splitlines()[1].startswith("20250101-120000-ffffff")


def test_store_saves_loads_lists_and_resolves_short_ids(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    assert store.ids() == [] and list(store.records()) == []
    for run_id in ("20250101-000000-aaaaaa", "20250102-000000-bbbbbb"):
        store.create(run_id)
        store.save(record(run_id))
    (store.root / "20250103-000000-cccccc").mkdir()  # a folder without a record is not a run
    (store.root / "20250104-000000-dddddd").mkdir()
    (store.root / "20250104-000000-dddddd" / "record.json").write_text("{broken")
    assert store.ids() == ["20250101-000000-aaaaaa", "20250102-000000-bbbbbb", "20250104-000000-dddddd"]
    assert [r.id for r in store.records()] == ["20250101-000000-aaaaaa", "20250102-000000-bbbbbb"]
    assert store.load("bbbbbb").id == "20250102-000000-bbbbbb"
    assert store.load("20250101").id == "20250101-000000-aaaaaa"
    with pytest.raises(RunNotFound, match="several runs"):
        store.load("2025010")
    with pytest.raises(RunNotFound, match="no run"):
        store.load("zzz")
    with pytest.raises(RunNotFound):
        store.folder("../escape")
    with pytest.raises(FileExistsError):
        store.create("20250101-000000-aaaaaa")  # ids never repeat


def test_records_from_newer_writers_still_load() -> None:
    text = record("r1").model_dump_json()
    assert RunRecord.model_validate_json(text[:-1] + ', "added_later": 1}').id == "r1"


def test_compare_puts_parameters_and_outputs_side_by_side() -> None:
    cells = [CellOutput(cell=1, sha256="1"), CellOutput(cell=2, sha256="2")]
    a = record("A", outputs=Outputs(sha256="x", values={"auc": 0.9}, cells=cells),
               environment=Environment(sha256="e1", packages=["numpy==1.0", "pandas==2.0"]))
    b = record("B", effective_parameters={"n": 4, "rate": 0.5, "extra": True}, parameters={"n": 4},
               outputs=Outputs(sha256="y", values={"auc": 0.8, "loss": 0.1},
                               cells=[CellOutput(cell=1, sha256="1"), CellOutput(cell=2, sha256="3")]),
               environment=Environment(sha256="e2", packages=["numpy==1.1", "pandas==2.0"]))
    c = compare(a, b)
    assert [(r.name, r.a, r.b, r.same) for r in c.parameters] == [
        ("n", 3, 4, False), ("rate", 0.5, 0.5, True), ("extra", "(absent)", True, False)]
    assert [(r.name, r.a, r.b) for r in c.outputs] == [("auc", 0.9, 0.8), ("loss", "(absent)", 0.1)]
    assert c.cells_differing == [2] and not c.same_outputs
    assert c.packages_added == ["numpy==1.1"] and c.packages_removed == ["numpy==1.0"]
    text = format_comparison(c)
    lines = text.splitlines()
    assert lines[0].split() == ["PARAMETERS", "A", "B"]
    assert next(line for line in lines if line.startswith("n ")).split() == ["n", "3", "4", "<-", "differs"]
    assert next(line for line in lines if line.startswith("rate ")).split() == ["rate", "0.5", "0.5"]
    assert "code cells whose outputs differ: 2" in text
    assert compare(a, a).same_outputs


def test_list_shows_one_line_per_run() -> None:
    text = format_list([record("20250101-000000-aaaaaa"), record("20250102-000000-bbbbbb", status="failed")])
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "WHERE", "NOTEBOOK", "SECONDS", "PARAMETERS"]
    assert lines[2].split()[:3] == ["20250102-000000-bbbbbb", "failed", "local"]
    assert lines[1].endswith("n=3")


def _cell(outputs_: list[dict], count: int = 1, **meta: object) -> dict:
    return {"cell_type": "code", "source": "x", "execution_count": count, "outputs": outputs_,
            "metadata": {"papermill": meta}}


def test_output_hashes_ignore_what_differs_between_identical_runs() -> None:
    def run(count: int, model: str) -> dict:
        return {"cells": [
            {"cell_type": "markdown", "source": "# t", "metadata": {}},
            _cell([{"output_type": "execute_result", "execution_count": count,
                    "data": {"text/plain": ["4"]}, "metadata": {}}], count, duration=0.1 * count),
            _cell([{"output_type": "display_data", "metadata": {},
                    "data": {"application/vnd.jupyter.widget-view+json": {"model_id": model, "version_major": 2},
                             "text/plain": "IntProgress()"}}], count + 1),
            _cell([{"output_type": "display_data", "metadata": {},
                    "data": {outputs.OUTPUT_MIME: {"name": "auc", "value": 0.91}, "text/plain": "auc = 0.91"}}]),
        ]}

    first, second = outputs.notebook_outputs(run(1, "m1")), outputs.notebook_outputs(run(7, "m2"))
    assert first == second
    assert first["values"] == {"auc": 0.91}
    assert [c["cell"] for c in first["cells"]] == [1, 2, 3]
    changed = run(1, "m1")
    changed["cells"][1]["outputs"][0]["data"]["text/plain"] = ["5"]
    assert outputs.notebook_outputs(changed)["cells"][0]["sha256"] != first["cells"][0]["sha256"]


def test_the_error_cell_is_the_one_papermill_marked() -> None:
    nb = {"cells": [
        _cell([{"output_type": "stream", "name": "stdout", "text": "ok\n"}], 1, exception=False),
        {"cell_type": "markdown", "source": "papermill's anchor", "metadata": {}},
        _cell([{"output_type": "error", "ename": "ValueError", "evalue": "boom",
                "traceback": ["\x1b[0;31mValueError\x1b[0m: boom"]}], 2, exception=True),
        _cell([], None),
    ]}
    assert outputs.error_cell(nb) == {"cell": 2, "execution_count": 2, "ename": "ValueError",
                                      "evalue": "boom", "source": "x", "traceback": ["ValueError: boom"]}
    exit_zero = {"cells": [_cell([{"output_type": "error", "ename": "SystemExit", "evalue": "0"}])]}
    assert outputs.error_cell(exit_zero) is None


def test_help_lists_the_commands_people_type_and_hides_the_task_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    from extensions.runs.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "{run,list,show,compare,rerun,collect}" in text
    assert "execute" not in text and "SUPPRESS" not in text and "``" not in text
