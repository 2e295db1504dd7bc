"""Remove Dask jobs that outlived their cluster.

A Dask job (id ``<prefix>--<user>--...``, meta ``workbench_dask_cluster``) is a leftover when

* its task has ended (a worker whose scheduler went away exits by itself): purge it; or
* the scheduler it serves (``workbench_dask_scheduler``) does not accept connections and the
  job was submitted more than ``grace_s`` ago (a cluster in start-up is never touched): stop
  and purge it, and close its quota allocation.

A scheduler job is a leftover when its task has ended. The rule is pure
(:func:`find_leftovers`); :func:`reap` probes schedulers once each, then acts. It runs when a
:class:`~.nomad.NomadCluster` starts (for that user's jobs) and as
``python -m extensions.compute.reaper`` (all users; a hub service or a cron job), which needs
a Nomad token that may list, read and deregister jobs in the Dask namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from spawners.nomad.client import NomadClient, NomadConnection, NomadError

from .nomad_jobs import META, DaskJobSettings, user_prefix
from .quota import Accounting, QuotaError

log = logging.getLogger("workbench.dask.reaper")


@dataclass(frozen=True)
class DaskJob:
    job_id: str
    user: str
    cluster: str
    role: str
    scheduler: str
    allocation: str
    status: str  # pending, running, dead
    submit_time_ns: int


@dataclass
class Report:
    kept: list[DaskJob] = field(default_factory=list)
    removed: list[DaskJob] = field(default_factory=list)
    failed: list[tuple[DaskJob, str]] = field(default_factory=list)


def find_leftovers(
    jobs: Iterable[DaskJob], reachable: set[str], *, now_ns: int, grace_s: float
) -> tuple[list[DaskJob], list[DaskJob]]:
    """(leftovers, kept): pure."""
    leftovers, kept = [], []
    for job in jobs:
        young = now_ns - job.submit_time_ns < grace_s * 1e9
        if job.status == "dead" or job.role == "worker" and not young and job.scheduler not in reachable:
            leftovers.append(job)
        else:
            kept.append(job)
    return leftovers, kept


async def dask_jobs(client: NomadClient, prefix: str, namespace: str) -> list[DaskJob]:
    found = []
    for stub in await client.list_jobs(prefix, namespace=namespace):
        job = await client.read_job(stub["ID"], namespace=namespace)
        meta = (job or {}).get("Meta") or {}
        if job is None or f"{META}dask_cluster" not in meta:
            continue
        found.append(DaskJob(
            job_id=stub["ID"],
            user=meta.get(f"{META}user", ""),
            cluster=meta.get(f"{META}dask_cluster", ""),
            role=meta.get(f"{META}dask_role", ""),
            scheduler=meta.get(f"{META}dask_scheduler", ""),
            allocation=meta.get(f"{META}quota_allocation", ""),
            status=str(job.get("Status", "")),
            submit_time_ns=int(job.get("SubmitTime") or 0),
        ))
    return found


async def reachable_schedulers(addresses: Iterable[str], timeout: float = 2.0) -> set[str]:
    """Scheduler addresses (``tcp://host:port``) that accept a TCP connection now."""

    async def probe(address: str) -> str | None:
        parsed = urlparse(address)
        if not parsed.hostname or not parsed.port:
            return None
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parsed.hostname, parsed.port), timeout)
        except (TimeoutError, OSError):
            return None
        writer.close()
        return address

    results = await asyncio.gather(*(probe(a) for a in set(addresses) if a))
    return {r for r in results if r}


async def reap(
    client: NomadClient,
    settings: DaskJobSettings,
    *,
    username: str | None = None,
    accounting: Accounting | None = None,
    grace_s: float = 120.0,
    dry_run: bool = False,
    now_ns: int | None = None,
) -> Report:
    """Remove leftovers among one user's Dask jobs (``username``) or everyone's."""
    prefix = user_prefix(settings, username) if username else settings.job_prefix + "--"
    jobs = await dask_jobs(client, prefix, settings.namespace)
    reachable = await reachable_schedulers(j.scheduler for j in jobs if j.status != "dead")
    leftovers, kept = find_leftovers(jobs, reachable, now_ns=now_ns or time.time_ns(), grace_s=grace_s)
    report = Report(kept=kept)
    for job in leftovers:
        if dry_run:
            log.warning("leftover (dry run, kept): %s of %s (%s)", job.job_id, job.user, job.status)
            continue
        try:
            await client.deregister_job(job.job_id, purge=True, namespace=settings.namespace)
        except NomadError as exc:
            report.failed.append((job, str(exc)))
            continue
        if job.allocation and accounting is not None:
            try:
                await accounting.ended(job.allocation)
            except QuotaError as exc:
                log.warning("could not close quota allocation %s: %s", job.allocation, exc.log_message)
        log.warning("leftover Dask job removed: %s of %s (cluster %s, %s)", job.job_id, job.user,
                    job.cluster, job.status)
        report.removed.append(job)
    return report


async def _main(args: argparse.Namespace) -> int:
    settings = DaskJobSettings(job_prefix=args.job_prefix,
                               namespace=args.namespace or os.environ.get("NOMAD_NAMESPACE") or "default")
    async with NomadClient(NomadConnection.from_env(os.environ)) as client:
        while True:
            try:
                report = await reap(client, settings, grace_s=args.grace, dry_run=args.dry_run)
                log.info("reaped: %d kept, %d removed, %d failed", len(report.kept), len(report.removed),
                         len(report.failed))
            except NomadError as exc:
                log.error("reap pass failed, will retry: %s", exc)
            if args.interval <= 0:
                return 0
            await asyncio.sleep(args.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Remove Dask jobs that outlived their cluster.")
    parser.add_argument("--job-prefix", default="dask")
    parser.add_argument("--namespace")
    parser.add_argument("--interval", type=float, default=600.0, help="seconds; 0 runs once")
    parser.add_argument("--grace", type=float, default=120.0)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
