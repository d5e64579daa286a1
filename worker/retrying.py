"""Retries inside one call: bounded, jittered, honouring Retry-After, only for what can heal.

Every SDK error is classified here, once: transient errors become ``TransientError`` (retried
by tenacity here, then by dramatiq across attempts); everything else propagates unchanged for
the caller to judge.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import tenacity
from langfuse.api.core.api_error import ApiError as LangfuseApiError

from worker.errors import TransientError

T = TypeVar("T")
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
# "Slow down" answers: the fleet-wide rate limiter lowers the key's limit on these
# (429 Too Many Requests; 529 is Anthropic's "overloaded").
THROTTLE_STATUS = frozenset({429, 529})
# Longer server hints are not slept through in a worker thread: dramatiq requeues with the delay.
MAX_INLINE_WAIT = 20.0


# A judge request answered with one of these can never succeed as sent: unscored, not retried.
REJECTED_STATUS = frozenset({400, 413, 422})


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, LangfuseApiError):
        return exc.status_code
    if isinstance(exc, (anthropic.APIStatusError, openai.APIStatusError)):
        return exc.status_code
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    return None


def is_throttle(exc: BaseException) -> bool:
    """The service asked us to slow down (not merely failed)."""
    return status_of(exc) in THROTTLE_STATUS


def retry_after_of(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None)
    response = getattr(exc, "response", None)
    if headers is None and response is not None:
        headers = response.headers
    return retry_after_from_headers(headers)


def retry_after_from_headers(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (delta-seconds form), else None."""
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in dict(headers).items()}
    for key in ("retry-after-ms", "retry-after"):
        raw = lowered.get(key)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            return None  # HTTP-date form: fall back to our own backoff
        return value / 1000 if key == "retry-after-ms" else value
    return None


def as_transient(exc: BaseException) -> TransientError | None:
    """The TransientError for ``exc`` when it can heal by retrying, else None."""
    if isinstance(exc, TransientError):
        return exc
    if isinstance(exc, (httpx.TransportError, anthropic.APIConnectionError, openai.APIConnectionError)):
        return TransientError(f"{type(exc).__name__}: connection failed or timed out")
    status = status_of(exc)
    if status in _TRANSIENT_STATUS:
        return TransientError(f"HTTP {status} from {_service_of(exc)}", retry_after=retry_after_of(exc))
    return None


def _service_of(exc: BaseException) -> str:
    module = type(exc).__module__.split(".")[0]
    return {"langfuse": "Langfuse", "anthropic": "Anthropic", "openai": "OpenAI"}.get(module, module)


def compute_backoff(attempt: int, *, base: float = 0.5, cap: float = 8.0) -> float:
    """Full-jitter exponential backoff in seconds, capped (the one backoff function)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))


def _wait(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    hint = getattr(exc, "retry_after", None)
    backoff = compute_backoff(state.attempt_number)
    return max(hint or 0.0, backoff)


def _worth_retrying(state: tenacity.RetryCallState) -> bool:
    exc = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(exc, TransientError):
        return False
    return (exc.retry_after or 0.0) <= MAX_INLINE_WAIT


def call_once(fn: Callable[[], T]) -> T:
    """Run ``fn`` once: a transient failure is raised as TransientError, anything else unchanged."""
    try:
        return fn()
    except Exception as exc:
        transient = as_transient(exc)
        if transient is None:
            raise
        raise transient from exc


def call_with_retries(fn: Callable[[], T], *, attempts: int = 4, deadline: float = 60.0) -> T:
    """Run ``fn``; transient failures are retried in place, then raised as TransientError."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(deadline),
        wait=_wait,
        retry=_worth_retrying,
        reraise=True,
    )
    return retrying(lambda: call_once(fn))
