"""``python -m services.airlock``: run the airlock (page, API) under JupyterHub."""

from .app import main

main()
