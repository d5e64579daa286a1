"""One rooted error tree: what heals with a retry, what ends a trace unscored, what stops start-up.

What each error means for a judge job (a free delay, a counted retry, giving up) is decided in
worker/fleet/failures.py.
"""
from __future__ import annotations


class TraceJudgeError(Exception):
    """Root of every error tracejudge raises on purpose."""


class ConfigError(TraceJudgeError):
    """Bad settings or rubrics: fail at start-up with the message, never mid-run."""


class TransientError(TraceJudgeError):
    """A call that may heal: 429, 5xx, timeouts, connection resets.

    ``retry_after`` is the server's own hint in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unscored(TraceJudgeError):
    """This trace cannot get a trustworthy score for this rubric version.

    Recorded and counted with ``reason`` (one of ``REASONS``), never written as a score.
    """

    REASONS = (
        "trace_not_found",
        "no_output",
        "not_applicable",
        "template_error",
        "unparseable",
        "off_scale",
        "refused",
        "truncated",
        "judge_rejected",
        "score_rejected",
        "retries_exhausted",
    )

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown unscored reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class VerdictError(TraceJudgeError):
    """The judge's answer is not a valid verdict; ``reason`` is the unscored reason it maps to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class OutputNotYetArrived(TraceJudgeError):
    """The trace has no output yet but is young: the job looks again later (it burns no retry)."""


class RubricNotLoaded(TraceJudgeError):
    """A job for a rubric version this worker has not loaded (a rolling deploy adds one): it
    waits for a worker that has. ``rubric_key``: the version, ``name@vN``."""

    def __init__(self, rubric_key: str) -> None:
        super().__init__(f"rubric {rubric_key} not loaded here")
        self.rubric_key = rubric_key


class CircuitOpen(TraceJudgeError):
    """A judge endpoint × model, or Langfuse writes, failed with an error no retry can heal (a
    revoked key, an unknown model, ingestion suspended): the work waits, burning no retry and
    paying nothing, until a probe succeeds.

    ``circuit``: the breaker's name (worker/rate_limits/circuit.py); ``reason``: why it opened;
    ``retry_after``: when to look again, in seconds; ``opened``: this call opened the breaker
    (once fleet-wide), so its job sends the alert.
    """

    def __init__(self, circuit: str, reason: str, *, retry_after: float, opened: bool = False) -> None:
        super().__init__(f"{circuit} paused: {reason}")
        self.circuit = circuit
        self.reason = reason
        self.retry_after = retry_after
        self.opened = opened
