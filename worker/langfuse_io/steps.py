"""An observation as drift's slices read it (worker/drift/dimensions.py): the lean facts the
trace reader keeps of every observation it saw, also of the steps a rubric does not read."""
from __future__ import annotations

import math

from worker.json_types import JSONDict, JSONValue


def step_of(obs: JSONDict) -> JSONDict:
    """An observation as drift's slices and signals read it: name, type, level, model, prompt
    (``name@version``), input and output tokens (None when the server did not say)."""
    usage = obs.get("usageDetails")
    prompt = obs.get("promptName")
    version = obs.get("promptVersion")
    return {"name": obs.get("name"), "type": obs.get("type"), "level": obs.get("level"),
            "model": obs.get("model") or obs.get("providedModelName"),
            "prompt": f"{prompt}@{version}" if prompt and version is not None else (prompt or None),
            "input_tokens": _count(usage, "input"), "output_tokens": _count(usage, "output")}


def _count(usage: JSONValue, kind: str) -> float | None:
    """A token count the server gave (a finite number), else None."""
    value = usage.get(kind) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def text_or_none(value: JSONValue) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) else None
