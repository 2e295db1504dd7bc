"""Handing out course notebooks: copy a folder under notebooks/ into a student's home.

Never over a student's edits: a file that exists is left alone, so a student who returns
finds their own work. Git-sourced courses are pulled by nbgitpuller inside the server
(:func:`services.teaching.rules.course_url`), which merges without overwriting local changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def hand_out(source: Path, target: Path) -> list[str]:
    """Copy the course folder ``source`` into ``target``; return the files copied now."""
    source = source.resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"course folder {source} does not exist")
    copied = []
    for path in sorted(source.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(source).parts):
            continue
        relative = path.relative_to(source)
        destination = target / relative
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        elif path.is_file() and not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            copied.append(str(relative))
    return copied
