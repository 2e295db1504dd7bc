"""Datasets for a server on the local machine: links under ~/datasets.

Local mode can only offer what one machine honestly can: a symbolic link per approved
dataset, and removal of links to datasets the project no longer may use (expired approval,
approval withdrawn, dropped from the project's list), each removal said in the progress
stream. It cannot make a dataset read-only for a process running as the same Unix user;
Nomad mounts volumes read-only and Docker binds them ``:ro`` (see the README's "limits of
local mode").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hub_config.model import Dataset
from hub_config.storage import StorageLayout

from .catalogue import DatasetStatus


def link_datasets(
    storage: StorageLayout,
    links_dir: Path,
    datasets: Iterable[Dataset],
    refused: Iterable[DatasetStatus] = (),
) -> tuple[list[str], list[str]]:
    """Make ``links_dir`` hold exactly the given datasets; return (linked ids, messages).

    ``refused`` are the requested datasets the catalogue left out, with the reason: each
    gives one message, saying also when a link an earlier start made was removed.
    """
    links_dir.mkdir(parents=True, exist_ok=True)
    wanted = {d.id: d for d in datasets}
    reasons = {status.dataset.id: status.message for status in refused}
    removed: set[str] = set()
    problems: list[str] = []
    for entry in sorted(links_dir.iterdir()):
        if entry.is_symlink() and entry.name not in wanted:
            entry.unlink()
            removed.add(entry.name)
            if entry.name not in reasons:
                problems.append(
                    f"Dataset {entry.name} is no longer requested by this project: "
                    f"removed ~/datasets/{entry.name}."
                )
    for dataset_id, reason in reasons.items():
        problems.append(f"{reason} Removed ~/datasets/{dataset_id}." if dataset_id in removed else reason)
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
