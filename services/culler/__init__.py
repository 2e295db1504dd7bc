"""Idle culling: jupyterhub-idle-culler with per-profile timeouts (see :mod:`.policy`)."""
