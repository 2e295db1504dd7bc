"""Why Nomad could not place a server, in words a researcher understands.

When the scheduler finds no node for a job, the evaluation carries ``FailedTGAllocs``: per
task group an ``AllocationMetric`` with counts (nodes evaluated, filtered, exhausted) and the
reasons keyed by Nomad's own strings (``"missing devices"``, ``"memory"``,
``"${attr.kernel.name} = linux"``). :func:`explain` turns that into a short message for the
spawn page and a full one for the log. Pure, table-tested (``tests/test_nomad_placement.py``).

Nomad's reason strings, from its scheduler (``scheduler/feasible.go``, ``structs/funcs.go``):
filtered ``missing drivers``, ``missing devices``, ``missing compatible host volumes``,
``missing CSI Volume <id>`` and ``<attribute> <operator> <value>`` for a constraint;
exhausted dimensions ``cpu``, ``memory``, ``cores``, ``disk``, ``devices: ...`` and
``network: ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlacementFailure:
    """A placement failure: ``message`` is safe to show, ``log_message`` has every count."""

    message: str
    log_message: str
    reason: str
    busy: bool = False
    """Some node could run it if capacity were free: worth trying again later (HTTP 503)."""


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _verb(count: int, singular: str, plural: str) -> str:
    return f"{_nodes(count)} {singular if count == 1 else plural}"


def _filter_reason(key: str, count: int) -> tuple[str, str]:
    """(reason label, sentence) for one ConstraintFiltered / ClassFiltered entry."""
    lower = key.lower()
    if lower == "missing devices" or lower.startswith("missing devices"):
        return "no_gpu", _verb(count, "has", "have") + " no GPU of the kind this profile asks for"
    if "host volume" in lower:
        return "no_volume", (
            _verb(count, "does", "do")
            + " not have the storage this server needs (host volume) attached"
        )
    if "csi" in lower:
        return "no_volume", f"{_nodes(count)} cannot attach this server's storage ({key})"
    if lower == "missing drivers" or "driver" in lower:
        return "no_driver", f"{_nodes(count)} cannot run this kind of server (task driver missing)"
    if lower.startswith("${device.") or "device" in lower:
        return "no_gpu", _verb(count, "has", "have") + f" no GPU that matches ({key})"
    if lower.startswith("${node.pool}") or "node pool" in lower:
        return "constraint", _verb(count, "is", "are") + " outside the profile's node pool"
    return "constraint", _verb(
        count, "does", "do"
    ) + f" not meet the profile's placement rule {key}"


def _dimension_reason(key: str, count: int) -> tuple[str, str]:
    lower = key.lower()
    if lower.startswith("devices") or lower.startswith("device"):
        return "gpus_busy", f"all GPUs are in use on {_nodes(count)}"
    if lower == "memory":
        return "memory_busy", f"not enough free memory on {_nodes(count)}"
    if lower in {"cpu", "cores"}:
        return "cpu_busy", f"not enough free CPU on {_nodes(count)}"
    if lower == "disk":
        return "disk_busy", f"not enough free disk on {_nodes(count)}"
    if lower.startswith("network"):
        return "ports_busy", f"no free network port on {_nodes(count)} ({key})"
    return "exhausted", f"{key} exhausted on {_nodes(count)}"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def explain(
    failed: Mapping[str, Mapping[str, Any]],
    *,
    profile_name: str = "",
    queued: bool = False,
) -> PlacementFailure:
    """Explain an evaluation's ``FailedTGAllocs`` (one entry per task group; we have one)."""
    sentences: list[str] = []
    reasons: list[str] = []
    details: list[str] = []
    for group, metric in sorted(failed.items()):
        evaluated = _int(metric.get("NodesEvaluated"))
        available = metric.get("NodesAvailable") or {}
        details.append(
            f"group {group}: evaluated {evaluated}, filtered {_int(metric.get('NodesFiltered'))}, "
            f"exhausted {_int(metric.get('NodesExhausted'))}, available {dict(available)}, "
            f"constraint filtered {dict(metric.get('ConstraintFiltered') or {})}, "
            f"class filtered {dict(metric.get('ClassFiltered') or {})}, "
            f"dimension exhausted {dict(metric.get('DimensionExhausted') or {})}, "
            f"quota exhausted {list(metric.get('QuotaExhausted') or [])}"
        )
        empty_dcs = sorted(dc for dc, n in available.items() if _int(n) == 0)
        if evaluated == 0:
            reasons.append("no_nodes")
            if empty_dcs:
                sentences.append(
                    "no nodes are available in datacenter " + ", ".join(repr(d) for d in empty_dcs)
                )
            else:
                sentences.append("no nodes were eligible (wrong datacenter or node pool?)")
        for key, count in sorted(
            (metric.get("ConstraintFiltered") or {}).items(), key=lambda kv: -_int(kv[1])
        ):
            reason, sentence = _filter_reason(key, _int(count))
            reasons.append(reason)
            sentences.append(sentence)
        for key, count in sorted(
            (metric.get("DimensionExhausted") or {}).items(), key=lambda kv: -_int(kv[1])
        ):
            reason, sentence = _dimension_reason(key, _int(count))
            reasons.append(reason)
            sentences.append(sentence)
        for quota in metric.get("QuotaExhausted") or []:
            reasons.append("quota")
            sentences.append(f"the Nomad quota is used up ({quota})")
        if not sentences and _int(metric.get("NodesExhausted")):
            reasons.append("exhausted")
            sentences.append(f"resources are used up on {_nodes(_int(metric['NodesExhausted']))}")
    if not sentences:
        sentences.append("Nomad found no node for it")
        reasons.append("unplaceable")

    what = f"the profile {profile_name!r}" if profile_name else "this server"
    busy = any(r.endswith("_busy") or r in {"exhausted", "quota"} for r in reasons)
    if busy and all(r.endswith("_busy") or r in {"exhausted", "quota"} for r in reasons):
        advice = "The cluster is busy: try again later, or choose a smaller profile."
    elif busy:
        advice = "Try again later, choose another profile, or ask the workbench admins."
    else:
        advice = (
            "Choose another profile, or ask the workbench admins: no node in the cluster can "
            "run this profile as configured."
        )
    message = f"No node can start {what} right now: " + "; ".join(sentences) + ". " + advice
    if queued:
        message += " The request stays queued in Nomad until capacity frees up."
    return PlacementFailure(
        message=message,
        log_message="placement failed: " + " | ".join(details),
        reason=reasons[0],
        busy=busy,
    )
