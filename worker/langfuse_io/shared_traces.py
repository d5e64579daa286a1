"""One Langfuse read per trace, however many rubrics judge it.

The sampler enqueues one job per (trace, rubric version) and tells each job which rubric
versions were selected with it (``siblings``). The first of those jobs to start reads the trace
once, for the observation names of all of them, and leaves the read in Redis; the others take it
from there. The read is kept compressed, for at most ``KEEP_SECONDS`` and only until the last
sibling has taken it, so the judged content does not linger in Redis (it is untrusted and may
hold PII: redaction happens later, per rubric). Everything else stays per rubric: its own score
id, outcome and retry budget; a job that is retried later, or that finds no usable read, reads
the trace itself.

While one job reads, its siblings wait for the read (``WAIT_SECONDS`` at most) rather than
reading too; a job whose reader died reads itself once the claim lapses.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Iterable

import redis

from worker.langfuse_io.observations import ServerGeneration
from worker.langfuse_io.traces import Trace, TraceReader

log = logging.getLogger("tracejudge.shared_traces")
PREFIX = "tracejudge:trace_read:"  # + trace id: the read; + "claim:" + trace id: who reads it
KEEP_SECONDS = 120
CLAIM_SECONDS = 30
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.02

# KEYS: the read. Takes it for one sibling, and deletes it once the last sibling has it.
_TAKE = """
local found = redis.call('HMGET', KEYS[1], 'trace', 'names')
if not found[1] then return nil end
if redis.call('HINCRBY', KEYS[1], 'left', -1) <= 0 then redis.call('DEL', KEYS[1]) end
return found
"""


class SharedTraces:
    """``fetch`` as TraceReader has it, shared by the jobs of one trace through Redis."""

    def __init__(self, reader: TraceReader, client: redis.Redis, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.reader, self.client = reader, client
        self._take = client.register_script(_TAKE)
        self._clock, self._sleep = clock, sleep

    @property
    def generation(self) -> ServerGeneration:
        return self.reader.generation

    def fetch(self, trace_id: str, names: Iterable[str], siblings_names: Iterable[Iterable[str]] = ()) -> Trace:
        """The trace read for ``names``; when other jobs judge it too (``siblings_names``: the
        observation names each of them reads), read once for all of them and share the read."""
        wanted = tuple(dict.fromkeys(names))
        others = [tuple(n) for n in siblings_names]
        if not others:
            return self.reader.fetch(trace_id, wanted)
        union = tuple(dict.fromkeys([*wanted, *(n for group in others for n in group)]))
        claim, token = PREFIX + "claim:" + trace_id, uuid.uuid4().hex
        deadline = self._clock() + WAIT_SECONDS
        while True:
            shared = self._taken(trace_id, wanted)
            if shared is not None:
                return shared
            if self.client.set(claim, token, nx=True, ex=CLAIM_SECONDS):
                shared = self._taken(trace_id, wanted)  # shared between our look and our claim
                if shared is None:
                    break
                self._release(claim, token)
                return shared
            if self._clock() > deadline:  # the reader is slow or gone: read for ourselves
                return self.reader.fetch(trace_id, wanted)
            self._sleep(POLL_SECONDS)
        try:
            trace = self.reader.fetch(trace_id, union)
            self._share(trace, union, takers=len(others))
        finally:
            self._release(claim, token)
        return trace

    def _taken(self, trace_id: str, wanted: tuple[str, ...]) -> Trace | None:
        found = self._take(keys=[PREFIX + trace_id])
        if not found:
            return None
        payload, names = found
        if not set(wanted) <= set(json.loads(names or b"[]")):
            return None  # read for other names (a sibling set that changed): read for ourselves
        return trace_from_json(zlib.decompress(payload))

    def _share(self, trace: Trace, names: tuple[str, ...], *, takers: int) -> None:
        key = PREFIX + trace.id
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping={"trace": zlib.compress(trace_to_json(trace), 1),
                                    "names": json.dumps(list(names)), "left": takers})
            pipe.expire(key, KEEP_SECONDS)
            pipe.execute()
        except redis.RedisError:  # sharing is an optimisation: the siblings read for themselves
            log.warning("could not share a trace read; its other rubrics' jobs read it again",
                        extra={"trace_id": trace.id})

    def _release(self, claim: str, token: str) -> None:
        try:
            if self.client.get(claim) == token.encode():
                self.client.delete(claim)
        except redis.RedisError:
            pass  # the claim lapses by itself


def trace_to_json(trace: Trace) -> bytes:
    data = dataclasses.asdict(trace)
    data["timestamp"] = trace.timestamp.isoformat() if trace.timestamp else None
    data["models"] = list(trace.models) if trace.models is not None else None
    return json.dumps(data, ensure_ascii=False, default=str).encode()


def trace_from_json(raw: bytes) -> Trace:
    """``trace_to_json``'s form back; fields another release added are left out (a rolling deploy)."""
    fields = {f.name for f in dataclasses.fields(Trace)}
    data = {k: v for k, v in json.loads(raw).items() if k in fields}
    data["timestamp"] = dt.datetime.fromisoformat(data["timestamp"]) if data["timestamp"] else None
    data["models"] = tuple(data["models"]) if data["models"] is not None else None
    return Trace(**data)
