"""Redis connections that ride out a short Redis outage (a restart, a failover) inside the call.

Without this, a job that touches Redis while it restarts fails, and dramatiq's retry of that
job needs Redis too. The broker and the worker's state (outcomes, limits, budget) connect
through here; one-off CLI commands connect plainly.
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
    # Timeouts: a Redis host that vanishes without closing the socket must not hang 32 threads
    # until the kernel gives up; nothing here blocks on Redis by design (no blocking pops).
    return redis.ConnectionPool.from_url(url, retry=_retry(),
                                         retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                                         health_check_interval=30, socket_timeout=10,
                                         socket_connect_timeout=5, socket_keepalive=True)
