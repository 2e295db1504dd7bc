"""Writing a pull into the project workspace: all of it, or nothing, and never through a link.

Files go to a hidden ``.partial-<pull id>`` folder beside the final one; only when every
file and the manifest are written is the folder renamed into place (one atomic rename on
the same file system). A failed or interrupted pull leaves nothing a notebook could mistake
for data.

Researchers write in the project folder (their servers mount it), so whatever lies below it
is theirs to change, while the pull runs too. A ``samples`` that is a symbolic link, or a
link planted in a pull's folder, must not make the gateway write elsewhere (another
project's folder, the airlock's egress folder, a file of the gateway's own). The gateway
therefore works relative to directory descriptors:

- ``samples`` and every folder below it is opened with ``O_NOFOLLOW | O_DIRECTORY`` from its
  parent's descriptor; a link or a non-folder there is refused (:class:`WorkspaceUnusable`:
  the researcher sees which name, the gateway log has the path for the admins);
- the partial folder is made with mode 0700, so no other Unix user can enter it while it
  fills; worker processes find it by name again and check it is the same inode;
- folders in it are made with ``mkdir`` relative to their parent (an existing link is
  refused), files with ``O_CREAT | O_EXCL | O_NOFOLLOW``;
- the rename to the final name is relative to the ``samples`` descriptor and checked to have
  moved the gateway's own folder; then the folder becomes 0750 and its files are 0640 (the
  project's group reads them, which is how project members share; nobody else does).

The project folder itself (``<data>/projects/<id>``) is made by the admins' tools and trusted.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset

from .encoding import part10_bytes
from .errors import WorkspaceUnusable, shown

log = logging.getLogger("sample_gateway")

MANIFEST_FIELDS = (
    "file", "sha256", "bytes", "patient", "study_key", "study_date", "study_description",
    "series_uid", "series_description", "series_number", "modality", "sop_uid",
    "sop_class_uid", "instance_number", "transfer_syntax", "rows", "columns", "frames",
)


DIR_MODE = 0o750  # delivered folders: the project's group may read, nobody else
FILE_MODE = 0o640
PARTIAL_MODE = 0o700  # while a pull fills: the gateway's user only

_SYNC_THREADS = 8
#: A commit syncs the whole filesystem at once only while the machine holds little unwritten
#: data besides the pull's own: syncfs(2) also waits for every other writer's dirty pages.
#: Measured here (50 files, ``syncfs`` against an fsync of each in 8 threads): 35 kB files
#: 3.4 ms against 7.1 alone, 80 ms against 7.4 beside 200 MB another process had written;
#: 0.5 MB files 20 ms against 23 alone, 93 against 28 beside the 200 MB. A notebook writing
#: gigabytes to the same disk would otherwise hold every pull's commit for seconds.
SYNCFS_OTHERS_LIMIT = 32 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UID = re.compile(r"[0-9]{1,64}(\.[0-9]{1,64}){0,63}")


@dataclass(frozen=True)
class ManifestRow:
    file: str
    sha256: str
    bytes: int
    patient: str
    study_key: str
    study_date: str
    study_description: str
    series_uid: str
    series_description: str
    series_number: str
    modality: str
    sop_uid: str
    sop_class_uid: str
    instance_number: str
    transfer_syntax: str
    rows: int
    columns: int
    frames: int


class UnreadableAttribute(ValueError):
    """An attribute whose value does not fit its type; names the attribute, never the value."""

    def __init__(self, attribute: str) -> None:
        super().__init__(f"{attribute} cannot be read")
        self.attribute = attribute


class DuplicateObject(Exception):
    """The archive sent an object whose file this pull already wrote."""


@dataclass(frozen=True)
class PartialFolder:
    """A pull's partial folder as a worker process finds it (picklable): the trusted project
    folder, the names below it, and the identity of the folder the gateway made."""

    project_dir: str
    names: tuple[str, ...]
    device: int
    inode: int
    group: int = -1  # the project's group: what is written here is handed to it (-1: left as is)

    @contextmanager
    def opened(self) -> Iterator[int]:
        fd = _open_below(Path(self.project_dir), self.names)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (self.device, self.inode):
                raise _unusable(Path(self.project_dir), self.names,
                                "was replaced by another folder while the pull filled it")
            yield fd
        finally:
            os.close(fd)


class PullWriter:
    """One pull's folder: made by :meth:`__init__`, filled through :attr:`target` (by
    :func:`store_instance`, in worker processes too), then :meth:`commit` or :meth:`abort`."""

    def __init__(self, project_dir: Path, pull_id: str, folder: str = "samples") -> None:
        self.project_dir = project_dir
        self.folder = folder
        self.name = pull_id
        self.partial_name = f".partial-{pull_id}"
        self.final = project_dir / folder / pull_id
        self.partial = project_dir / folder / self.partial_name
        self.rows: list[ManifestRow] = []
        self._samples_fd: int | None = open_workspace_folder(project_dir, folder)
        # Delivered files belong to the project's group, whoever the gateway runs as: that
        # group (the project folder's) is how the project's servers read them.
        self._group = os.stat(project_dir).st_gid
        self._partial_fd: int | None = None
        try:
            try:
                os.mkdir(self.partial_name, PARTIAL_MODE, dir_fd=self._samples_fd)
            except FileExistsError:
                raise _unusable(project_dir, (folder, self.partial_name),
                                "already exists, not made by this pull") from None
            self._partial_fd = _open_folder(self._samples_fd, self.partial_name, project_dir,
                                            (folder, self.partial_name))
            os.fchmod(self._partial_fd, PARTIAL_MODE)
            st = os.fstat(self._partial_fd)
        except BaseException:
            self._close()
            raise
        self._identity = (st.st_dev, st.st_ino)
        self.target = PartialFolder(str(project_dir), (folder, self.partial_name), *self._identity,
                                    group=self._group)

    @property
    def identity(self) -> str:
        """``<device>:<inode>`` of this pull's folder, before and after the rename."""
        return f"{self._identity[0]}:{self._identity[1]}"

    def write(self, ds: Dataset) -> ManifestRow:
        """Write one de-identified instance under <study key>/<series UID>/<SOP UID>.dcm."""
        return self.add(write_instance(self.target, ds))

    def add(self, row: ManifestRow) -> ManifestRow:
        """Record an instance that :func:`store_instance` wrote into :attr:`target`."""
        self.rows.append(row)
        return row

    def commit(self, header: dict[str, Any]) -> Path:
        """Write manifest.json and manifest.csv, then move the pull into place."""
        samples_fd, partial_fd = self._samples_fd, self._partial_fd
        if samples_fd is None or partial_fd is None:
            raise RuntimeError("this pull's folder was committed or aborted already")
        # The project folder may have been handed to its servers' group while this pull was
        # written (its first server start): its files take that group, not the one before.
        group = os.stat(self.project_dir).st_gid
        if group != self._group:
            self._group = group
            _regroup_tree(partial_fd, group)  # 0700 and the gateway's: nobody else is inside
        rows = sorted(self.rows, key=lambda r: (r.study_key, r.series_uid, _number(r.instance_number), r.sop_uid))
        manifest = {**header, "instances": [asdict(r) for r in rows]}
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
        names = (self.folder, self.partial_name)
        _write_new(partial_fd, "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode(),
                   self.project_dir, names, self._group)
        _write_new(partial_fd, "manifest.csv", table.getvalue().encode(), self.project_dir, names,
                   self._group)
        # Everything on disk before the rename makes the pull visible. The instances were
        # written without waiting for the disk: one syncfs(2) of the workspace's filesystem
        # puts them all there at once (a 51-file pull: ~3 ms, against 7-24 ms for an fsync
        # of each file side by side), unless others' unwritten data would make it wait
        # longer (SYNCFS_OTHERS_LIMIT) or there is no syncfs: then each file is synced.
        own = sum(r.bytes for r in rows)
        if not (_little_else_unwritten(own) and sync_filesystem(partial_fd)):
            files = [tuple(r.file.split("/")) for r in rows] + [("manifest.json",), ("manifest.csv",)]
            folders = {path[:depth] for path in files for depth in range(1, len(path))}
            with ThreadPoolExecutor(_SYNC_THREADS) as pool:
                list(pool.map(lambda path: self._sync(path, folder=False), files))
                list(pool.map(lambda path: self._sync(path, folder=True), sorted(folders)))
            os.fsync(partial_fd)
        try:
            os.rename(self.partial_name, self.name, src_dir_fd=samples_fd, dst_dir_fd=samples_fd)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise _unusable(self.project_dir, (self.folder, self.name),
                                "already exists, not made by this pull") from None
            raise
        if not self._holds_ours(self.name):
            raise _unusable(self.project_dir, (self.folder, self.partial_name),
                            "was replaced by another folder while the pull filled it")
        _share_with_group(partial_fd, self._group)
        os.fchmod(partial_fd, DIR_MODE)  # visible to the project's group only now
        os.fsync(samples_fd)
        self._close()
        return self.final

    def abort(self) -> None:
        """Remove this pull's folder, wherever in ``samples`` it is now; nothing else."""
        if self._samples_fd is None:
            return
        try:
            for name in (self.partial_name, self.name):
                if self._holds_ours(name):
                    shutil.rmtree(name, dir_fd=self._samples_fd, ignore_errors=True)
                    break
            else:  # moved away by someone else: at least take the files back
                if self._partial_fd is not None:
                    _empty(self._partial_fd)
        finally:
            self._close()

    def _holds_ours(self, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=self._samples_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == getattr(self, "_identity", None)

    def _sync(self, path: tuple[str, ...], *, folder: bool) -> None:
        assert self._partial_fd is not None
        names = (self.folder, self.partial_name)
        opened: list[int] = []
        try:
            fd = self._partial_fd
            for depth, name in enumerate(path[:-1] if not folder else path, start=1):
                fd = _open_folder(fd, name, self.project_dir, names + path[:depth])
                opened.append(fd)
            if not folder:
                fd = os.open(path[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                opened.append(fd)
            _share_with_group(fd, self._group)
            os.fsync(fd)
        finally:
            for fd in opened:
                os.close(fd)

    def _close(self) -> None:
        for attribute in ("_partial_fd", "_samples_fd"):
            fd = getattr(self, attribute)
            if fd is not None:
                setattr(self, attribute, None)
                os.close(fd)


def open_workspace_folder(project_dir: Path, folder: str, *, create: bool = True) -> int:
    """A descriptor of ``project_dir/folder``, refusing a link or a non-folder there; made
    (mode 0750, the project folder's group) when missing and ``create``."""
    if create:
        project_dir.mkdir(parents=True, exist_ok=True)
    project_fd = os.open(project_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _open_folder(project_fd, folder, project_dir, (folder,),
                            create_mode=DIR_MODE if create else None,
                            group=os.fstat(project_fd).st_gid if create else -1)
    finally:
        os.close(project_fd)


def share_samples(project_dir: Path, group: int, folder: str = "samples") -> int:
    """Give ``samples`` and the pulls in it to the project's ``group``, readable and never
    writable by it; returns how many folders and files changed group.

    A pull takes the project folder's group when it is made. One made before the project
    folder was handed to its servers' group (a pull before the project's first server start)
    would stay unreadable to them, and so would ``samples`` if the gateway made it then. The
    spawner calls this as it hands the project folder over. Only a ``samples`` owned by this
    process's user (the gateway's, as the hub's) is touched, its group and others' write
    bits cleared first; only pulls owned by that user are walked, by descriptors, opening
    nothing but folders and never through a link; pulls still being written
    (``.partial-*``) are left to their commit, which takes the group again."""
    try:
        samples_fd = open_workspace_folder(project_dir, folder, create=False)
    except FileNotFoundError:
        return 0
    changed = 0
    try:
        st = os.fstat(samples_fd)
        if st.st_uid != os.geteuid():
            log.warning("%s/%s is not the gateway's: its pulls are left as they are", project_dir, folder)
            return 0
        if stat.S_IMODE(st.st_mode) & 0o027:  # before the group: never writable by it
            os.fchmod(samples_fd, stat.S_IMODE(st.st_mode) & ~0o027)
        if st.st_gid != group:
            os.fchown(samples_fd, -1, group)
            changed += 1
        for entry in os.scandir(samples_fd):
            if entry.name.startswith(".partial-") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                pull_fd = os.open(entry.name, _DIR_FLAGS | os.O_NONBLOCK, dir_fd=samples_fd)
            except FileNotFoundError:  # removed meanwhile (a pull deleted through the gateway)
                continue
            try:
                pull = os.fstat(pull_fd)
                if pull.st_uid == os.geteuid() and pull.st_gid != group:
                    changed += _regroup_tree(pull_fd, group)
                    os.fchown(pull_fd, -1, group)
                    changed += 1
            finally:
                os.close(pull_fd)
    finally:
        os.close(samples_fd)
    return changed


def _regroup_tree(folder_fd: int, group: int) -> int:
    """Give everything below the open folder ``group``: folders are opened with O_NOFOLLOW
    and O_DIRECTORY (a link or a FIFO is never opened, so nothing blocks or leads out), the
    rest changed where it lies, a link itself and not its target. Entries that vanish
    meanwhile are skipped. Returns how many changed."""
    changed = 0
    for entry in os.scandir(folder_fd):
        try:
            if entry.is_dir(follow_symlinks=False):
                sub_fd = os.open(entry.name, _DIR_FLAGS | os.O_NONBLOCK, dir_fd=folder_fd)
                try:
                    changed += _regroup_tree(sub_fd, group)
                    if os.fstat(sub_fd).st_gid != group:
                        os.fchown(sub_fd, -1, group)
                        changed += 1
                finally:
                    os.close(sub_fd)
            elif entry.stat(follow_symlinks=False).st_gid != group:
                os.chown(entry.name, -1, group, dir_fd=folder_fd, follow_symlinks=False)
                changed += 1
        except FileNotFoundError:
            continue
    return changed


def write_instance(target: PartialFolder, ds: Dataset) -> ManifestRow:
    """Encode and store one de-identified instance (:func:`encode_instance`, then
    :func:`store_instance`); returns its manifest row."""
    data, row = encode_instance(ds)
    store_instance(target, row.file, data)
    return row


def encode_instance(ds: Dataset) -> tuple[bytes, ManifestRow]:
    """One de-identified instance as a Part 10 file and its manifest row, the file named
    <study key>/<series UID>/<SOP UID>.dcm. Raises on an object that cannot be encoded."""
    file = instance_file_name(ds)
    data = part10_bytes(ds)
    values = {keyword: ds.get(keyword) for keyword in ROW_KEYWORDS if keyword in ds}
    return data, manifest_row(file, data, values, str(ds.file_meta.TransferSyntaxUID))


#: The attributes a manifest row is made of (besides the file itself).
ROW_KEYWORDS = (
    "PatientID", "StudyInstanceUID", "StudyDate", "StudyDescription", "SeriesInstanceUID",
    "SeriesDescription", "SeriesNumber", "Modality", "SOPInstanceUID", "SOPClassUID",
    "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
)


def instance_file_name(values: Any) -> str:
    """<study key>/<series UID>/<SOP UID>.dcm of a de-identified instance (a dataset or a
    mapping of keywords to values); raises when one of them is not a valid UID."""
    parts = [str(values.get("StudyInstanceUID")), str(values.get("SeriesInstanceUID")),
             str(values.get("SOPInstanceUID"))]
    if not all(_UID.fullmatch(part) for part in parts):  # they become file names
        raise ValueError("a de-identified object without valid UIDs")
    return f"{parts[0]}/{parts[1]}/{parts[2]}.dcm"


def _iso_date(value: str) -> str:
    """``20180918`` -> ``2018-09-18``, as search results show dates (anything else as it is)."""
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def manifest_row(file: str, data: bytes, values: dict[str, Any], transfer_syntax: str) -> ManifestRow:
    """The manifest row of a de-identified instance written as `data`, from the values of
    its :data:`ROW_KEYWORDS` (those it has)."""
    return ManifestRow(
        file=file,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        patient=str(values.get("PatientID", "")),
        study_key=str(values["StudyInstanceUID"]),
        study_date=_iso_date(str(values.get("StudyDate", ""))),
        study_description=str(values.get("StudyDescription", "")),
        series_uid=str(values["SeriesInstanceUID"]),
        series_description=str(values.get("SeriesDescription", "")),
        series_number=str(values.get("SeriesNumber", "")),
        modality=str(values.get("Modality", "")),
        sop_uid=str(values["SOPInstanceUID"]),
        sop_class_uid=str(values.get("SOPClassUID", "")),
        instance_number=str(values.get("InstanceNumber", "")),
        transfer_syntax=transfer_syntax,
        rows=_whole_number(values, "Rows", 0),
        columns=_whole_number(values, "Columns", 0),
        frames=_whole_number(values, "NumberOfFrames", 1),
    )


def store_instance(target: PartialFolder, relative: str, data: bytes) -> None:
    """Write ``data`` as ``relative`` in the pull's partial folder (runs in worker threads
    and processes; synced by commit). Raises :class:`DuplicateObject` when that file was
    written already, :class:`WorkspaceUnusable` when something else is in the way.

    The folders are opened (never through a link, the pull's own folder checked to be the
    one the gateway made) the first time a worker writes there; their descriptors serve the
    pull's next objects (:class:`_OpenFolders`), so a file costs an open, a write and a close
    rather than a walk from the project folder down."""
    path = tuple(relative.split("/"))
    folder = _open_folders().folder(target, path[:-1])
    _write_new(folder, path[-1], data, Path(target.project_dir), target.names + path[:-1], target.group)


class _OpenFolders:
    """One worker's descriptors of the folders of the pulls it writes into (at most
    :attr:`PULLS` pulls, :attr:`FOLDERS` folders each; the oldest are closed)."""

    PULLS = 2
    FOLDERS = 64

    def __init__(self) -> None:
        self._pulls: dict[PartialFolder, dict[tuple[str, ...], int]] = {}

    def folder(self, target: PartialFolder, names: tuple[str, ...]) -> int:
        folders = self._pulls.get(target)
        if folders is None or len(folders) > self.FOLDERS:
            self._forget(target)
            while len(self._pulls) >= self.PULLS:
                self._forget(next(iter(self._pulls)))
            with target.opened() as root:
                folders = self._pulls[target] = {(): os.dup(root)}
        fd = folders.get(names)
        if fd is None:
            parent = self.folder(target, names[:-1])
            fd = folders[names] = _open_folder(parent, names[-1], Path(target.project_dir),
                                               target.names + names, create_mode=DIR_MODE,
                                               group=target.group)
        return fd

    def _forget(self, target: PartialFolder) -> None:
        for fd in self._pulls.pop(target, {}).values():
            os.close(fd)


_workers_folders = threading.local()


def _open_folders() -> _OpenFolders:
    folders = getattr(_workers_folders, "folders", None)
    if folders is None:
        folders = _workers_folders.folders = _OpenFolders()
    return folders


_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(fd: int) -> bool:
    """syncfs(2) on the filesystem holding `fd`: every file written there is on disk when it
    returns True (Linux reports writeback errors since the descriptor was opened as OSError).
    False where there is no syncfs (the caller syncs each file instead)."""
    if _syncfs is None:
        return False
    if _syncfs(fd) != 0:
        error = ctypes.get_errno()
        if error in (errno.ENOSYS, errno.EINVAL):
            return False
        raise OSError(error, os.strerror(error))
    return True


def unwritten_bytes() -> int | None:
    """Dirty and under-writeback page cache of the whole machine (``/proc/meminfo``): an upper
    bound for what syncfs(2) of any one filesystem may wait for. None where unreadable."""
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            fields = dict(line.split(b":", 1) for line in meminfo.read().splitlines() if b":" in line)
        return sum(int(fields[name].split()[0]) * 1024 for name in (b"Dirty", b"Writeback"))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _little_else_unwritten(own: int) -> bool:
    """Whether syncfs would wait for at most SYNCFS_OTHERS_LIMIT of others' data. The pull's
    own bytes may already be on disk (a long pull, background writeback): counting them all
    as still unwritten would hide as much of others' data, so at most the limit is."""
    unwritten = unwritten_bytes()
    return unwritten is not None and unwritten - min(own, SYNCFS_OTHERS_LIMIT) <= SYNCFS_OTHERS_LIMIT


def _share_with_group(fd: int, group: int) -> None:
    """Give an open file or folder to ``group``; a gateway that may not (not root, not a
    member) leaves it to the folder's set-group-ID bit, as deployments configure it."""
    if os.fstat(fd).st_gid != group:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, group)


def remove_partials(project_dir: Path, folder: str = "samples") -> list[Path]:
    """Remove half-written pulls left by a crash; returns what was removed. Only folders
    named ``.partial-*`` directly in ``folder``, never through a link."""
    try:
        samples_fd = open_workspace_folder(project_dir, folder, create=False)
    except FileNotFoundError:
        return []
    except WorkspaceUnusable as error:
        log.warning("not looking for half-written pulls: %s", error.log_message)
        return []
    removed = []
    try:
        for entry in os.scandir(samples_fd):
            if entry.name.startswith(".partial-") and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.name, dir_fd=samples_fd, ignore_errors=True)
                removed.append(project_dir / folder / entry.name)
    finally:
        os.close(samples_fd)
    return removed


def _open_below(project_dir: Path, names: tuple[str, ...]) -> int:
    fd = os.open(project_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for depth, name in enumerate(names, start=1):
        try:
            child = _open_folder(fd, name, project_dir, names[:depth])
        finally:
            os.close(fd)
        fd = child
    return fd


def _open_folder(parent_fd: int, name: str, project_dir: Path, names: tuple[str, ...],
                 create_mode: int | None = None, group: int = -1) -> int:
    """``name`` in ``parent_fd`` as a folder descriptor, never through a link; made with
    ``create_mode`` (exactly, whatever the umask) when given and missing."""
    created = False
    if create_mode is not None:
        try:
            os.mkdir(name, create_mode, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            pass
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unusable(project_dir, names, _what_is(parent_fd, name)) from None
        raise
    if created:
        os.fchmod(fd, create_mode)  # type: ignore[arg-type]
        if group >= 0:
            _share_with_group(fd, group)
    return fd


def _write_new(dir_fd: int, name: str, data: bytes, project_dir: Path, names: tuple[str, ...],
               group: int = -1) -> None:
    try:
        fd = os.open(name, _NEW_FILE_FLAGS, FILE_MODE, dir_fd=dir_fd)
    except FileExistsError:
        if stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise DuplicateObject(name) from None
        raise _unusable(project_dir, (*names, name), _what_is(dir_fd, name)) from None
    try:
        os.fchmod(fd, FILE_MODE)
        if group >= 0:
            _share_with_group(fd, group)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _what_is(parent_fd: int, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except OSError:
        return "could not be opened"
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISDIR(mode):
        return "is a folder where a file belongs"
    return "is not a folder"


def _unusable(project_dir: Path, names: tuple[str, ...], problem: str) -> WorkspaceUnusable:
    relative = "/".join(names)
    return WorkspaceUnusable(
        f"{shown(relative)} in the project folder {problem}, so the sample gateway delivered "
        "nothing: it only writes into plain folders there and never follows links. The "
        "workbench admins can see the details in the gateway log.",
        log_message=f"{project_dir / relative} {problem}; the gateway does not follow links or "
        "write through what is not a plain folder in a project workspace. Check where it "
        "points and replace it with a plain folder.",
    )


def _empty(fd: int) -> None:
    for entry in os.scandir(fd):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.name, dir_fd=fd, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.name, dir_fd=fd)


def _whole_number(values: dict[str, Any], keyword: str, default: int) -> int:
    try:
        return int(values.get(keyword, default) or default)
    except (TypeError, ValueError, OverflowError):
        raise UnreadableAttribute(keyword) from None


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
