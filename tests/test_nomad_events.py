"""Task events -> progress steps; allocations -> outcomes, poll codes and addresses."""

from __future__ import annotations

import pytest

from spawners.nomad import events
from spawners.nomad.events import Step


@pytest.mark.parametrize(
    ("event", "step"),
    [
        (
            {"Type": "Received", "DisplayMessage": "Task received by client"},
            Step(35, "Nomad placed the server on node gpu-3"),
        ),
        (
            {"Type": "Task Setup", "DisplayMessage": "Building Task Directory"},
            Step(45, "Preparing the server's directories and volumes"),
        ),
        (
            {"Type": "Driver", "DisplayMessage": "Downloading image"},
            Step(
                55, "Downloading the container image (the first start on a node can take minutes)"
            ),
        ),
        (
            {
                "Type": "Driver",
                "DisplayMessage": "Docker image pull progress: Pulled 2/4 (1.2 GiB/2.0 GiB) layers",
            },
            Step(
                65,
                "Downloading the container image: Docker image pull progress: Pulled 2/4 "
                "(1.2 GiB/2.0 GiB) layers",
            ),
        ),
        (
            {
                "Type": "Template",
                "DisplayMessage": "Missing: nomad.var.block(nomad/jobs/j@default.global)",
            },
            Step(
                45,
                "Waiting for the server's hub credentials (Nomad Variable not readable yet: "
                "Missing: nomad.var.block(nomad/jobs/j@default.global))",
            ),
        ),
        (
            {"Type": "Started", "DisplayMessage": "Task started by client"},
            Step(85, "Server process started; waiting for JupyterLab to answer"),
        ),
        (
            {
                "Type": "Driver Failure",
                "DriverError": "failed to create container: API error (404): pull access denied",
            },
            Step(
                45,
                "The server could not be started: failed to create container: API error (404): "
                "pull access denied",
                failed=True,
                reason="driver_failure",
            ),
        ),
        (
            {"Type": "Terminated", "DisplayMessage": "Exit Code: 1", "ExitCode": 1},
            Step(85, "The server process exited (exit code 1) before it was ready", True, "exited"),
        ),
        ({"Type": "Restart Signaled", "DisplayMessage": "x"}, None),
    ],
)
def test_describe_event(event: dict[str, object], step: Step | None) -> None:
    assert events.describe_event(event, "gpu-3") == step


def alloc(client: str, desired: str = "run", task_state: str = "running", evts=()) -> dict:
    return {
        "ClientStatus": client,
        "DesiredStatus": desired,
        "DesiredDescription": "alloc is being migrated" if desired == "stop" else "",
        "TaskStates": {"notebook": {"State": task_state, "Events": list(evts)}},
        "AllocatedResources": {
            "Shared": {
                "Ports": [{"Label": "http", "Value": 23456, "HostIP": "10.0.0.7", "To": 8888}]
            }
        },
    }


def test_outcomes_and_poll_codes() -> None:
    assert (
        events.allocation_outcome(alloc("pending", task_state="pending"), "notebook").state
        == "pending"
    )
    assert events.allocation_outcome(alloc("running"), "notebook").state == "running"
    assert events.poll_code(alloc("running"), "notebook") is None
    assert events.poll_code(alloc("pending", task_state="pending"), "notebook") is None
    failed = alloc(
        "failed",
        task_state="dead",
        evts=[{"Type": "Terminated", "ExitCode": 3, "DisplayMessage": "Exit Code: 3"}],
    )
    outcome = events.allocation_outcome(failed, "notebook")
    assert outcome.state == "failed" and outcome.exit_code == 3
    assert outcome.message == "The server process exited (exit code 3) before it was ready"
    assert events.poll_code(failed, "notebook") == 3
    lost = events.allocation_outcome(alloc("lost", "stop"), "notebook")
    assert lost.reason == "lost" and "stopped answering" in lost.message
    assert events.poll_code(alloc("lost", "stop"), "notebook") == 1
    migrating = events.allocation_outcome(alloc("running", "stop"), "notebook")
    assert migrating.message == "Nomad is stopping the server (alloc is being migrated)"
    assert events.poll_code(alloc("running", "stop"), "notebook") == 0
    assert events.poll_code(None, "notebook") == 0


def test_address_prefers_allocated_ports_and_falls_back_to_networks() -> None:
    assert events.address(alloc("running")) == ("10.0.0.7", 23456)
    legacy = {
        "Resources": {
            "Networks": [{"IP": "10.0.0.8", "DynamicPorts": [{"Label": "http", "Value": 3}]}]
        }
    }
    assert events.address(legacy) == ("10.0.0.8", 3)
    assert events.address({}) is None
