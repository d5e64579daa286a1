"""Enqueue a trace once per rubric version, even across overlapping windows and two samplers.

A key is claimed as ``pending`` before the enqueue and marked ``queued`` after it. A sampler
that dies between the two leaves ``pending``: the next pass that sees the trace enqueues it
again (a duplicate job is harmless: the score id is deterministic and the outcome counted once).
"""
from __future__ import annotations

import time

import redis

_PREFIX = "tracejudge:enqueued:"
TTL_SECONDS = 45 * 24 * 3600
STALE_PENDING_SECONDS = 120


class EnqueueOnce:
    def __init__(self, client: redis.Redis):
        self.client = client

    def claim(self, rubric_key: str, trace_id: str) -> bool:
        key = f"{_PREFIX}{rubric_key}:{trace_id}"
        now = time.time()
        if self.client.set(key, f"pending:{now}", nx=True, ex=TTL_SECONDS):
            return True
        value = (self.client.get(key) or b"").decode()
        if value.startswith("pending:") and now - float(value.split(":", 1)[1]) > STALE_PENDING_SECONDS:
            self.client.set(key, f"pending:{now}", ex=TTL_SECONDS)
            return True
        return False

    def confirm(self, rubric_key: str, trace_id: str) -> None:
        self.client.set(f"{_PREFIX}{rubric_key}:{trace_id}", "queued", ex=TTL_SECONDS)

    def release(self, rubric_key: str, trace_id: str) -> None:
        self.client.delete(f"{_PREFIX}{rubric_key}:{trace_id}")
