"""``python -m services.quota``: run the quota service (pages, API, enforcer) under JupyterHub."""

from .app import main

main()
