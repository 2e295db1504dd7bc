"""The notebooks under notebooks/ run top to bottom with papermill, as a researcher's would."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from tests.fixtures.notebook_output import shown_text
from tests.fixtures.workbench import RunningHub

pytestmark = [pytest.mark.hub, pytest.mark.orthanc]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def workbench_kernel() -> str:
    if "workbench" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("the 'workbench' kernelspec is not installed: run scripts/setup")
    return "workbench"


def test_sample_pull_notebook(hub: RunningHub, workbench_kernel: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    # What the workbench spawner gives a server of anna in project magi.
    home = hub.files.storage.home("anna")
    (home / "projects").mkdir(parents=True, exist_ok=True)
    link = home / "projects" / "magi"
    if not link.exists():
        link.symlink_to(hub.files.storage.project_dir("magi"), target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WORKBENCH_PROJECT", "magi")
    monkeypatch.setenv("WORKBENCH_GATEWAY_URL", f"{hub.url}/services/sample-gateway/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN",
                       hub.user_token("anna", scopes=["access:services!service=sample-gateway"]))
    ARTIFACTS.mkdir(exist_ok=True)
    output = ARTIFACTS / "01-sample-pull.executed.ipynb"
    papermill.execute_notebook(
        NOTEBOOKS / "01-sample-pull.ipynb", output, kernel_name=workbench_kernel,
        parameters={"modality": "CT", "description": "thorax", "max_studies": 1},
        cwd=str(tmp_path), progress_bar=False,
    )
    executed = nbformat.read(output, as_version=4)
    text = shown_text(executed)
    assert "Project magi" in text
    assert "images in" in text and "samples/" in text
    assert "('z', 'y', 'x')" in text and "HU" in text
    images = [out for cell in executed.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert images, "the slice was plotted"
    widgets = [out for cell in executed.cells for out in cell.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert widgets, "the picker widget was created"
    assert "FICTIVE" not in output.read_text()


# Every notebook under notebooks/ also runs through the run machinery (extensions/runs), as a
# researcher's `python -m extensions.runs run` would: parameters checked against the notebook,
# a record in the project workspace, the sample manifests it read recorded as its input data.
RUN_PARAMETERS: dict[str, dict[str, object]] = {
    "01-sample-pull.ipynb": {"modality": "CT", "description": "thorax", "max_studies": 1},
}


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_through_the_run_machinery(name: str, hub: RunningHub, workbench_kernel: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from extensions.runs import execute

    hub.files.storage.project_dir("magi").mkdir(parents=True, exist_ok=True)  # the spawner makes it
    home = hub.files.storage.home("anna")
    (home / "projects").mkdir(parents=True, exist_ok=True)
    link = home / "projects" / "magi"
    if not link.exists():
        link.symlink_to(hub.files.storage.project_dir("magi"), target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("JUPYTERHUB_USER", "anna")
    monkeypatch.setenv("WORKBENCH_PROJECT", "magi")
    monkeypatch.setenv("WORKBENCH_GATEWAY_URL", f"{hub.url}/services/sample-gateway/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN",
                       hub.user_token("anna", scopes=["access:services!service=sample-gateway"]))
    record = execute.run(execute.RunRequest(NOTEBOOKS / name, RUN_PARAMETERS.get(name, {}),
                                            kernel=workbench_kernel))
    assert record.status == "succeeded", f"{record.message}\n{record.error}"
    assert record.project == "magi" and record.user == "anna"
    assert record.code.path_in_repo == f"notebooks/{name}" and record.environment is not None
    folder = hub.files.storage.project_dir("magi") / "runs" / record.id
    assert (folder / "executed.ipynb").is_file() and (folder / "record.json").is_file()
    if name == "01-sample-pull.ipynb":  # it pulls a study and reads the pull's manifest
        samples = [i for i in record.inputs if i.kind == "sample"]
        assert samples and samples[0].path.startswith("workspace:samples/")
        assert samples[0].path.endswith("/manifest.json") and samples[0].files > 0


def test_every_notebook_asks_for_the_workbench_kernel() -> None:
    """The Workbench kernel carries the project's environment and the data-pull client; a
    notebook naming another kernel opens on whatever 'python3' happens to be."""
    for path in sorted(NOTEBOOKS.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
        assert spec.get("name") == "workbench", f"{path.relative_to(NOTEBOOKS)} asks for {spec.get('name')!r}"
