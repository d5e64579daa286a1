"""Validate a request against the official Langfuse OpenAPI spec (langfuse-openapi.yml).

The Langfuse emulator rejects (400) and records every request that breaks the spec, so a
test run proves tracejudge only sends what a real server accepts. One documented extension:
POST /api/public/scores also takes a JSON array of CreateScoreRequest, which SDK 5 sends to
newer servers.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path

import jsonschema
import yaml

SPEC_PATH = Path(__file__).with_name("langfuse-openapi.yml")


@functools.lru_cache(maxsize=1)
def spec() -> dict:
    return yaml.load(SPEC_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=1)
def _routes() -> list[tuple[re.Pattern, str, dict]]:
    routes = []
    for template, item in spec()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(template)) + "$")
        routes.append((pattern, template, item))
    # literal paths before templated ones (e.g. /scores/{id} vs /v2/scores)
    routes.sort(key=lambda r: r[1].count("{"))
    return routes


def find_operation(method: str, path: str) -> tuple[str, dict] | None:
    for pattern, template, item in _routes():
        if pattern.match(path):
            op = item.get(method.lower())
            if op is not None:
                return template, op
    return None


def is_known_path(path: str) -> bool:
    """Whether ``path`` is a route of the spec, whatever the method."""
    return any(pattern.match(path) for pattern, _, _ in _routes())


def _resolve(node, depth=0):
    """Inline $refs and turn OpenAPI 3.0 `nullable` into JSON Schema."""
    if depth > 40:
        return {}
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _resolve(spec()["components"]["schemas"][name], depth + 1)
        out = {k: _resolve(v, depth + 1) for k, v in node.items() if k not in ("nullable", "example", "format")}
        if node.get("nullable"):
            out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_resolve(v, depth + 1) for v in node]
    return node


def _check_query_value(name: str, raw: str, schema: dict) -> str | None:
    fmt = schema.get("format") or (schema.get("items") or {}).get("format")
    schema = _resolve(schema)
    if "anyOf" in schema:
        schema = next((s for s in schema["anyOf"] if s.get("type") != "null"), {})
    kind = schema.get("type")
    if kind == "array":
        schema = schema.get("items") or {}
        if "anyOf" in schema:
            schema = next((s for s in schema["anyOf"] if s.get("type") != "null"), {})
        kind = schema.get("type")
    if "enum" in schema and raw not in schema["enum"]:
        return f"query {name}={raw!r} is not one of {schema['enum']}"
    if kind == "integer" and not re.fullmatch(r"-?\d+", raw):
        return f"query {name}={raw!r} is not an integer"
    if kind == "number":
        try:
            float(raw)
        except ValueError:
            return f"query {name}={raw!r} is not a number"
    if kind == "boolean" and raw not in ("true", "false"):
        return f"query {name}={raw!r} is not a boolean"
    if fmt == "date-time":
        try:
            dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return f"query {name}={raw!r} is not an ISO 8601 date-time"
    return None


def validate_request(method: str, path: str, query: dict[str, list[str]], body) -> list[str]:
    found = find_operation(method, path)
    if found is None:
        return [f"{method} {path} is not an operation of the Langfuse public API"]
    template, op = found
    problems = []
    params = {p["name"]: p for p in op.get("parameters") or [] if p.get("in") == "query"}
    for name, values in query.items():
        if name not in params:
            problems.append(f"{method} {template}: unknown query parameter {name!r}")
            continue
        schema = params[name].get("schema") or {}
        if len(values) > 1 and "array" not in str(_resolve(schema)):
            problems.append(f"{method} {template}: query parameter {name!r} given {len(values)} times")
        for raw in values:
            problem = _check_query_value(name, raw, schema)
            if problem:
                problems.append(f"{method} {template}: {problem}")
    for name, param in params.items():
        if param.get("required") and name not in query:
            problems.append(f"{method} {template}: missing required query parameter {name!r}")
    request_body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
    if request_body is not None:
        schema = _resolve(request_body)
        items = body if (template == "/api/public/scores" and method == "POST" and isinstance(body, list)) else [body]
        for item in items:
            for error in jsonschema.Draft7Validator(schema).iter_errors(item):
                where = "/".join(map(str, error.absolute_path)) or "body"
                problems.append(f"{method} {template}: {where}: {error.message[:200]}")
    elif body is not None and method in ("GET", "DELETE"):
        problems.append(f"{method} {template}: takes no request body")
    return problems


def validate_response(method: str, path: str, status: int, body) -> list[str]:
    found = find_operation(method, path)
    if found is None:
        return [f"{method} {path} is not an operation"]
    _, op = found
    content = (op.get("responses") or {}).get(str(status), {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if not schema:
        return []
    return [f"response {'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message[:200]}"
            for e in jsonschema.Draft7Validator(_resolve(schema)).iter_errors(body)]
