"""Runs in this server through the CLI: progress, the record, re-runs, failures, listing.

Three real papermill runs (real kernels) are shared by the module's tests: a deterministic
notebook with parameters from -p and a YAML file, its re-run from the record, and a notebook
that fails in its third code cell.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from extensions.runs import cli, execute, provenance
from extensions.runs.records import RunRecord, RunStore
from tests.runs_support import deterministic_notebook, failing_notebook

GIT = ["git", "-c", "user.name=T", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]


@dataclass
class Invocation:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> Invocation:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return Invocation(code, out.getvalue(), err.getvalue())


@dataclass
class Runs:
    workspace: Path
    store: RunStore
    repo: Path
    first: Invocation
    rerun: Invocation
    failed: Invocation

    def record(self, invocation: Invocation) -> RunRecord:
        run_id = invocation.out.split()[1]
        return self.store.load(run_id)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("runs")
    workspace = root / "workspace"
    (workspace / "tables").mkdir(parents=True)
    (workspace / "tables" / "t.csv").write_text("a,b\n1,2\n")
    repo = root / "code"
    deterministic_notebook(repo / "analysis.ipynb")
    failing_notebook(repo / "fails.ipynb")
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "notebooks"], check=True)
    params = root / "params.yaml"
    params.write_text(f"scale: 2\ndata_file: {workspace / 'tables' / 't.csv'}\nlabel: from-yaml\n")
    common = ["--project", "magi", "--workspace", str(workspace)]
    first = run_cli("run", str(repo / "analysis.ipynb"), "-p", "n", "4", "-f", str(params), *common)
    store = RunStore(workspace)
    first_id = first.out.split()[1]
    rerun = run_cli("rerun", first_id[-6:], *common)
    failed = run_cli("run", str(repo / "fails.ipynb"), *common)
    return Runs(workspace, store, repo, first, rerun, failed)


def test_a_run_shows_cell_n_of_m_and_leaves_a_complete_record(runs: Runs) -> None:
    assert runs.first.code == 0, runs.first.err
    record = runs.record(runs.first)
    assert runs.first.out == f"run {record.id} succeeded: {record.message}\n"
    progress = [line for line in runs.first.err.splitlines() if line.startswith(f"[{record.id}]")]
    assert progress[0] == f"[{record.id}] starting kernel (7 cells)"
    assert progress[1] == f"[{record.id}] cell 1 of 7: n: int = 3  # how many values"
    assert progress[2] == f"[{record.id}] cell 2 of 7: scale = 2.0"  # papermill's injected cell
    assert progress[-1] == f"[{record.id}] cell 7 of 7 done"

    assert record.status == "succeeded" and record.where == "local" and record.project == "magi"
    assert record.parameters == {"scale": 2.0, "data_file": str(runs.workspace / "tables" / "t.csv"),
                                 "label": "from-yaml", "n": 4}
    assert record.effective_parameters["pull"] == ""  # a default the run did not change
    assert record.outputs is not None and record.outputs.values == {"total": 12.0, "label": "from-yaml"}
    assert record.code.repo == str(runs.repo) and record.code.commit and not record.code.dirty
    assert record.code.path_in_repo == "analysis.ipynb"
    env = record.environment
    assert env is not None and env.kernel.name == "python3"
    folder = runs.store.folder(record.id)
    assert provenance.sha256_text((folder / "environment.lock").read_text()) == env.sha256
    assert [(i.kind, i.name, i.path) for i in record.inputs] == [
        ("parameter", "data_file", "workspace:tables/t.csv")]
    assert record.resources.wall_seconds and record.resources.kernel_cpu_seconds
    assert record.started and record.ended and record.error is None
    executed = nbformat.read(str(folder / "executed.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "n = 4" in injected[0].source
    assert (folder / "notebook.ipynb").read_bytes() == (runs.repo / "analysis.ipynb").read_bytes()
    assert json.loads((folder / "progress.json").read_text())["state"] == "done"


def test_a_rerun_from_the_record_gives_identical_outputs(runs: Runs) -> None:
    assert runs.rerun.code == 0, runs.rerun.err
    first, again = runs.record(runs.first), runs.record(runs.rerun)
    assert again.rerun_of == first.id and again.id != first.id
    assert again.outputs == first.outputs
    assert again.reproducibility() == first.reproducibility()
    compared = run_cli("compare", first.id, again.id, "--workspace", str(runs.workspace))
    assert "every code cell's outputs are identical" in compared.out
    assert "<- differs" not in compared.out.split("PROVENANCE")[0]


def test_a_failing_run_records_its_error_cell(runs: Runs) -> None:
    assert runs.failed.code == 1
    record = runs.record(runs.failed)
    assert record.status == "failed"
    assert record.error is not None
    assert (record.error.cell, record.error.ename) == (3, "ValueError")
    assert record.error.evalue == "boom: the second cell fails"
    assert "raise ValueError" in record.error.source and record.error.traceback
    assert record.message == "failed in cell 3: ValueError: boom: the second cell fails"
    assert "error in cell 3 (In [3]): ValueError" in runs.failed.out
    assert f"[{record.id}] cell 3 of 4 failed" in runs.failed.err
    executed = nbformat.read(str(runs.store.folder(record.id) / "executed.ipynb"), as_version=4)
    assert "An Exception was encountered" in executed.cells[0].source  # papermill's marker
    assert record.outputs is not None and len(record.outputs.cells) == 4  # cells up to the error


def test_list_and_show_read_the_records(runs: Runs) -> None:
    listing = run_cli("list", "--workspace", str(runs.workspace))
    lines = listing.out.splitlines()
    assert len(lines) == 4 and lines[0].startswith("ID")
    assert [line.split()[1] for line in lines[1:]] == ["succeeded", "succeeded", "failed"]
    shown = run_cli("show", runs.record(runs.first).id[-6:], "--workspace", str(runs.workspace))
    assert "param     n = 4" in shown.out and 'param     pull = ""  (default)' in shown.out
    assert "output    total = 12.0" in shown.out and "input     parameter workspace:tables/t.csv" in shown.out
    as_json = json.loads(run_cli("show", runs.record(runs.failed).id, "--json",
                                 "--workspace", str(runs.workspace)).out)
    assert as_json["error"]["cell"] == 3


def test_a_local_run_whose_process_is_gone_is_marked_lost(runs: Runs, tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    finished = runs.record(runs.first)
    orphan = finished.model_copy(update={"id": "20250101-000000-000001", "status": "running",
                                         "executor": {"host": os.uname().nodename, "pid": 2**22 + 7}})
    elsewhere = orphan.model_copy(update={"id": "20250101-000000-000002",
                                          "executor": {"host": "another-node", "pid": 1}})
    for record in (orphan, elsewhere):
        store.create(record.id)
        store.save(record)
    assert execute.reconcile(store, host=os.uname().nodename) == [orphan.id]
    assert store.load(orphan.id).status == "lost" and store.load(elsewhere.id).status == "running"
