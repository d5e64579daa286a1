"""The actors' bodies: plain functions, declared on a broker in broker.py."""
from __future__ import annotations

import logging

from worker.broker import retry_for
from worker.errors import TransientError
from worker.pipeline import OutputNotYetArrived, judge_one
from worker.runtime import get_runtime
from worker.scores import score_id_for

log = logging.getLogger("tracejudge.actors")


def judge_trace(trace_id: str, rubric_key: str) -> None:
    """Judge one trace for one rubric version; the message is acked only after the score is
    written (or the trace recorded unscored)."""
    rt = get_runtime()
    try:
        outcome = judge_one(rt, trace_id, rubric_key)
    except TransientError as exc:
        log.warning("transient failure, will retry", extra={"trace_id": trace_id, "rubric": rubric_key,
                                                           "error": str(exc)})
        raise retry_for(exc) from None
    except OutputNotYetArrived as exc:
        raise retry_for(TransientError(f"output not arrived yet: {exc}", retry_after=300)) from None
    log.info("judged", extra={"trace_id": trace_id, "rubric": rubric_key, "status": outcome.status,
                              "reason": outcome.reason})


def record_exhausted(message: dict, retry_info: dict) -> None:
    """Called by dramatiq when a judge job used up its retries: keep the reason, count it."""
    trace_id, rubric_key = message["args"]
    name, _, version = rubric_key.partition("@v")
    traceback = (message.get("options") or {}).get("traceback") or ""
    reason = traceback.strip().splitlines()[-1] if traceback.strip() else "unknown error"
    get_runtime().outcomes.exhausted(score_id_for(trace_id, name, int(version or 0)), trace_id,
                                     rubric_key, reason)
