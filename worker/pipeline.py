"""One job: fetch → map → render → judge (one repair) → validate → write → count.

Each step is a small function of its own module; this one chains them and turns a permanent
failure into *unscored with a reason*. Transient errors propagate to dramatiq. The steps are
shared by the online path (``judge_one``) and batch mode (worker/batching): ``prepare`` makes
the judge request, ``verdict_or_repair`` applies the repair policy to one reply, and
``finish_scored`` / ``finish_unscored`` write and count, so a batch result lands exactly like
an online one.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from decimal import Decimal

from samplers.hashing import is_sampled
from worker.drift.aggregates import DEFAULT_SEGMENT_KEYS as SEGMENT_KEYS, scored_ops, unscored_ops
from worker.errors import Unscored, VerdictError
from worker.judges.base import JudgeReply, Usage
from worker.models import same_family_producers
from worker.pricing import cost_usd
from worker.prompt import JudgeRequest, render, render_repair
from worker.retrying import REJECTED_STATUS, call_with_retries, status_of
from worker.rubrics import Rubric
from worker.scores import score_id_for, valid_environment
from worker.traces import Trace
from worker.variables import map_variables
from worker.verdict import Verdict, parse_verdict

log = logging.getLogger("tracejudge.pipeline")
_SELF_PREFERENCE_WARNED: set[tuple[str, str]] = set()  # (rubric, producer model): warn once per process
# A trace without output this young may still be receiving it: retry rather than give up.
OUTPUT_GRACE = dt.timedelta(hours=1)
_PENDING_WRITE = "tracejudge:pending-write:"  # a judged verdict not yet written and counted
_PENDING_TTL = 7 * 24 * 3600


@dataclasses.dataclass
class Outcome:
    trace_id: str
    rubric: str
    score_id: str
    status: str  # scored | unscored | skipped (already done) | deferred (queued for a batch)
    reason: str | None = None
    value: float | str | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)
    cost: Decimal = Decimal(0)


@dataclasses.dataclass
class Prepared:
    """A rendered judge request and the trace facts its score needs: all JSON-able, so a batch
    job can keep it in Redis until its result arrives (hours later, maybe in another process)."""

    score_id: str
    trace_id: str
    rubric_key: str
    request: JudgeRequest
    facts: dict  # score metadata and environment taken from the trace (see trace_facts)
    metadata: dict  # the trace's metadata, for drift aggregates
    timestamp: dt.datetime | None


class OutputNotYetArrived(Exception):
    """The trace has no output yet but is young: the job retries later."""


def judge_one(rt, trace_id: str, rubric_key: str) -> Outcome:
    rubric: Rubric = rt.rubrics.get(rubric_key)
    if rubric is None:
        raise Unscored("not_applicable", f"rubric {rubric_key} is not loaded by this worker")
    score_id = score_id_for(trace_id, rubric.name, rubric.version)
    if rt.outcomes.is_done(score_id):
        return Outcome(trace_id, rubric_key, score_id, "skipped")
    pending = rt.redis.get(_PENDING_WRITE + score_id)
    if pending is not None:  # judged already, but the write or the count failed: finish, don't pay again
        return _write_and_count(rt, rubric, score_id, json.loads(pending))
    usage, calls, trace = Usage(), 0, None
    try:
        trace = rt.traces.fetch(trace_id)
        job = prepare(rt, rubric, trace, score_id)
        if rubric.judge.mode == "batch":
            from worker.batching.store import BatchStore

            BatchStore(rt.redis).defer(job, rt.judge_for(rubric))
            return Outcome(trace_id, rubric_key, score_id, "deferred")
        judge = rt.judge_for(rubric)
        reply = _ask(judge, job.request)
        usage, calls = reply.usage, 1
        verdict = verdict_or_repair(rubric, reply, repaired=False)
        repaired = isinstance(verdict, str)
        if repaired:
            second = _ask(judge, job.request, (reply, verdict))
            usage, calls = usage + second.usage, 2
            verdict = verdict_or_repair(rubric, second, repaired=True)
    except Unscored as exc:
        return finish_unscored(rt, rubric, score_id, trace_id, exc, usage, calls,
                               trace.metadata if trace else {}, trace.timestamp if trace else None)
    return finish_scored(rt, rubric, job, verdict, usage, calls, repaired)


def prepare(rt, rubric: Rubric, trace: Trace, score_id: str) -> Prepared:
    """Check, map and render: raises Unscored (or OutputNotYetArrived for a young trace)."""
    _check_applies(trace, rubric)
    try:
        variables, hygiene = map_variables(trace, rubric, rt.settings.max_variable_chars,
                                           redact=rt.settings.redact_pii)
    except Unscored as exc:
        if exc.reason == "no_output" and _young(trace):
            raise OutputNotYetArrived(exc.detail) from None
        raise
    request = render(rubric, variables)
    facts = trace_facts(trace, hygiene, rubric)
    facts["metadata"]["sampled_by_quota"] = quota_scope(rt, rubric, trace.id) is not None
    return Prepared(score_id, trace.id, rubric.key, request, facts, dict(trace.metadata), trace.timestamp)


def quota_scope(rt, rubric: Rubric, trace_id: str) -> str | None:
    """The segment key a trace is confined to in the drift cells when only its segment's quota
    (not the base rate) picked it; None when the base rate would have picked it anyway."""
    if not rubric.segment_key:
        return None
    base = rt.settings.sample_rate if rt.settings.sample_rate is not None else rubric.sampling_rate
    return None if is_sampled(trace_id, base) else rubric.segment_key


def verdict_or_repair(rubric: Rubric, reply: JudgeReply, *, repaired: bool) -> Verdict | str:
    """The verdict; or, for a first answer in the wrong form, the repair text to send once.

    Raises Unscored when the answer cannot be repaired (refused, truncated) or the repaired
    answer is still invalid."""
    try:
        return parse_verdict(reply, rubric.scale)
    except VerdictError as exc:
        if repaired:
            raise Unscored(exc.reason, f"after one repair: {exc.detail}") from None
        repair_text = render_repair(rubric, exc.detail) if exc.reason in ("unparseable", "off_scale") else None
        if repair_text is None:
            raise Unscored(exc.reason, exc.detail) from None
        return repair_text


def finish_scored(rt, rubric: Rubric, job: Prepared, verdict: Verdict, usage: Usage, calls: int,
                  repaired: bool, *, batch: bool = False) -> Outcome:
    """Write the score (deterministic id: a repeat is an upsert) and count it exactly once.

    The verdict is kept in Redis until it is counted: a write that fails transiently is retried
    from it, so a trace is never judged (and paid for) twice, and its score never changes."""
    cost = cost_usd(rubric.judge.model, usage, batch=batch)
    body = score_body(job, rubric, verdict, usage, cost, calls, repaired, batch=batch)
    body["configId"] = rt.score_configs.config_id(rubric)
    pending = {"body": body, "usage": dataclasses.asdict(usage), "calls": calls, "cost": str(cost),
               "metadata": job.metadata, "timestamp": job.timestamp.isoformat() if job.timestamp else None,
               "batch": batch}
    rt.redis.set(_PENDING_WRITE + job.score_id, json.dumps(pending, default=str), ex=_PENDING_TTL)
    return _write_and_count(rt, rubric, job.score_id, pending)


def _write_and_count(rt, rubric: Rubric, score_id: str, pending: dict) -> Outcome:
    body, usage, calls = pending["body"], Usage(**pending["usage"]), pending["calls"]
    cost, metadata = Decimal(pending["cost"]), pending["metadata"]
    timestamp = dt.datetime.fromisoformat(pending["timestamp"]) if pending["timestamp"] else None
    try:
        rt.scores.write(body)
    except Unscored as exc:  # the server refused this score for good
        if "config" in exc.detail.lower():
            rt.score_configs.forget(rubric)  # an archived or changed config: the next score finds a new one
        rt.redis.delete(_PENDING_WRITE + score_id)
        return finish_unscored(rt, rubric, score_id, body["traceId"], exc, usage, calls, metadata, timestamp,
                               batch=pending["batch"])
    only_key = rubric.segment_key if body["metadata"].get("sampled_by_quota") else None
    extra = scored_ops(rubric, body["traceId"], metadata, timestamp, body["value"], int(cost * 1_000_000), only_key)
    rt.outcomes.scored(score_id, rubric.key, usage, cost, calls, extra)
    rt.redis.delete(_PENDING_WRITE + score_id)
    return Outcome(body["traceId"], rubric.key, score_id, "scored", value=body["value"], usage=usage, cost=cost)


def finish_unscored(rt, rubric: Rubric, score_id: str, trace_id: str, exc: Unscored, usage: Usage,
                    calls: int, metadata: dict, timestamp, *, batch: bool = False) -> Outcome:
    cost = cost_usd(rubric.judge.model, usage, batch=batch)
    extra = [] if exc.reason == "not_applicable" else unscored_ops(rubric, metadata, timestamp, exc.reason,
                                                                    quota_scope(rt, rubric, trace_id))
    rt.outcomes.unscored(score_id, rubric.key, trace_id, exc.reason, exc.detail, usage, cost, calls, extra)
    log.info("unscored", extra={"trace_id": trace_id, "rubric": rubric.key, "reason": exc.reason,
                                "detail": exc.detail[:200]})
    return Outcome(trace_id, rubric.key, score_id, "unscored", exc.reason, usage=usage, cost=cost)


def _ask(judge, request, repair=None) -> JudgeReply:
    try:
        return call_with_retries(lambda: judge.ask(request, repair))
    except Exception as exc:
        status = status_of(exc)
        if status in REJECTED_STATUS:
            raise Unscored("judge_rejected", f"HTTP {status}: {str(exc)[:300]}") from None
        raise


def _check_applies(trace: Trace, rubric: Rubric) -> None:
    missing = [n for n in rubric.applies_to.observations if trace.observation(n) is None]
    if missing:
        raise Unscored("not_applicable", f"trace has no observation named {', '.join(missing)}")


def _young(trace: Trace) -> bool:
    return trace.timestamp is not None and dt.datetime.now(dt.timezone.utc) - trace.timestamp < OUTPUT_GRACE


def trace_facts(trace: Trace, hygiene, rubric: Rubric) -> dict:
    """What a score carries from its trace, computed when the request is rendered."""
    same_family = same_family_producers(rubric.judge.model, trace.producer_models)
    for model in same_family:
        if (rubric.key, model) not in _SELF_PREFERENCE_WARNED:
            _SELF_PREFERENCE_WARNED.add((rubric.key, model))
            log.warning("self-preference risk: judge %s shares a family with producer %s; its scores may be "
                        "inflated", rubric.judge.model, model, extra={"rubric": rubric.key, "trace_id": trace.id})
    output_text = trace.output if isinstance(trace.output, str) else str(trace.output or "")
    metadata = {
        "output_chars": len(output_text),  # hygiene's own count (the judged answer) wins when it has one
        **hygiene.as_metadata(),
        "trace_timestamp": trace.timestamp.isoformat() if trace.timestamp else None,
        "producer_models": trace.producer_models,
        "self_preference_risk": bool(same_family),
    }
    for key in SEGMENT_KEYS:
        if isinstance(trace.metadata.get(key), (str, int)):
            metadata[key] = str(trace.metadata[key])
    return {"metadata": metadata, "environment": valid_environment(trace.environment)}


def score_body(job: Prepared, rubric: Rubric, verdict: Verdict, usage: Usage, cost: Decimal, calls: int,
               repaired: bool, *, batch: bool = False) -> dict:
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
        **job.facts["metadata"],
    }
    body = {
        "id": job.score_id,
        "traceId": job.trace_id,
        "name": rubric.name,
        "value": verdict.value,
        "dataType": rubric.scale.data_type,
        "comment": verdict.reasoning[:4000],
        "metadata": metadata,
    }
    if job.facts.get("environment"):
        body["environment"] = job.facts["environment"]
    return body
