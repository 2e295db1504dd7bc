"""Teaching sessions as quota accounts: ``session:<id>`` with the session's window budget.

The spawner charges a session server to its session's account; the quota service lists the
sessions through ``QuotaService.extra_accounts = lambda: teaching_accounts(config())``.
"""

from __future__ import annotations

from hub_config.model import TeachingSession, WorkbenchConfig
from services.quota.accounts import Account, session_account


def account_of(session: TeachingSession) -> Account:
    return session_account(session.id, session.title, session.teaching_budget(), session.members())


def teaching_accounts(config: WorkbenchConfig) -> dict[str, Account]:
    accounts = (account_of(s) for s in config.teaching)
    return {a.id: a for a in accounts}
