"""Find and remove Nomad jobs of this hub whose server the hub no longer knows.

A job is this hub's when its id starts with ``<job_prefix>--`` and its meta says
``workbench_hub = <hub_id>``. It is an orphan when the hub lists no active (running or
pending) server for its ``workbench_user``/``workbench_server``, and it was submitted more
than ``grace`` seconds ago (so a spawn in flight is never touched). Orphans appear when the
hub crashed during a start, its database was restored from a backup, a server was removed
while Nomad was unreachable, or a stop gave up.

Run it as a JupyterHub managed service: once at hub start-up and then every ``interval``
seconds. :func:`service_config` gives the service and role entries; the role needs only
``list:users`` and ``read:servers``. Each decision is logged (``kept``/``removed``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import slugs
from .client import NomadClient, NomadConnection, NomadError
from .objects import META_PREFIX, variable_path

log = logging.getLogger("workbench.nomad.orphans")


@dataclass(frozen=True)
class HubJob:
    job_id: str
    namespace: str
    user: str
    server: str
    status: str
    submit_time_ns: int


@dataclass
class Report:
    kept: list[HubJob] = field(default_factory=list)
    removed: list[HubJob] = field(default_factory=list)
    failed: list[tuple[HubJob, str]] = field(default_factory=list)


def find_orphans(
    jobs: Iterable[HubJob], known: set[tuple[str, str]], *, now_ns: int, grace_s: float
) -> tuple[list[HubJob], list[HubJob]]:
    """(orphans, kept): pure, so the rule is tested on its own."""
    orphans, kept = [], []
    for job in jobs:
        young = now_ns - job.submit_time_ns < grace_s * 1e9
        if (job.user, job.server) in known or young:
            kept.append(job)
        else:
            orphans.append(job)
    return orphans, kept


async def hub_jobs(
    client: NomadClient, *, hub_id: str, job_prefix: str, namespaces: Iterable[str]
) -> list[HubJob]:
    """This hub's jobs in the given namespaces (one list call each, then each job's meta)."""
    found = []
    for namespace in namespaces:
        for stub in await client.list_jobs(slugs.job_prefix(job_prefix), namespace=namespace):
            job = await client.read_job(stub["ID"], namespace=namespace)
            meta = (job or {}).get("Meta") or {}
            if job is None or meta.get(f"{META_PREFIX}hub") != hub_id:
                continue
            found.append(
                HubJob(
                    job_id=stub["ID"],
                    namespace=namespace,
                    user=meta.get(f"{META_PREFIX}user", ""),
                    server=meta.get(f"{META_PREFIX}server", ""),
                    status=str(job.get("Status", "")),
                    submit_time_ns=int(job.get("SubmitTime") or 0),
                )
            )
    return found


async def known_servers(
    hub_api_url: str, token: str, *, timeout: float = 30.0
) -> set[tuple[str, str]]:
    """Every (user, server name) the hub lists as active, following the API's pagination."""
    known: set[tuple[str, str]] = set()
    headers = {
        "Authorization": f"token {token}",
        "Accept": "application/jupyterhub-pagination+json",
    }
    offset = 0
    async with httpx.AsyncClient(timeout=timeout) as http:
        while True:
            response = await http.get(
                hub_api_url.rstrip("/") + "/users",
                params={"state": "active", "offset": offset, "limit": 200},
                headers=headers,
            )
            response.raise_for_status()
            page = response.json()
            items = page["items"] if isinstance(page, dict) else page
            for user in items:
                for name in user.get("servers") or {}:
                    known.add((user["name"], name))
            following = (
                (page.get("_pagination") or {}).get("next") if isinstance(page, dict) else None
            )
            if not following:
                return known
            offset = int(following["offset"])


async def remove(client: NomadClient, job: HubJob, *, purge: bool = True) -> None:
    await client.deregister_job(job.job_id, purge=purge, namespace=job.namespace)
    await client.delete_variable(variable_path(job.job_id), namespace=job.namespace)


async def reconcile(
    client: NomadClient,
    known: set[tuple[str, str]],
    *,
    hub_id: str,
    job_prefix: str,
    namespaces: Iterable[str],
    grace_s: float = 120.0,
    purge: bool = True,
    dry_run: bool = False,
    now_ns: int | None = None,
) -> Report:
    jobs = await hub_jobs(client, hub_id=hub_id, job_prefix=job_prefix, namespaces=namespaces)
    orphans, kept = find_orphans(jobs, known, now_ns=now_ns or time.time_ns(), grace_s=grace_s)
    report = Report(kept=kept)
    for job in orphans:
        if dry_run:
            log.warning(
                "orphan (dry run, kept): job %s of %s/%s in %s",
                job.job_id,
                job.user,
                job.server or "(default)",
                job.namespace,
            )
            continue
        try:
            await remove(client, job, purge=purge)
        except NomadError as exc:
            log.error("could not remove orphan job %s: %s", job.job_id, exc)
            report.failed.append((job, str(exc)))
            continue
        log.warning(
            "orphan removed: job %s of %s/%s in %s (status %s)",
            job.job_id,
            job.user,
            job.server or "(default)",
            job.namespace,
            job.status,
        )
        report.removed.append(job)
    for job in kept:
        log.info("kept: job %s of %s/%s", job.job_id, job.user, job.server or "(default)")
    return report


def service_config(
    *,
    name: str = "nomad-orphans",
    hub_id: str,
    job_prefix: str,
    namespaces: Iterable[str],
    interval_s: float = 600.0,
    grace_s: float = 120.0,
    environment: dict[str, str] | None = None,
    python: str = sys.executable,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(entry for ``c.JupyterHub.services``, entry for ``c.JupyterHub.load_roles``).

    ``environment`` carries the Nomad connection (``NOMAD_ADDR``, ``NOMAD_TOKEN``,
    ``NOMAD_CACERT``, ...); the hub adds the service's own API token and URL.
    """
    command = [
        python,
        "-m",
        "spawners.nomad.orphans",
        "--hub-id",
        hub_id,
        "--job-prefix",
        job_prefix,
        "--interval",
        str(interval_s),
        "--grace",
        str(grace_s),
    ]
    for namespace in namespaces:
        command += ["--namespace", namespace]
    service = {
        "name": name,
        "command": command,
        "environment": dict(environment or {}),
        "display": False,
    }
    role = {"name": name, "scopes": ["list:users", "read:servers"], "services": [name]}
    return service, role


async def _main(args: argparse.Namespace) -> int:
    hub_api = os.environ.get("JUPYTERHUB_API_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not hub_api or not token:
        log.error("JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are needed (run as a hub service)")
        return 2
    namespaces = args.namespace or [os.environ.get("NOMAD_NAMESPACE") or "default"]
    async with NomadClient(NomadConnection.from_env(os.environ)) as client:
        while True:
            try:
                known = await known_servers(hub_api, token)
                report = await reconcile(
                    client,
                    known,
                    hub_id=args.hub_id,
                    job_prefix=args.job_prefix,
                    namespaces=namespaces,
                    grace_s=args.grace,
                    purge=not args.keep_history,
                    dry_run=args.dry_run,
                )
                log.info(
                    "reconciled: %d kept, %d removed, %d failed",
                    len(report.kept),
                    len(report.removed),
                    len(report.failed),
                )
            except (NomadError, httpx.HTTPError) as exc:
                log.error("reconcile pass failed, will retry: %s", exc)
            if args.interval <= 0:
                return 0
            await asyncio.sleep(args.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub-id", default="jupyterhub")
    parser.add_argument("--job-prefix", default="jupyter")
    parser.add_argument("--namespace", action="append", help="repeat for each namespace")
    parser.add_argument("--interval", type=float, default=600.0, help="seconds; 0 runs once")
    parser.add_argument("--grace", type=float, default=120.0)
    parser.add_argument("--keep-history", action="store_true", help="stop jobs without purging")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    from hub_config.console import run_tool

    raise SystemExit(run_tool(main))
