"""Per-job Prometheus metrics: outcomes, latency, tokens, cost and unscored reasons.

Off (every call a no-op) until ``enable()`` runs in a fleet process after dramatiq's
Prometheus middleware has set up the multiprocess directory (worker/fleet/metrics.py); tests
and CLI commands record nothing. The metrics are process state (worker/process_state.py).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from worker import process_state
from worker.jobs import RubricKey
from worker.judges.base import Usage

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 900)
_TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class _Recorded(Protocol):
    """What ``record_outcome`` reads of an Outcome (worker/judging/outcome.py)."""

    rubric: str
    status: str
    reason: str | None
    usage: Usage
    cost: Decimal


class JobMetrics:
    def __init__(self) -> None:
        import prometheus_client as prom  # only now: dramatiq set PROMETHEUS_MULTIPROC_DIR at process boot

        registry = prom.CollectorRegistry()  # values go to the multiprocess files either way
        labels = ["rubric", "version"]
        self.jobs = prom.Counter("tracejudge_judge_jobs", "Judge jobs by outcome: scored, unscored, "
                                 "skipped (already done), deferred (to a batch), parked (budget), retried "
                                 "(transient error).",
                                 labels + ["outcome"], registry=registry)
        self.duration = prom.Histogram("tracejudge_judge_duration_seconds", "Time to judge one trace: fetch, "
                                       "judge call(s) and score write.", labels + ["outcome"],
                                       buckets=_LATENCY_BUCKETS, registry=registry)
        self.tokens = prom.Counter("tracejudge_judge_tokens", "Judge tokens by kind.", labels + ["kind"],
                                   registry=registry)
        self.cost = prom.Counter("tracejudge_judge_cost_usd", "Judge cost in USD.", labels, registry=registry)
        self.unscored = prom.Counter("tracejudge_unscored", "Judged traces recorded unscored, by reason.",
                                     labels + ["reason"], registry=registry)


# None outside a fleet process with metrics on (tests, CLI).
_JOB_METRICS: process_state.Slot[JobMetrics | None] = process_state.slot("job_metrics", lambda: None)


def _labels(rubric_key: str) -> tuple[str, str]:
    key = RubricKey.parse(rubric_key)
    return key.name, str(key.version)


def record_outcome(outcome: _Recorded, seconds: float | None) -> None:
    m = _JOB_METRICS.value
    if m is None:
        return
    name, version = _labels(outcome.rubric)
    m.jobs.labels(name, version, outcome.status).inc()
    if outcome.status not in ("scored", "unscored"):
        return  # skipped (done already) or deferred to a batch: nothing judged here yet
    if seconds is not None:
        m.duration.labels(name, version, outcome.status).observe(seconds)
    for kind in _TOKEN_KINDS:
        count = getattr(outcome.usage, kind, 0) or 0
        if count:
            m.tokens.labels(name, version, kind.removesuffix("_tokens")).inc(count)
    if outcome.cost:
        m.cost.labels(name, version).inc(float(outcome.cost))
    if outcome.status == "unscored":
        m.unscored.labels(name, version, outcome.reason or "unknown").inc()


def record_job(rubric_key: str, outcome: str) -> None:
    """A job that ended without an Outcome: ``parked`` or ``retried``."""
    m = _JOB_METRICS.value
    if m is not None:
        m.jobs.labels(*_labels(rubric_key), outcome).inc()


def enable() -> None:
    _JOB_METRICS.value = JobMetrics()
