"""``python -m services.sample_gateway``: run the gateway as a JupyterHub managed service."""

from .app import main

main()
