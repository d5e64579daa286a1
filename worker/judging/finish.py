"""The last steps of a job, shared by online and batch judging: write → count → account.

A written score is counted as written and waits for its read-back (worker/judging/confirm.py)
with its ``DriftContribution`` (worker/drift/contribution.py), which the confirmation applies
once Langfuse shows it kept the score.

``finish_scored`` keeps the verdict in Redis until its score is written and counted, so a
write that fails transiently is retried from it: a trace is never judged (and paid for) twice,
and its score never changes. ``finish_unscored`` records a trace as unscored with a reason.
Both end in ``account``: metrics and the day's spend, once per finished job, whichever path
judged it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from decimal import Decimal
from typing import Any

from samplers import inclusion_log
from samplers.hashing import quota_scope
from worker.accounting import job_metrics
from worker.accounting.pricing import cost_usd
from worker.drift.contribution import DriftContribution, UnscoredContribution
from worker.drift.weighting import Weighting
from worker.errors import Unscored
from worker.judges import judge_key
from worker.judges.base import Usage
from worker.jobs import AnySubject
from worker.judging.outcome import ObservationTarget, Outcome, Prepared, SessionTarget, subject_of
from worker.runtime import Runtime
from worker.judging.verdict import Verdict
from worker.rubrics.rubric import Rubric

log = logging.getLogger("tracejudge.pipeline")
PENDING_WRITE = "tracejudge:pending-write:"  # a judged verdict not yet written and counted
_PENDING_TTL = 7 * 24 * 3600


def finish_scored(rt: Runtime, rubric: Rubric, job: Prepared, verdict: Verdict, usage: Usage, calls: int,
                  repaired: bool, *, batch: bool = False, started: float | None = None) -> Outcome:
    """Write the score (deterministic id: a repeat is an upsert) and count it exactly once.

    The verdict is kept first, before anything that can fail (the config lookup, the write),
    so a retry finishes from it and never pays the judge again."""
    cost = judge_cost(rubric, usage, batch=batch)
    # A power-aware rubric's score says how its trace was sampled (its weight in the drift means).
    sampling = _inclusion(rt, rubric, job.trace_id, job.metadata, job.score_id)
    if sampling is not None:
        job = dataclasses.replace(job, facts=job.facts.with_metadata(**sampling.as_metadata()))
    body = score_body(job, rubric, verdict, usage, cost, calls, repaired, batch=batch)
    pending = {"body": body, "usage": dataclasses.asdict(usage), "calls": calls, "cost": str(cost),
               "metadata": job.metadata, "timestamp": job.timestamp.isoformat() if job.timestamp else None,
               "batch": batch}
    rt.redis.set(PENDING_WRITE + job.score_id, json.dumps(pending, default=str), ex=_PENDING_TTL)
    return write_and_count(rt, rubric, job.score_id, pending, started=started)


def write_and_count(rt: Runtime, rubric: Rubric, score_id: str, pending: dict[str, Any], *,
                    started: float | None = None) -> Outcome:
    """Write a kept verdict and count it (also the retry of a write that failed after judging)."""
    body, usage, calls = pending["body"], Usage(**pending["usage"]), pending["calls"]
    cost, metadata = Decimal(pending["cost"]), pending["metadata"]
    timestamp = dt.datetime.fromisoformat(pending["timestamp"]) if pending["timestamp"] else None
    body = {**body, "configId": rt.score_configs.config_id(rubric)}  # looked up after the verdict is kept
    try:
        rt.scores.write(body)
    except Unscored as exc:  # the server refused this score for good
        if "config" in exc.detail.lower():
            rt.score_configs.forget(rubric)  # an archived or changed config: the next score finds a new one
        rt.redis.delete(PENDING_WRITE + score_id)
        return finish_unscored(rt, rubric, score_id, _subject_of_body(body), exc, usage, calls, metadata,
                               timestamp, batch=pending["batch"], started=started)
    only_key = rubric.segment_key if body["metadata"].get("sampled_by_quota") else None
    weighting = Weighting.from_metadata(body["metadata"]) if rubric.power is not None else None
    drift = DriftContribution.of_score(rubric, body["traceId"], metadata, timestamp, body["value"],
                                       int(cost * 1_000_000), only_key, weighting)
    kept = PENDING_WRITE + score_id  # the kept verdict goes with the count, in the same transaction
    if not rt.outcomes.scored(score_id, rubric.key, usage, cost, calls, body, drift, kept_verdict=kept):
        rt.redis.delete(kept)  # counted before (a redelivery): only the kept verdict goes
    outcome = Outcome(body["traceId"], rubric.key, score_id, "scored", value=body["value"], usage=usage, cost=cost)
    return account(rt, rubric, outcome, started)


def _inclusion(rt: Runtime, rubric: Rubric, trace_id: str | None, metadata: dict[str, Any],
               score_id: str) -> Weighting | None:
    """How a power-aware rubric's trace was sampled (samplers/inclusion_log.py); None for other
    rubrics, and when it cannot be read: the judge is paid for, so the trace counts unweighted
    rather than be judged again."""
    try:
        return inclusion_log.inclusion_of(rt.redis, rubric, trace_id, metadata, rt.settings.sample_rate)
    except Exception:  # boundary: see above
        log.exception("a power-aware score's sampling record could not be read; it counts unweighted",
                      extra={"score_id": score_id})
        return None


def finish_unscored(rt: Runtime, rubric: Rubric, score_id: str, subject: AnySubject, exc: Unscored,
                    usage: Usage, calls: int, metadata: dict[str, Any], timestamp: dt.datetime | None, *,
                    batch: bool = False, started: float | None = None) -> Outcome:
    """Record the job as unscored with its reason. The outcome names the subject's trace, or
    for a session the job's argument (``str(subject)``)."""
    trace_id = subject.trace_id or str(subject)
    cost = judge_cost(rubric, usage, batch=batch)
    extra = None if exc.reason == "not_applicable" else UnscoredContribution.of_trace(
        rubric, metadata, timestamp, exc.reason, quota_scope(rubric, trace_id, rt.settings.sample_rate),
        _inclusion(rt, rubric, subject.trace_id, metadata, score_id))
    rt.outcomes.unscored(score_id, rubric.key, trace_id, exc.reason, exc.detail, usage, cost, calls, extra)
    log.info("unscored", extra={"trace_id": trace_id, "rubric": rubric.key, "reason": exc.reason,
                                "detail": exc.detail[:200]})
    outcome = Outcome(trace_id, rubric.key, score_id, "unscored", exc.reason, usage=usage, cost=cost)
    return account(rt, rubric, outcome, started)


def _subject_of_body(body: dict[str, Any]) -> AnySubject:
    """The subject a kept score body names (its ``traceId``, ``observationId`` or ``sessionId``)."""
    target: ObservationTarget | SessionTarget | None = None
    if body.get("sessionId"):
        target = SessionTarget(body["sessionId"])
    elif body.get("observationId"):
        target = ObservationTarget(body["observationId"])
    return subject_of(body.get("traceId"), target, body.get("metadata") or {})


def judge_cost(rubric: Rubric, usage: Usage, *, batch: bool = False) -> Decimal:
    """What the rubric's judge calls cost: its endpoint's own price row, else its model's."""
    return cost_usd(rubric.judge.model, usage, batch=batch, judge_key=judge_key(rubric))


def account(rt: Runtime, rubric: Rubric, outcome: Outcome, started: float | None) -> Outcome:
    """Metrics and the day's spend of one finished job, online or batch alike (a batch result
    has no latency of its own: ``started`` is None)."""
    job_metrics.record_outcome(outcome, None if started is None else time.monotonic() - started)
    if outcome.cost:
        rt.budget.record(outcome.score_id, rubric.name, outcome.cost)
    return outcome


def score_body(job: Prepared, rubric: Rubric, verdict: Verdict, usage: Usage, cost: Decimal, calls: int,
               repaired: bool, *, batch: bool = False) -> dict[str, Any]:
    metadata = {
        "rubric_version": rubric.version,
        "rubric_sha256": rubric.sha256,
        "judge_provider": rubric.judge.provider,
        "judge_model": rubric.judge.model,
        "judge_mode": "batch" if batch else "online",
        "judge_input_tokens": usage.input_tokens,
        "judge_output_tokens": usage.output_tokens,
        "judge_cache_read_tokens": usage.cache_read_tokens,
        "judge_cache_write_tokens": usage.cache_write_tokens,
        "judge_calls": calls,
        "judge_cost_usd": float(round(cost, 8)),
        "repaired": repaired,
        **job.facts.metadata,
    }
    body: dict[str, Any] = {
        "id": job.score_id,
        "traceId": job.trace_id,
        "name": rubric.name,
        "value": verdict.value,
        "dataType": rubric.scale.data_type,
        "comment": verdict.reasoning[:4000],
        "metadata": metadata,
    }
    if job.facts.environment:
        body["environment"] = job.facts.environment
    target = job.facts.target  # observation and session targets (pipeline.trace_facts)
    if isinstance(target, ObservationTarget) and target.observation_id:
        body["observationId"] = target.observation_id  # with its traceId: the server needs both
    if isinstance(target, SessionTarget) and target.session_id:
        body["sessionId"] = target.session_id  # a session score: no trace
        body["traceId"] = None
    return body
