"""Who is charged: accounts (projects today, teaching sessions later) and their budgets.

An account id is a project id; teaching sessions are charged as ``session:<id>`` (a project
slug cannot contain ':', so the two never collide) with a :class:`TeachingBudget`. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hub_config.model import WorkbenchConfig

from .budgets import AnyBudget

SESSION_PREFIX = "session:"


@dataclass(frozen=True)
class Account:
    id: str
    label: str  # "Project magi": starts the sentences users read
    title: str
    budget: AnyBudget | None
    members: frozenset[str] = field(default_factory=frozenset)


def project_accounts(config: WorkbenchConfig) -> dict[str, Account]:
    return {
        project.id: Account(
            project.id, f"Project {project.id}", project.title, project.budget, frozenset(project.members)
        )
        for project in config.projects
    }


def session_account(session_id: str, title: str, budget: AnyBudget, members: Iterable[str]) -> Account:
    """The account of a teaching session (for the teaching module to register its sessions)."""
    return Account(
        f"{SESSION_PREFIX}{session_id}", f"Teaching session {session_id}", title, budget, frozenset(members)
    )


def all_accounts(
    config: WorkbenchConfig, extra: Mapping[str, Account] | None = None, known: Iterable[str] = ()
) -> dict[str, Account]:
    """Configured projects, extra accounts (teaching sessions), and ids only the ledger knows
    (a project removed from the YAML still shows what it used)."""
    accounts = project_accounts(config)
    accounts.update(extra or {})
    for account_id in known:
        accounts.setdefault(account_id, Account(account_id, f"Account {account_id}", "(not configured)", None))
    return accounts
