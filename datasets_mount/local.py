"""Datasets for a server on the local machine: links under ~/datasets.

Local mode can only offer what one machine honestly can: a symbolic link per approved
dataset, and removal of links to datasets the project no longer may use (expired approval,
approval withdrawn, dropped from the project's list), each removal said in the progress
stream. Servers run as one shared account (``workbench``), so a link is a convenience, not
a wall: ``guard_datasets`` closes the folders of datasets no project or session may use
today (lapsed or withdrawn approvals, never approved) and hides the listing of the datasets
root; a dataset approved for one project stays readable to every local server. Nomad mounts
only the project's volumes, read-only (see the README's "limits of local mode").
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # link_targets runs in a light helper process (spawners.home_setup)
    from hub_config.model import Dataset, WorkbenchConfig
    from hub_config.storage import StorageLayout

    from .catalogue import DatasetStatus

log = logging.getLogger(__name__)


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
    return link_targets(links_dir, dataset_targets(storage, datasets), refusal_reasons(refused))


def dataset_targets(storage: StorageLayout, datasets: Iterable[Dataset]) -> dict[str, str]:
    return {d.id: str(storage.resolve(d.path)) for d in datasets}


def refusal_reasons(refused: Iterable[DatasetStatus]) -> dict[str, str]:
    return {status.dataset.id: status.message for status in refused}


def link_targets(
    links_dir: Path, targets: Mapping[str, str], reasons: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """:func:`link_datasets` on plain data (dataset id -> folder, id -> why it was left out).

    Runs as the account the server runs as (never as root): ``links_dir`` is in a home that
    account can change, and a link planted there must not make a privileged process remove
    or create links elsewhere.
    """
    links_dir.mkdir(parents=True, exist_ok=True)
    removed: set[str] = set()
    problems: list[str] = []
    for entry in sorted(links_dir.iterdir()):
        if entry.is_symlink() and entry.name not in targets:
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
    for dataset_id, folder in targets.items():
        target = Path(folder)
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


def guard_datasets(storage: StorageLayout, config: WorkbenchConfig, usable: Collection[str]) -> list[str]:
    """Close the folders of catalogue datasets not in ``usable`` to other accounts, open the
    usable ones; return the ids closed. Only folders under the workbench's data root are
    touched (an absolute location elsewhere belongs to its owner's permissions), and only the
    top folder's mode changes: a closed folder cannot be entered, whatever its files' modes.
    """
    root = storage.resolve("datasets")
    if root.is_dir() and not root.is_symlink():
        # Servers follow ~/datasets/<id> links through here, but may not list it.
        os.chmod(root, (stat.S_IMODE(root.stat().st_mode) & ~0o044) | 0o011)
    closed = []
    data_root = storage.root.resolve()
    for dataset in config.datasets:
        folder = storage.resolve(dataset.path)
        if ".." in Path(dataset.path).parts or folder.is_symlink() or not folder.is_dir() \
                or not folder.resolve().is_relative_to(data_root):
            continue
        mode = stat.S_IMODE(folder.stat().st_mode)
        wanted = mode | 0o055 if dataset.id in usable else mode & ~0o077
        if dataset.id not in usable:
            closed.append(dataset.id)
        if wanted != mode:
            try:
                os.chmod(folder, wanted)
            except OSError as error:  # a read-only share: its own permissions stand
                log.warning("dataset %s: cannot change the mode of %s (%s)", dataset.id, folder, error)
    return closed
