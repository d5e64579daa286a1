"""The actors' bodies: plain functions, declared on a broker in broker.py."""
from __future__ import annotations

import dataclasses
import logging
import time

from dramatiq.middleware import CurrentMessage

from worker import metrics
from worker.broker import retry_for
from worker.budget import Budget
from worker.errors import TransientError
from worker.logs import job_context
from worker.pipeline import OutputNotYetArrived, judge_one
from worker.rate_limits import RateLimitWait
from worker.runtime import get_runtime
from worker.scores import score_id_for

log = logging.getLogger("tracejudge.actors")


def judge_trace(trace_id: str, rubric_key: str) -> None:
    """Judge one trace for one rubric version; the message is acked only after the score is
    written (or the trace recorded unscored, or the job parked by the budget)."""
    with job_context(trace_id, rubric_key):
        _judge_trace(trace_id, rubric_key)


def _judge_trace(trace_id: str, rubric_key: str) -> None:
    rt = get_runtime()
    budget = Budget(rt.redis, rt.settings.daily_budget_usd)
    rubric = rt.rubrics.get(rubric_key)
    reservation = None
    if rubric is not None and (budget.global_cap is not None or rubric.daily_budget_usd is not None):
        reservation = budget.reserve(rubric)
        if isinstance(reservation, str):
            if park(rt, budget, rubric, trace_id, held_by=reservation):
                return
            reservation = None  # judged already: the pipeline skips it at no cost
    started = time.monotonic()
    try:
        outcome = judge_one(rt, trace_id, rubric_key)
        metrics.record_outcome(outcome, time.monotonic() - started)
        if rubric is not None and outcome.status != "skipped":
            budget.record(outcome.score_id, rubric.name, outcome.cost)  # before the reservation goes
    except RateLimitWait as exc:  # a full rate limit is not a failure: the delay burns no retry
        _give_back_retry()
        metrics.record_job(rubric_key, "rate_limited")
        raise retry_for(exc) from None
    except TransientError as exc:
        metrics.record_job(rubric_key, "retried")
        log.warning("transient failure, will retry", extra={"error": str(exc)})
        raise retry_for(exc) from None
    except OutputNotYetArrived as exc:  # not a failure either; the pipeline's output grace bounds the wait
        _give_back_retry()
        metrics.record_job(rubric_key, "retried")
        raise retry_for(TransientError(f"output not arrived yet: {exc}", retry_after=300)) from None
    finally:
        if reservation is not None:
            budget.release(reservation)
    log.info("judged", extra={"status": outcome.status, "reason": outcome.reason,
                              "cost_usd": float(outcome.cost)})


# Free delays (a full rate limit, output not yet arrived) per job before they count as retries:
# bounded, so a key paused for good cannot keep a job cycling forever.
MAX_FREE_DELAYS = 50


def _give_back_retry() -> None:
    """A delay that is not a failure: dramatiq's Retries adds one on the way out, so the job's
    retry count stays as it was and its retries are kept for real failures."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return
    delays = message.options.get("free_delays", 0)
    if delays < MAX_FREE_DELAYS:
        message.options["free_delays"] = delays + 1
        message.options["retries"] = message.options.get("retries", 0) - 1


def park(rt, budget: Budget, rubric, trace_id: str, held_by: str) -> bool:
    """Park the job instead of judging it (its rubric's budget is held); False when the job was
    judged already (a redelivery), which the pipeline then skips at no cost."""
    score_id = score_id_for(trace_id, rubric.name, rubric.version)
    if rt.outcomes.is_done(score_id):
        return False
    budget.park(score_id, trace_id, rubric.key)
    metrics.record_job(rubric.key, "parked")
    state = budget.state(rubric)
    log.info("parked by the budget", extra={"held_by": held_by, "spent_usd": state.spent_usd})
    if budget.alert_once(dataclasses.replace(state, held_by=held_by), _sinks(rt.settings)) is not None:
        _deliver_alerts(rt)
    return True


def _sinks(settings):
    from worker.drift.run import sinks_for

    return sinks_for(settings)


def _deliver_alerts(rt) -> None:
    from worker.alerts import outbox

    try:
        outbox.deliver(rt.redis, _sinks(rt.settings))
    except Exception:  # boundary: the alert stays in the outbox; the scheduler's tick delivers it
        log.exception("budget alert delivery failed; kept in the outbox")


def record_exhausted(message: dict, retry_info: dict) -> None:
    """Called by dramatiq when a judge job used up its retries: keep the reason, count it."""
    trace_id, rubric_key = message["args"]
    name, _, version = rubric_key.partition("@v")
    traceback = (message.get("options") or {}).get("traceback") or ""
    reason = traceback.strip().splitlines()[-1] if traceback.strip() else "unknown error"
    get_runtime().outcomes.exhausted(score_id_for(trace_id, name, int(version or 0)), trace_id,
                                     rubric_key, reason)
