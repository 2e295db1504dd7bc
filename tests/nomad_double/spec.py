"""Check requests (strictly) and the double's answers (loosely) against Nomad's OpenAPI file.

The file is HashiCorp's generated description of the HTTP API (MPL-2.0). It is read from
``../shared/nomad-openapi/openapi.yaml`` (or ``$NOMAD_OPENAPI``) and never copied into this
repository. When it is absent, :func:`load_validator` returns None with the reason, and the
double says so once on stdout.

Request bodies are checked **strictly**: every object schema that lists its properties gets
``additionalProperties: false``, so a misspelt or invented field fails. Query parameters must
be ones the operation declares. Known differences between the file and Nomad, each allowed
on purpose and listed here:

* ``index`` (blocking queries) is declared as a *header*; Nomad reads it from the query
  string (``?index=N&wait=30s``), as its documentation and CLI do. Accepted as a query.
* ``Job.NodePool`` (Nomad 1.6+) is newer than the file: added to the ``Job`` schema.
* ``DELETE /var/{path}`` declares a required body; accepted with or without one.

Answers of the double are checked loosely (unknown fields and JSON ``null`` allowed, as Go
encodes empty slices and maps as ``null``) so that the double stays shaped like Nomad.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SPEC = Path(__file__).resolve().parents[3] / "shared" / "nomad-openapi" / "openapi.yaml"

SPEC_ADDITIONS: dict[str, dict[str, Any]] = {
    "Job": {"NodePool": {"type": "string"}},
}
QUERY_ALSO_ALLOWED = frozenset({"index"})


def spec_path() -> Path:
    return Path(os.environ.get("NOMAD_OPENAPI") or DEFAULT_SPEC)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    query_params: dict[str, dict[str, Any]]
    body_schema: dict[str, Any] | None
    body_required: bool
    responses: dict[str, dict[str, Any] | None]


def _template_regex(template: str) -> re.Pattern[str]:
    """``/job/{jobName}/allocations`` -> a regex; a variable ``{path}`` may contain slashes."""
    out = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{"):
            out += "(.+)" if part == "{path}" else "([^/]+)"
        else:
            out += re.escape(part)
    return re.compile("^" + out + "$")


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _loose(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _loose(v) for k, v in node.items()}
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        return out
    if isinstance(node, list):
        return [_loose(v) for v in node]
    return node


class SpecValidator:
    """Validates one request or answer at a time; thread-safe after construction."""

    def __init__(self, document: dict[str, Any], source: str) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012

        self.source = source
        schemas = copy.deepcopy(document["components"]["schemas"])
        for name, extra in SPEC_ADDITIONS.items():
            schemas.setdefault(name, {"type": "object", "properties": {}})
            schemas[name].setdefault("properties", {}).update(extra)
        strict_doc = {"components": {"schemas": _strict(schemas)}}
        loose_doc = {"components": {"schemas": _loose(schemas)}}
        registry = Registry().with_resources(
            [
                ("urn:nomad:strict", DRAFT202012.create_resource(strict_doc)),
                ("urn:nomad:loose", DRAFT202012.create_resource(loose_doc)),
            ]
        )
        self._validator_class = Draft202012Validator
        self._registry = registry
        self._cache: dict[tuple[str, str], Any] = {}
        parameters = document["components"].get("parameters", {})
        responses = document["components"].get("responses", {})
        self.operations: list[Operation] = []
        for template, item in document["paths"].items():
            regex = _template_regex(template)
            for method, op in item.items():
                params = [self._deref(p, parameters) for p in op.get("parameters", [])]
                query = {p["name"]: p.get("schema", {}) for p in params if p.get("in") == "query"}
                body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
                answers: dict[str, dict[str, Any] | None] = {}
                for code, ref in op.get("responses", {}).items():
                    resolved = self._deref(ref, responses)
                    content = (resolved.get("content") or {}).get("application/json")
                    answers[code] = content.get("schema") if content else None
                self.operations.append(
                    Operation(
                        method=method.upper(),
                        template=template,
                        regex=regex,
                        query_params=query,
                        body_schema=body.get("schema") if body else None,
                        body_required=bool((op.get("requestBody") or {}).get("required")),
                        responses=answers,
                    )
                )

    @staticmethod
    def _deref(node: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return table[ref.rsplit("/", 1)[-1]] if ref else node

    def _schema_validator(self, schema: dict[str, Any], flavour: str) -> Any:
        key = (json.dumps(schema, sort_keys=True), flavour)
        if key not in self._cache:
            rooted = json.loads(
                json.dumps(schema).replace('"#/components', f'"urn:nomad:{flavour}#/components')
            )
            if flavour == "loose":
                rooted = _loose(rooted)
            else:
                rooted = _strict(rooted)
            self._cache[key] = self._validator_class(rooted, registry=self._registry)
        return self._cache[key]

    def operation(self, method: str, path: str) -> Operation | None:
        for op in self.operations:
            if op.method == method and op.regex.match(path):
                return op
        return None

    def check_request(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes | None
    ) -> list[str]:
        """Problems with one request; ``path`` is below ``/v1``."""
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: no such operation in the Nomad API description"]
        problems = []
        for name, values in query.items():
            if name in QUERY_ALSO_ALLOWED:
                continue
            schema = op.query_params.get(name)
            if schema is None:
                problems.append(f"{method} {op.template}: undeclared query parameter {name!r}")
                continue
            for value in values:
                if schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                    problems.append(f"{method} {op.template}: {name}={value!r} is not an integer")
                if schema.get("type") == "boolean" and value not in {"true", "false"}:
                    problems.append(f"{method} {op.template}: {name}={value!r} is not a boolean")
        if body:
            if op.body_schema is None:
                problems.append(f"{method} {op.template}: sends a body the operation does not take")
            else:
                try:
                    data = json.loads(body)
                except ValueError as exc:
                    return problems + [f"{method} {op.template}: body is not JSON: {exc}"]
                validator = self._schema_validator(op.body_schema, "strict")
                for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path)):
                    where = "/".join(str(p) for p in error.path) or "(body)"
                    problems.append(f"{method} {op.template}: {where}: {error.message}")
        elif op.body_required and method in {"POST", "PUT"}:
            problems.append(f"{method} {op.template}: request body required")
        return problems

    def check_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        op = self.operation(method, path)
        if op is None or status >= 400:
            return []
        schema = op.responses.get(str(status))
        if schema is None or body is None:
            return []
        validator = self._schema_validator(schema, "loose")
        return [
            f"answer to {method} {op.template}: {'/'.join(str(p) for p in e.path)}: {e.message}"
            for e in validator.iter_errors(body)
        ]


_loaded: dict[Path, tuple[SpecValidator | None, str]] = {}


def load_validator(path: Path | None = None) -> tuple[SpecValidator | None, str]:
    """(validator, how) — validator None with the reason when the file is missing."""
    path = path or spec_path()
    if path not in _loaded:
        if not path.exists():
            _loaded[path] = (None, f"request validation skipped: {path} not found")
        else:
            import yaml

            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            _loaded[path] = (SpecValidator(document, str(path)), f"validating against {path}")
    return _loaded[path]
