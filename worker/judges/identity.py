"""Pinning for self-hosted judges: the rubric's ``judge.identity`` (a weights digest, a tag or a
revision) checked against what the server says it serves.

Where it looks: the protocol's model list (``GET /v1/models``, through the SDK: vLLM's
``root``/``parent``, llama.cpp's ``id``/``aliases``/``tags``, Ollama's ``id``), llama.cpp's
``GET /props`` (``model_path``, ``model_alias``) and Ollama's ``GET /api/tags`` (``digest``).
A server that shows a field of the declared kind must match it, or the judge is refused (the
scores would not be the pinned model's). One that shows none cannot be checked: a warning,
once per process and endpoint.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlparse

import httpx

from worker import process_state
from worker.errors import ConfigError
from worker.json_types import JSONDict
from worker.judges.anthropic_judge import AnthropicJudge
from worker.judges.base import Judge
from worker.judges.openai_judge import OpenAIJudge
from worker.rubrics.judge_spec import JudgeSpec

log = logging.getLogger("tracejudge.judges")
FIELDS = {
    "digest": ("digest", "sha256", "model_digest"),
    "tag": ("id", "name", "model", "aliases", "tags", "model_alias", "model_path", "root"),
    "revision": ("revision", "root", "parent"),
}
# Endpoints already warned about (worker/process_state.py).
_WARNED: process_state.Slot[set[str]] = process_state.slot("identity_warned", set)


def _props(body: object) -> list[object]:
    return [body]  # llama.cpp: one object about the one served model


def _tags(body: object) -> list[object]:
    models = body.get("models") if isinstance(body, dict) else None  # Ollama: {"models": [...]}
    return models if isinstance(models, list) else []


# Where a server may say more than its model list: path -> the objects in its JSON body.
_SERVER_INFO: tuple[tuple[str, Callable[[object], list[object]]], ...] = (("/props", _props), ("/api/tags", _tags))


def describe_server(judge: Judge, base_url: str, timeout: float = 10.0) -> list[JSONDict]:
    """What the server says about the models it serves: every JSON object it returned."""
    found: list[JSONDict] = []
    if isinstance(judge, (AnthropicJudge, OpenAIJudge)):  # a judge with an SDK client: its model list
        try:
            found += [m.model_dump() for m in judge.client.models.list()]
        except Exception as exc:  # a server without /v1/models (or another shape of it): look elsewhere
            log.debug("no model list at %s: %s", base_url, type(exc).__name__)
    parsed = urlparse(base_url)
    root = f"{parsed.scheme}://{parsed.netloc}"
    for path, pick in _SERVER_INFO:
        try:
            response = httpx.get(root + path, timeout=timeout)
            if response.status_code == 200:
                found += [d for d in pick(response.json()) if isinstance(d, dict)]
        except (httpx.HTTPError, ValueError):
            continue
    return found


def _values(description: list[JSONDict], names: tuple[str, ...]) -> list[str]:
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in names:
                    out.extend(str(v) for v in (value if isinstance(value, list) else [value]) if v)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(description)
    return out


_NAME_FIELDS = ("id", "name", "model")


def about_model(description: list[JSONDict], model: str) -> list[JSONDict]:
    """The entries about ``model``: a server listing several models (Ollama's ``/api/tags``, a
    vLLM serving LoRAs) must not pass a pin because *another* model it serves has that digest.
    Entries that name no model (llama.cpp's ``/props``) describe the one served model."""
    def names(entry: JSONDict) -> set[str]:
        found = {str(entry[k]) for k in _NAME_FIELDS if isinstance(entry.get(k), str)}
        return found | {n.removesuffix(":latest") for n in found} | {n.rsplit("/", 1)[-1] for n in found}

    wanted = {model, model.removesuffix(":latest"), model.rsplit("/", 1)[-1]}
    return [entry for entry in description if not names(entry) or names(entry) & wanted]


def matches(kind: str, declared: str, seen: str) -> bool:
    if kind == "digest":
        a, b = declared.lower().removeprefix("sha256:"), seen.lower().removeprefix("sha256:")
        return len(a) >= 12 and (b.startswith(a) or a.startswith(b) and len(b) >= 12)
    if kind == "tag":
        return seen == declared or seen.rsplit("/", 1)[-1] == declared
    return declared in seen  # a revision inside vLLM's root path or a parent id


def check_identity(spec: JudgeSpec, description: list[JSONDict]) -> str | None:
    """None when verified; a warning when the server shows nothing of that kind; raises
    ConfigError when it shows a different model."""
    if spec.identity is None:
        raise ValueError(f"judge {spec.model!r} declares no judge.identity to check")
    kind, declared = spec.identity
    seen = _values(about_model(description, spec.model), FIELDS[kind])
    if not seen:
        return (f"judge endpoint {spec.base_url} does not say which {kind} it serves: "
                f"{spec.model} is trusted to be {kind} {declared!r} unchecked")
    if any(matches(kind, declared, s) for s in seen):
        return None
    shown = ", ".join(sorted(set(seen))[:5])
    raise ConfigError(f"judge endpoint {spec.base_url} serves {kind} {shown}, not the pinned {kind} "
                      f"{declared!r} (judge.identity): point the rubric at the pinned model, or release a "
                      f"new rubric version pinned to the new one")


def verify_served_model(judge: Judge, spec: JudgeSpec) -> None:
    """Check a self-hosted judge's identity once; warn once per endpoint when it can't be."""
    if not spec.self_hosted or spec.identity is None or spec.base_url is None:  # a self-hosted one has a base_url
        return
    warning = check_identity(spec, describe_server(judge, spec.base_url))
    if warning and process_state.first_time(_WARNED, spec.base_url):
        log.warning(warning, extra={"judge_endpoint": spec.endpoint})
