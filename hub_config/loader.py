"""Read the workbench YAML and turn validation errors into messages that name the line.

An admin who mistypes a date in a 300-line file must be told ``workbench.yaml:42:
projects[1].approval.expires = '2026-13-01': ...``, not a pydantic traceback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .model import CrossReferenceError, Loc, WorkbenchConfig

CONFIG_ENV = "WORKBENCH_CONFIG"
DEFAULT_CONFIG = Path(__file__).with_name("workbench.yaml")


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    line: int | None
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        shown = "" if self.value is _MISSING else f" = {self.value!r}"
        return f"{where}: {self.field or '(top level)'}{shown}: {self.message}"


class ConfigError(ValueError):
    """The configuration file cannot be used; ``problems`` says where and why."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(f"invalid workbench configuration:\n  {lines}")


_MISSING = object()


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text, so pydantic reports a bad date with its field."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file to read: an explicit path, else $WORKBENCH_CONFIG, else the bundled demo."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG


def load_config(path: str | os.PathLike[str] | None = None) -> WorkbenchConfig:
    source = config_path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(source), None, "", _MISSING, f"cannot read: {exc}")])
    return parse_config(text, str(source))


_cache: dict[Path, tuple[float, WorkbenchConfig]] = {}


def cached_config(
    path: str | os.PathLike[str] | None = None, log: logging.Logger | None = None
) -> WorkbenchConfig:
    """The configuration, re-read when the file changes.

    Long-running parts (hub, gateway) call this on each use so that an admin's edit applies
    without a restart. An edit that does not validate is logged and the last good version
    stays in force; the first read must succeed.
    """
    source = config_path(path).resolve()
    try:
        mtime = source.stat().st_mtime
    except OSError:
        mtime = -1.0
    cached = _cache.get(source)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        config = load_config(source)
    except ConfigError as exc:
        if cached is None:
            raise
        (log or logging.getLogger(__name__)).error(
            "%s; keeping the configuration read before", exc
        )
        _cache[source] = (mtime, cached[1])
        return cached[1]
    _cache[source] = (mtime, config)
    return config


def parse_config(text: str, source: str = "<string>") -> WorkbenchConfig:
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(source, line, "", _MISSING, f"not valid YAML: {problem}")])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(source, 1, "", _MISSING, "the file must be a mapping")])
    lines = _line_index(node)
    try:
        return WorkbenchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, data, lines, source)) from None


def _problems(
    exc: ValidationError, data: dict[str, Any], lines: dict[Loc, int], source: str
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, CrossReferenceError):
            for loc, message in cause.problems:
                problems.append(_problem(source, loc, data, lines, message))
            continue
        loc = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(_problem(source, loc, data, lines, message))
    return problems


def _problem(
    source: str, loc: Loc, data: Any, lines: dict[Loc, int], message: str
) -> ConfigProblem:
    # Nested model errors can carry a tag element such as 'function-after[...]': drop those.
    loc = tuple(part for part in loc if isinstance(part, int) or "[" not in str(part))
    line = None
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            line = lines[loc[:cut]]
            break
    return ConfigProblem(source, line, _dotted(loc), _value_at(data, loc), message)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _line_index(node: yaml.Node | None, loc: Loc = ()) -> dict[Loc, int]:
    """Map each field path in the YAML to its 1-based line."""
    index: dict[Loc, int] = {}
    if node is None:
        return index
    index[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = loc + (key_node.value,)
            index.update(_line_index(value_node, child))
            index[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            index.update(_line_index(item, loc + (position,)))
    return index
