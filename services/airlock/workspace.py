"""Reading a project workspace without following anything out of it.

A project member controls the workspace and can rename, link and replace its entries at
any moment, also between the airlock's check of a path and its copy. So nothing here
checks a path and then opens it again by name: every component is opened relative to the
directory file descriptor of the one before, starting from the workspace's own descriptor,
with ``O_NOFOLLOW`` (and ``O_DIRECTORY`` for folders). A component that is a symbolic link
fails to open, whenever it became one; a file is hashed and copied from the one descriptor
that was opened and checked (regular, a single hard link).

Hard links are refused because a hard link to a file of another project (made where the
member could read it, e.g. on a local hub where everyone is one Unix user) is
indistinguishable from the member's own file by its path.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import Invalid

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put where a file was must not block the service (regular files ignore it).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


@dataclass(frozen=True)
class Entry:
    """A regular file found in the workspace: its name there and its size when listed."""

    relative: str
    size: int


def parts_of(raw: str) -> tuple[str, ...]:
    """The components of a requested path, or Invalid (absolute, '..', empty, NUL)."""
    text = str(raw).strip()
    relative = PurePosixPath(text)
    if not text or text.startswith("/") or ".." in relative.parts or "\x00" in text:
        raise Invalid(f"{raw!r}: give paths inside the project workspace, such as "
                      "'results/table.csv'.", reason="bad_path")
    return relative.parts


def open_root(path: os.PathLike[str] | str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise Invalid("The project workspace does not exist yet.", reason="bad_path") from None


@contextmanager
def opened_dir(root_fd: int, parts: tuple[str, ...]) -> Iterator[int]:
    """The folder ``parts`` below the workspace, opened component by component."""
    fd = os.dup(root_fd)
    try:
        for depth, part in enumerate(parts):
            try:
                following = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refusal(exc, fd, part, "/".join(parts[: depth + 1])) from None
            os.close(fd)
            fd = following
        yield fd
    finally:
        os.close(fd)


def open_file(root_fd: int, parts: tuple[str, ...]) -> tuple[int, os.stat_result]:
    """A descriptor of the regular file ``parts`` (single hard link) and its fstat."""
    relative = "/".join(parts)
    with opened_dir(root_fd, parts[:-1]) as parent:
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _refusal(exc, parent, parts[-1], relative) from None
    try:
        info = os.fstat(fd)
        _check_regular(info, relative)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def list_files(root_fd: int, parts: tuple[str, ...], max_files: int) -> list[Entry]:
    """Regular files named by ``parts`` (a file, or a folder and everything below it).

    Links anywhere refuse the request; other special files inside a folder are skipped.
    """
    relative = "/".join(parts)
    if parts:
        with opened_dir(root_fd, parts[:-1]) as parent:
            try:
                info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise _refusal(exc, parent, parts[-1], relative) from None
        if stat.S_ISLNK(info.st_mode):
            raise _link(relative)
        if not stat.S_ISDIR(info.st_mode):
            _check_regular(info, relative)
            return [Entry(relative, info.st_size)]
    found: list[Entry] = []
    for kind, name, info in walk(root_fd, parts):
        if kind == "link":
            raise _link(name)
        if kind == "file":
            _check_regular(info, name)
            found.append(Entry(name, info.st_size))
            if len(found) > max_files:
                raise Invalid(f"An export holds at most {max_files} files.", reason="too_many_files")
    return found


def walk(
    root_fd: int, parts: tuple[str, ...] = (), *, hidden: bool = True
) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(kind, relative name, lstat)`` of everything below the folder ``parts`` in name
    order; kind is 'file', 'link' or 'other' (folders are entered, not yielded);
    ``hidden=False`` leaves out dot files and folders. One chain of descriptors is open at
    a time, so deep trees cannot exhaust them."""
    pending = [parts]
    while pending:
        folder = pending.pop()
        with opened_dir(root_fd, folder) as fd, os.scandir(fd) as listing:
            entries = sorted(listing, key=lambda e: e.name)
            children = []
            for entry in entries:
                if not hidden and entry.name.startswith("."):
                    continue
                name = "/".join((*folder, entry.name))
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed while listed
                    continue
                if stat.S_ISLNK(info.st_mode):
                    yield "link", name, info
                elif stat.S_ISDIR(info.st_mode):
                    children.append((*folder, entry.name))
                elif stat.S_ISREG(info.st_mode):
                    yield "file", name, info
                else:
                    yield "other", name, info
        pending.extend(reversed(children))


def _check_regular(info: os.stat_result, relative: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise Invalid(f"{relative}: only regular files and folders can be exported.",
                      reason="bad_path")
    if info.st_nlink > 1:
        raise Invalid(f"{relative}: this file has {info.st_nlink} hard links, so it may be "
                      "another project's file; export a copy of it (cp, not ln).",
                      reason="hard_link")


def _link(relative: str) -> Invalid:
    return Invalid(f"{relative}: links cannot be exported (export the file itself).", reason="link")


def _refusal(exc: OSError, parent_fd: int, name: str, relative: str) -> Invalid:
    """Why opening ``name`` in ``parent_fd`` failed, in the user's words."""
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        info = None
    if exc.errno == errno.ELOOP or (info is not None and stat.S_ISLNK(info.st_mode)):
        return _link(relative)
    if info is None:
        return Invalid(f"{relative}: no such file or folder in the project workspace.",
                       reason="bad_path")
    if exc.errno == errno.ENOTDIR:
        return Invalid(f"{relative}: not a folder.", reason="bad_path")
    return Invalid(f"{relative}: cannot be read ({os.strerror(exc.errno or 0)}).", reason="bad_path")
