"""The actors' bodies: plain functions, declared on a broker in broker.py.

A judge job reserves its budget, judges and writes. Whatever stops it is raised as a typed
error (a breaker open, a full rate limit, the output not arrived yet, the rubric not loaded
here, a transient failure); what that means for the job (a free delay, a counted retry, giving
up) and how loudly it is logged is decided in one place, worker/fleet/failures.py, and acted
on by the broker's Retries middleware (durable_retries.py).
"""
from __future__ import annotations

import dataclasses
import logging
from dramatiq.middleware import CurrentMessage

from worker.accounting import job_metrics
from worker.accounting.budget import Held, HeldBy, Reservation
from worker.alerts import outbox
from worker.errors import CircuitOpen, RubricNotLoaded
from worker.fleet.failures import expected_failures, is_first_delivery
from worker.jobs import SIBLINGS, AnySubject, RubricKey, Subject
from worker.json_types import JSONDict
from worker.judging.outcome import Outcome
from worker.judging.pipeline import judge_one
from worker.runtime import Runtime, get_runtime
from worker.langfuse_io.scores import score_id_for
from worker.logs import job_context
from worker.rate_limits.circuit import LANGFUSE, Breaker
from worker.rubrics.rubric import Rubric

log = logging.getLogger("tracejudge.actors")


def judge_trace(trace_id: str, rubric_key: str) -> None:
    """Judge one subject for one rubric version; the message is acked only after the score is
    written (or the subject recorded unscored, or the job parked by the budget).

    ``trace_id`` is the job's subject as the message carries it (worker/jobs.py): a trace id,
    or an ``@observation:``/``@session:`` subject. The argument keeps its name and position,
    the actor's wire contract; it is parsed here, once, and handed on as a Subject."""
    subject = Subject.parse(trace_id)
    with job_context(subject, rubric_key), expected_failures():
        _judge_trace(subject, rubric_key, _siblings())


def _siblings() -> list[str]:
    """The other versions judging this trace, on a job's first delivery only: a retry comes
    later, when its siblings are done, and reads the trace for itself."""
    message = CurrentMessage.get_current_message()
    if message is None or not is_first_delivery(message.options):
        return []
    return list(message.options.get(SIBLINGS) or [])


def _judge_trace(subject: AnySubject, rubric_key: str, siblings: list[str]) -> None:
    rt = get_runtime()
    rubric = rt.rubrics.get(rubric_key)
    if rubric is None:  # a rolling deploy added it: a worker that has it takes the job
        raise RubricNotLoaded(rubric_key)
    writes = rt.breaker(LANGFUSE)
    probing = writes.before_call()  # Langfuse refusing our writes for good: CircuitOpen, the judge not paid
    reservation: Reservation | None = None
    if rt.budget.global_cap is not None or rubric.daily_budget_usd is not None:
        admitted = rt.budget.admit(rubric)
        if isinstance(admitted, Held):  # the budget is held: parked, unless judged already (skipped at no cost)
            if park(rt, rubric, subject, held_by=admitted.held_by):
                return
        else:
            reservation = admitted
    try:
        outcome = _judge_and_write(rt, writes, probing, subject, rubric_key, siblings)
    finally:
        if reservation is not None:
            rt.budget.release(reservation)
    log.info("judged", extra={"status": outcome.status, "reason": outcome.reason,
                              "cost_usd": float(outcome.cost)})


def _judge_and_write(rt: Runtime, writes: Breaker, probing: bool, subject: AnySubject, rubric_key: str,
                     siblings: list[str]) -> Outcome:
    """``judge_one`` (which records its spend before the reservation goes), with a permanent
    Langfuse error (a revoked key, ingestion suspended) turned into the Langfuse breaker's pause."""
    try:
        outcome = judge_one(rt, subject, rubric_key, siblings)
    except CircuitOpen:
        raise
    except Exception as exc:
        paused = writes.failed(exc, service="langfuse", probing=probing)
        if paused is not None:
            raise paused from None
        raise
    writes.succeeded(probing)
    return outcome


def park(rt: Runtime, rubric: Rubric, subject: Subject | str, held_by: HeldBy) -> bool:
    """Park the job instead of judging it (its rubric's budget is held); False when the job was
    judged already (a redelivery), which the pipeline then skips at no cost. ``subject``: the
    job's (a str is a job's first argument); it is parked as its job argument, to be enqueued
    again as the same job."""
    score_id = score_id_for(subject, rubric.name, rubric.version)
    if rt.outcomes.is_done(score_id):
        return False
    budget = rt.budget
    budget.park(score_id, str(subject), rubric.key)
    job_metrics.record_job(rubric.key, "parked")
    state = budget.state(rubric)
    log.info("parked by the budget", extra={"held_by": held_by, "spent_usd": state.spent_usd})
    if budget.alert_once(dataclasses.replace(state, held_by=held_by), rt.sinks) is not None:
        _deliver_alerts(rt)
    return True


def _deliver_alerts(rt: Runtime) -> None:
    try:
        outbox.deliver(rt.redis, rt.sinks)
    except Exception:  # boundary: the alert stays in the outbox; the scheduler's tick delivers it
        log.exception("budget alert delivery failed; kept in the outbox")


def record_exhausted(message: JSONDict, retry_info: JSONDict) -> None:
    """Called by dramatiq when a judge job used up its retries: keep the reason, count it."""
    trace_id, rubric_key = message["args"]
    traceback = (message.get("options") or {}).get("traceback") or ""
    reason = traceback.strip().splitlines()[-1] if traceback.strip() else "unknown error"
    get_runtime().outcomes.exhausted(score_id_for(trace_id, *RubricKey.parse(rubric_key)), trace_id,
                                     rubric_key, reason)
