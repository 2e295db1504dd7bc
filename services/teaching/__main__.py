"""``python -m services.teaching``: the teaching-session reconciler, a hub managed service."""

from .reconciler import main

main()
