"""Names for Nomad objects, derived from user and server names.

Guarantees (tested as a table in ``tests/test_nomad_slugs.py`` and as properties):

1. **Always valid.** Every result matches ``^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`` and is at most
   ``max_length`` long, so it is a valid Nomad job id, an RFC 1123 label usable as a Nomad
   service name (at most 63), and a valid Nomad Variables path segment. Nothing a user
   types reaches a job file unescaped: there is no HCL, and these names carry no quotes,
   dots, slashes or spaces.
2. **Readable when possible.** A name that is already safe (lower-case letters, digits and
   single dashes, not starting or ending with a dash) is kept as it is.
3. **Never colliding.** Different inputs give different results. A safe result never contains
   ``---``; a changed (lower-cased, stripped or truncated) name always ends in ``---`` plus
   10 hex digits of a SHA-256 over the exact original input. For :func:`multi_slug`, the parts
   of a safe result are joined with ``--``, which no safe part contains, so the parts can be
   read back. Two distinct inputs could only collide through a 40-bit hash collision.
4. **Stable.** The same input always gives the same result (no randomness, no salt), so a
   restarted hub finds the jobs it started.
"""

from __future__ import annotations

import hashlib
import json
import re

SAFE_PART = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
"""A part that is kept as it is: no upper case, no double dash, no dash at either end."""

VALID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

HASH_LENGTH = 10
_HASH_MARK = "---"
_UNSAFE_RUN = re.compile(r"[^a-z0-9]+")
MIN_LENGTH = len(_HASH_MARK) + HASH_LENGTH + 1


def _hash(parts: tuple[str, ...]) -> str:
    # JSON encodes the tuple unambiguously, whatever characters the names contain.
    encoded = json.dumps(list(parts), ensure_ascii=True)
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()[:HASH_LENGTH]


def _sanitize(text: str) -> str:
    return _UNSAFE_RUN.sub("-", text.lower()).strip("-")


def _hashed(readable: str, parts: tuple[str, ...], max_length: int) -> str:
    room = max_length - len(_HASH_MARK) - HASH_LENGTH
    stem = readable[:room].strip("-") or "x"
    return f"{stem}{_HASH_MARK}{_hash(parts)}"


def safe_slug(name: str, max_length: int = 63) -> str:
    """One name as a safe slug (see the module's guarantees)."""
    return multi_slug([name], max_length=max_length)


def multi_slug(parts: list[str] | tuple[str, ...], max_length: int = 63) -> str:
    """Several names as one slug, ``part--part--part`` when every part is safe."""
    if max_length < MIN_LENGTH:
        raise ValueError(f"max_length must be at least {MIN_LENGTH}")
    parts = tuple(parts)
    if not parts:
        raise ValueError("multi_slug needs at least one part")
    joined = "--".join(parts)
    if all(SAFE_PART.match(part) for part in parts) and len(joined) <= max_length:
        return joined
    readable = "--".join(_sanitize(part) or "x" for part in parts)
    return _hashed(readable, parts, max_length)


def job_id(prefix: str, username: str, server_name: str = "", max_length: int = 63) -> str:
    """The Nomad job id of one user's server: ``<prefix>--<user>[--<server>]``.

    ``prefix`` must itself be a safe part (it is configuration, checked by the spawner), so
    every job this hub starts begins with ``<prefix>--``: a prefix listing finds them all.
    """
    if not SAFE_PART.match(prefix) or len(prefix) > max_length - MIN_LENGTH - 2:
        raise ValueError(
            f"job prefix {prefix!r} must be lower-case letters, digits and single dashes, "
            f"at most {max_length - MIN_LENGTH - 2} characters"
        )
    parts = (prefix, username) if not server_name else (prefix, username, server_name)
    slug = multi_slug(parts, max_length=max_length)
    # The stem is cut from the end and the prefix fits, so ``<prefix>--`` always survives
    # (as ``<prefix>---<hash>`` at the shortest).
    assert slug.startswith(prefix + "--")
    return slug


def job_prefix(prefix: str) -> str:
    """What every job id of this hub starts with (for ``GET /v1/jobs?prefix=``)."""
    return prefix + "--"
