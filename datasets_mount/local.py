"""Datasets for a server on the local machine: links under ~/datasets.

Local mode can only offer what one machine honestly can: a symbolic link per approved
dataset, and removal of links to datasets the project no longer may use. It cannot make a
dataset read-only for a process running as the same Unix user; Nomad mode mounts volumes
read-only (see the README's "limits of local mode").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hub_config.model import Dataset
from hub_config.storage import StorageLayout


def link_datasets(
    storage: StorageLayout, links_dir: Path, datasets: Iterable[Dataset]
) -> tuple[list[str], list[str]]:
    """Make ``links_dir`` hold exactly the given datasets; return (linked ids, problems)."""
    links_dir.mkdir(parents=True, exist_ok=True)
    wanted = {d.id: d for d in datasets}
    problems: list[str] = []
    for entry in links_dir.iterdir():
        if entry.is_symlink() and entry.name not in wanted:
            entry.unlink()
            problems.append(f"Dataset {entry.name} is no longer approved for this project: removed")
    linked = []
    for dataset_id, dataset in wanted.items():
        target = storage.resolve(dataset.path)
        link = links_dir / dataset_id
        if not target.is_dir():
            problems.append(
                f"Dataset {dataset_id} is approved but not present at its location; "
                "tell the data steward"
            )
            if link.is_symlink():
                link.unlink()
            continue
        if link.is_symlink() and link.resolve() == target.resolve():
            linked.append(dataset_id)
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
        linked.append(dataset_id)
    return linked, problems
