"""An httpx transport that puts every request of a client behind one limiter key.

The langfuse SDK's ``LangfuseAPI`` takes an ``httpx_client``; a transport (not an event hook)
sees each attempt, including the SDK's own retries, and every response status before the SDK
turns it into an exception."""
from __future__ import annotations

import httpx

from worker.rate_limits.limiter import Limit, RateLimiter
from worker.retrying import THROTTLE_STATUS, retry_after_from_headers


class RateLimitedTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, limiter: RateLimiter, key: str, limit: Limit) -> None:
        self.inner = inner
        self.limiter = limiter
        self.key = key
        self.limit = limit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        ticket = self.limiter.acquire(self.key, self.limit)
        response = self.inner.handle_request(request)
        if response.status_code in THROTTLE_STATUS:
            self.limiter.throttled(ticket, retry_after_from_headers(response.headers))
        elif response.status_code < 500:
            self.limiter.succeeded(ticket)
        return response

    def close(self) -> None:
        self.inner.close()
