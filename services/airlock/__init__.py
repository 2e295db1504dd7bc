"""The data egress airlock: export requests, identifier checks, steward review, audit."""
