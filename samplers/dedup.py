"""Enqueue a trace once per rubric version, even across overlapping windows and two samplers.

A key is claimed as ``pending`` before the enqueue and marked ``queued`` after it. A sampler
that dies between the two leaves ``pending``: the next pass that sees the trace enqueues it
again (a duplicate job is harmless: the score id is deterministic and the outcome counted once).
"""
from __future__ import annotations

import time

import redis

from worker.jobs import Subject
from worker.redis_client import as_text

_PREFIX = "tracejudge:enqueued:"
TTL_SECONDS = 45 * 24 * 3600
STALE_PENDING_SECONDS = 120


class EnqueueOnce:
    """Keyed by rubric version and the job's subject (its job argument: a trace id for a trace)."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def claim(self, rubric_key: str, subject: Subject) -> bool:
        key = _key(rubric_key, subject)
        now = time.time()
        if self.client.set(key, f"pending:{now}", nx=True, ex=TTL_SECONDS):
            return True
        value = as_text(self.client.get(key) or b"")
        if value.startswith("pending:") and now - float(value.split(":", 1)[1]) > STALE_PENDING_SECONDS:
            self.client.set(key, f"pending:{now}", ex=TTL_SECONDS)
            return True
        return False

    def confirm(self, rubric_key: str, subject: Subject) -> None:
        self.client.set(_key(rubric_key, subject), "queued", ex=TTL_SECONDS)

    def release(self, rubric_key: str, subject: Subject) -> None:
        self.client.delete(_key(rubric_key, subject))


def _key(rubric_key: str, subject: Subject) -> str:
    return f"{_PREFIX}{rubric_key}:{subject}"
