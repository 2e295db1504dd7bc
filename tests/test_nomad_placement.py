"""FailedTGAllocs -> messages a researcher understands (table of Nomad's real metric keys)."""

from __future__ import annotations

import pytest

from spawners.nomad.placement import explain


def metric(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "NodesEvaluated": 0,
        "NodesFiltered": 0,
        "NodesExhausted": 0,
        "NodesAvailable": {"dc1": 0},
        "ConstraintFiltered": None,
        "ClassFiltered": None,
        "DimensionExhausted": None,
        "QuotaExhausted": None,
    }
    base.update(fields)
    return base


CASES = [
    (
        "no GPU nodes at all",
        metric(
            NodesEvaluated=5,
            NodesFiltered=5,
            NodesAvailable={"dc1": 5},
            ConstraintFiltered={"missing devices": 5},
        ),
        "no_gpu",
        "No node can start the profile 'One GPU' right now: 5 nodes have no GPU of the kind "
        "this profile asks for. Choose another profile, or ask the workbench admins: no node "
        "in the cluster can run this profile as configured.",
    ),
    (
        "GPUs busy on the GPU nodes, the rest have none",
        metric(
            NodesEvaluated=6,
            NodesFiltered=4,
            NodesExhausted=2,
            NodesAvailable={"dc1": 6},
            ConstraintFiltered={"missing devices": 4},
            DimensionExhausted={"devices: no devices match request": 2},
        ),
        "no_gpu",
        "No node can start the profile 'One GPU' right now: 4 nodes have no GPU of the kind "
        "this profile asks for; all GPUs are in use on 2 nodes. Try again later, choose another "
        "profile, or ask the workbench admins.",
    ),
    (
        "memory exhausted",
        metric(
            NodesEvaluated=3,
            NodesExhausted=3,
            NodesAvailable={"dc1": 3},
            DimensionExhausted={"memory": 2, "cpu": 1},
        ),
        "memory_busy",
        "No node can start the profile 'One GPU' right now: not enough free memory on 2 nodes; "
        "not enough free CPU on 1 node. The cluster is busy: try again later, or choose a "
        "smaller profile.",
    ),
    (
        "host volume missing",
        metric(
            NodesEvaluated=2,
            NodesFiltered=2,
            NodesAvailable={"dc1": 2},
            ConstraintFiltered={"missing compatible host volumes": 2},
        ),
        "no_volume",
        "No node can start the profile 'One GPU' right now: 2 nodes do not have the storage "
        "this server needs (host volume) attached. Choose another profile, or ask the "
        "workbench admins: no node in the cluster can run this profile as configured.",
    ),
    (
        "empty datacenter",
        metric(NodesEvaluated=0, NodesAvailable={"dc2": 0}),
        "no_nodes",
        "No node can start the profile 'One GPU' right now: no nodes are available in "
        "datacenter 'dc2'. Choose another profile, or ask the workbench admins: no node in "
        "the cluster can run this profile as configured.",
    ),
    (
        "a constraint",
        metric(
            NodesEvaluated=1,
            NodesFiltered=1,
            NodesAvailable={"dc1": 1},
            ConstraintFiltered={"${attr.kernel.name} = windows": 1},
        ),
        "constraint",
        "No node can start the profile 'One GPU' right now: 1 node does not meet the profile's "
        "placement rule ${attr.kernel.name} = windows. Choose another profile, or ask the "
        "workbench admins: no node in the cluster can run this profile as configured.",
    ),
    (
        "driver missing",
        metric(
            NodesEvaluated=2,
            NodesFiltered=2,
            NodesAvailable={"dc1": 2},
            ConstraintFiltered={"missing drivers": 2},
        ),
        "no_driver",
        "No node can start the profile 'One GPU' right now: 2 nodes cannot run this kind of "
        "server (task driver missing). Choose another profile, or ask the workbench admins: no "
        "node in the cluster can run this profile as configured.",
    ),
    (
        "quota (Nomad Enterprise)",
        metric(NodesEvaluated=3, NodesAvailable={"dc1": 3}, QuotaExhausted=["memory exhausted"]),
        "quota",
        "No node can start the profile 'One GPU' right now: the Nomad quota is used up "
        "(memory exhausted). The cluster is busy: try again later, or choose a smaller profile.",
    ),
]


@pytest.mark.parametrize(("label", "failed", "reason", "message"), CASES, ids=[c[0] for c in CASES])
def test_explain_table(label: str, failed: dict[str, object], reason: str, message: str) -> None:
    result = explain({"server": failed}, profile_name="One GPU")
    assert result.reason == reason
    assert result.message == message
    assert result.log_message.startswith("placement failed: group server: evaluated")


def test_queued_mode_says_it_waits() -> None:
    failed = metric(NodesEvaluated=1, NodesExhausted=1, DimensionExhausted={"memory": 1})
    result = explain({"server": failed}, queued=True)
    assert result.message.startswith("No node can start this server right now")
    assert result.message.endswith("The request stays queued in Nomad until capacity frees up.")
