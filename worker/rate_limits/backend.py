"""What a rate-limit store offers. Every operation is atomic and uses the store's own clock,
so limiters on different hosts agree on one timeline."""
from __future__ import annotations

import abc
import dataclasses
from typing import TypedDict


@dataclasses.dataclass(frozen=True)
class Grant:
    """``admitted``: a send slot was reserved ``wait`` seconds from now (at ``slot``, the store's
    clock in ms). Otherwise ``wait`` seconds until the slot, none reserved. ``adaptive``: the key
    is learning (it was refused lately), so its outcomes are worth reporting."""

    admitted: bool
    wait: float = 0.0
    adaptive: bool = False
    slot: int = 0


class KeyState(TypedDict):
    """One key's state, fleet-wide (``snapshot``; read by ``tracejudge status`` and metrics)."""

    adaptive_rpm: float | None  # the learned pace (per window), None at the configured limit
    background: float  # the share of refusals learned as background (not caused by our rate)
    lowest_rpm: float | None  # the lowest pace learned so far
    throttled: int  # 429/529 answers seen
    paused_for: float  # seconds left of a Retry-After pause
    waits: int  # waits for a slot
    wait_seconds: float  # their total length


class RateLimitBackend(abc.ABC):
    @abc.abstractmethod
    def acquire(self, key: str, *, rpm: int | None, tpm: int | None, tokens: int, member: str,
                window: float, horizon: float, recovery: float) -> Grant:
        """Reserve the key's next send slot (and ``tokens``) if it is at most ``horizon`` seconds
        away: paced at the learned rate under the configured one, within the sliding ``window``."""

    @abc.abstractmethod
    def settle(self, key: str, member: str, tokens: int) -> None:
        """Replace the token estimate reserved under ``member`` by the real usage."""

    @abc.abstractmethod
    def throttled(self, key: str, *, rpm: int | None, tpm: int | None, retry_after: float | None,
                  window: float, factor: float, evidence: float, recovery: float, floor: float,
                  latency: float) -> int:
        """The service said 429/529 to a call that took ``latency`` seconds. Returns 1 when the
        pace was lowered (to ``factor`` of the rate the service admitted, not below ``floor``),
        2 when an earlier decrease turned out not to help and was undone, else 0."""

    @abc.abstractmethod
    def succeeded(self, key: str) -> None:
        """Count one success of a learning key (the admitted rate, and the clock of recovery)."""

    @abc.abstractmethod
    def record_wait(self, key: str, seconds: float) -> None:
        """Count one wait of ``seconds`` for ``key`` (read by status and metrics)."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, KeyState]:
        """Per key: the learned pace, background refusal share, pause, throttle and wait counters."""
