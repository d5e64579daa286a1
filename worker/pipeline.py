"""One job: fetch → map → render → judge (one repair) → validate → write → count.

Each step is a small function of its own module; this one only chains them and turns a
permanent failure into *unscored with a reason*. Transient errors propagate to dramatiq.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from decimal import Decimal

from worker.drift.aggregates import scored_ops, unscored_ops
from worker.errors import Unscored, VerdictError
from worker.judges.base import JudgeReply, Usage
from worker.pricing import cost_usd
from worker.prompt import render, render_repair
from worker.retrying import call_with_retries, status_of
from worker.rubrics import Rubric
from worker.scores import score_id_for, valid_environment
from worker.traces import Trace
from worker.variables import map_variables
from worker.verdict import Verdict, parse_verdict

log = logging.getLogger("tracejudge.pipeline")
SEGMENT_KEYS = ("feature", "tenant")
# A trace without output this young may still be receiving it: retry rather than give up.
OUTPUT_GRACE = dt.timedelta(hours=1)


@dataclasses.dataclass
class Outcome:
    trace_id: str
    rubric: str
    score_id: str
    status: str  # scored | unscored | skipped (already done)
    reason: str | None = None
    value: float | str | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)
    cost: Decimal = Decimal(0)


class OutputNotYetArrived(Exception):
    """The trace has no output yet but is young: the job retries later."""


def judge_one(rt, trace_id: str, rubric_key: str) -> Outcome:
    rubric: Rubric = rt.rubrics.get(rubric_key)
    if rubric is None:
        raise Unscored("not_applicable", f"rubric {rubric_key} is not loaded by this worker")
    score_id = score_id_for(trace_id, rubric.name, rubric.version)
    if rt.outcomes.is_done(score_id):
        return Outcome(trace_id, rubric_key, score_id, "skipped")
    usage, calls, trace = Usage(), 0, None
    try:
        trace = rt.traces.fetch(trace_id)
        _check_applies(trace, rubric)
        try:
            variables, hygiene = map_variables(trace, rubric, rt.settings.max_variable_chars)
        except Unscored as exc:
            if exc.reason == "no_output" and _young(trace):
                raise OutputNotYetArrived(exc.detail) from None
            raise
        request = render(rubric, variables)
        judge = rt.judge_for(rubric)
        reply = _ask(judge, request)
        usage, calls = reply.usage, 1
        try:
            verdict = parse_verdict(reply, rubric.scale)
            repaired = False
        except VerdictError as first:
            repair_text = render_repair(rubric, first.detail) if first.reason in ("unparseable", "off_scale") else None
            if repair_text is None:
                raise Unscored(first.reason, first.detail) from None
            second = _ask(judge, request, (reply, repair_text))
            usage, calls = usage + second.usage, 2
            try:
                verdict = parse_verdict(second, rubric.scale)
            except VerdictError as exc:
                raise Unscored(exc.reason, f"after one repair: {exc.detail}") from None
            repaired = True
        cost = cost_usd(rubric.judge.model, usage)
        body = score_body(trace, rubric, score_id, verdict, usage, cost, calls, repaired, hygiene)
        body["configId"] = rt.score_configs.config_id(rubric)
        rt.scores.write(body)
    except Unscored as exc:
        cost = cost_usd(rubric.judge.model, usage)
        extra = [] if exc.reason == "not_applicable" else unscored_ops(
            rubric, trace.metadata if trace else {}, trace.timestamp if trace else None, exc.reason)
        rt.outcomes.unscored(score_id, rubric_key, trace_id, exc.reason, exc.detail, usage, cost, calls, extra)
        log.info("unscored", extra={"trace_id": trace_id, "rubric": rubric_key, "reason": exc.reason,
                                    "detail": exc.detail[:200]})
        return Outcome(trace_id, rubric_key, score_id, "unscored", exc.reason, usage=usage, cost=cost)
    extra = scored_ops(rubric, trace_id, trace.metadata, trace.timestamp, verdict.value, int(cost * 1_000_000))
    rt.outcomes.scored(score_id, rubric_key, usage, cost, calls, extra)
    return Outcome(trace_id, rubric_key, score_id, "scored", value=verdict.value, usage=usage, cost=cost)


def _ask(judge, request, repair=None) -> JudgeReply:
    try:
        return call_with_retries(lambda: judge.ask(request, repair))
    except Exception as exc:
        status = status_of(exc)
        if status in (400, 413, 422):  # this request can never succeed as sent
            raise Unscored("judge_rejected", f"HTTP {status}: {str(exc)[:300]}") from None
        raise


def _check_applies(trace: Trace, rubric: Rubric) -> None:
    missing = [n for n in rubric.applies_to.observations if trace.observation(n) is None]
    if missing:
        raise Unscored("not_applicable", f"trace has no observation named {', '.join(missing)}")


def _young(trace: Trace) -> bool:
    return trace.timestamp is not None and dt.datetime.now(dt.timezone.utc) - trace.timestamp < OUTPUT_GRACE


def score_body(trace: Trace, rubric: Rubric, score_id: str, verdict: Verdict, usage: Usage,
               cost: Decimal, calls: int, repaired: bool, hygiene) -> dict:
    output_text = trace.output if isinstance(trace.output, str) else str(trace.output or "")
    metadata = {
        "rubric_version": rubric.version,
        "rubric_sha256": rubric.sha256,
        "judge_provider": rubric.judge.provider,
        "judge_model": rubric.judge.model,
        "judge_input_tokens": usage.input_tokens,
        "judge_output_tokens": usage.output_tokens,
        "judge_cache_read_tokens": usage.cache_read_tokens,
        "judge_cache_write_tokens": usage.cache_write_tokens,
        "judge_calls": calls,
        "judge_cost_usd": float(round(cost, 8)),
        "repaired": repaired,
        **hygiene.as_metadata(),
        "output_chars": len(output_text),
        "trace_timestamp": trace.timestamp.isoformat() if trace.timestamp else None,
        "producer_models": trace.producer_models,
    }
    for key in SEGMENT_KEYS:
        if isinstance(trace.metadata.get(key), (str, int)):
            metadata[key] = str(trace.metadata[key])
    body = {
        "id": score_id,
        "traceId": trace.id,
        "name": rubric.name,
        "value": verdict.value,
        "dataType": rubric.scale.data_type,
        "comment": verdict.reasoning[:4000],
        "metadata": metadata,
    }
    environment = valid_environment(trace.environment)
    if environment:
        body["environment"] = environment
    return body
