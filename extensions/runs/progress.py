"""Progress of a run as "cell n of m", to the terminal, to a file, and back.

The executor reports each code cell as it starts and when it ends. :func:`file_sink` writes
``progress.json`` in the run's folder (atomically), which is how a run executing elsewhere (a
Nomad job, a terminal) shows its progress to the CLI waiting for it and to the JupyterLab panel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from .records import write_atomic


@dataclass(frozen=True)
class Progress:
    run_id: str
    cell: int  # 1-based number of the code cell running (or last run); 0 before the first
    cells: int  # code cells in the notebook, the injected parameters cell included
    state: str  # "starting" | "running" | "done" | "failed"
    line: str = ""  # first line of the cell's source
    updated: float = field(default_factory=time.time)

    def text(self) -> str:
        if self.state == "starting":
            return f"starting kernel ({self.cells} cells)"
        head = f"cell {self.cell} of {self.cells}"
        if self.state == "failed":
            return f"{head} failed"
        if self.state == "done":
            return f"{head} done"
        return f"{head}: {self.line}" if self.line else head


Sink = Callable[[Progress], None]


def first_line(source: str, width: int = 60) -> str:
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= width else line[: width - 1] + "…"
    return ""


def terminal_sink(stream: TextIO) -> Sink:
    """One line per cell start, and a line when the run ends (plain lines: logs stay readable)."""
    last: list[tuple[int, str]] = []

    def show(progress: Progress) -> None:
        key = (progress.cell, progress.state)
        if last and last[-1] == key:
            return
        last.append(key)
        stream.write(f"[{progress.run_id}] {progress.text()}\n")
        stream.flush()

    return show


def file_sink(path: Path) -> Sink:
    def write(progress: Progress) -> None:
        write_atomic(path, json.dumps(asdict(progress)) + "\n")

    return write


def fan_out(*sinks: Sink | None) -> Sink:
    live = [s for s in sinks if s is not None]

    def send(progress: Progress) -> None:
        for sink in live:
            sink(progress)

    return send


def read_progress(path: Path) -> Progress | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Progress(**data)
    except (OSError, ValueError, TypeError):
        return None
