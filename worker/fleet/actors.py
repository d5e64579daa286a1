"""The actors' bodies: plain functions, declared on a broker in broker.py."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import random

import dramatiq
from dramatiq.middleware import CurrentMessage

from worker.accounting import job_metrics
from worker.accounting.outcomes import STATS
from worker.alerts import outbox
from worker.alerts.kinds import WorkPaused
from worker.alerts.sinks import sinks_for
from worker.errors import CircuitOpen, OutputNotYetArrived, TransientError
from worker.jobs import SIBLINGS, RubricKey
from worker.judging.pipeline import judge_one
from worker.judging.runtime import Runtime, get_runtime
from worker.langfuse_io.scores import score_id_for
from worker.logs import job_context
from worker.rate_limits import RateLimitWait
from worker.rate_limits.circuit import LANGFUSE, Breaker
from worker.rubrics.rubric import Rubric

log = logging.getLogger("tracejudge.actors")


def judge_trace(trace_id: str, rubric_key: str) -> None:
    """Judge one trace for one rubric version; the message is acked only after the score is
    written (or the trace recorded unscored, or the job parked by the budget)."""
    with job_context(trace_id, rubric_key):
        _judge_trace(trace_id, rubric_key, _siblings())


def _siblings() -> list[str]:
    """The other versions judging this trace, on a job's first delivery only: a retry comes
    later, when its siblings are done, and reads the trace for itself."""
    message = CurrentMessage.get_current_message()
    if message is None or message.options.get("retries") or message.options.get("free_delays"):
        return []
    return list(message.options.get(SIBLINGS) or [])


def _judge_trace(trace_id: str, rubric_key: str, siblings: list[str]) -> None:
    rt = get_runtime()
    budget = rt.budget
    rubric = rt.rubrics.get(rubric_key)
    if rubric is None:
        _unloaded(rt, trace_id, rubric_key)
        return
    writes = Breaker(rt.redis, LANGFUSE)
    try:
        probing = writes.before_call()  # Langfuse refusing our writes for good: wait, don't pay the judge
    except CircuitOpen as exc:
        raise _paused(rt, rubric_key, exc) from None
    reservation = None
    if budget.global_cap is not None or rubric.daily_budget_usd is not None:
        reservation = budget.reserve(rubric)
        if isinstance(reservation, str):
            if park(rt, rubric, trace_id, held_by=reservation):
                return
            reservation = None  # judged already: the pipeline skips it at no cost
    try:
        outcome = _judge_one_guarded(rt, writes, probing, trace_id, rubric_key, siblings)
    except CircuitOpen as exc:  # the judge's or Langfuse's breaker is open: wait, burning no retry
        raise _paused(rt, rubric_key, exc) from None
    except RateLimitWait as exc:  # a full rate limit is not a failure: the delay burns no retry
        _give_back_retry()
        job_metrics.record_job(rubric_key, "rate_limited")
        raise retry_for(exc) from None
    except TransientError as exc:
        job_metrics.record_job(rubric_key, "retried")
        log.warning("transient failure, will retry", extra={"error": str(exc)})
        raise retry_for(exc) from None
    except OutputNotYetArrived as exc:  # not a failure either; the pipeline's output grace bounds the wait
        _give_back_retry()
        job_metrics.record_job(rubric_key, "retried")
        raise retry_for(TransientError(f"output not arrived yet: {exc}", retry_after=300)) from None
    finally:
        if reservation is not None:
            budget.release(reservation)
    log.info("judged", extra={"status": outcome.status, "reason": outcome.reason,
                              "cost_usd": float(outcome.cost)})


def _judge_one_guarded(rt: Runtime, writes: Breaker, probing: bool, trace_id: str, rubric_key: str,
                       siblings: list[str]):
    """``judge_one`` (which records its spend before the reservation goes), with a permanent
    Langfuse error (a revoked key, ingestion suspended) turned into the Langfuse breaker's pause."""
    try:
        outcome = judge_one(rt, trace_id, rubric_key, siblings)
    except CircuitOpen:
        raise
    except Exception as exc:
        paused = writes.failed(exc, service="langfuse", probing=probing)
        if paused is not None:
            raise paused from None
        raise
    writes.succeeded(probing)
    return outcome


def _paused(rt: Runtime, rubric_key: str, exc: CircuitOpen) -> dramatiq.Retry:
    if exc.opened:  # this job opened the breaker: the one alert, fleet-wide
        circuit, _, reason = str(exc).partition(" paused: ")
        opened_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        alert = WorkPaused(id=hashlib.sha256(f"paused|{circuit}|{opened_at}".encode()).hexdigest()[:20],
                           title=f"{circuit}: paused ({reason}); its jobs wait until a probe succeeds",
                           cell=f"circuit:{circuit}", rubric=RubricKey.parse(rubric_key).name, owner="unowned",
                           route=None, circuit=circuit, reason=reason, opened_at=opened_at)
        outbox.enqueue(rt.redis, alert, sinks_for(rt.settings))
        _deliver_alerts(rt)
    _give_back_retry(bounded=False)  # a paused breaker calls nothing: waiting is free however long
    job_metrics.record_job(rubric_key, "paused")
    return dramatiq.Retry(str(exc), delay=int(exc.retry_after * 1000))


# A job for a rubric this worker has not loaded (a rolling deploy adds one) goes back to the
# queue for a worker that has it; after a day of that it is recorded, not dead-lettered.
UNLOADED_DELAY_SECONDS = 300
MAX_UNLOADED_DELAYS = 288
UNLOADED_STAT = "requeued_unloaded_rubric"


def _unloaded(rt: Runtime, trace_id: str, rubric_key: str) -> None:
    message = CurrentMessage.get_current_message()
    waits = message.options.get("unloaded_delays", 0) if message is not None else MAX_UNLOADED_DELAYS
    rt.redis.hincrby(STATS, UNLOADED_STAT, 1)
    if waits >= MAX_UNLOADED_DELAYS:
        rt.outcomes.exhausted(score_id_for(trace_id, *RubricKey.parse(rubric_key)), trace_id, rubric_key,
                              f"rubric {rubric_key} was not loaded by any worker that took the job for a day")
        log.error("job for a rubric no worker loads; recorded as exhausted")
        return
    message.options["unloaded_delays"] = waits + 1
    _give_back_retry(bounded=False)
    job_metrics.record_job(rubric_key, "requeued")
    log.info("rubric not loaded by this worker; job requeued", extra={"delay_s": UNLOADED_DELAY_SECONDS})
    raise dramatiq.Retry(f"rubric {rubric_key} not loaded here", delay=UNLOADED_DELAY_SECONDS * 1000)


# Free delays (a full rate limit, output not yet arrived) per job before they count as retries:
# bounded, so a key paused for good cannot keep a job cycling forever.
MAX_FREE_DELAYS = 50


def _give_back_retry(bounded: bool = True) -> None:
    """A delay that is not a failure: dramatiq's Retries adds one on the way out, so the job's
    retry count stays as it was and its retries are kept for real failures. ``bounded``: the
    delays that may recur without end (a key paused for good) count after MAX_FREE_DELAYS."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return
    delays = message.options.get("free_delays", 0)
    if not bounded or delays < MAX_FREE_DELAYS:
        message.options["free_delays"] = delays + (1 if bounded else 0)
        message.options["retries"] = message.options.get("retries", 0) - 1


def park(rt: Runtime, rubric: Rubric, trace_id: str, held_by: str) -> bool:
    """Park the job instead of judging it (its rubric's budget is held); False when the job was
    judged already (a redelivery), which the pipeline then skips at no cost."""
    score_id = score_id_for(trace_id, rubric.name, rubric.version)
    if rt.outcomes.is_done(score_id):
        return False
    budget = rt.budget
    budget.park(score_id, trace_id, rubric.key)
    job_metrics.record_job(rubric.key, "parked")
    state = budget.state(rubric)
    log.info("parked by the budget", extra={"held_by": held_by, "spent_usd": state.spent_usd})
    if budget.alert_once(dataclasses.replace(state, held_by=held_by), sinks_for(rt.settings)) is not None:
        _deliver_alerts(rt)
    return True


def _deliver_alerts(rt: Runtime) -> None:
    try:
        outbox.deliver(rt.redis, sinks_for(rt.settings))
    except Exception:  # boundary: the alert stays in the outbox; the scheduler's tick delivers it
        log.exception("budget alert delivery failed; kept in the outbox")


def record_exhausted(message: dict, retry_info: dict) -> None:
    """Called by dramatiq when a judge job used up its retries: keep the reason, count it."""
    trace_id, rubric_key = message["args"]
    traceback = (message.get("options") or {}).get("traceback") or ""
    reason = traceback.strip().splitlines()[-1] if traceback.strip() else "unknown error"
    get_runtime().outcomes.exhausted(score_id_for(trace_id, *RubricKey.parse(rubric_key)), trace_id,
                                     rubric_key, reason)


def retry_for(exc: TransientError) -> dramatiq.Retry:
    """dramatiq retry honouring the server's Retry-After, with jitter so a fleet doesn't stampede."""
    if exc.retry_after:
        return dramatiq.Retry(str(exc), delay=int(exc.retry_after * 1000 * random.uniform(1.0, 1.5)))
    return dramatiq.Retry(str(exc))
