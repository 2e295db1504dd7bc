"""Pytest fixtures for the Nomad double; import them into a test module to use them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .scheduler import DeviceGroup, HostVolume, Node
from .server import NomadDouble

HERE = Path(__file__).resolve().parent
ECHO_SERVER = HERE / "echo_server.py"


def echo_command() -> tuple[str, ...]:
    """A tiny HTTP server that answers on $NOMAD_PORT_http (a stand-in single-user server)."""
    return (sys.executable, str(ECHO_SERVER))


def cluster_nodes(tmp: Path) -> list[Node]:
    """A small region: a CPU node and a GPU node with a dataset host volume."""
    dataset_dir = tmp / "datasets" / "head-ct"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    return [
        Node(name="cpu-1", cpu_mhz=8000, memory_mb=16384, drivers=frozenset({"raw_exec", "exec"})),
        Node(
            name="gpu-1",
            node_class="gpu",
            cpu_mhz=16000,
            memory_mb=65536,
            drivers=frozenset({"raw_exec", "docker"}),
            devices=[
                DeviceGroup(
                    name="NVIDIA A100-SXM4-40GB", count=1, attributes={"memory": "40960 MiB"}
                )
            ],
            host_volumes={"dataset-head-ct": HostVolume(str(dataset_dir), read_only=True)},
        ),
    ]


@pytest.fixture(name="nomad")
def nomad_fixture(tmp_path: Path) -> Iterator[NomadDouble]:
    """A double with a CPU node and a GPU node; fails the test on any API mismatch."""
    with NomadDouble(cluster_nodes(tmp_path), namespaces=("default", "research")) as double:
        yield double
        assert double.violations == [], "requests or answers that do not match Nomad's API"
