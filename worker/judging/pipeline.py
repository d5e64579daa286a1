"""One job: fetch → map → render → judge (one repair) → validate → write → count.

Each step is a small function of its own module; this one chains them and turns a permanent
failure into *unscored with a reason*. Transient errors propagate to dramatiq. The steps are
shared by the online path (``judge_one``), batch mode (worker/batching) and the labelled-example
run (worker/authoring): ``prepare`` makes the judge request, ``ask_and_parse`` asks with the
repair policy, ``verdict_or_repair`` applies that policy to one reply, and worker/judging/finish.py
writes, counts and accounts, so a batch result lands exactly like an online one.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence

from samplers.hashing import quota_scope
from worker.batching.store import BatchStore
from worker.drift.aggregates import DEFAULT_SEGMENT_KEYS as SEGMENT_KEYS
from worker.errors import OutputNotYetArrived, Unscored, VerdictError
from worker.rate_limits.circuit import Breaker
from worker.judges import judge_key
from worker.judges.base import Judge, JudgeReply, JudgeRequest
from worker.judges.models import same_family_producers
from worker.judging.finish import PENDING_WRITE, account, finish_scored, finish_unscored, write_and_count
from worker.judging.outcome import Outcome, Prepared, Tally
from worker.judging.prompt import render, render_repair
from worker.judging.runtime import Runtime
from worker.judging.variables import map_variables, observation_names
from worker.judging.verdict import Verdict, parse_verdict
from worker.langfuse_io.scores import score_id_for, valid_environment
from worker.langfuse_io.traces import Trace
from worker.retrying import REJECTED_STATUS, call_with_retries, status_of
from worker.rubrics.rubric import Rubric

log = logging.getLogger("tracejudge.pipeline")
_SELF_PREFERENCE_WARNED: set[tuple[str, str]] = set()  # (rubric, producer model): warn once per process
# A trace without output this young may still be receiving it: retry rather than give up.
OUTPUT_GRACE = dt.timedelta(hours=1)


def judge_one(rt: Runtime, trace_id: str, rubric_key: str, siblings: Sequence[str] = ()) -> Outcome:
    """Judge ``trace_id`` for one rubric version; ``siblings``, the versions judging the same
    trace in other jobs, share its read."""
    started = time.monotonic()
    rubric = rt.rubrics.get(rubric_key)
    if rubric is None:
        raise Unscored("not_applicable", f"rubric {rubric_key} is not loaded by this worker")
    score_id = score_id_for(trace_id, rubric.name, rubric.version)
    done, pending = rt.outcomes.done_and_get(score_id, PENDING_WRITE + score_id)
    if done:
        return account(rt, rubric, Outcome(trace_id, rubric_key, score_id, "skipped"), started)
    if pending is not None:  # judged already, but the write or the count failed: finish, don't pay again
        return write_and_count(rt, rubric, score_id, json.loads(pending), started=started)
    tally, trace = Tally(), None
    try:
        trace = rt.traces.fetch(trace_id, observation_names(rubric),
                                [observation_names(rt.rubrics[k]) for k in siblings if k in rt.rubrics])
        job = prepare(rt, rubric, trace, score_id)
        if rubric.judge.mode == "batch":
            BatchStore(rt.redis).defer(job, rt.judge_for(rubric))
            return account(rt, rubric, Outcome(trace_id, rubric_key, score_id, "deferred"), started)
        verdict, repaired = ask_and_parse(rt.judge_for(rubric), rubric, job.request, tally,
                                          breaker=Breaker(rt.redis, judge_key(rubric)))
    except Unscored as exc:
        return finish_unscored(rt, rubric, score_id, trace_id, exc, tally.usage, tally.calls,
                               trace.metadata if trace else {}, trace.timestamp if trace else None,
                               started=started)
    return finish_scored(rt, rubric, job, verdict, tally.usage, tally.calls, repaired, started=started)


def prepare(rt: Runtime, rubric: Rubric, trace: Trace, score_id: str) -> Prepared:
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
    facts["metadata"]["sampled_by_quota"] = quota_scope(rubric, trace.id, rt.settings.sample_rate) is not None
    return Prepared(score_id, trace.id, rubric.key, request, facts, dict(trace.metadata), trace.timestamp)


def ask_and_parse(judge: Judge, rubric: Rubric, request: JudgeRequest, tally: Tally,
                  breaker: Breaker | None = None) -> tuple[Verdict, bool]:
    """The judge's verdict and whether it took the repair turn; every call is added to ``tally``.

    Raises Unscored when the judge rejects the request or its answer stays invalid, and
    CircuitOpen when ``breaker`` (the judge endpoint × model's) is open or opens on this call."""
    reply = _ask(judge, request, breaker=breaker)
    tally.add(reply.usage)
    verdict = verdict_or_repair(rubric, reply, repaired=False)
    if not isinstance(verdict, str):
        return verdict, False
    second = _ask(judge, request, (reply, verdict), breaker=breaker)
    tally.add(second.usage)
    return verdict_or_repair(rubric, second, repaired=True), True


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


def _ask(judge: Judge, request: JudgeRequest, repair=None, breaker: Breaker | None = None) -> JudgeReply:
    probing = breaker.before_call() if breaker is not None else False  # open: raises before paying
    try:
        reply = call_with_retries(lambda: judge.ask(request, repair))
    except Exception as exc:
        paused = breaker.failed(exc, service="judge", probing=probing) if breaker is not None else None
        if paused is not None:  # a revoked key or a retired model: every job would fail the same way
            raise paused from None
        status = status_of(exc)
        if status in REJECTED_STATUS:
            raise Unscored("judge_rejected", f"HTTP {status}: {str(exc)[:300]}") from None
        raise
    if breaker is not None:
        breaker.succeeded(probing)
    return reply


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
