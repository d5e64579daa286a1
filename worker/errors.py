"""One rooted error tree: what heals with a retry, what ends a trace unscored, what stops start-up."""
from __future__ import annotations


class TraceJudgeError(Exception):
    """Root of every error tracejudge raises on purpose."""


class ConfigError(TraceJudgeError):
    """Bad settings or rubrics: fail at start-up with the message, never mid-run."""


class TransientError(TraceJudgeError):
    """A call that may heal: 429, 5xx, timeouts, connection resets.

    ``retry_after`` is the server's own hint in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None):
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

    def __init__(self, reason: str, detail: str = ""):
        if reason not in self.REASONS:
            raise ValueError(f"unknown unscored reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class VerdictError(TraceJudgeError):
    """The judge's answer is not a valid verdict; ``reason`` is the unscored reason it maps to."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class OutputNotYetArrived(TraceJudgeError):
    """The trace has no output yet but is young: the job retries later (it burns no retry)."""


class CircuitOpen(TraceJudgeError):
    """A judge endpoint × model, or Langfuse writes, failed with an error no retry can heal (a
    revoked key, an unknown model, ingestion suspended): the work waits, burning no retry and
    paying nothing, until a probe succeeds. ``retry_after``: when to look again, in seconds."""

    def __init__(self, message: str, *, retry_after: float, opened: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.opened = opened  # this call opened the breaker (once fleet-wide): it alerts
