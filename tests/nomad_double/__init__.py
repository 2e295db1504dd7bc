"""A Nomad HTTP API test double: stateful, on loopback, running ``raw_exec`` tasks for real.

    from nomad_double import NomadDouble, Node, DeviceGroup, HostVolume

    with NomadDouble([Node(devices=[DeviceGroup(count=2)])]) as nomad:
        ...  # point a client at nomad.address

Modules: :mod:`.server` (HTTP, thread, faults, inspection), :mod:`.cluster` (state,
evaluations, allocations), :mod:`.agent` (running tasks), :mod:`.scheduler` (feasibility
and Nomad's failure metrics), :mod:`.tasks` (interpolation, templates), :mod:`.spec`
(OpenAPI checks); ``python -m tests.nomad_double`` runs it as a process.
"""

from .scheduler import DeviceGroup, HostVolume, Node
from .server import NomadDouble

__all__ = ["DeviceGroup", "HostVolume", "NomadDouble", "Node"]
