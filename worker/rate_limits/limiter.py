"""The fleet-wide limiter: a worker thread that hits a limit sleeps until a slot frees.

Limits are per key ("judge:<provider>:<model>", "langfuse"). They adapt: a 429 (or an
Anthropic 529 "overloaded") halves the key's effective limit for the whole fleet and pauses
it for the server's Retry-After; every success adds a small step back toward the configured
limit (additive increase, multiplicative decrease, as TCP does). A wait longer than
``max_wait`` raises ``RateLimitWait`` so the job is delayed through dramatiq, never lost.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from worker.errors import TransientError
from worker.rate_limits.backend import RateLimitBackend

log = logging.getLogger("tracejudge.rate_limits")
LANGFUSE_KEY = "langfuse"
# The provider counts a request when it arrives, we when we admit it; a window slightly longer
# than the provider's absorbs the transit between the two (a ~1.6% lower ceiling at 60/min).
DEFAULT_SLACK_SECONDS = 1.0
# A woken thread rechecks at least this often (a pause may end or a limit rise meanwhile).
MAX_NAP_SECONDS = 5.0

_listeners: list[Callable[[str, float], None]] = []


def add_wait_listener(listener: Callable[[str, float], None]) -> None:
    """Call ``listener(key, seconds)`` after every rate-limit wait in this process (metrics)."""
    _listeners.append(listener)


class RateLimitWait(TransientError):
    """The wait for a rate-limit slot would be longer than the limiter's bound: try later."""


@dataclasses.dataclass(frozen=True)
class Limit:
    """Configured ceilings for one key; None means none configured (429s still create one)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self):
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


@dataclasses.dataclass
class Ticket:
    """One admitted call: settle its token reservation and report how it went."""

    key: str
    limit: Limit
    member: str
    tokens: int
    waited: float
    adaptive: bool


class RateLimiter:
    def __init__(self, backend: RateLimitBackend, *, max_wait: float = 300.0,
                 window: float = 60.0, slack: float = DEFAULT_SLACK_SECONDS,
                 decrease_factor: float = 0.5, decrease_cooldown: float = 5.0,
                 increase_step: float = 0.02, min_requests_per_minute: float = 10.0, sleep: Callable[[float], None] = time.sleep):
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        self.backend = backend
        self.max_wait = max_wait
        self.window = window + slack
        self.decrease_factor = decrease_factor
        self.decrease_cooldown = decrease_cooldown
        self.increase_step = increase_step
        # Halving stops here: one request drawing a 429 says little about the rate the service
        # allows (its Retry-After pause covers that case), so a limit of 1/min would be a guess.
        self.min_requests_per_minute = min_requests_per_minute
        self._sleep = sleep
        # This process's waits per key; the fleet's are in the backend (``snapshot``).
        self.local_waits: Counter = Counter()
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: Limit, *, tokens: int = 0) -> Ticket:
        """Block until ``key`` has a request slot (and ``tokens``) free, then take it."""
        member = uuid.uuid4().hex
        waited = 0.0
        while True:
            grant = self.backend.acquire(key, rpm=limit.requests_per_minute, tpm=limit.tokens_per_minute,
                                         tokens=tokens, member=member, window=self.window)
            if grant.admitted:
                if waited:
                    self._record_wait(key, waited)
                return Ticket(key, limit, member, tokens, waited, grant.adaptive)
            if waited + grant.wait > self.max_wait:
                if waited:
                    self._record_wait(key, waited)
                raise RateLimitWait(f"rate limit for {key}: next slot in {grant.wait:.0f}s after "
                                    f"waiting {waited:.0f}s", retry_after=max(grant.wait, 1.0))
            # Jitter spreads the threads that wait for the same slot.
            nap = min(grant.wait, MAX_NAP_SECONDS) + random.uniform(0.0, 0.05)
            self._sleep(nap)
            waited += nap

    def settle(self, ticket: Ticket, tokens: int) -> None:
        """The call's real token usage replaces the estimate reserved for it."""
        if ticket.tokens and tokens != ticket.tokens:
            self.backend.settle(ticket.key, ticket.member, max(0, int(tokens)))

    def throttled(self, ticket: Ticket, retry_after: float | None) -> None:
        """The service answered 429/529 to this call: lower the limit, pause the fleet."""
        log.warning("rate limited by the service", extra={"limit_key": ticket.key, "retry_after": retry_after})
        self.backend.throttled(ticket.key, rpm=ticket.limit.requests_per_minute,
                               tpm=ticket.limit.tokens_per_minute, retry_after=retry_after,
                               factor=self.decrease_factor, cooldown=self.decrease_cooldown,
                               window=self.window, floor=self.min_requests_per_minute)

    def succeeded(self, ticket: Ticket) -> None:
        """The call went through: a lowered limit climbs back a step."""
        if ticket.adaptive:
            self.backend.succeeded(ticket.key, rpm=ticket.limit.requests_per_minute,
                                   tpm=ticket.limit.tokens_per_minute, step=self.increase_step)

    def snapshot(self) -> dict[str, dict]:
        """Fleet-wide, per key: adaptive limits, lowest limit, 429s seen, pause, waits."""
        return self.backend.snapshot()

    @property
    def waits(self) -> dict[str, int]:
        """Fleet-wide count of waits per key (the backend's counters)."""
        return {key: entry["waits"] for key, entry in self.snapshot().items()}

    def _record_wait(self, key: str, seconds: float) -> None:
        with self._lock:
            self.local_waits[key] += 1
        self.backend.record_wait(key, seconds)
        for listener in list(_listeners):
            try:
                listener(key, seconds)
            except Exception:  # a metrics hook must never fail a judge call
                log.exception("rate-limit wait listener failed")
