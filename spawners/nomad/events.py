"""Task events and allocation states as spawn progress and failure messages (pure).

Nomad records what its client does with a task as ``TaskStates[task].Events``: ``Received``,
``Task Setup``, ``Driver`` (``Downloading image``, pull progress), ``Started``, and on trouble
``Driver Failure``, ``Setup Failure``, ``Terminated``, ``Not Restarting``. The lifecycle feeds
every new event through :func:`describe_event` and every allocation through
:func:`allocation_outcome`; tests hold the wording (``tests/test_nomad_events.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Percentages of the spawn page's bar; the hub shows 100 itself when the server answers.
SUBMITTED = 10
EVALUATED = 20
PLACED = 30
RECEIVED = 35
SETUP = 45
DOWNLOADING = 55
DOWNLOADED = 75
STARTED = 85

_PULL = re.compile(r"Pulled (\d+)/(\d+)")

FAILURE_EVENTS = frozenset(
    {
        "Driver Failure",
        "Setup Failure",
        "Failed Validation",
        "Failed Artifact Download",
        "Task hook failed",
        "Disk Resources Exceeded",
        "Sibling Task Failed",
    }
)


@dataclass(frozen=True)
class Step:
    """What one task event means for the spawn: progress, or the reason it failed."""

    percent: int
    message: str
    failed: bool = False
    reason: str = ""


def _text(event: Mapping[str, Any]) -> str:
    for key in (
        "DisplayMessage",
        "DriverError",
        "SetupError",
        "ValidationError",
        "DownloadError",
        "Message",
        "DriverMessage",
        "KillReason",
    ):
        value = event.get(key)
        if value:
            return str(value)
    details = event.get("Details") or {}
    return str(details.get("message", "") or "")


def describe_event(event: Mapping[str, Any], node: str = "") -> Step | None:
    """One task event as a progress step; None for events the user need not see."""
    kind = str(event.get("Type", ""))
    text = _text(event)
    on_node = f" on node {node}" if node else ""
    if kind == "Received":
        return Step(RECEIVED, f"Nomad placed the server{on_node}")
    if kind in {"Task Setup", "Building Task Directory"}:
        return Step(SETUP, "Preparing the server's directories and volumes")
    if kind == "Driver":
        pulled = _PULL.search(text)
        if pulled:
            done, total = int(pulled.group(1)), max(int(pulled.group(2)), 1)
            share = min(done / total, 1.0)
            percent = DOWNLOADING + int((DOWNLOADED - DOWNLOADING) * share)
            return Step(percent, f"Downloading the container image: {text}")
        if "download" in text.lower() and "image" in text.lower():
            return Step(
                DOWNLOADING,
                "Downloading the container image (the first start on a node can take minutes)",
            )
        return Step(DOWNLOADING, f"Container runtime: {text}") if text else None
    if kind == "Template":
        if text.lower().startswith("missing"):
            return Step(
                SETUP,
                "Waiting for the server's hub credentials (Nomad Variable not readable yet: "
                f"{text})",
            )
        return Step(SETUP, f"Template: {text}") if text else None
    if kind == "Downloading Artifacts":
        return Step(SETUP, "Downloading the server's files")
    if kind == "Started":
        return Step(STARTED, "Server process started; waiting for JupyterLab to answer")
    if kind in FAILURE_EVENTS:
        return Step(
            SETUP,
            f"The server could not be started: {text or kind}",
            failed=True,
            reason=kind.lower().replace(" ", "_"),
        )
    if kind == "Terminated":
        code = event.get("ExitCode")
        return Step(
            STARTED,
            f"The server process exited (exit code {code}) before it was ready"
            + (f": {text}" if text and not text.startswith("Exit Code") else ""),
            failed=True,
            reason="exited",
        )
    if kind in {"Killing", "Killed"}:
        return Step(
            STARTED, f"Nomad is stopping the server: {text or kind}", failed=True, reason="killed"
        )
    return None


@dataclass(frozen=True)
class Outcome:
    """Where an allocation stands: ``running``, ``pending`` or a terminal failure."""

    state: str  # "pending" | "running" | "failed"
    message: str = ""
    reason: str = ""
    exit_code: int | None = None


def _last_exit_code(alloc: Mapping[str, Any]) -> int | None:
    for state in (alloc.get("TaskStates") or {}).values():
        for event in reversed(state.get("Events") or []):
            if event.get("Type") == "Terminated" and event.get("ExitCode") is not None:
                return int(event["ExitCode"])
    return None


def _failure_text(alloc: Mapping[str, Any], task: str) -> str:
    events = ((alloc.get("TaskStates") or {}).get(task) or {}).get("Events") or []
    for event in reversed(events):
        kind = event.get("Type")
        if kind in FAILURE_EVENTS or kind == "Terminated":
            step = describe_event(event)
            if step:
                return step.message
    return ""


def allocation_outcome(alloc: Mapping[str, Any], task: str) -> Outcome:
    """Running (task started), pending, or failed with the message the user should see."""
    client = alloc.get("ClientStatus")
    desired = alloc.get("DesiredStatus")
    task_state = ((alloc.get("TaskStates") or {}).get(task) or {}).get("State")
    if client == "lost":
        return Outcome(
            "failed",
            "The node running the server stopped answering Nomad (allocation lost). "
            "Start the server again; Nomad will place it on another node.",
            "lost",
            1,
        )
    if client == "complete" and desired in {"stop", "evict"}:
        why = alloc.get("DesiredDescription") or desired
        return Outcome("failed", f"Nomad stopped the server ({why})", "stopped", 0)
    if client in {"failed", "complete"}:
        text = _failure_text(alloc, task) or (
            "The server stopped before it was ready"
            if client == "complete"
            else "Nomad reports the server as failed"
        )
        code = _last_exit_code(alloc)
        return Outcome("failed", text, "alloc_" + str(client), code if code is not None else 1)
    if desired in {"stop", "evict"}:
        why = alloc.get("DesiredDescription") or desired
        return Outcome("failed", f"Nomad is stopping the server ({why})", "stopped", 0)
    if client == "running" and task_state == "running":
        return Outcome("running")
    return Outcome("pending")


def poll_code(alloc: Mapping[str, Any] | None, task: str) -> int | None:
    """JupyterHub's ``poll()`` contract: None while pending or running, an int once not."""
    if alloc is None:
        return 0
    outcome = allocation_outcome(alloc, task)
    if outcome.state in {"pending", "running"}:
        return None
    return outcome.exit_code if outcome.exit_code is not None else 0


def address(alloc: Mapping[str, Any], label: str = "http") -> tuple[str, int] | None:
    """Host and port the hub reaches the server at (``AllocatedResources`` first)."""
    shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == label and port.get("HostIP") and port.get("Value"):
            return str(port["HostIP"]), int(port["Value"])
    for network in shared.get("Networks") or []:
        for port in network.get("DynamicPorts") or []:
            if port.get("Label") == label and network.get("IP"):
                return str(network["IP"]), int(port["Value"])
    for network in (alloc.get("Resources") or {}).get("Networks") or []:
        for port in network.get("DynamicPorts") or []:
            if port.get("Label") == label and network.get("IP"):
                return str(network["IP"]), int(port["Value"])
    return None
