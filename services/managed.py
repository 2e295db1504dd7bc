"""What every hub managed service needs to live and die with its hub."""

from __future__ import annotations

import asyncio
import logging
import os


async def stop_when_orphaned(stop: asyncio.Event, name: str, every: float = 2.0) -> None:
    """Set ``stop`` once the hub that started this service is gone.

    A hub that crashes skips its clean-up, and the restarted hub starts a fresh copy of the
    service on the same port, which an orphan would keep holding.
    """
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(every)
        if os.getppid() != parent:
            logging.getLogger(name).warning("the hub (pid %d) is gone; %s stops with it", parent, name)
            stop.set()


def is_managed() -> bool:
    """True when JupyterHub started this process as a managed service."""
    return bool(os.environ.get("JUPYTERHUB_SERVICE_NAME"))
