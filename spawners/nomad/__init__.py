"""User servers as Nomad jobs (see ``docs/nomad.md``).

One module per concern; nothing is imported here, so the pure modules load without
JupyterHub:

* :mod:`.slugs` - job ids and other names, with stated guarantees
* :mod:`.objects` - the job JSON (pure)
* :mod:`.placement` - ``FailedTGAllocs`` as a message users understand (pure)
* :mod:`.events` - task events and allocation states as progress and outcomes (pure)
* :mod:`.client` - the thin async HTTP client (ACL, TLS, retries, blocking queries)
* :mod:`.lifecycle` - start / status / stop of one server's job
* :mod:`.spawner` - ``NomadSpawner``, the JupyterHub Spawner
* :mod:`.orphans` - the reconciler that removes jobs the hub no longer knows
"""
