"""Score write-back: synchronous, with a deterministic id, so a retry is an upsert.

Servers differ in what POST /api/public/scores takes: the official spec (server 4.x) one
object answered 200, newer servers (what SDK 5 targets) an array answered 202/207. We send
the spec's object first and switch, once per process, when the server rejects that shape.
A reply that is not the endpoint's own (no id back, no acceptance) is an error, never a
success: only an accepted write goes on to its read-back (worker/judging/confirm.py).
"""
from __future__ import annotations

import re
import uuid

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError, Unscored
from worker.langfuse_io.client import raw_request
from worker.retrying import call_with_retries

_NAMESPACE = uuid.UUID("6f1c0b52-2a55-4d0e-9a53-7d5f3c1e2b10")
_ENVIRONMENT = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


def score_id_for(trace_id: str, rubric_name: str, rubric_version: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{trace_id}|{rubric_name}|v{rubric_version}"))


def valid_environment(env: str | None) -> str | None:
    return env if env and _ENVIRONMENT.match(env) else None


class ScoreWriter:
    def __init__(self, api: LangfuseAPI):
        self.api = api
        self.shape = "object"  # or "array", learnt from the server

    def write(self, body: dict) -> None:
        call_with_retries(lambda: self._write_once(body))

    def _write_once(self, body: dict) -> None:
        try:
            self._send(self.shape, body)
        except ApiError as exc:
            if exc.status_code not in (400, 405, 415, 422):
                raise
            other = "array" if self.shape == "object" else "object"
            try:
                self._send(other, body)
            except ApiError as second:
                if second.status_code in (400, 422):
                    raise Unscored("score_rejected", _brief(exc.body) + " / " + _brief(second.body)) from None
                raise
            self.shape = other

    def _send(self, shape: str, body: dict) -> None:
        reply = raw_request(self.api, "POST", "api/public/scores", json=body if shape == "object" else [body])
        if not isinstance(reply, dict):
            raise _not_a_write(reply)
        if shape == "object":
            if reply.get("id") != body["id"]:
                raise _not_a_write(reply)
            return
        if reply.get("rejected"):
            errors = reply.get("errors") or []
            raise Unscored("score_rejected", "; ".join(str(e.get("message", e)) for e in errors)[:300])
        if reply.get("message") != "Accepted" and reply.get("accepted") != 1:
            raise _not_a_write(reply)


def _not_a_write(reply) -> ConfigError:
    return ConfigError("POST /api/public/scores answered without accepting the score "
                       f"({_brief(reply)[:120]}): is LANGFUSE_BASE_URL the Langfuse API itself?")


def _brief(body) -> str:
    text = body if isinstance(body, str) else str(body)
    return text[:300]
