"""Score write-back: synchronous, with a deterministic id, so a retry is an upsert.

Servers differ in what POST /api/public/scores takes: the official spec (server 4.x) one
object answered 200, newer servers (what SDK 5 targets) an array answered 202/207. We send
arrays, the scores of concurrent jobs together (score_batches.py), and switch to one object
per request, once per process, when the server refuses the array.
A reply that is not the endpoint's own (no id back, no acceptance) is an error, never a
success: only an accepted write goes on to its read-back (worker/judging/confirm.py).
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError, Unscored
from worker.jobs import Subject
from worker.langfuse_io.client import raw_request
from worker.langfuse_io.score_batches import ALONE, LINGER_SECONDS, GroupCommit, PartlyRejected, WholeBatchRefused
from worker.retrying import call_once, call_with_retries

_NAMESPACE = uuid.UUID("6f1c0b52-2a55-4d0e-9a53-7d5f3c1e2b10")
_ENVIRONMENT = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


def score_id_for(trace_id: str, rubric_name: str, rubric_version: int) -> str:
    """One score id per (subject, rubric version). ``trace_id`` is a job's first argument: a
    trace id (the id is then what it always was), or an observation or session subject
    (worker/jobs.py): uuid5 over ``trace|observation|rubric|vN``, or ``session:<id>|rubric|vN``
    (the same id for every judgement of a session, so a re-judge is an upsert)."""
    subject = Subject.parse(trace_id)
    if subject.kind == "observation":
        key = f"{subject.trace_id}|{subject.observation_id}|{rubric_name}|v{rubric_version}"
    elif subject.kind == "session":
        key = f"session:{subject.session_id}|{rubric_name}|v{rubric_version}"
    else:
        key = f"{trace_id}|{rubric_name}|v{rubric_version}"
    return str(uuid.uuid5(_NAMESPACE, key))


def valid_environment(env: str | None) -> str | None:
    return env if env and _ENVIRONMENT.match(env) else None


class ScoreWriter:
    def __init__(self, api: LangfuseAPI, *, linger: float = LINGER_SECONDS,
                 saturated: Callable[[], bool] = lambda: False):
        self.api = api
        self.shape = "array"  # or "object" (one score per request), learnt from the server
        # One attempt per batch: a batch that failed transiently is retried by each of its jobs
        # in its own thread (the wait honouring Retry-After), joining whichever batch forms
        # then. Retried inside the send, one 429 held every other score of the process for
        # its Retry-After: under 10% Langfuse 429s that halved the fleet's throughput.
        self.batches = GroupCommit(lambda bodies: call_once(lambda: self._post_array(bodies)), linger=linger,
                                   saturated=saturated)

    def write(self, body: dict) -> None:
        """Returns once the server accepted ``body``; raises Unscored when it rejects it."""
        if self.shape == "array":
            try:
                if call_with_retries(lambda: self.batches.submit(body)) is not ALONE:
                    return
            except PartlyRejected as exc:
                raise Unscored("score_rejected", exc.detail) from None
        call_with_retries(lambda: self._write_alone(body))

    def _write_alone(self, body: dict) -> None:
        first, second = ("array", "object") if self.shape == "array" else ("object", "array")
        try:
            self._send(first, body)
        except (ApiError, WholeBatchRefused) as exc:
            if isinstance(exc, ApiError) and exc.status_code not in _SHAPE_REFUSED:
                raise
            try:
                self._send(second, body)
            except (ApiError, WholeBatchRefused) as again:
                if isinstance(again, ApiError) and again.status_code not in (400, 422):
                    raise
                raise Unscored("score_rejected", _why(exc) + " / " + _why(again)) from None
            self.shape = second
        except PartlyRejected as exc:
            raise Unscored("score_rejected", exc.detail) from None

    def _send(self, shape: str, body: dict) -> None:
        if shape == "array":
            self._post_array([body])
            return
        reply = raw_request(self.api, "POST", "api/public/scores", json=body)
        if not isinstance(reply, dict) or reply.get("id") != body["id"]:
            raise _not_a_write(reply)

    def _post_array(self, bodies: list[dict]) -> None:
        try:
            reply = raw_request(self.api, "POST", "api/public/scores", json=bodies)
        except ApiError as exc:
            if exc.status_code in _SHAPE_REFUSED:
                raise WholeBatchRefused(_brief(exc.body)) from None
            raise
        if not isinstance(reply, dict):
            raise _not_a_write(reply)
        if reply.get("rejected"):
            errors = reply.get("errors") or []
            raise PartlyRejected("; ".join(str(e.get("message", e)) for e in errors)[:300])
        if reply.get("message") != "Accepted" and reply.get("accepted") != len(bodies):
            raise _not_a_write(reply)


_SHAPE_REFUSED = (400, 405, 415, 422)


def _not_a_write(reply) -> ConfigError:
    return ConfigError("POST /api/public/scores answered without accepting the score "
                       f"({_brief(reply)[:120]}): is LANGFUSE_BASE_URL the Langfuse API itself?")


def _why(exc: Exception) -> str:
    return _brief(exc.body if isinstance(exc, ApiError) else str(exc))


def _brief(body) -> str:
    text = body if isinstance(body, str) else str(body)
    return text[:300]
