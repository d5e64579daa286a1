"""One Redis connection policy for every process: commands ride out a Redis outage (a restart,
a managed failover, a stop-start) of up to ``OUTAGE_SECONDS`` inside the call.

Without this, a job that touches Redis while it restarts fails, and dramatiq's retry of that
job needs Redis too; a scheduler whose lease renewal fails exits. The broker, the worker's
state (outcomes, limits, budget), the scheduler and the CLI all connect through here.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar, cast
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

# A command keeps retrying on connection errors for this long before it raises: long enough
# for a restart or failover (typically 5–30 s) with margin, short enough that a Redis that is
# really gone surfaces as an error an operator sees.
OUTAGE_SECONDS = 90.0
MAX_CONNECTIONS = 2048
_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
T = TypeVar("T")


class OutageRetry(Retry):
    """redis-py's Retry bounded by elapsed time, not by a count: with a 5 s connect timeout a
    count of attempts says little about how long an outage is ridden out."""

    def __init__(self, seconds: float = OUTAGE_SECONDS):
        super().__init__(ExponentialWithJitterBackoff(base=0.05, cap=2.0), -1, _ERRORS)
        self.seconds = seconds

    def call_with_retry(self, do: Callable[[], T],
                        fail: Callable[[Exception], object] | Callable[[Exception, int], object],
                        is_retryable: Callable[[Exception], bool] | None = None,
                        with_failure_count: bool = False) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]  # redis-py's AbstractBackoff.reset is unannotated
        deadline = time.monotonic() + self.seconds
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                # redis-py's contract: ``with_failure_count`` says which of the two shapes ``fail`` has
                if with_failure_count:
                    cast(Callable[[Exception, int], object], fail)(error, failures)
                else:
                    cast(Callable[[Exception], object], fail)(error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise error
                time.sleep(min(left, max(0.01, self._backoff.compute(failures))))


def connect(url: str, seconds: float = OUTAGE_SECONDS) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) whose commands ride out
    up to ``seconds`` of Redis outage."""
    return redis.Redis(connection_pool=connection_pool(url, seconds))


def connection_pool(url: str, seconds: float = OUTAGE_SECONDS) -> redis.ConnectionPool:
    # Timeouts: a Redis host that vanishes without closing the socket must not hang 32 threads
    # until the kernel gives up; nothing here blocks on Redis by design (no blocking pops).
    options: dict[str, bool] = {"socket_keepalive": True} if urlparse(url).scheme != "unix" else {}  # TCP only
    # redis-py 8 caps a pool at 100 connections by default and then *raises*: a worker process
    # with more threads than that (``--threads 128``) would fail jobs. One per thread is the need.
    return redis.ConnectionPool.from_url(url, retry=OutageRetry(seconds), max_connections=MAX_CONNECTIONS,
                                         retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                                         health_check_interval=30, socket_timeout=10,
                                         socket_connect_timeout=5, **options)


def as_text(reply: bytes | str) -> str:
    """A Redis reply as text. Our clients leave replies as bytes (no ``decode_responses``), which
    redis-py types as ``bytes | str`` since a client may decode them."""
    return reply.decode() if isinstance(reply, bytes) else reply
