"""Teaching sessions: pure window and access rules, hub roles and groups, the reconciler."""
