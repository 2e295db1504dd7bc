"""What this server may use, and a Dask cluster sized to it (pure: inputs in, numbers out).

A notebook server never owns the node it runs on. Its share is stated in up to five places,
and the tightest of them wins for each resource:

============  ===============================================================================
source        read from
============  ===============================================================================
profile       ``WORKBENCH_CPU_LIMIT``, ``WORKBENCH_MEM_LIMIT``, ``WORKBENCH_GPUS`` (the
              workbench spawner, from the profile the user chose)
jupyterhub    ``CPU_LIMIT``, ``MEM_LIMIT`` (JupyterHub's ``Spawner.cpu_limit``/``mem_limit``)
nomad         ``NOMAD_CPU_CORES`` (reserved cores, "0-3,6"), ``NOMAD_CPU_LIMIT`` (MHz, turned
              into cores with ``mhz_per_core``), ``NOMAD_MEMORY_LIMIT`` /
              ``NOMAD_MEMORY_MAX_LIMIT`` (MiB)
cgroup        v2 ``cpu.max``, ``memory.max``, ``cpuset.cpus.effective``; v1
              ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, ``memory.limit_in_bytes``,
              ``cpuset.cpus``; every level from the process's cgroup up to the root counts
node          CPUs this process may run on (affinity) and the machine's memory: a ceiling,
              never the answer when any other source says less
============  ===============================================================================

:func:`detect` reads them (the only function here that touches files); :func:`resolve` and
:func:`local_layout` are pure and tested with literal inputs (``tests/test_dask_sizing.py``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB
UNLIMITED_V1 = 2**62  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}


class SizingError(ValueError):
    """A limit is written in a way that cannot be read (named with its source and value)."""


@dataclass(frozen=True)
class Limits:
    """What one source says; ``None`` means the source says nothing about that resource."""

    source: str
    cpus: float | None = None
    memory: int | None = None
    gpus: int | None = None


@dataclass(frozen=True)
class Allocation:
    """The server's share: the tightest value of every source, and which source set it."""

    cpus: float
    memory: int
    gpus: int
    why: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{_num(self.cpus)} CPU ({self.why.get('cpus', '?')}), "
            f"{self.memory / GiB:.1f} GiB ({self.why.get('memory', '?')}), "
            f"{self.gpus} GPU ({self.why.get('gpus', '?')})"
        )


@dataclass(frozen=True)
class LocalLayout:
    """Workers of a LocalCluster: ``kwargs()`` is what ``LocalCluster(**...)`` takes."""

    n_workers: int
    threads_per_worker: int
    memory_limit: int  # bytes per worker
    reserved_memory: int  # bytes left for the kernel and the Jupyter server

    def kwargs(self) -> dict[str, object]:
        return {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
            "processes": True,
        }


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# Parsing -----------------------------------------------------------------------------------
def parse_size(value: str, *, source: str) -> int:
    """'4G', '512M', '2Gi', '1073741824' -> bytes; K/M/G/T are binary, as JupyterHub reads them."""
    match = _SIZE.match(value)
    if not match:
        raise SizingError(f"{source}: {value!r} is not a size such as '4G' or '1073741824'")
    number, unit = match.groups()
    return int(float(number) * _FACTORS[(unit or "").lower().rstrip("i")])


def parse_cpus(value: str, *, source: str) -> float:
    try:
        cpus = float(value)
    except ValueError:
        raise SizingError(f"{source}: {value!r} is not a number of CPUs") from None
    if not cpus > 0:
        raise SizingError(f"{source}: {value!r} must be more than 0 CPUs")
    return cpus


def parse_cpu_list(text: str, *, source: str) -> int:
    """How many CPUs a list such as '0-3,6,8-9' names (cpuset files, NOMAD_CPU_CORES)."""
    count = 0
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            count += (int(high) - int(low) + 1) if high else 1
        except ValueError:
            raise SizingError(f"{source}: {text!r} is not a CPU list such as '0-3,6'") from None
    return count


# Sources -----------------------------------------------------------------------------------
def from_profile_env(env: Mapping[str, str]) -> Limits:
    return Limits(
        "profile",
        cpus=parse_cpus(env["WORKBENCH_CPU_LIMIT"], source="WORKBENCH_CPU_LIMIT")
        if env.get("WORKBENCH_CPU_LIMIT") else None,
        memory=parse_size(env["WORKBENCH_MEM_LIMIT"], source="WORKBENCH_MEM_LIMIT")
        if env.get("WORKBENCH_MEM_LIMIT") else None,
        gpus=int(env["WORKBENCH_GPUS"]) if env.get("WORKBENCH_GPUS", "").isdigit() else None,
    )


def from_jupyterhub_env(env: Mapping[str, str]) -> Limits:
    return Limits(
        "jupyterhub",
        cpus=parse_cpus(env["CPU_LIMIT"], source="CPU_LIMIT") if env.get("CPU_LIMIT") else None,
        memory=parse_size(env["MEM_LIMIT"], source="MEM_LIMIT") if env.get("MEM_LIMIT") else None,
    )


def from_nomad_env(env: Mapping[str, str], *, mhz_per_core: float = 1000.0) -> Limits:
    """Nomad's task environment. Reserved cores win over MHz shares when both are set."""
    cpus: float | None = None
    if env.get("NOMAD_CPU_CORES"):
        cpus = float(parse_cpu_list(env["NOMAD_CPU_CORES"], source="NOMAD_CPU_CORES")) or None
    if cpus is None and env.get("NOMAD_CPU_LIMIT"):
        mhz = parse_cpus(env["NOMAD_CPU_LIMIT"], source="NOMAD_CPU_LIMIT")
        cpus = mhz / mhz_per_core
    memory = None
    for key in ("NOMAD_MEMORY_MAX_LIMIT", "NOMAD_MEMORY_LIMIT"):
        value = env.get(key, "")
        if value and value != "0":
            memory = int(parse_cpus(value, source=key) * MiB)
            break
    return Limits("nomad", cpus=cpus, memory=memory)


ReadFile = Callable[[Path], str | None]


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(relative: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '/']: a parent's limit binds its children too."""
    parts = [p for p in relative.split("/") if p]
    return ["/" + "/".join(parts[:i]) if i else "/" for i in range(len(parts), -1, -1)]


def parse_proc_cgroup(text: str) -> tuple[str | None, dict[str, str]]:
    """``/proc/self/cgroup`` -> (v2 path or None, {v1 controller: path})."""
    unified, v1 = None, {}
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            unified = path or "/"
        else:
            for controller in controllers.split(","):
                if controller:
                    v1[controller] = path or "/"
    return unified, v1


def from_cgroup(
    proc_cgroup: str | None, *, root: Path = Path("/sys/fs/cgroup"), read: ReadFile = read_text
) -> Limits:
    """The tightest CPU quota, cpuset and memory limit on the way from this cgroup to the root."""
    if not proc_cgroup:
        return Limits("cgroup")
    unified, v1 = parse_proc_cgroup(proc_cgroup)
    quotas: list[float] = []
    cpusets: list[int] = []
    memories: list[int] = []
    v2_used = False
    if unified is not None and read(root / "cgroup.controllers") is not None:
        v2_used = True
        for rel in _ancestors(unified):
            here = root / rel.lstrip("/")
            cpu_max = read(here / "cpu.max")
            if cpu_max:
                quota, _, period = cpu_max.partition(" ")
                if quota != "max":
                    quotas.append(int(quota) / int(period or 100000))
            memory_max = read(here / "memory.max")
            if memory_max and memory_max != "max":
                memories.append(int(memory_max))
            cpuset = read(here / "cpuset.cpus.effective")
            if cpuset:
                cpusets.append(parse_cpu_list(cpuset, source=str(here / "cpuset.cpus.effective")))
    if not v2_used:
        for controller, filenames in (
            ("cpu", ("cpu.cfs_quota_us",)),
            ("memory", ("memory.limit_in_bytes",)),
            ("cpuset", ("cpuset.cpus",)),
        ):
            path = v1.get(controller)
            if path is None:
                continue
            mount = _v1_mount(root, controller, read)
            for rel in _ancestors(path):
                here = mount / rel.lstrip("/")
                value = read(here / filenames[0])
                if not value:
                    continue
                if controller == "cpu":
                    quota = int(value)
                    if quota > 0:
                        period = int(read(here / "cpu.cfs_period_us") or 100000)
                        quotas.append(quota / period)
                elif controller == "memory":
                    limit = int(value)
                    if limit < UNLIMITED_V1:
                        memories.append(limit)
                else:
                    cpusets.append(parse_cpu_list(value, source=str(here / "cpuset.cpus")))
    cpu_caps = quotas + [float(n) for n in cpusets if n > 0]
    return Limits(
        "cgroup v2" if v2_used else "cgroup v1",
        cpus=min(cpu_caps) if cpu_caps else None,
        memory=min(memories) if memories else None,
    )


def _v1_mount(root: Path, controller: str, read: ReadFile) -> Path:
    """v1 controllers are mounted as ``cpu``, ``cpu,cpuacct`` or ``cpuacct,cpu``."""
    for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        candidate = root / name
        if read(candidate / "cgroup.procs") is not None:
            return candidate
    return root / controller


def node_limits(
    *, affinity: Iterable[int] | None = None, cpu_count: int | None = None, meminfo: str | None = None
) -> Limits:
    cpus = len(list(affinity)) if affinity is not None else cpu_count
    memory = None
    for line in (meminfo or "").splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    return Limits("node", cpus=float(cpus) if cpus else None, memory=memory)


# Resolution ------------------------------------------------------------------------------------
def resolve(sources: Iterable[Limits], *, default_memory: int = 2 * GiB) -> Allocation:
    """The tightest value of each resource over all sources.

    The node is only ever a ceiling. With no source at all for memory, ``default_memory`` is
    used (and named) rather than the node's memory: a cluster sized to the node would crowd out
    every other server on it.
    """
    sources = list(sources)
    picked: dict[str, tuple[float, str]] = {}
    for limits in sources:
        for resource in ("cpus", "memory", "gpus"):
            value = getattr(limits, resource)
            if value is None:
                continue
            if resource not in picked or value < picked[resource][0]:
                picked[resource] = (value, limits.source)
    only_node = {r for r, (_, s) in picked.items() if s == "node"}
    if "memory" in only_node or "memory" not in picked:
        ceiling = picked.get("memory", (math.inf, ""))[0]
        if default_memory < ceiling:
            picked["memory"] = (default_memory, "default (no limit found)")
    cpus, cpu_source = picked.get("cpus", (1.0, "default (no limit found)"))
    memory, memory_source = picked["memory"]
    gpus, gpu_source = picked.get("gpus", (0, "default (no GPU named)"))
    return Allocation(
        cpus=float(cpus),
        memory=int(memory),
        gpus=int(gpus),
        why={"cpus": cpu_source, "memory": memory_source, "gpus": gpu_source},
    )


def processes_threads(cores: int) -> tuple[int, int]:
    """Dask's own split of cores into worker processes x threads (``nprocesses_nthreads``)."""
    if cores <= 4:
        return cores, 1
    processes = min(f for f in range(1, cores + 1) if cores % f == 0 and f >= math.sqrt(cores))
    return processes, cores // processes


def local_layout(
    allocation: Allocation,
    *,
    reserve_fraction: float = 0.15,
    reserve_min: int = 512 * MiB,
    min_worker_memory: int = 512 * MiB,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
) -> LocalLayout:
    """Workers for a LocalCluster inside ``allocation``.

    Part of the memory stays with the kernel and the Jupyter server (``reserve_fraction``, at
    least ``reserve_min``, at most half), the rest is split between workers; when a worker
    would get less than ``min_worker_memory``, there are fewer workers with more threads. A
    fractional CPU share (0.5) gets one worker with one thread.
    """
    cores = max(1, math.floor(allocation.cpus + 1e-9))
    reserved = min(max(int(allocation.memory * reserve_fraction), reserve_min), allocation.memory // 2)
    usable = allocation.memory - reserved
    if n_workers is None:
        workers, threads = processes_threads(cores)
        if threads_per_worker:
            threads = threads_per_worker
            workers = max(1, cores // threads)
        while workers > 1 and usable // workers < min_worker_memory:
            workers -= 1
            threads = max(1, cores // workers)
    else:
        workers = max(1, n_workers)
        threads = threads_per_worker or max(1, cores // workers)
    return LocalLayout(workers, threads, usable // workers, reserved)


def detect(
    environ: Mapping[str, str] | None = None,
    *,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    meminfo: Path = Path("/proc/meminfo"),
    mhz_per_core: float | None = None,
) -> list[Limits]:
    """Every source as this process sees it (reads the environment and a few small files)."""
    env = dict(os.environ if environ is None else environ)
    mhz = mhz_per_core or float(env.get("WORKBENCH_NOMAD_MHZ_PER_CORE") or 1000)
    try:
        affinity: Iterable[int] | None = os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        affinity = None
    return [
        from_profile_env(env),
        from_jupyterhub_env(env),
        from_nomad_env(env, mhz_per_core=mhz),
        from_cgroup(read_text(proc_cgroup), root=cgroup_root),
        node_limits(affinity=affinity, cpu_count=os.cpu_count(), meminfo=read_text(meminfo)),
    ]
