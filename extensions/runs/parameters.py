"""A notebook's parameters: what its ``parameters`` cell declares, and whether given values fit.

Pure apart from reading the notebook file. :func:`declared_parameters` reads the cell tagged
``parameters`` with papermill's own inspection (``papermill.inspect_notebook``: name, type
annotation, default, help comment). Papermill skips assignments whose annotation it cannot
parse (``x: "int | None" = None``); those are filled in from the cell's syntax tree so that no
parameter the notebook assigns is ever reported as unknown.

:func:`check_parameters` runs before anything is created or started. Every problem is
collected into one :class:`~.errors.ParameterError`:

* a name the cell does not assign (with the names it does assign);
* a value of the wrong type. The type is the annotation when there is one (``int``, ``float``,
  ``str``, ``bool``, ``list``, ``dict``, ``Path``, ``Optional[...]``, ``X | None``,
  ``Union[...]``), else the type of a literal default (``alpha = 0.5`` is a float); a default
  of ``None`` or an expression accepts any plain value.

Values typed on the command line (``-p name value``) arrive as text and are converted to the
declared type (``-p epochs 3`` is the int 3, ``-p layers '[64, 32]'`` a list); values from a
YAML file are checked as they are (an int is accepted where a float is declared, never the
other way round, and ``True`` is not an int).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .errors import ParameterError

PARAMETERS_TAG = "parameters"
_MISSING = object()

# Kinds a value can have; "any" accepts every plain (JSON) value.
KINDS = ("int", "float", "str", "bool", "list", "dict", "path", "any")
_ALIASES = {
    "int": "int", "integer": "int",
    "float": "float",
    "str": "str", "string": "str",
    "bool": "bool", "boolean": "bool",
    "list": "list", "List": "list", "tuple": "list", "Tuple": "list", "Sequence": "list",
    "dict": "dict", "Dict": "dict", "Mapping": "dict",
    "Path": "path", "PathLike": "path",
    "Any": "any", "object": "any",
}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE_TEXT = {"none", "null", "~"}


@dataclass(frozen=True)
class TypeRule:
    """What a parameter accepts: a set of kinds, and whether None is allowed."""

    kinds: frozenset[str]
    optional: bool = False
    inferred: bool = False  # from the default's type rather than an annotation
    text: str = ""  # how the notebook wrote it (or what it was inferred from)

    def describe(self) -> str:
        order = [k for k in KINDS if k in self.kinds]
        words = " or ".join("Path (a string)" if k == "path" else k for k in order)
        if self.optional:
            words += " or None"
        return words


ANY = TypeRule(frozenset({"any"}), optional=True, text="")


@dataclass(frozen=True)
class Declared:
    """One parameter of the notebook."""

    name: str
    rule: TypeRule
    default_source: str
    help: str = ""
    default: Any = field(default=_MISSING, compare=False)

    @property
    def has_literal_default(self) -> bool:
        return self.default is not _MISSING


@dataclass(frozen=True)
class CheckedParameters:
    """The values to inject (``values``) and every parameter's effective value (``effective``)."""

    values: dict[str, Any]
    effective: dict[str, Any]


# Reading the cell ---------------------------------------------------------------------------
def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    for cell in nb.cells:
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def declared_parameters(notebook: str | Path) -> dict[str, Declared]:
    """The parameters cell of ``notebook``, in order; empty when there is none."""
    import papermill  # imported here: 1-2 s, and only this step needs it

    nb = nbformat.read(str(notebook), as_version=4)
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    inspected = papermill.inspect_notebook(str(notebook))
    tree = _assignments(cell.source)
    names = list(inspected) + [n for n in tree if n not in inspected]
    declared = {}
    for name in names:
        info = inspected.get(name)
        annotation, default_source = tree.get(name, (None, ""))
        if info is not None:
            papermill_type = info.get("inferred_type_name") or "None"
            annotation = annotation if papermill_type == "None" else papermill_type
            default_source = info.get("default") or default_source
            help_text = info.get("help") or ""
        else:
            help_text = ""
        default = _literal(default_source)
        declared[name] = Declared(
            name, type_rule(annotation, default), default_source, help_text, default
        )
    return declared


def _assignments(source: str) -> dict[str, tuple[str | None, str]]:
    """name -> (annotation text or None, default source) for top-level assignments."""
    try:
        module = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, tuple[str | None, str]] = {}
    for node in module.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation
            text = (
                annotation.value
                if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str)
                else ast.unparse(annotation)
            )
            value = ast.unparse(node.value) if node.value is not None else ""
            found[node.target.id] = (text, value)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = (None, ast.unparse(node.value))
    return found


def _literal(source: str) -> Any:
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING


def type_rule(annotation: str | None, default: Any = _MISSING) -> TypeRule:
    """The rule for an annotation text, else for the type of a literal default."""
    if annotation:
        rule = _parse_annotation(annotation.strip())
        return TypeRule(rule.kinds, rule.optional, False, annotation.strip())
    if default is _MISSING or default is None:
        return ANY
    kind = {bool: "bool", int: "int", float: "float", str: "str", list: "list",
            tuple: "list", dict: "dict"}.get(type(default))
    if kind is None:
        return ANY
    return TypeRule(frozenset({kind}), False, True, repr(default))


def _parse_annotation(text: str) -> TypeRule:
    text = text.strip().strip("'\"")
    for prefix in ("typing.", "pathlib.", "os."):
        text = re.sub(rf"\b{re.escape(prefix)}", "", text)
    parts = _split_top(text, "|")
    if len(parts) > 1:
        return _union(_parse_annotation(p) for p in parts)
    match = re.fullmatch(r"(\w+)\s*\[(.*)\]", text, re.DOTALL)
    if match:
        outer, inner = match.group(1), match.group(2)
        if outer == "Optional":
            rule = _parse_annotation(inner)
            return TypeRule(rule.kinds, True)
        if outer == "Union":
            return _union(_parse_annotation(p) for p in _split_top(inner, ","))
        text = outer  # list[int], Dict[str, float]: the container is checked
    if text in {"None", "NoneType"}:
        return TypeRule(frozenset(), True)
    kind = _ALIASES.get(text)
    if kind is None:
        return ANY  # a type the runner cannot check (a class of the notebook): accept
    return TypeRule(frozenset({kind}), kind == "any")


def _union(rules: Iterable[TypeRule]) -> TypeRule:
    kinds: set[str] = set()
    optional = False
    for rule in rules:
        kinds |= rule.kinds
        optional = optional or rule.optional
    return TypeRule(frozenset(kinds), optional)


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == separator and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


# Checking values ----------------------------------------------------------------------------
class _Mismatch(Exception):
    pass


def check_parameters(
    declared: Mapping[str, Declared],
    given: Mapping[str, Any],
    *,
    as_text: Iterable[str] = (),
    notebook: str = "",
) -> CheckedParameters:
    """Convert and check ``given``; raise one ParameterError naming every problem.

    ``as_text``: the names whose values came from the command line as text.
    """
    as_text = set(as_text)
    problems: list[str] = []
    values: dict[str, Any] = {}
    if given and not declared:
        problems.append(
            "the notebook has no cell tagged 'parameters', so it takes no parameters "
            f"(given: {', '.join(sorted(given))}). Tag the cell that sets the defaults with "
            "'parameters' in JupyterLab (property inspector, cell tags)."
        )
        raise ParameterError(problems, notebook=notebook)
    for name, value in given.items():
        spec = declared.get(name)
        if spec is None:
            problems.append(f"unknown parameter {name!r}; the notebook's parameters are: {_listing(declared)}")
            continue
        try:
            values[name] = (
                convert_text(str(value), spec.rule) if name in as_text else check_value(value, spec.rule)
            )
        except _Mismatch as mismatch:
            hint = ""
            if spec.rule.inferred:
                hint = f" (the type is inferred from the default {spec.rule.text})"
            problems.append(f"{name}: {mismatch}{hint}")
    if problems:
        raise ParameterError(problems, notebook=notebook)
    effective = {}
    for name, spec in declared.items():
        if name in values:
            effective[name] = values[name]
        elif spec.has_literal_default and _plain(spec.default):
            effective[name] = _jsonable(spec.default)
        else:
            effective[name] = {"expression": spec.default_source}
    return CheckedParameters(values, effective)


def _listing(declared: Mapping[str, Declared]) -> str:
    if not declared:
        return "(none)"
    return ", ".join(f"{n} ({d.rule.describe()})" for n, d in declared.items())


def convert_text(text: str, rule: TypeRule) -> Any:
    """A command-line value as the declared type."""
    if rule.optional and text.strip().lower() in _NONE_TEXT:
        return None
    # Most specific first, so that "3" is an int where int and str are both allowed.
    for kind in ("bool", "int", "float", "list", "dict", "path", "str", "any"):
        if kind not in rule.kinds:
            continue
        try:
            return _from_text(text, kind)
        except (ValueError, _Mismatch):
            continue
    raise _Mismatch(f"expects {rule.describe()}, got {text!r}")


def _from_text(text: str, kind: str) -> Any:
    stripped = text.strip()
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("not a bool")
    if kind == "int":
        return int(stripped, 10)
    if kind == "float":
        value = float(stripped)
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    if kind in {"list", "dict"}:
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(value, list if kind == "list" else dict):
            raise ValueError(f"not a {kind}")
        return check_value(value, TypeRule(frozenset({kind})))
    if kind in {"str", "path"}:
        return text
    # any: like papermill's own -p: int, float, bool, None, else text
    try:
        return int(stripped, 10)
    except ValueError:
        pass
    try:
        number = float(stripped)
        if math.isfinite(number):
            return number
    except ValueError:
        pass
    lowered = stripped.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if lowered in _NONE_TEXT:
        return None
    return text


def check_value(value: Any, rule: TypeRule) -> Any:
    """A typed value (YAML, JSON, Python) against the rule; returns it as JSON-able."""
    if value is None:
        if rule.optional:
            return None
        raise _Mismatch(f"expects {rule.describe()}, got None")
    if not _plain(value):
        raise _Mismatch(
            f"{type(value).__name__} values cannot be passed to a notebook; use a string, "
            "number, bool, list or dict (quote dates in YAML)"
        )
    kinds = rule.kinds
    if "any" in kinds:
        return _jsonable(value)
    if isinstance(value, bool):
        ok = "bool" in kinds
    elif isinstance(value, int):
        ok = "int" in kinds or "float" in kinds
        if ok and "int" not in kinds:
            value = float(value)
    elif isinstance(value, float):
        ok = "float" in kinds
    elif isinstance(value, str):
        ok = "str" in kinds or "path" in kinds
    elif isinstance(value, (list, tuple)):
        ok = "list" in kinds
    else:  # dict
        ok = "dict" in kinds
    if not ok:
        raise _Mismatch(f"expects {rule.describe()}, got {type(value).__name__} {value!r}")
    return _jsonable(value)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
