"""One job: fetch → map → render → judge (one repair) → validate → write → count.

Each step is a small function of its own module; this one chains them and turns a permanent
failure into *unscored with a reason*. Transient errors propagate to dramatiq. The steps are
shared by the online path (``judge_one``), batch mode (worker/batching) and the labelled-example
run (worker/authoring): ``prepare`` makes the judge request, ``ask_and_parse`` asks with the
repair policy, ``verdict_or_repair`` applies that policy to one reply, and worker/judging/finish.py
writes, counts and accounts, so a batch result lands exactly like an online one.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from typing import Literal, overload

from samplers.hashing import quota_scope
from worker import process_state
from worker.batching.store import Item
from worker.drift.aggregates import DEFAULT_SEGMENT_KEYS as SEGMENT_KEYS
from worker.errors import OutputNotYetArrived, Unscored, VerdictError
from worker.jobs import AnySubject, Subject
from worker.json_types import JSONDict
from worker.judges import OpenAIJudge
from worker.judges.base import Judge, JudgeReply, JudgeRequest
from worker.judges.models import same_family_producers
from worker.judging.finish import PENDING_WRITE, account, finish_scored, finish_unscored, write_and_count
from worker.judging.outcome import ObservationTarget, Outcome, Prepared, ScoreFacts, SessionTarget, Tally
from worker.judging.prompt import render, render_repair
from worker.judging.session_view import has_tool_calls, session_facts, view_for
from worker.judging.redaction import redact
from worker.judging.variables import Hygiene, map_variables, observation_names
from worker.judging.verdict import Verdict, parse_verdict
from worker.langfuse_io.scores import score_id_for, valid_environment
from worker.langfuse_io.subjects import read_observation, read_session
from worker.langfuse_io.traces import Trace
from worker.rate_limits.circuit import Breaker
from worker.retrying import REJECTED_STATUS, call_with_retries, status_of
from worker.drift.contribution import SLICES_KEY
from worker.drift.dimensions import dimensions_of
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric
from worker.rubrics.targets import SessionSpec
from worker.runtime import Runtime

log = logging.getLogger("tracejudge.pipeline")
# (rubric, producer model) pairs warned about: once per process (worker/process_state.py).
_SELF_PREFERENCE_WARNED: process_state.Slot[set[tuple[str, str]]] = process_state.slot("self_preference_warned", set)
# A trace without output this young may still be receiving it: retry rather than give up.
OUTPUT_GRACE = dt.timedelta(hours=1)


def judge_one(rt: Runtime, subject: AnySubject | str, rubric_key: str, siblings: Sequence[str] = ()) -> Outcome:
    """Judge ``subject`` for one rubric version; ``siblings``, the versions judging the same
    trace in other jobs, share its read. ``subject`` is the job's (worker/jobs.py): a trace, an
    observation or a session; a str is the job's first argument (a plain trace id, or a subject's
    wire form) and is parsed here."""
    started = time.monotonic()
    rubric = rt.rubrics.get(rubric_key)
    if rubric is None:
        raise Unscored("not_applicable", f"rubric {rubric_key} is not loaded by this worker")
    if isinstance(subject, str):
        subject = Subject.parse(subject)
    job_arg = str(subject)  # what the outcome names when the subject has no trace (a session)
    score_id = score_id_for(subject, rubric.name, rubric.version)
    if subject.kind == "session" and subject.judgement > 1:
        _reopen(rt, score_id, subject.judgement)
    done, pending = rt.outcomes.done_and_get(score_id, PENDING_WRITE + score_id)
    if done:
        return account(rt, rubric, Outcome(job_arg, rubric_key, score_id, "skipped"), started)
    if pending is not None:  # judged already, but the write or the count failed: finish, don't pay again
        return write_and_count(rt, rubric, score_id, json.loads(pending), started=started)
    tally, trace = Tally(), None
    try:
        trace = _read(rt, rubric, subject, siblings)
        job = prepare(rt, rubric, trace, score_id)
        if subject.kind == "session":
            job.facts = job.facts.with_metadata(judgement=subject.judgement)
        if rubric.judge.mode == "batch":
            rt.batches.defer(batch_item(job, rt.judge_for(rubric).inner))
            return account(rt, rubric, Outcome(job_arg, rubric_key, score_id, "deferred"), started)
        verdict, repaired = ask_and_parse(rt.judge_for(rubric), rubric, job.request, tally,
                                          breaker=rt.breaker_for(rubric))
    except Unscored as exc:
        return finish_unscored(rt, rubric, score_id, subject, exc, tally.usage, tally.calls,
                               trace.metadata if trace else {}, trace.timestamp if trace else None,
                               started=started)
    return finish_scored(rt, rubric, job, verdict, tally.usage, tally.calls, repaired, started=started)


def _read(rt: Runtime, rubric: Rubric, subject: AnySubject, siblings: Sequence[str]) -> Trace:
    """The subject's view: a trace (shared with its siblings), an observation in its trace, a session."""
    if subject.kind != rubric.target:
        raise Unscored("not_applicable", f"{rubric.key} judges {rubric.target}s, not a {subject.kind}")
    if subject.kind == "observation":
        return read_observation(rt.traces.reader, subject.trace_id, subject.observation_id)
    if subject.kind == "session":
        spec = rubric.session or SessionSpec()  # a session rubric always has one (rubrics/targets.py)
        return read_session(rt.traces.reader, subject.session_id, spec.max_turns)
    return rt.traces.fetch(subject.trace_id, observation_names(rubric),
                           [observation_names(rt.rubrics[k]) for k in siblings if k in rt.rubrics])


def _reopen(rt: Runtime, score_id: str, judgement: int) -> None:
    """A resumed session's re-judge: its score id is the first verdict's (the new score is an
    upsert), so the count's done marker is lifted, once per judgement: a redelivered re-judge
    finds it set again and is skipped. The confirmation marker stays: the session counts in the
    drift aggregates once, with its first confirmed verdict."""
    rt.outcomes.reopen(score_id, f"judgement-{judgement}")


def prepare(rt: Runtime, rubric: Rubric, trace: Trace, score_id: str) -> Prepared:
    """Check, map and render: raises Unscored (or OutputNotYetArrived for a young trace)."""
    trace = view_for(trace, rubric)
    _check_applies(trace, rubric)
    try:
        variables, hygiene = map_variables(trace, rubric, rt.settings.max_variable_chars,
                                           redact=rt.settings.redact_pii)
    except Unscored as exc:
        if exc.reason == "no_output" and _young(trace):
            raise OutputNotYetArrived(exc.detail) from None
        raise
    request = render(rubric, variables)
    facts = trace_facts(trace, hygiene, rubric).with_metadata(
        sampled_by_quota=quota_scope(rubric, trace.id, rt.settings.sample_rate) is not None)
    metadata = dict(trace.metadata)
    if rubric.target != "session":  # the slices attribution reads (a session has none of its own)
        metadata[SLICES_KEY] = dict(_slices(trace, rubric, redact_pii=rt.settings.redact_pii))
    if rubric.target == "session":
        metadata["session_id"] = trace.session_id  # the drift aggregates' member for the session
        return Prepared(score_id, None, rubric.key, request, facts, metadata, trace.timestamp)
    return Prepared(score_id, trace.id, rubric.key, request, facts, metadata, trace.timestamp)


def _slices(trace: Trace, rubric: Rubric, *, redact_pii: bool) -> dict[str, str]:
    """The trace's slices (worker/drift/dimensions.py), metadata values redacted as the judge's
    input is; a trace whose slices cannot be read is judged without them (logged)."""
    try:
        dims = dimensions_of(trace, rubric, observation_names(rubric))
    except Exception:  # boundary: slices serve attribution; they never cost a score
        log.exception("a trace's slices could not be read; it is judged without them", extra={"trace_id": trace.id})
        return {}
    if redact_pii:
        dims = {k: redact(v)[0] if k.startswith("meta.") else v for k, v in dims.items()}
    return dims


def batch_item(job: Prepared, judge: Judge) -> Item:
    """A prepared job as the batch store keeps it until its result arrives (worker/batching/store.py)."""
    return Item(job.score_id, job.trace_id, job.rubric_key, judge.provider, dataclasses.asdict(job.request),
                job.facts.to_json(), job.metadata, job.timestamp.isoformat() if job.timestamp else None,
                tool=isinstance(judge, OpenAIJudge) and judge.use_tool)


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


@overload
def verdict_or_repair(rubric: Rubric, reply: JudgeReply, *, repaired: Literal[True]) -> Verdict: ...
@overload
def verdict_or_repair(rubric: Rubric, reply: JudgeReply, *, repaired: bool) -> Verdict | str: ...
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


def _ask(judge: Judge, request: JudgeRequest, repair: tuple[JudgeReply, str] | None = None,
         breaker: Breaker | None = None) -> JudgeReply:
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
    if rubric.target == "observation":
        _check_observation(trace.subject or {}, rubric)
        return
    if rubric.target == "session":
        return
    missing = [n for n in rubric.applies_to.observations if trace.observation(n) is None]
    if missing:
        raise Unscored("not_applicable", f"trace has no observation named {', '.join(missing)}")


def _check_observation(obs: JSONDict, rubric: Rubric) -> None:
    """What the sampler's filters chose, checked on the read (and ``with_tool_calls``, which no
    listing filter can express)."""
    a = rubric.applies_to
    for wanted, have, what in ((a.types, obs.get("type"), "type"), (a.names, obs.get("name"), "name"),
                               (a.levels, obs.get("level"), "level"), (a.models, obs.get("model"), "model")):
        if wanted and have not in wanted:
            raise Unscored("not_applicable", f"observation {what} {have!r} is not one of {', '.join(wanted)}")
    if a.with_tool_calls and obs.get("type") == "GENERATION" and not has_tool_calls(obs):
        raise Unscored("not_applicable", "the generation calls no tool")


def _young(trace: Trace) -> bool:
    return trace.timestamp is not None and dt.datetime.now(dt.timezone.utc) - trace.timestamp < OUTPUT_GRACE


def trace_facts(trace: Trace, hygiene: Hygiene, rubric: Rubric) -> ScoreFacts:
    """What a score carries from its trace, computed when the request is rendered."""
    same_family = same_family_producers(rubric.judge.model, trace.producer_models)
    for model in same_family:
        if process_state.first_time(_SELF_PREFERENCE_WARNED, (rubric.key, model)):
            log.warning("self-preference risk: judge %s shares a family with producer %s; its scores may be "
                        "inflated", rubric.judge.model, model, extra={"rubric": rubric.key, "trace_id": trace.id})
    output_text = trace.output if isinstance(trace.output, str) else str(trace.output or "")
    metadata: JSONDict = {
        "output_chars": len(output_text),  # hygiene's own count (the judged answer) wins when it has one
        **hygiene.as_metadata(),
        "trace_timestamp": trace.timestamp.isoformat() if trace.timestamp else None,
        "producer_models": trace.producer_models,
        "self_preference_risk": bool(same_family),
    }
    for key in SEGMENT_KEYS:
        if isinstance(trace.metadata.get(key), (str, int, float)):
            metadata[key] = metadata_text(trace.metadata[key])
    target: ObservationTarget | SessionTarget | None = None
    if rubric.target == "observation" and trace.subject is not None:
        obs = trace.subject
        target = ObservationTarget(obs.get("id"))
        metadata.update(observation_id=obs.get("id"), observation_type=obs.get("type"),
                        observation_name=obs.get("name"))
    elif rubric.target == "session":
        target = SessionTarget(trace.session_id or trace.id)  # view_for gives every session view its id
        seen = session_facts(trace)
        metadata.update(turns_judged=seen["turns_judged"], turns_total=seen["turns_total"],
                        session_last_start=seen["last_start"])
    return ScoreFacts(metadata, valid_environment(trace.environment), target)
