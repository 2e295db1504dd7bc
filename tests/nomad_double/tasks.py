"""What the double's client does for a task: interpolation, templates, environment, processes.

* ``${NOMAD_PORT_http}``, ``${NOMAD_IP_http}``, ``${attr.kernel.name}``, ``${meta.x}``,
  ``${node.unique.name}`` and the other ``NOMAD_*`` values are interpolated in ``Env`` and
  driver ``args`` like Nomad does; unknown ``${...}`` stay as they are.
* Templates: the subset of consul-template the spawner uses, ``{{ with nomadVar "p" }}``,
  ``{{ .key }}`` and ``{{ end }}``. A variable the task cannot read leaves the task waiting
  with a ``Template`` event ``Missing: nomad.var.block(...)``, as Nomad does. Anything else
  in a template is reported as a template failure rather than guessed.
* ``raw_exec`` and ``exec`` tasks run as local processes (``exec`` without its chroot).
  ``docker`` tasks are simulated: an image "pull" with Nomad's progress events, then the
  configured ``command``/``args`` run as a local process on the host port (there is no
  container network, so ``NOMAD_PORT_<label>`` is the host port). Processes inherit the
  double's environment, like ``raw_exec`` tasks inherit the Nomad client's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_INTERP = re.compile(r"\$\{([^}]+)\}")
_WITH = re.compile(r'\{\{-?\s*with\s+nomadVar\s+"([^"]+)"\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}', re.S)
_FIELD = re.compile(r"\{\{-?\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}")
_ANY_ACTION = re.compile(r"\{\{.*?\}\}", re.S)


def interpolate(text: str, values: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return _INTERP.sub(one, text)


@dataclass(frozen=True)
class Missing:
    """A template waits for a variable it cannot read (yet)."""

    path: str


class TemplateError(ValueError):
    pass


def render_template(
    text: str, read_variable: Callable[[str], Mapping[str, str] | None]
) -> str | Missing:
    """Render the supported subset, or say which variable is missing."""

    def body(match: re.Match[str]) -> str:
        items = read_variable(match.group(1))
        if items is None:
            raise _MissingVar(match.group(1))

        def field_value(m: re.Match[str]) -> str:
            if m.group(1) not in items:
                raise TemplateError(f"map has no entry for key {m.group(1)!r}")
            return str(items[m.group(1)])

        inner = _FIELD.sub(field_value, match.group(2))
        if _ANY_ACTION.search(inner):
            raise TemplateError(f"unsupported template action in {inner!r}")
        return inner

    try:
        out = _WITH.sub(body, text)
    except _MissingVar as missing:
        return Missing(missing.path)
    if _ANY_ACTION.search(out):
        raise TemplateError(f"unsupported template action in {out!r}")
    return out


class _MissingVar(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines (Nomad's ``env = true`` templates); quotes are stripped."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env
