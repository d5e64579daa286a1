"""Score write-back: synchronous, with a deterministic id, so a retry is an upsert.

Servers differ in what POST /api/public/scores takes: the official spec (server 4.x) one
object answered 200, newer servers (what SDK 5 targets) an array answered 202/207. We send
arrays, the scores of concurrent jobs together (score_batches.py), and switch to one object
per request when the server refuses the array (the real 4.16: 400 "expected object, received
array").

The answer is learnt once per deployment, not per process (``ShapeMemory``): it is kept in
Redis under ``SHAPE_KEY`` + the Langfuse base URL, read before a process's first write and every
``SHAPE_REFRESH_SECONDS`` after, so a new worker process starts with it (before, the first array
of every process met the 4.16's 400: 9 refused batches in one run). A batch refused for its
shape teaches its sender at once, so its jobs then send objects, not one refused array each. The answer is stored
with a TTL (``SHAPE_TTL_SECONDS``, a day) that the writes it serves do not renew: once it has
expired, one process of the fleet (a ``SET NX`` probe lock) sends its next scores as an array,
and what works is stored again, so a server upgraded to take arrays is noticed within a day. A
wrong stored shape costs one refused request (either shape's refusal is followed by the other
one), and Redis trouble never fails a write: the memory is skipped.

A reply that is not the endpoint's own (no id back, no acceptance) is an error, never a
success: only an accepted write goes on to its read-back (worker/judging/confirm.py).
"""
from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Literal, TypeAlias

import redis
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from worker.errors import ConfigError, Unscored
from worker.jobs import Subject
from worker.json_types import JSONDict, JSONValue
from worker.langfuse_io.client import raw_request
from worker.langfuse_io.score_batches import ALONE, LINGER_SECONDS, GroupCommit, PartlyRejected, WholeBatchRefused
from worker.retrying import call_once, call_with_retries

log = logging.getLogger("tracejudge.scores")
SHAPE_KEY = "tracejudge:langfuse:scores_shape:"  # + the Langfuse base URL: "array" or "object"
SHAPE_TTL_SECONDS = 24 * 3600  # a day: a server upgraded to take arrays is re-learnt within it
SHAPE_REFRESH_SECONDS = 60.0  # how often a process reads the fleet's answer again
SHAPE_PROBE_SECONDS = 300  # one process re-probes arrays once the stored answer expired
Shape: TypeAlias = Literal["array", "object"]  # a batch of scores, or one score per request
SHAPES: tuple[Shape, ...] = ("array", "object")
_NAMESPACE = uuid.UUID("6f1c0b52-2a55-4d0e-9a53-7d5f3c1e2b10")
_ENVIRONMENT = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


def score_id_for(subject: Subject | str, rubric_name: str, rubric_version: int) -> str:
    """One score id per (subject, rubric version). ``subject``: the job's (a str is a job's first
    argument, worker/jobs.py): a trace (the id is then what it always was, uuid5 over
    ``trace|rubric|vN``), an observation (``trace|observation|rubric|vN``) or a session
    (``session:<id>|rubric|vN``: the same id for every judgement of a session, so a re-judge is
    an upsert)."""
    judged = Subject.parse(subject)
    if judged.kind == "observation":
        key = f"{judged.trace_id}|{judged.observation_id}|{rubric_name}|v{rubric_version}"
    elif judged.kind == "session":
        key = f"session:{judged.session_id}|{rubric_name}|v{rubric_version}"
    else:
        key = f"{judged.trace_id}|{rubric_name}|v{rubric_version}"
    return str(uuid.uuid5(_NAMESPACE, key))


def valid_environment(env: str | None) -> str | None:
    return env if env and _ENVIRONMENT.match(env) else None


class ShapeMemory:
    """The shape ``POST /scores`` takes on this deployment, shared by the fleet through Redis
    (``redis_client``; None: this process only). ``shape`` is the process's current belief."""

    def __init__(self, redis_client: redis.Redis | None, base_url: str = "", *,
                 ttl: int | None = None, refresh: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.redis, self.key = redis_client, SHAPE_KEY + base_url.rstrip("/")
        self.ttl = SHAPE_TTL_SECONDS if ttl is None else ttl
        self.refresh_every = SHAPE_REFRESH_SECONDS if refresh is None else refresh
        self.clock = clock
        self.shape: Shape = "array"
        self._stored = False  # whether Redis holds ``shape`` (as far as the last read or write knows)
        self._next_read = float("-inf")  # read at the first write (no Redis call at construction)
        self._lock = threading.Lock()

    def read(self) -> Shape:
        """The fleet's answer, read again when ``refresh_every`` has passed (else the belief)."""
        if self.redis is None or self.clock() < self._next_read:
            return self.shape
        # The first read is waited for by every thread (none sends before the fleet's answer is
        # known); a later one is made by one thread while the others go on with the belief.
        if not self._lock.acquire(blocking=self._next_read == float("-inf")):
            return self.shape
        if self.clock() < self._next_read:  # another thread read it meanwhile
            self._lock.release()
            return self.shape
        try:
            raw = self.redis.get(self.key)
            stored = raw.decode() if isinstance(raw, bytes) else raw
            if stored in SHAPES:
                self.shape, self._stored = stored, True
            elif self.shape == "object" and self.redis.set(self.key + ":probe", "1", nx=True,
                                                             ex=SHAPE_PROBE_SECONDS):
                self.shape, self._stored = "array", False  # expired: this process asks arrays again
            else:
                self._stored = False
        except redis.RedisError as exc:
            log.warning("could not read the learnt score shape from Redis", extra={"error": str(exc)})
        finally:
            self._next_read = self.clock() + self.refresh_every  # after the answer: waiters see it
            self._lock.release()
        return self.shape

    def learnt(self, shape: Shape) -> None:
        """``shape`` was just accepted (or the other one refused): the fleet's answer from now on."""
        changed = shape != self.shape
        self.shape = shape
        if self.redis is None or (self._stored and not changed):
            return
        try:
            self.redis.set(self.key, shape, ex=self.ttl)
            self._stored = True
        except redis.RedisError as exc:
            log.warning("could not store the learnt score shape in Redis", extra={"error": str(exc)})


class ScoreWriter:
    def __init__(self, api: LangfuseAPI, *, redis_client: redis.Redis | None = None,
                 linger: float = LINGER_SECONDS, saturated: Callable[[], bool] = lambda: False):
        self.api = api
        # "array" or "object" (one score per request), learnt from the server once per deployment
        self.shapes = ShapeMemory(redis_client, _base_url(api))
        # One attempt per batch: a batch that failed transiently is retried by each of its jobs
        # in its own thread (the wait honouring Retry-After), joining whichever batch forms
        # then. Retried inside the send, one 429 held every other score of the process for
        # its Retry-After: under 10% Langfuse 429s that halved the fleet's throughput.
        self.batches = GroupCommit(lambda bodies: call_once(lambda: self._post_array(bodies)), linger=linger,
                                   saturated=saturated)

    @property
    def shape(self) -> Shape:
        return self.shapes.read()

    def write(self, body: JSONDict) -> None:
        """Returns once the server accepted ``body``; raises Unscored when it rejects it."""
        if self.shapes.read() == "array":
            try:
                if call_with_retries(lambda: self.batches.submit(body)) is not ALONE:
                    return
            except PartlyRejected as exc:
                raise Unscored("score_rejected", exc.detail) from None
        call_with_retries(lambda: self._write_alone(body))

    def _write_alone(self, body: JSONDict) -> None:
        first: Shape
        second: Shape
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
            self.shapes.learnt(second)
        except PartlyRejected as exc:
            raise Unscored("score_rejected", exc.detail) from None

    def _send(self, shape: Shape, body: JSONDict) -> None:
        if shape == "array":
            self._post_array([body])
            return
        reply = raw_request(self.api, "POST", "api/public/scores", json=body)
        if not isinstance(reply, dict) or reply.get("id") != body["id"]:
            raise _not_a_write(reply)

    def _post_array(self, bodies: list[JSONDict]) -> None:
        try:
            reply = raw_request(self.api, "POST", "api/public/scores", json=bodies)
        except ApiError as exc:
            if exc.status_code in _SHAPE_REFUSED:
                if _refuses_arrays(exc.body):
                    # learnt here, by the batch's sender, before its jobs write alone: each then
                    # sends an object at once, not an array of one the server refuses again
                    self.shapes.learnt("object")
                raise WholeBatchRefused(_brief(exc.body)) from None
            raise
        if not isinstance(reply, dict):
            raise _not_a_write(reply)
        if reply.get("rejected"):
            errors = reply.get("errors") or []
            raise PartlyRejected("; ".join(str(e.get("message", e)) for e in errors)[:300])
        if reply.get("message") != "Accepted" and reply.get("accepted") != len(bodies):
            raise _not_a_write(reply)
        self.shapes.learnt("array")  # stored only when Redis did not hold it (a probe, a new deployment)


_SHAPE_REFUSED = (400, 405, 415, 422)


def _refuses_arrays(body: object) -> bool:
    """A refusal of the array as such, not of one score in it. The real 4.16 answers 400
    ``{"message": "Invalid request data", "error": [{"expected": "object", "path": [], ...,
    "message": "Invalid input: expected object, received array"}]}``: an issue at the body's
    root; a server without zod's issue list says it in words."""
    issues = body.get("error") if isinstance(body, dict) else None
    if isinstance(issues, list) and issues and all(isinstance(i, dict) for i in issues):
        return any(i.get("path") == [] and i.get("expected") == "object" for i in issues)
    text = _brief(body).lower()
    return "expected object" in text and "received array" in text


def _base_url(api: LangfuseAPI) -> str:
    try:
        return api._client_wrapper.get_base_url()
    except AttributeError:  # a stand-in without the SDK's client (tests)
        return ""


def _not_a_write(reply: JSONValue) -> ConfigError:
    return ConfigError("POST /api/public/scores answered without accepting the score "
                       f"({_brief(reply)[:120]}): is LANGFUSE_BASE_URL the Langfuse API itself?")


def _why(exc: Exception) -> str:
    return _brief(exc.body if isinstance(exc, ApiError) else str(exc))


def _brief(body: object) -> str:
    text = body if isinstance(body, str) else str(body)
    return text[:300]
