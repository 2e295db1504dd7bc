"""Small notebooks and helpers for the tests of extensions.runs (tests/test_runs_*.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

KERNEL = "python3"  # ipykernel's own kernelspec: always there when ipykernel is


def notebook(cells: list[str], parameters: str | None, path: Path, kernel: str = KERNEL) -> Path:
    import nbformat  # 2 s to import (jsonschema): only for the tests that build notebooks

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell("# A test notebook"))
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


DETERMINISTIC_PARAMETERS = """\
n: int = 3  # how many values
scale = 0.5
label = "a"
data_file = ""  # a file to read (an input of the run)
pull = ""  # a sample pull folder whose manifest the notebook reads
"""

DETERMINISTIC_CELLS = [
    "values = [i * scale for i in range(n)]\ntotal = sum(values)\nprint(label, total)",
    "from extensions.runs import record_output\nrecord_output('total', total)\nrecord_output('label', label)",
    "if data_file:\n    text = open(data_file).read()\n    print('read', len(text), 'characters')",
    (
        "if pull:\n    import json, pathlib\n"
        "    manifest = json.loads((pathlib.Path(pull) / 'manifest.json').read_text())\n"
        "    print(len(manifest['instances']), 'instances')"
    ),
    "{'n': n, 'total': total}",
]


def deterministic_notebook(path: Path) -> Path:
    return notebook(DETERMINISTIC_CELLS, DETERMINISTIC_PARAMETERS, path)


FAILING_CELLS = [
    "x = 1\nprint('before the failure')",
    "if fail:\n    raise ValueError('boom: the second cell fails')",
    "print('never reached')",
]


def failing_notebook(path: Path) -> Path:
    return notebook(FAILING_CELLS, "fail: bool = True\n", path)


def sample_pull(workspace: Path, name: str = "pull-1", content: bytes = b"DICM fake") -> Path:
    """A pull as the sample gateway delivers it: files plus manifest.json with their sha256."""
    folder = workspace / "samples" / name
    (folder / "study" / "series").mkdir(parents=True, exist_ok=True)
    data = folder / "study" / "series" / "1.dcm"
    data.write_bytes(content)
    manifest = {
        "pull": name,
        "instances": [{"file": "study/series/1.dcm", "sha256": hashlib.sha256(content).hexdigest(),
                       "bytes": len(content)}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder
