"""Redis connections that ride out a short Redis outage (a restart, a failover) inside the call.

Without this, a job that touches Redis while it restarts fails, and dramatiq's retry of that
job needs Redis too. Every Redis client of tracejudge (broker, state, counters) comes from here.
"""
from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

# About 45 s of retrying (50 ms doubling to a 2 s cap, 25 times) before a call gives up.
_RETRIES = 25


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), _RETRIES,
                 (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError))


def connect(url: str) -> redis.Redis:
    """A client for ``url`` whose commands retry on connection errors for about 45 s."""
    return redis.Redis(connection_pool=connection_pool(url))


def connection_pool(url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(url, retry=_retry(),
                                         retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                                         health_check_interval=30)
