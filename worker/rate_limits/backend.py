"""What a rate-limit store offers. Every operation is atomic and uses the store's own clock,
so limiters on different hosts agree on one timeline."""
from __future__ import annotations

import abc
import dataclasses


@dataclasses.dataclass(frozen=True)
class Grant:
    """``admitted``: the slot was taken. Otherwise ``wait`` seconds until one may free.
    ``adaptive``: the key currently runs under a lowered (adaptive) limit."""

    admitted: bool
    wait: float = 0.0
    adaptive: bool = False


class RateLimitBackend(abc.ABC):
    @abc.abstractmethod
    def acquire(self, key: str, *, rpm: int | None, tpm: int | None, tokens: int, member: str,
                window: float) -> Grant:
        """Take one request slot (and ``tokens``) in the sliding ``window`` if both fit."""

    @abc.abstractmethod
    def settle(self, key: str, member: str, tokens: int) -> None:
        """Replace the token estimate reserved under ``member`` by the real usage."""

    @abc.abstractmethod
    def throttled(self, key: str, *, rpm: int | None, tpm: int | None, retry_after: float | None,
                  factor: float, cooldown: float, window: float, floor: float) -> None:
        """The service said 429/529: lower the key's limit (not below ``floor`` requests per
        window, or the configured limit if lower) and pause the fleet for ``retry_after``."""

    @abc.abstractmethod
    def succeeded(self, key: str, *, rpm: int | None, tpm: int | None, step: float) -> None:
        """A call under an adaptive limit succeeded: raise the limit by ``step`` of its ceiling."""

    @abc.abstractmethod
    def record_wait(self, key: str, seconds: float) -> None:
        """Count one wait of ``seconds`` for ``key`` (read by status and metrics)."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, dict]:
        """Per key: effective limits, pause, throttle and wait counters."""
