"""The fleet-wide limiter: a worker thread that hits a limit sleeps until its slot.

Limits are per key (the key RateLimitedJudge passes, "langfuse"). Calls are paced, evenly with
a small burst, at the configured limit (inside a strict sliding window) or at a pace learned
from the service's refusals, whichever is lower. The pace is found and held like this:

- A 429 (or an Anthropic 529 "overloaded") is evidence; after ``decrease_cooldown`` seconds of
  it the pace drops to ``decrease_factor`` of the rate the service actually admitted over that
  span (not of the configured limit or the current pace), once, for the whole fleet.
- A few seconds later the decrease is checked: if, for two decreases in a row, refusals did
  not become rarer and the admitted rate fell along with ours, the provider admits a share of
  whatever we send: the refusals are not caused by our rate (random 429s, an overload). (One
  such decrease is not enough: the first one's admitted rate may include the provider's full
  bucket at the start, so it can leave the pace above the limit.) Their share is learned as
  background, the learned pace is dropped, and from then on only refusals clearly above that
  share lower the pace (decreases then add the background share back).
- The pace grows back along TCP CUBIC's curve once a call has succeeded: concave up to the rate
  that drew the refusal (reached ``recovery_seconds`` after the decrease), so it holds just under
  the provider's limit most of the time, then convex beyond it (doubled after another
  ``recovery_seconds``), so a lifted limit is reached within about a minute.
- Retry-After pauses the key (never another key) fleet-wide only when most of its recent
  answers are refusals; an isolated refusal delays just the call that drew it (its retry
  honours the header).

A wait longer than ``max_wait`` raises ``RateLimitWait`` so the job is delayed through dramatiq,
never lost.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator

from worker import process_state
from worker.errors import TransientError
from worker.rate_limits.backend import KeyState, RateLimitBackend

log = logging.getLogger("tracejudge.rate_limits")


@dataclasses.dataclass(frozen=True)
class _RequestIds:
    """A request's id in the limiter's sets: unique across the fleet (a random per-process
    prefix, drawn again in a forked child, and a counter) without a uuid4, a system call, per call."""

    prefix: str = dataclasses.field(default_factory=lambda: os.urandom(8).hex())
    sequence: Iterator[int] = dataclasses.field(default_factory=itertools.count)

    def next(self) -> str:
        return f"{self.prefix}:{next(self.sequence)}"


_REQUEST_IDS: process_state.Slot[_RequestIds] = process_state.slot("rate_limit_ids", _RequestIds)


def _new_process() -> None:
    _REQUEST_IDS.value = _RequestIds()  # no lock: one held by another thread at the fork stays held in the child


os.register_at_fork(after_in_child=_new_process)
LANGFUSE_KEY = "langfuse"
# The provider counts a request when it arrives, we when we admit it; a window slightly longer
# than the provider's absorbs the transit between the two (a ~1.6% lower ceiling at 60/min).
DEFAULT_SLACK_SECONDS = 1.0
# A woken thread rechecks at least this often (a pause may end or a limit rise meanwhile).
MAX_NAP_SECONDS = 5.0
# Send slots are reserved at most this far ahead, so a lowered pace takes effect within it.
RESERVE_AHEAD_SECONDS = 2.0
# A key is "learning" this long after its last refusal: its successes are reported meanwhile.
LEARNING_SECONDS = 120.0

_LISTENERS: process_state.Slot[list[Callable[[str, float], None]]] = process_state.slot("rate_limit_listeners", list)


def add_wait_listener(listener: Callable[[str, float], None]) -> None:
    """Call ``listener(key, seconds)`` after every rate-limit wait in this process (metrics)."""
    with _LISTENERS.lock:
        _LISTENERS.value.append(listener)


class RateLimitWait(TransientError):
    """The wait for a rate-limit slot would be longer than the limiter's bound: try later."""


@dataclasses.dataclass(frozen=True)
class Limit:
    """Configured ceilings for one key; None means none configured (429s still create one)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
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
    sent_at: float = dataclasses.field(default_factory=time.monotonic)


class RateLimiter:
    def __init__(self, backend: RateLimitBackend, *, max_wait: float = 300.0,
                 window: float = 60.0, slack: float = DEFAULT_SLACK_SECONDS,
                 decrease_factor: float = 0.95, decrease_cooldown: float = 1.0,
                 recovery_seconds: float = 15.0, min_requests_per_minute: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        if recovery_seconds <= 0:
            raise ValueError("recovery_seconds must be positive")
        self.backend = backend
        self.max_wait = max_wait
        self.window = window + slack
        self.decrease_factor = decrease_factor
        self.decrease_cooldown = decrease_cooldown
        self.recovery_seconds = recovery_seconds
        # The learned pace stops here: a service that admitted nothing at all over the evidence
        # span says little about the rate it allows (its Retry-After pause covers that case).
        self.min_requests_per_minute = min_requests_per_minute
        self._sleep = sleep
        # This process's waits per key; the fleet's are in the backend (``snapshot``).
        self.local_waits: Counter[str] = Counter()
        self._learning: dict[str, float] = {}  # key -> monotonic time it stops learning (this process)
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: Limit, *, tokens: int = 0) -> Ticket:
        """Block until ``key`` has a send slot (and ``tokens``) free, then take it."""
        member = _REQUEST_IDS.value.next()
        waited = 0.0
        horizon = min(self.max_wait, RESERVE_AHEAD_SECONDS)
        while True:
            grant = self.backend.acquire(key, rpm=limit.requests_per_minute, tpm=limit.tokens_per_minute,
                                         tokens=tokens, member=member, window=self.window, horizon=horizon,
                                         recovery=self.recovery_seconds)
            if grant.adaptive:
                self._mark_learning(key)
            if grant.admitted:
                if grant.wait > 0:
                    self._sleep(grant.wait)
                    waited += grant.wait
                if waited:
                    self._record_wait(key, waited)
                return Ticket(key, limit, member, tokens, waited, grant.adaptive)
            if waited + grant.wait > self.max_wait:
                if waited:
                    self._record_wait(key, waited)
                raise RateLimitWait(f"rate limit for {key}: next slot in {grant.wait:.0f}s after "
                                    f"waiting {waited:.0f}s", retry_after=max(grant.wait, 1.0))
            # Jitter spreads the threads that wait for the same slot.
            # A slot further than the horizon can be reserved once it is within it.
            ahead = grant.wait - horizon if grant.wait > horizon else grant.wait
            nap = min(max(ahead, 0.01), MAX_NAP_SECONDS) + random.uniform(0.0, 0.05)
            self._sleep(nap)
            waited += nap

    def settle(self, ticket: Ticket, tokens: int) -> None:
        """The call's real token usage replaces the estimate reserved for it."""
        if ticket.tokens and tokens != ticket.tokens:
            self.backend.settle(ticket.key, ticket.member, max(0, int(tokens)))

    def throttled(self, ticket: Ticket, retry_after: float | None) -> None:
        """The service answered 429/529 to this call: evidence about the key's pace."""
        self._mark_learning(ticket.key)
        change = self.backend.throttled(
            ticket.key, rpm=ticket.limit.requests_per_minute, tpm=ticket.limit.tokens_per_minute,
            retry_after=retry_after, window=self.window, factor=self.decrease_factor,
            evidence=self.decrease_cooldown, recovery=self.recovery_seconds,
            floor=self.min_requests_per_minute, latency=time.monotonic() - ticket.sent_at)
        if change:
            log.warning("rate limited by the service" if change == 1 else "refusals are background, pace restored",
                        extra={"limit_key": ticket.key, "retry_after": retry_after})

    def succeeded(self, ticket: Ticket) -> None:
        """The call went through: counted while the key is learning (its admitted rate)."""
        if ticket.adaptive or self._learning.get(ticket.key, 0.0) > time.monotonic():
            self.backend.succeeded(ticket.key)

    def _mark_learning(self, key: str) -> None:
        self._learning[key] = time.monotonic() + LEARNING_SECONDS

    def snapshot(self) -> dict[str, KeyState]:
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
        for listener in list(_LISTENERS.value):
            try:
                listener(key, seconds)
            except Exception:  # a metrics hook must never fail a judge call
                log.exception("rate-limit wait listener failed")
