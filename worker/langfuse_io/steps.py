"""An observation as drift's slices read it (worker/drift/dimensions.py): the lean facts the
trace reader keeps of every observation it saw, also of the steps a rubric does not read."""
from __future__ import annotations

from worker.json_types import JSONDict, JSONValue


def step_of(obs: JSONDict) -> JSONDict:
    """An observation as drift's slices read it: name, type, model, prompt (``name@version``) and
    input tokens (None when the server did not say)."""
    usage = obs.get("usageDetails")
    tokens = usage.get("input") if isinstance(usage, dict) else None
    prompt = obs.get("promptName")
    version = obs.get("promptVersion")
    return {"name": obs.get("name"), "type": obs.get("type"), "model": obs.get("model"),
            "prompt": f"{prompt}@{version}" if prompt and version is not None else (prompt or None),
            "input_tokens": tokens if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) else None}


def text_or_none(value: JSONValue) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) else None
