"""Where a run came from: code version, environment and input data, each with a hash.

* **Code** (:func:`code_version`): the git repository holding the notebook, its commit, and a
  hash of every uncommitted change (``git diff HEAD --binary`` plus the content of untracked,
  not ignored files), so two runs at the same commit with different edits differ. The remote
  URL is kept without any user name or token in it.
* **Environment** (:func:`environment`): asked of the kernel's own interpreter (the
  kernelspec's ``argv[0]`` with the kernelspec's environment), not of the runner: the sorted
  ``name==version`` list of every installed distribution (what ``pip freeze`` locks), the
  Python version and platform; its SHA-256 is the environment's identity.
* **Input data** (:func:`parameter_inputs`, :func:`sample_inputs`): parameters whose value is
  an existing file or folder are hashed (a folder: every file, by relative path; a folder
  with a ``manifest.json`` is identified by the manifest, which lists each file's SHA-256;
  beyond :data:`CONTENT_HASH_LIMIT` by a listing of sizes and times, said so in the record);
  sample pulls the notebook read (any file opened under ``samples/<pull>/``, seen by an audit
  hook in the kernel, :data:`TRACKER_SETUP`) are identified by their ``manifest.json``.

Paths inside the project workspace are recorded relative to it (``workspace:samples/...``),
so a run in this server and the same run in a Nomad job, where the workspace is mounted
elsewhere, record the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

CHUNK = 1 << 20
WORKSPACE_PREFIX = "workspace:"
GIT_TIMEOUT = 60.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Code -----------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True, timeout=GIT_TIMEOUT, check=False,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
    )


def public_url(url: str) -> str:
    """A remote URL without credentials (``https://user:token@host/x`` -> ``https://host/x``)."""
    if "://" not in url:
        return url  # scp-like git@host:path carries no secret
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def code_version(path: Path) -> dict[str, Any]:
    """The git state around ``path`` (a notebook or a folder); ``repo`` None outside git."""
    folder = path if path.is_dir() else path.parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        reason = top.stderr.decode(errors="replace").strip().splitlines()
        note = reason[-1] if reason else "not a git repository"
        return {"repo": None, "commit": None, "dirty": False, "changes_sha256": None,
                "changed_files": [], "remote": None, "path_in_repo": None,
                "note": "not in a git repository" if "not a git repository" in note else note}
    repo = Path(top.stdout.decode().strip())
    head = _git(repo, "rev-parse", "--verify", "-q", "HEAD")
    commit = head.stdout.decode().strip() if head.returncode == 0 else None
    status = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    changed = sorted(
        entry[3:] for entry in status.stdout.decode(errors="surrogateescape").split("\0")
        if len(entry) > 3 and entry[2] == " "
    )
    changes_sha256 = None
    if changed:
        digest = hashlib.sha256()
        if commit:
            diff = _git(repo, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-color")
            digest.update(diff.stdout)
        else:  # no commit yet: everything staged is a change
            diff = _git(repo, "diff", "--cached", "--binary", "--no-ext-diff", "--no-color")
            digest.update(diff.stdout)
        untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z")
        for name in sorted(n for n in untracked.stdout.decode(errors="surrogateescape").split("\0") if n):
            file = repo / name
            digest.update(b"\0untracked\0" + name.encode(errors="surrogateescape") + b"\0")
            if file.is_file() and not file.is_symlink():
                digest.update(sha256_file(file).encode())
            elif file.is_symlink():
                digest.update(os.readlink(file).encode(errors="surrogateescape"))
        changes_sha256 = digest.hexdigest()
    remote = _git(repo, "config", "--get", "remote.origin.url")
    try:
        path_in_repo = str(path.resolve().relative_to(repo.resolve()))
    except ValueError:
        path_in_repo = None
    return {
        "repo": str(repo),
        "commit": commit,
        "dirty": bool(changed),
        "changes_sha256": changes_sha256,
        "changed_files": changed[:200],
        "remote": public_url(remote.stdout.decode().strip()) if remote.returncode == 0 else None,
        "path_in_repo": path_in_repo,
        "note": None if commit else "the repository has no commit yet",
    }


# Environment ------------------------------------------------------------------------------------
_ENV_PROBE = r"""
import importlib.metadata as md, json, platform, sys
sys.path[:] = [p for p in sys.path if p]  # not the working directory: "-c" puts it first
packages = set()
for dist in md.distributions():
    name = (dist.metadata["Name"] or "").strip()
    if not name:
        continue
    line = f"{name.lower().replace('_', '-')}=={dist.version}"
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    if direct.get("dir_info", {}).get("editable"):
        line += " (editable)"
    packages.add(line)
import site
paths = list(sys.path)
try:
    paths.append(site.getusersitepackages())  # watched even while absent: pip install --user
except AttributeError:
    pass
print(json.dumps({
    "python": platform.python_implementation() + " " + platform.python_version(),
    "platform": sys.platform + "-" + platform.machine(),
    "executable": sys.executable,
    "packages": sorted(packages),
    "paths": paths,
}))
"""

_PYTHON_NAMES = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}


@dataclass(frozen=True)
class KernelLaunch:
    name: str
    display_name: str
    language: str
    argv0: str
    env: Mapping[str, str]


def kernel_launch(kernel_name: str) -> KernelLaunch:
    """What jupyter_client would start for ``kernel_name`` (raises NoSuchKernel)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    argv0 = spec.argv[0] if spec.argv else ""
    if argv0 in _PYTHON_NAMES:  # jupyter_client starts these with its own interpreter
        argv0 = sys.executable
    return KernelLaunch(kernel_name, spec.display_name, spec.language, argv0, dict(spec.env or {}))


def environment(kernel_name: str) -> dict[str, Any]:
    """The kernel's environment as a lock list with its hash."""
    return environment_for(kernel_launch(kernel_name))


def default_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME`` or ``~/.cache``, then ``workbench-runs/environments``; None without a home."""
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except (RuntimeError, KeyError):
        return None
    return Path(base) / "workbench-runs" / "environments"


def environment_for(launch: KernelLaunch, cache_dir: Path | None = None) -> dict[str, Any]:
    """As :func:`environment`, for a kernel already looked up (safe in a worker thread: it
    imports nothing, so it cannot deadlock with imports of the main thread)."""
    kernel = {"name": launch.name, "display_name": launch.display_name,
              "language": launch.language, "executable": launch.argv0}
    if launch.language.lower() != "python":
        text = json.dumps({"kernel": kernel, "env": dict(launch.env)}, sort_keys=True)
        return {"sha256": sha256_text(text), "python": None, "platform": None,
                "packages": [], "kernel": kernel,
                "note": f"{launch.language} kernel: only its kernelspec is recorded"}
    return environment_of(launch.argv0, launch.env, kernel,
                          cache_dir=cache_dir or default_cache_dir())


_PATH_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONSAFEPATH")


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _probe(python: str, env: Mapping[str, str], cache_dir: Path | None) -> dict[str, Any]:
    """The probe's answer, from the cache when nothing it depends on has changed.

    Installing, removing or upgrading a distribution adds or removes a ``*.dist-info`` folder
    in a directory of the interpreter's ``sys.path``, which changes that directory's mtime; a
    cache entry is only used while every one of those mtimes (and the interpreter's) is as it
    was. This saves a second interpreter start (0.3-0.5 s) on every run.
    """
    key = sha256_text(json.dumps([python, os.path.realpath(python),
                                  [env.get(v, "") for v in _PATH_VARIABLES]]))
    entry = cache_dir / f"{key}.json" if cache_dir is not None else None
    if entry is not None:
        try:
            cached = json.loads(entry.read_text())
            if all(_mtime(p) == m for p, m in cached["stamps"].items()):
                return cached["found"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    probe = subprocess.run(
        [python, "-c", _ENV_PROBE], capture_output=True, text=True, env=dict(env), timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        raise RuntimeError(f"could not list the packages of {python}: {probe.stderr.strip()[-500:]}")
    found = json.loads(probe.stdout)
    paths = found.pop("paths", [])
    if entry is not None:
        stamps = {p: _mtime(p) for p in [*paths, os.path.realpath(python)] if p}
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"stamps": stamps, "found": found}))
            os.replace(tmp, entry)
        except OSError:
            pass  # a read-only home: no cache, the same answer
    return found


def environment_of(
    python: str, extra_env: Mapping[str, str] | None = None, kernel: dict[str, Any] | None = None,
    *, cache_dir: Path | None = None,
) -> dict[str, Any]:
    env = {**os.environ, **(extra_env or {})}
    found = _probe(python, env, cache_dir)
    lock = lock_text(found["python"], found["platform"], found["packages"])
    return {
        "sha256": sha256_text(lock),
        "python": found["python"],
        "platform": found["platform"],
        "packages": found["packages"],
        "kernel": kernel or {"name": None, "display_name": None, "language": "python",
                             "executable": found["executable"]},
        "note": None,
    }


def lock_text(python: str, platform: str, packages: Iterable[str]) -> str:
    """The text the environment hash is taken over (also what ``environment.lock`` holds)."""
    return f"# {python} {platform}\n" + "".join(f"{p}\n" for p in packages)


# Input data ----------------------------------------------------------------------------------------
def display_path(path: Path, workspace: Path | None) -> str:
    """``workspace:<relative>`` inside the project workspace, else the absolute path."""
    real = Path(os.path.realpath(path))
    if workspace is not None:
        try:
            return WORKSPACE_PREFIX + str(real.relative_to(os.path.realpath(workspace)))
        except ValueError:
            pass
    return str(real)


CONTENT_HASH_LIMIT = 2 * 1024**3
"""Inputs larger than this (a whole dataset given as a parameter) are identified by a listing
(relative path, size, modification time of each file) instead of their content, so a run does
not spend minutes reading data it may only sample; the record says which method was used."""


def hash_path(path: Path, limit: int = CONTENT_HASH_LIMIT) -> tuple[str, int, int, str]:
    """(hash, files, bytes, method) of a file or folder; method: sha256, manifest or listing."""
    if path.is_file():
        stat = path.stat()
        if stat.st_size > limit:
            return sha256_text(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}"), 1, stat.st_size, "listing"
        return sha256_file(path), 1, stat.st_size, "sha256"
    manifest = path / "manifest.json"
    if manifest.is_file():
        files, size = _manifest_counts(manifest)
        return sha256_file(manifest), files, size, "manifest"
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        entries.append((file, file.relative_to(path).as_posix(), stat))
    size = sum(stat.st_size for _, _, stat in entries)
    digest = hashlib.sha256()
    listing = size > limit
    for file, relative, stat in entries:
        part = f"{stat.st_size}:{stat.st_mtime_ns}" if listing else sha256_file(file)
        digest.update(f"{relative}\0{part}\n".encode())
    return digest.hexdigest(), len(entries), size, "listing" if listing else "sha256"


def _manifest_counts(manifest: Path) -> tuple[int, int]:
    try:
        rows = json.loads(manifest.read_text()).get("instances") or []
    except (ValueError, OSError, AttributeError):
        return 0, 0
    return len(rows), sum(int(r.get("bytes") or 0) for r in rows if isinstance(r, dict))


def parameter_inputs(
    values: Mapping[str, Any], cwd: Path, workspace: Path | None
) -> list[dict[str, Any]]:
    """Parameters (top level, or strings in a list) naming an existing file or folder."""
    found = []
    for name, value in sorted(values.items()):
        candidates = value if isinstance(value, list) else [value]
        for item in candidates:
            if not isinstance(item, str) or not item or "\n" in item or len(item) > 4096:
                continue
            path = Path(item).expanduser()
            path = path if path.is_absolute() else cwd / path
            try:
                exists = path.exists()
            except OSError:
                exists = False
            if not exists:
                continue
            sha, files, size, method = hash_path(path)
            found.append({"kind": "parameter", "name": name, "path": display_path(path, workspace),
                          "sha256": sha, "files": files, "bytes": size, "method": method})
    return found


def pull_folder(opened: str) -> Path | None:
    """The ``samples/<pull>`` folder an opened file belongs to, when it has a manifest."""
    path = Path(os.path.realpath(opened))
    for folder in [path, *path.parents]:
        if folder.parent.name == "samples" and (folder / "manifest.json").is_file():
            return folder
    return None


def sample_inputs(opened: Iterable[str], workspace: Path | None) -> list[dict[str, Any]]:
    """The sample pulls behind the files a run opened, each identified by its manifest."""
    folders = sorted({f for f in (pull_folder(p) for p in opened) if f is not None})
    inputs = []
    for folder in folders:
        manifest = folder / "manifest.json"
        files, size = _manifest_counts(manifest)
        inputs.append({"kind": "sample", "name": folder.name,
                       "path": display_path(manifest, workspace),
                       "sha256": sha256_file(manifest), "files": files, "bytes": size,
                       "method": "manifest"})
    return inputs


# In the kernel: which files under samples/ the notebook opens ----------------------------------
TRACKER_MODULE = "_workbench_run_tracker"

TRACKER_SETUP = f"""
def __workbench_run_tracker():
    import os, sys, types
    tracker = types.ModuleType({TRACKER_MODULE!r})
    tracker.opened = set()
    sys.modules[{TRACKER_MODULE!r}] = tracker
    sep = os.sep + "samples" + os.sep
    def hook(event, args):
        if event != "open" or not args:
            return
        path = args[0]
        if isinstance(path, int):
            return
        try:
            path = os.fsdecode(os.fspath(path))
        except TypeError:
            return
        if "samples" in path:
            full = os.path.abspath(path)
            if sep in full:
                tracker.opened.add(full)
    sys.addaudithook(hook)
__workbench_run_tracker()
del __workbench_run_tracker
"""
"""Run silently in the kernel before the first cell: an audit hook notes files opened under a
``samples`` folder. It stays for the kernel's life, which is this run's."""

TRACKER_QUERY = f"sorted(__import__('sys').modules[{TRACKER_MODULE!r}].opened)"
