"""Quotas and accounting of loaned compute: budgets, ledger, spawn hook, enforcer, service, CLI.

One module per concern: ``budgets`` (pure arithmetic), ``ledger`` (SQL), ``spawning`` (the
spawner hook), ``enforcer`` (while running), ``notices`` (what users read), ``report`` /
``pages`` / ``plots`` (admin views), ``app`` (the hub service), ``cli``.
"""
