"""Quota reservations per second under 200 concurrent requests, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/quota_reservations.py              # ~1 min on 2 cores
    .venv/bin/python benchmarks/quota_reservations.py --clients 200 --per-client 5 --json out.json

200 threads (as many concurrent requests, sharing one ledger and its connection pool, as the
hub does) each make ``--per-client`` requests; all start at a barrier. Three workloads per
database, in one run:

* **baseline**: a plain INSERT of an allocation row in its own transaction (no budget read,
  no lock): what writing a row under this concurrency costs at all.
* **granted**: ``Ledger.reserve`` against a budget with room for everything: the atomic
  check-and-insert (SQLite: BEGIN IMMEDIATE; PostgreSQL: advisory lock per project), reading
  the project's rows of the period each time.
* **contended**: the same against a budget of 2 concurrent GPUs: 2 granted, the rest refused
  with the message (a refusal writes nothing).

Printed: requests/s, p50/p95 latency, and each workload's throughput as a ratio of the
baseline measured in the same run. PostgreSQL is Debian's, started throwaway on a free port
(skipped, saying why, when missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session  # noqa: E402

from demo.postgres import PostgresCluster, missing_reason  # noqa: E402
from hub_config.model import Budget  # noqa: E402
from services.quota.errors import QuotaExceeded  # noqa: E402
from services.quota.ledger import RESERVED, Allocation, Claim, Ledger  # noqa: E402

ROOMY = Budget(gpu_hours=1e9, cpu_core_hours=1e9, max_concurrent_gpus=100_000, max_concurrent_servers=100_000)
TIGHT = Budget(gpu_hours=1e9, max_concurrent_gpus=2, max_concurrent_servers=100_000)


def run(clients: int, per_client: int, request: Callable[[int, int], bool]) -> dict[str, float]:
    barrier = threading.Barrier(clients + 1)
    latencies: list[float] = []
    granted = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal granted
        mine, ok = [], 0
        barrier.wait()
        for step in range(per_client):
            began = time.perf_counter()
            ok += request(index, step)
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)
            granted += ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    total = clients * per_client
    return {
        "requests": total,
        "granted": granted,
        "seconds": elapsed,
        "per_second": total / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
    }


def bench_database(url: str, clients: int, per_client: int) -> dict[str, dict[str, float]]:
    ledger = Ledger(url, pool_size=20)
    now = time.time()

    def plain_insert(index: int, step: int) -> bool:
        with Session(ledger.engine) as session, session.begin():
            session.add(Allocation(id=uuid.uuid4().hex, account="baseline", user=f"u{index}", kind="server",
                                   gpus=1, cpu=2, status=RESERVED, reserved_at=now, expires_at=now + 600))
        return True

    def reserve(account: str, budget: Budget) -> Callable[[int, int], bool]:
        def request(index: int, step: int) -> bool:
            try:
                ledger.reserve(Claim(account, f"u{index}", gpus=1, cpu=2), budget, now=now, ttl=600)
            except QuotaExceeded:
                return False
            return True

        return request

    results = {
        "baseline": run(clients, per_client, plain_insert),
        "granted": run(clients, per_client, reserve("roomy", ROOMY)),
        "contended": run(clients, per_client, reserve("tight", TIGHT)),
    }
    ledger.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--per-client", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    figures: dict[str, object] = {"clients": args.clients, "per_client": args.per_client}
    with tempfile.TemporaryDirectory() as tmp:
        figures["sqlite"] = bench_database(f"sqlite:///{Path(tmp) / 'ledger.sqlite'}", args.clients, args.per_client)
    reason = missing_reason()
    if reason:
        print(f"PostgreSQL skipped: {reason}")
    else:
        with PostgresCluster.start_new() as cluster:
            figures["postgresql"] = bench_database(cluster.url, args.clients, args.per_client)

    print(f"\n{args.clients} concurrent clients x {args.per_client} requests each")
    print(f"{'database':<11} {'workload':<10} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'granted':>8} {'vs baseline':>12}")
    for database in ("sqlite", "postgresql"):
        rows = figures.get(database)
        if not isinstance(rows, dict):
            continue
        base = rows["baseline"]["per_second"]
        for workload, row in rows.items():
            print(f"{database:<11} {workload:<10} {row['per_second']:>8.0f} {row['p50_ms']:>8.1f} "
                  f"{row['p95_ms']:>8.1f} {row['granted']:>8d} {row['per_second'] / base:>11.2f}x")
    contended = [rows["contended"]["granted"] for rows in (figures.get("sqlite"), figures.get("postgresql"))
                 if isinstance(rows, dict)]
    assert all(g == 2 for g in contended), f"over-commit under load: {contended}"
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
