"""Time to a ready Dask cluster of 4 workers placed by Nomad (the Nomad double), and to gone.

"Ready" is ``Client.wait_for_workers(4)`` returning: four batch jobs registered, placed, their
processes started and joined to the scheduler (in this process). "Gone" is ``close()``
returning with no job left. The baseline in the same run is a LocalCluster of 4 workers (the
same worker processes, no Nomad), so the difference is what Nomad placement costs here. The
double runs each job as a real local process on this machine (with a nanny, as in production);
against a real Nomad add its scheduling latency and the image pull.

    .venv/bin/python benchmarks/dask_nomad_ready.py --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distributed import Client, LocalCluster

from extensions.compute.nomad import NomadCluster, WorkerShape
from extensions.compute.nomad_jobs import DaskJobSettings, Owner
from spawners.nomad.client import NomadConnection
from tests.nomad_double import Node, NomadDouble

WORKERS = 4


def nomad_once(nomad: NomadDouble, index: int) -> tuple[float, float, dict[str, int]]:
    start = time.perf_counter()
    cluster = NomadCluster(
        connection=NomadConnection(address=nomad.address),
        owner=Owner("bench", "magi", f"bench{index}"),
        settings=DaskJobSettings(driver="raw_exec", python=sys.executable),
        shape=WorkerShape.of(1, "512MiB"),
        n_workers=WORKERS,
        heartbeat_s=3600,
        reap_on_start=False,
    )
    client = Client(cluster)
    client.wait_for_workers(WORKERS, timeout=120)
    ready = time.perf_counter() - start
    calls = dict(cluster.runtime.nomad().calls)
    start = time.perf_counter()
    client.close()
    cluster.close()
    assert nomad.job_ids() == [], nomad.job_ids()
    return ready, time.perf_counter() - start, calls


def local_once() -> tuple[float, float]:
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, memory_limit="512MiB",
                           dashboard_address=None, host="127.0.0.1")
    client = Client(cluster)
    client.wait_for_workers(WORKERS, timeout=120)
    ready = time.perf_counter() - start
    start = time.perf_counter()
    client.close()
    cluster.close()
    return ready, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    nomad_ready, nomad_gone, local_ready, local_gone = [], [], [], []
    calls: dict[str, int] = {}
    with NomadDouble([Node(name="bench-1", cpu_mhz=16000, memory_mb=32768)]) as nomad:
        for i in range(args.repeat):
            ready, gone, calls = nomad_once(nomad, i)
            nomad_ready.append(ready)
            nomad_gone.append(gone)
            ready, gone = local_once()
            local_ready.append(ready)
            local_gone.append(gone)
    m = statistics.median
    print(f"{WORKERS} workers, median of {args.repeat} (Nomad double, this machine):")
    print(f"  Nomad-placed: ready {m(nomad_ready):.2f} s, closed and jobs gone {m(nomad_gone):.2f} s")
    print(f"  LocalCluster: ready {m(local_ready):.2f} s, closed {m(local_gone):.2f} s")
    print(f"  Nomad placement overhead: {m(nomad_ready) - m(local_ready):+.2f} s to ready")
    print(f"  Nomad API calls for one cluster: {sum(calls.values())} ({', '.join(f'{k} x{v}' for k, v in sorted(calls.items()))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
