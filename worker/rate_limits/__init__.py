"""Fleet-wide rate limits shared through Redis (requests/min and tokens/min per key).

A ``RateLimiter`` (limiter.py) blocks the calling worker thread until a slot frees, adapts
each key's limit down on 429/529 and back up on success, and counts its waits. The state
lives in a ``RateLimitBackend`` (backend.py); ``backends/redis.py`` is the shared one. Judge
calls go through ``RateLimitedJudge`` (judge.py), Langfuse calls through
``RateLimitedTransport`` (http.py); ``status.py`` describes the state for ``tracejudge status``.
"""
from __future__ import annotations

from worker.rate_limits.backend import Grant, KeyState, RateLimitBackend
from worker.rate_limits.backends.redis import RedisBackend
from worker.rate_limits.http import RateLimitedTransport
from worker.rate_limits.judge import RateLimitedJudge, judge_limit_key
from worker.rate_limits.limiter import (
    LANGFUSE_KEY,
    Limit,
    RateLimiter,
    RateLimitWait,
    Ticket,
    add_wait_listener,
)

__all__ = [
    "Grant", "KeyState", "LANGFUSE_KEY", "Limit", "RateLimitBackend", "RateLimitWait", "RateLimitedJudge",
    "RateLimitedTransport", "RateLimiter", "RedisBackend", "Ticket", "add_wait_listener",
    "judge_limit_key",
]
