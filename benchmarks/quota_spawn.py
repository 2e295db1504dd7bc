"""What the quota check adds to a spawn: milliseconds with and without, in one run.

    .venv/bin/python benchmarks/quota_spawn.py              # ~15 s: the spawn path in-process
    .venv/bin/python benchmarks/quota_spawn.py --hub 3      # + 3 real REST spawns each way (~1 min)

1. **Spawn path in-process.** The workbench mixin's own spawn path (selection, pre-spawn hook,
   start returning, post-stop hook) around a pretend server that starts instantly, as
   JupyterHub drives it; ``--rounds`` cycles without a quota ledger (the baseline) and with one
   (reserve in the pre-spawn hook, open the interval when start returns, close it at stop), on
   SQLite and on PostgreSQL (Debian's, started throwaway; skipped, saying why, when missing).
   The ledger holds a month of history for the project (``--history`` allocations) so the
   check does real work. Printed: ms per cycle, the difference, the ratio.
2. **Real hub (``--hub N``).** The workbench hub from ``hub_config/jupyterhub_config.py``,
   two at once (``WORKBENCH_QUOTA=0`` and ``=1``), N REST spawns of a local server on each,
   alternating between them, time from POST to ready: the quota's share of a whole spawn
   (with quota the server also loads the quota-notices server extension).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import textwrap
import time
import types
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jupyterhub import orm  # noqa: E402
from jupyterhub.objects import Hub  # noqa: E402
from jupyterhub.spawner import Spawner  # noqa: E402
from jupyterhub.utils import maybe_future  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from demo.postgres import PostgresCluster, missing_reason  # noqa: E402
from services.quota.ledger import ENDED, Allocation, ledger_for  # noqa: E402
from spawners.workbench import WorkbenchSpawnerMixin  # noqa: E402

WORKBENCH = """\
profiles:
  - {slug: gpu-1, name: One GPU, cpu: 4, memory: 4G, gpus: 1}
projects:
  - id: vision
    title: Vision
    members: [anna]
    approval: {reference: B-1, expires: 2099-01-01}
    budget: {gpu_hours: 100000, cpu_core_hours: 1000000, max_concurrent_gpus: 8, max_concurrent_servers: 50}
"""


class PretendServer(Spawner):
    alive = False

    @property
    def server(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(base_url="/user/anna/")

    async def start(self):  # noqa: ANN201
        self.alive = True
        return ("127.0.0.1", 45678)

    async def poll(self):  # noqa: ANN201
        return None if self.alive else 0

    async def stop(self, now: bool = False) -> None:
        self.alive = False


class BenchSpawner(WorkbenchSpawnerMixin, PretendServer):
    pass


async def cycle(spawner: BenchSpawner) -> None:
    """One spawn and stop, the calls JupyterHub makes (User.spawn, User.stop)."""
    spawner.clear_state()
    spawner.user_options = {"project": "vision", "profile": "gpu-1"}
    spawner._spawn_pending = True
    await maybe_future(spawner.run_pre_spawn_hook())
    await spawner.start()
    spawner._spawn_pending = False
    if await spawner.poll() is None:
        await spawner.stop()
    await maybe_future(spawner.run_post_stop_hook())


def seed_history(url: str, count: int) -> None:
    """A month of ended allocations of the project, so usage sums over real rows."""
    ledger = ledger_for(url)
    now = time.time()
    with Session(ledger.engine) as session, session.begin():
        for index in range(count):
            start = now - 20 * 86400 + index * 60
            session.add(Allocation(id=uuid.uuid4().hex, account="vision", user=f"u{index % 17}", kind="server",
                                   gpus=index % 2, cpu=4, status=ENDED, reserved_at=start, started_at=start,
                                   last_seen_at=start + 1800, ended_at=start + 1800))


async def measure(yaml: Path, url: str, rounds: int) -> list[float]:
    spawner = BenchSpawner(
        user=types.SimpleNamespace(name="anna", url="/user/anna/", escaped_name="anna", id=1),
        hub=Hub(), orm_spawner=orm.Spawner(name=""), workbench_config_file=str(yaml), quota_db_url=url,
    )
    spawner.api_token = "token"
    for _ in range(5):  # warm caches (config, engine, compiled statements)
        await cycle(spawner)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        await cycle(spawner)
        times.append((time.perf_counter() - began) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"mean_ms": statistics.fmean(times), "p50_ms": statistics.median(times),
            "p95_ms": ordered[int(0.95 * (len(ordered) - 1))]}


def in_process(rounds: int, history: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        yaml = Path(tmp) / "workbench.yaml"
        yaml.write_text(WORKBENCH)
        results["without quota"] = summary(asyncio.run(measure(yaml, "", rounds)))
        sqlite = f"sqlite:///{Path(tmp) / 'ledger.sqlite'}"
        seed_history(sqlite, history)
        results["SQLite ledger"] = summary(asyncio.run(measure(yaml, sqlite, rounds)))
        reason = missing_reason()
        if reason:
            print(f"PostgreSQL skipped: {reason}")
        else:
            with PostgresCluster.start_new() as cluster:
                seed_history(cluster.url, history)
                results["PostgreSQL ledger"] = summary(asyncio.run(measure(yaml, cluster.url, rounds)))
    return results


def real_hub(spawns: int) -> dict[str, dict[str, float]]:
    """Both hubs run at once and spawns alternate between them, so background load on a shared
    machine falls on both alike."""
    import httpx

    from demo.hub import HubProcess

    users = ["anna", "bo", "cy", "dan", "eve", "fay"][:spawns]
    hubs = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for label, quota in (("hub without quota", "0"), ("hub with quota", "1")):
                data = Path(tmp) / quota
                data.mkdir()
                yaml = data / "workbench.yaml"
                yaml.write_text(WORKBENCH.replace("members: [anna]", f"members: [{', '.join(users)}]")
                                + 'archive: {name: none, dicomweb_url: "http://127.0.0.1:9/dicom-web"}\n')
                token = secrets.token_hex(24)
                extra = data / "extra.py"
                extra.write_text(textwrap.dedent(f"""\
                    c.JupyterHub.services.append({{"name": "bench", "api_token": {token!r}}})
                    c.JupyterHub.load_roles.append({{"name": "bench", "services": ["bench"],
                                                     "scopes": ["admin:users", "admin:servers"]}})
                    """))
                hub = HubProcess(data_dir=data, workbench_yaml=yaml, extra_config=extra,
                                 extra_env={"WORKBENCH_QUOTA": quota, "WORKBENCH_LOCAL_GPUS": "1"})
                hub.start(timeout=90)
                hubs[label] = (hub, httpx.Client(base_url=hub.url + "/hub/api/", timeout=120,
                                                 headers={"Authorization": f"token {token}"}), [])
            time.sleep(3)  # let both settle (services started, first probes done)
            for user in users:
                for label, (hub, api, times) in hubs.items():
                    api.post(f"users/{user}")
                    began = time.perf_counter()
                    api.post(f"users/{user}/server", json={"project": "vision", "profile": "gpu-1"})
                    while not (api.get(f"users/{user}").json()["servers"].get("", {}) or {}).get("ready"):
                        time.sleep(0.05)
                    times.append((time.perf_counter() - began) * 1000)
                    api.delete(f"users/{user}/server")
        finally:
            for hub, api, _ in hubs.values():
                api.close()
                hub.stop()
    return {label: summary(times) for label, (_, _, times) in hubs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--history", type=int, default=2000, help="ended allocations in the period")
    parser.add_argument("--hub", type=int, default=0, metavar="N", help="also N real spawns each way (max 6)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.pop("WORKBENCH_CONFIG", None)

    figures = {"in_process": in_process(args.rounds, args.history)}
    base = figures["in_process"]["without quota"]["mean_ms"]
    print(f"\nSpawn path in-process ({args.rounds} cycles each, {args.history} allocations of history)")
    print(f"{'':<20} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'added ms':>9} {'ratio':>7}")
    for label, row in figures["in_process"].items():
        print(f"{label:<20} {row['mean_ms']:>8.2f} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} "
              f"{row['mean_ms'] - base:>9.2f} {row['mean_ms'] / base:>6.1f}x")
    if args.hub:
        figures["hub"] = real_hub(min(args.hub, 6))
        base = figures["hub"]["hub without quota"]["mean_ms"]
        print(f"\nReal hub, {min(args.hub, 6)} sequential REST spawns each (POST to ready)")
        for label, row in figures["hub"].items():
            print(f"{label:<20} {row['mean_ms']:>8.0f} {row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f} "
                  f"{row['mean_ms'] - base:>9.0f} {row['mean_ms'] / base:>6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
