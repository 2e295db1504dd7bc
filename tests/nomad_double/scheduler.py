"""The double's nodes and its scheduler: feasibility, fit and Nomad's own failure metrics.

Modelled on Nomad's scheduler (``scheduler/feasible.go``, ``scheduler/rank.go``): nodes
outside the job's datacenters or node pool are not evaluated; evaluated nodes are filtered
(``missing drivers``, a constraint's ``LTarget Operand RTarget``, ``missing devices``,
``missing compatible host volumes``) or exhausted (``cpu``, ``memory``, ``cores``,
``devices: no devices match request``), and the counts land in an ``AllocationMetric`` as
the real scheduler fills it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


@dataclass
class DeviceGroup:
    """A device group as a Nomad device plugin fingerprints it (e.g. ``nvidia/gpu/Tesla T4``)."""

    vendor: str = "nvidia"
    type: str = "gpu"
    name: str = "Tesla T4"
    count: int = 1
    attributes: dict[str, str] = field(default_factory=lambda: {"memory": "15360 MiB"})

    def instance_ids(self) -> list[str]:
        return [f"GPU-{self.name.replace(' ', '-').lower()}-{i}" for i in range(self.count)]


@dataclass
class HostVolume:
    path: str
    read_only: bool = False


@dataclass
class Node:
    """One simulated Nomad client. Tasks placed on it run as local processes."""

    name: str = "double-node-1"
    datacenter: str = "dc1"
    pool: str = "default"
    node_class: str = ""
    cpu_mhz: int = 16000
    memory_mb: int = 32768
    cores: int = 8
    drivers: frozenset[str] = frozenset({"raw_exec", "exec", "docker"})
    devices: list[DeviceGroup] = field(default_factory=list)
    host_volumes: dict[str, HostVolume] = field(default_factory=dict)
    attributes: dict[str, str] = field(
        default_factory=lambda: {"kernel.name": "linux", "cpu.arch": "amd64", "os.name": "debian"}
    )
    meta: dict[str, str] = field(default_factory=dict)
    ip: str = "127.0.0.1"
    status: str = "ready"

    @property
    def id(self) -> str:
        import uuid

        return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"nomad-double-{self.name}"))


def to_bytes(text: str) -> float | None:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match:
        return None
    unit = match.group(2).lower() or "b"
    if unit not in _UNITS:
        return None
    return float(match.group(1)) * _UNITS[unit]


def _compare(left: str, right: str) -> int | None:
    lb, rb = to_bytes(left), to_bytes(right)
    if (
        lb is not None
        and rb is not None
        and (not left.strip().isdigit() or not right.strip().isdigit())
    ):
        return (lb > rb) - (lb < rb)
    try:
        lf, rf = float(left), float(right)
        return (lf > rf) - (lf < rf)
    except ValueError:
        return (left > right) - (left < right)


def check(operand: str, left: str | None, right: str) -> bool:
    """Nomad's constraint operators (the ones a workbench profile can use)."""
    if operand in {"is_set"}:
        return left is not None
    if operand in {"is_not_set"}:
        return left is None
    if operand in {"distinct_hosts", "distinct_property"}:
        return True  # one allocation per job: always satisfied
    if left is None:
        return False
    if operand in {"=", "==", "is"}:
        return left == right
    if operand in {"!=", "not"}:
        return left != right
    if operand in {"<", "<=", ">", ">="}:
        order = _compare(left, right)
        if order is None:
            return False
        return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[operand]
    if operand == "regexp":
        return re.search(right, left) is not None
    if operand == "set_contains":
        have = {v.strip() for v in left.split(",")}
        return all(v.strip() in have for v in right.split(","))
    if operand == "set_contains_any":
        have = {v.strip() for v in left.split(",")}
        return any(v.strip() in have for v in right.split(","))
    if operand in {"version", "semver"}:
        return _version_ok(left, right)
    return False


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _version_ok(value: str, spec: str) -> bool:
    have = _version_tuple(value)
    for clause in spec.split(","):
        match = re.fullmatch(r"\s*(>=|<=|>|<|=|!=|~>)?\s*([0-9.]+)\s*", clause)
        if not match:
            return False
        op, want = match.group(1) or "=", _version_tuple(match.group(2))
        ok = {
            ">=": have >= want,
            "<=": have <= want,
            ">": have > want,
            "<": have < want,
            "=": have == want,
            "!=": have != want,
            "~>": have >= want,
        }[op]
        if not ok:
            return False
    return True


def node_value(node: Node, target: str) -> str | None:
    """Resolve ``${attr.x}``, ``${meta.x}``, ``${node.*}``; anything else is a literal."""
    match = re.fullmatch(r"\$\{([^}]+)\}", target.strip())
    if not match:
        return target
    name = match.group(1)
    if name.startswith("attr."):
        return node.attributes.get(name[5:])
    if name.startswith("meta."):
        return node.meta.get(name[5:])
    return {
        "node.unique.name": node.name,
        "node.unique.id": node.id,
        "node.datacenter": node.datacenter,
        "node.class": node.node_class,
        "node.pool": node.pool,
    }.get(name)


def device_value(group: DeviceGroup, target: str) -> str | None:
    match = re.fullmatch(r"\$\{([^}]+)\}", target.strip())
    if not match:
        return target
    name = match.group(1)
    if name == "device.model":
        return group.name
    if name == "device.vendor":
        return group.vendor
    if name == "device.type":
        return group.type
    if name.startswith("device.attr."):
        return group.attributes.get(name[12:])
    return None


def device_matches(group: DeviceGroup, request: Mapping[str, Any]) -> bool:
    """``nvidia/gpu``, ``gpu`` or ``nvidia/gpu/Tesla T4``, plus the request's constraints."""
    parts = str(request.get("Name", "")).split("/", 2)
    if len(parts) == 1:
        ok = parts[0] == group.type
    elif len(parts) == 2:
        ok = parts == [group.vendor, group.type]
    else:
        ok = parts == [group.vendor, group.type, group.name]
    if not ok:
        return False
    return all(
        check(
            c.get("Operand", "="), device_value(group, c.get("LTarget", "")), c.get("RTarget", "")
        )
        for c in request.get("Constraints") or []
    )


def constraint_text(c: Mapping[str, Any]) -> str:
    return f"{c.get('LTarget', '')} {c.get('Operand', '=')} {c.get('RTarget', '')}"


@dataclass
class Usage:
    cpu: int = 0
    memory: int = 0
    cores: int = 0
    devices: dict[str, int] = field(default_factory=dict)  # instance id -> 1 when used


def empty_metric(datacenters: list[str]) -> dict[str, Any]:
    return {
        "NodesEvaluated": 0,
        "NodesFiltered": 0,
        "NodesExhausted": 0,
        "NodesAvailable": {dc: 0 for dc in datacenters if "*" not in dc},
        "ClassFiltered": None,
        "ConstraintFiltered": None,
        "ClassExhausted": None,
        "DimensionExhausted": None,
        "QuotaExhausted": None,
        "ResourcesExhausted": None,
        "Scores": None,
        "ScoreMetaData": None,
        "AllocationTime": 1500,
        "CoalescedFailures": 0,
    }


def _bump(metric: dict[str, Any], key: str, name: str) -> None:
    table = metric.get(key) or {}
    table[name] = table.get(name, 0) + 1
    metric[key] = table


def _filtered(metric: dict[str, Any], node: Node, reason: str) -> None:
    metric["NodesFiltered"] += 1
    _bump(metric, "ConstraintFiltered", reason)
    if node.node_class:
        _bump(metric, "ClassFiltered", node.node_class)


def _exhausted(metric: dict[str, Any], node: Node, dimension: str) -> None:
    metric["NodesExhausted"] += 1
    _bump(metric, "DimensionExhausted", dimension)
    if node.node_class:
        _bump(metric, "ClassExhausted", node.node_class)


@dataclass
class Placement:
    node: Node
    devices: list[tuple[DeviceGroup, list[str]]]


def place(
    job: Mapping[str, Any],
    group: Mapping[str, Any],
    nodes: list[Node],
    usage: Mapping[str, Usage],
    csi_volumes: set[str],
) -> tuple[Placement | None, dict[str, Any]]:
    """Find a node for one task group: (placement or None, AllocationMetric)."""
    datacenters = list(job.get("Datacenters") or ["*"])
    pool = job.get("NodePool") or "default"
    metric = empty_metric(datacenters)
    tasks = list(group.get("Tasks") or [])
    constraints = list(job.get("Constraints") or []) + list(group.get("Constraints") or [])
    for task in tasks:
        constraints += list(task.get("Constraints") or [])
    want_cpu = sum(int((t.get("Resources") or {}).get("CPU") or 0) for t in tasks)
    want_mem = sum(int((t.get("Resources") or {}).get("MemoryMB") or 0) for t in tasks)
    want_cores = sum(int((t.get("Resources") or {}).get("Cores") or 0) for t in tasks)
    device_requests = [d for t in tasks for d in (t.get("Resources") or {}).get("Devices") or []]
    volumes = dict(group.get("Volumes") or {})

    for node in nodes:
        if node.status != "ready" or node.pool != pool:
            continue
        if not any(fnmatch.fnmatchcase(node.datacenter, dc) for dc in datacenters):
            continue
        available = metric["NodesAvailable"]
        available[node.datacenter] = available.get(node.datacenter, 0) + 1
        metric["NodesEvaluated"] += 1

        if any(t.get("Driver") not in node.drivers for t in tasks):
            _filtered(metric, node, "missing drivers")
            continue
        failed = next(
            (
                c
                for c in constraints
                if not check(
                    c.get("Operand", "="),
                    node_value(node, c.get("LTarget", "")),
                    str(node_value(node, c.get("RTarget", "")) or ""),
                )
            ),
            None,
        )
        if failed is not None:
            _filtered(metric, node, constraint_text(failed))
            continue
        host_ok = all(
            v.get("Source") in node.host_volumes
            and (v.get("ReadOnly") or not node.host_volumes[v["Source"]].read_only)
            for v in volumes.values()
            if v.get("Type") == "host"
        )
        if not host_ok:
            _filtered(metric, node, "missing compatible host volumes")
            continue
        missing_csi = next(
            (
                v["Source"]
                for v in volumes.values()
                if v.get("Type") == "csi" and v.get("Source") not in csi_volumes
            ),
            None,
        )
        if missing_csi is not None:
            _filtered(metric, node, f"missing CSI Volume {missing_csi}")
            continue
        if any(
            sum(g.count for g in node.devices if device_matches(g, req)) < int(req.get("Count", 1))
            for req in device_requests
        ):
            _filtered(metric, node, "missing devices")
            continue

        used = usage.get(node.name, Usage())
        if want_cpu and used.cpu + want_cpu > node.cpu_mhz:
            _exhausted(metric, node, "cpu")
            continue
        if want_cores and used.cores + want_cores > node.cores:
            _exhausted(metric, node, "cores")
            continue
        if used.memory + want_mem > node.memory_mb:
            _exhausted(metric, node, "memory")
            continue
        chosen: list[tuple[DeviceGroup, list[str]]] = []
        taken: set[str] = set()
        exhausted = False
        for req in device_requests:
            need = int(req.get("Count", 1))
            free = [
                (g, i)
                for g in node.devices
                if device_matches(g, req)
                for i in g.instance_ids()
                if i not in used.devices and i not in taken
            ]
            if len(free) < need:
                exhausted = True
                break
            picked = free[:need]
            taken.update(i for _, i in picked)
            chosen.append((picked[0][0], [i for _, i in picked]))
        if exhausted:
            _exhausted(metric, node, "devices: no devices match request")
            continue
        metric["Scores"] = {f"{node.id}.binpack": 0.5}
        return Placement(node, chosen), metric
    return None, metric
