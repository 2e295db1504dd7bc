"""Quota notices in the hub's own pages (home, spawn, token): the announcement banner.

``c.JupyterHub.template_vars = {"announcement": HubAnnouncement(...)}``: JupyterHub calls it
with the current user for each page it renders. It reads the ledger (SQLite or PostgreSQL)
at most once per user every ``cache_seconds`` and never raises: a page must render even
when the ledger is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from hub_config.loader import cached_config
from hub_config.model import WorkbenchConfig

from .accounts import Account, project_accounts
from .ledger import ledger_for
from .notices import announcement_html, for_user

log = logging.getLogger("quota.announcement")


class HubAnnouncement:
    def __init__(
        self, ledger_url: str, config_file: str | None = None, *, static: str = "",
        cache_seconds: float = 15.0, clock: Callable[[], float] = time.time,
        extra_accounts: Callable[[WorkbenchConfig], Mapping[str, Account]] | None = None,
    ) -> None:
        self.ledger_url = ledger_url
        self.config_file = config_file
        self.extra_accounts = extra_accounts  # e.g. teaching sessions' accounts
        self.static = static  # an admin's own announcement, shown above the notices
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> HubAnnouncement:
        # traitlets deep-copies config values; one shared instance keeps one cache and lock.
        return self

    def __call__(self, user: Any) -> str:
        if user is None:
            return self.static
        name = getattr(user, "name", None) or ""
        now = self.clock()
        with self._lock:
            cached = self._cache.get(name)
        if cached and now - cached[0] < self.cache_seconds:
            return cached[1]
        try:
            text = self.static + self.render(name, now)
        except Exception:
            log.exception("quota announcement for %s failed", name)
            text = self.static
        with self._lock:
            self._cache[name] = (now, text)
        return text

    def render(self, username: str, now: float) -> str:
        config = cached_config(self.config_file, log=log)
        every = dict(project_accounts(config))
        if self.extra_accounts is not None:
            every.update(self.extra_accounts(config))
        accounts = {k: a for k, a in every.items() if username in a.members}
        if not accounts:
            return ""
        ledger = ledger_for(self.ledger_url)
        current = []
        for account in accounts.values():
            window = ledger.view(account.id, account.budget, now=now).window
            current.extend(ledger.notices(accounts=[account.id], since=window.start))
        return announcement_html(for_user(current, username, accounts))
