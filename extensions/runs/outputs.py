"""A run's outputs: named values the notebook records, per-cell output hashes, the error cell.

In a notebook::

    from extensions.runs import record_output
    record_output("auc", 0.913)          # shows "auc = 0.913" and lands in the run record

:func:`record_output` displays the value with a MIME type of its own (as scrapbook's ``glue``
does), so the value travels inside the executed notebook and needs no side channel; it works
the same in this server, in a Nomad job and in an interactive session.

:func:`notebook_outputs` reads an executed notebook: the recorded values, and one SHA-256 per
code cell over its outputs *normalised* (execution counts, timing metadata and widget model
ids, which differ on every run of the same code, are left out). Two runs whose cell hashes
match produced the same text, tables, images and errors. Pure; no kernel.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

OUTPUT_MIME = "application/vnd.workbench.run-output+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def record_output(name: str, value: Any) -> None:
    """Record ``value`` (JSON-able: number, string, bool, list, dict) as the run output ``name``."""
    from IPython.display import display

    if not isinstance(name, str) or not name:
        raise ValueError("record_output needs a non-empty name")
    try:
        encoded = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"record_output({name!r}, ...): the value must be JSON (numbers, strings, lists, "
            f"dicts); convert it first, e.g. float(x) or x.tolist() ({exc})"
        ) from None
    display({OUTPUT_MIME: {"name": name, "value": encoded}, "text/plain": f"{name} = {value!r}"},
            raw=True)


def _normal(output: dict[str, Any]) -> dict[str, Any]:
    kind = output.get("output_type")
    out: dict[str, Any] = {"output_type": kind}
    if kind == "stream":
        out["name"] = output.get("name")
        out["text"] = _joined(output.get("text", ""))
    elif kind in {"display_data", "execute_result", "update_display_data"}:
        data = {}
        for mime, value in (output.get("data") or {}).items():
            if mime == WIDGET_MIME:
                value = {"widget": True}  # model ids are random per run
            data[mime] = _joined(value) if isinstance(value, (str, list)) and mime != OUTPUT_MIME else value
        out["data"] = data
    elif kind == "error":
        out["ename"] = output.get("ename")
        out["evalue"] = output.get("evalue")
        out["traceback"] = [_ANSI.sub("", line) for line in output.get("traceback") or []]
    return out


def _joined(value: Any) -> Any:
    return "".join(value) if isinstance(value, list) else value


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def notebook_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """``{"sha256", "values", "cells": [{"cell", "sha256", "outputs"}]}`` of an executed notebook.

    ``cell`` numbers code cells from 1 in the executed notebook, the injected-parameters cell
    included (as the progress's "cell n of m" does), so cells line up between two runs.
    """
    values: dict[str, Any] = {}
    cells = []
    code_index = 1
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        normal = [_normal(o) for o in cell.get("outputs") or []]
        for output in cell.get("outputs") or []:
            recorded = (output.get("data") or {}).get(OUTPUT_MIME)
            if isinstance(recorded, dict) and "name" in recorded:
                values[str(recorded["name"])] = recorded.get("value")
        cells.append({"cell": code_index, "sha256": _digest(normal), "outputs": len(normal)})
        code_index += 1
    return {"sha256": _digest([c["sha256"] for c in cells]), "values": values, "cells": cells}


def error_cell(nb: dict[str, Any]) -> dict[str, Any] | None:
    """The cell a failed run stopped at (numbered from 1 among code cells); None if none failed."""
    code_index = 1
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        failed = (cell.get("metadata", {}).get("papermill") or {}).get("exception") is True
        error = next((o for o in cell.get("outputs") or [] if o.get("output_type") == "error"), None)
        if failed or (error is not None and not _clean_exit(error)):
            source = _joined(cell.get("source", ""))
            return {
                "cell": code_index,
                "execution_count": cell.get("execution_count"),
                "ename": (error or {}).get("ename", "CellExecutionError"),
                "evalue": (error or {}).get("evalue", ""),
                "source": source,
                "traceback": [_ANSI.sub("", line) for line in (error or {}).get("traceback") or []],
            }
        code_index += 1
    return None


def _clean_exit(error: dict[str, Any]) -> bool:
    return error.get("ename") == "SystemExit" and str(error.get("evalue", "")) in {"", "0"}
