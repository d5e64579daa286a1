"""What the judge emulator answers: a verdict valid for the requested JSON schema, driven by a
quality hint in the judged text, and deterministic fault triggers.

Conventions (shared with the seed generator and the tests):
- ``[[quality:0.83]]``: the last such marker in the request's text sets the quality q in
  [0, 1]; without one, q is a hash of the prompt mapped into [0.35, 0.95].
- ``[[judge:KIND]]`` with KIND in garbage, offscale, truncated, refusal, 500, 529, 429:
  that fault on every request carrying it; ``[[judge:KIND-once]]``: answer faults only on a
  conversation's first turn (a repair then succeeds), HTTP faults only on the first request
  with that exact body (a retry then heals).
"""
from __future__ import annotations

import hashlib
import math
import re

QUALITY = re.compile(r"\[\[quality:([0-9]*\.?[0-9]+)\]\]")
TRIGGER = re.compile(r"\[\[judge:(garbage|offscale|truncated|refusal|500|529|429)(-once)?\]\]")


def all_text(value) -> str:
    """Every string inside a request's system and messages, in order."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(all_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(all_text(v) for k, v in value.items() if k not in ("type", "role", "id", "cache_control"))
    return ""


def quality(text: str) -> float:
    found = QUALITY.findall(text)
    if found:
        return min(1.0, max(0.0, float(found[-1])))
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big") / 2**64
    return 0.35 + 0.6 * h


def triggers(text: str) -> list[tuple[str, bool]]:
    return [(kind, bool(once)) for kind, once in TRIGGER.findall(text)]


def value_for(schema: dict, q: float, offscale: bool = False):
    kind = schema.get("type")
    if "enum" in schema:
        labels = schema["enum"]
        if offscale:
            return "not-a-label"
        return labels[min(len(labels) - 1, int((1 - q) * len(labels)))]
    if kind in ("number", "integer"):
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 1)
        if offscale:
            return hi + 10
        value = lo + q * (hi - lo)
        return int(math.floor(value + 0.5)) if kind == "integer" else round(value, 3)
    if kind == "boolean":
        return "yes" if offscale else q >= 0.5
    if kind == "object":
        return verdict_for(schema, q, offscale)
    if kind == "array":
        return [value_for(schema.get("items") or {"type": "string"}, q)]
    return f"The answer addresses the request at about {round(q * 100)}% of the ideal quality."


def verdict_for(schema: dict, q: float, offscale: bool = False) -> dict:
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        is_score = sub.get("type") in ("number", "integer", "boolean") or "enum" in sub
        out[name] = value_for(sub, q, offscale and is_score)
    return out


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))
