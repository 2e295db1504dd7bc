"""Dask compute sized to what the project may use (see ``docs/dask.md``).

One module per concern: :mod:`.sizing` (limits from the profile, cgroups and Nomad; pure),
:mod:`.gpu` (LocalCUDACluster options, lazy GPU imports), :mod:`.nomad_jobs` (Dask jobs as
Nomad JSON; pure), :mod:`.nomad` (``NomadCluster``), :mod:`.quota` (workers charged to the
project), :mod:`.reaper` (leftover jobs), :mod:`.cluster` (``get_cluster``).
"""

from .cluster import get_cluster, plan

__all__ = ["get_cluster", "plan"]
