"""Batch mode's judging step: one batch cycle collects the results of ended batches, then
submits what is pending (the store, the providers' batch APIs and the sizing are worker/batching).

Results first, so a repair turn or a retry made from them goes out in the same cycle. Every
result is finished by the online path's own steps (pipeline.verdict_or_repair, finish_*):
same verdict parsing, repair policy, deterministic score id, exactly-once counting. A batch
stays in the store until all its results are finished, so a crash half-way re-reads it next
cycle and the finished items are skipped (their outcome is already recorded).
"""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import Counter

from worker.accounting.budget import Held, Reservation
from worker.batching.providers import BatchAPI, batches_for
from worker.batching.sizing import MAX_BYTES, cut
from worker.batching.store import PROVIDERS, Item
from worker.errors import TraceJudgeError, Unscored
from worker.judging.finish import finish_scored, finish_unscored
from worker.judging.outcome import Prepared, ScoreFacts
from worker.judging.pipeline import verdict_or_repair
from worker.retrying import as_transient, call_with_retries, status_of
from worker.runtime import Runtime

log = logging.getLogger("tracejudge.batching")
LOCK = "tracejudge:batch:cycle-lock"
LOCK_TTL_MS = 15 * 60 * 1000
MAX_TRIES = 3  # submissions of one request that errored/expired before it is unscored
MAX_BATCH = 10_000  # requests per submission (the APIs allow 100,000 / 50,000)


@dataclasses.dataclass
class BatchCycleSummary:
    skipped: bool = False  # another cycle holds the lock
    counts: Counter[str] = dataclasses.field(default_factory=Counter)

    def line(self) -> str:
        if self.skipped:
            return "batch cycle skipped: another cycle is running"
        c = self.counts
        return (f"batches ended {c['batches_ended']}, still running {c['batches_running']}; "
                f"scored {c['scored']}, unscored {c['unscored']}, repairs {c['repairs']}, "
                f"retries {c['retries']}; submitted {c['requests_submitted']} requests "
                f"in {c['batches_submitted']} batches")


def run_batch_cycle(rt: Runtime) -> BatchCycleSummary:
    """Poll submitted batches, finish their results, submit pending requests (one cycle fleet-wide)."""
    token = uuid.uuid4().hex
    if not rt.redis.set(LOCK, token, nx=True, px=LOCK_TTL_MS):
        return BatchCycleSummary(skipped=True)
    try:
        cycle = BatchCycle(rt)
        cycle.collect()
        # Collecting can outlast the lock (slow writes under a Langfuse rate limit): submit only
        # while the lock is still ours, or another cycle could submit the same requests again.
        if _renew(rt, token):
            cycle.submit()
        return cycle.summary
    finally:
        rt.redis.eval(_RELEASE, 1, LOCK, token)


_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _renew(rt: Runtime, token: str) -> bool:
    if rt.redis.eval(_RENEW, 1, LOCK, token, LOCK_TTL_MS):
        return True
    log.warning("batch cycle lock lost while collecting: submissions wait for the next cycle")
    return False


LAST_CYCLE = "tracejudge:batch:last_cycle"


def batch_tick(rt: Runtime, now: float | None = None) -> BatchCycleSummary | None:
    """For the scheduler's tick: ``run_batch_cycle`` when a batch rubric is loaded and
    ``batch_poll_seconds`` have passed since the last cycle (kept in Redis, so a scheduler that
    takes over keeps the cadence); None when not due."""
    if not any(r.judge.mode == "batch" for r in rt.rubrics.values()):
        return None
    now = time.time() if now is None else now
    last = rt.redis.get(LAST_CYCLE)
    if last is not None and now - float(last) < rt.settings.batch_poll_seconds:
        return None
    summary = run_batch_cycle(rt)
    if not summary.skipped:
        rt.redis.set(LAST_CYCLE, now)
        log.info("batch cycle", extra={"summary": summary.line()})
    return summary


class BatchCycle:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = rt.batches
        self.summary = BatchCycleSummary()
        self._apis: dict[str, BatchAPI] = {}

    def api(self, provider: str) -> BatchAPI | None:
        if provider not in self._apis:
            rubric = next((r for r in self.rt.rubrics.values() if r.judge.provider == provider), None)
            if rubric is None:
                return None
            self._apis[provider] = batches_for(self.rt.judge_for(rubric).inner)
        return self._apis[provider]

    # -- results ----------------------------------------------------------------------------
    def collect(self) -> None:
        for batch_id, info in self.store.submitted().items():
            api = self.api(info["provider"])
            if api is None:
                log.warning("no loaded rubric judges with this provider; batch left as is",
                            extra={"batch_id": batch_id, "provider": info["provider"]})
                continue
            try:
                ended = call_with_retries(lambda: api.ended(batch_id))
                results = call_with_retries(lambda: list(api.results(batch_id))) if ended else []
            except Exception as exc:  # boundary: read again next cycle, nothing is lost
                if status_of(exc) == 404:  # the provider no longer has it (archived, deleted): resubmit
                    for score_id in info["ids"]:
                        self.finish(score_id, batch_id, "retry", "batch not found at the provider", api)
                    self.store.batch_done(batch_id)
                else:
                    self._interrupted(batch_id, exc)
                continue
            if not ended:
                self.summary.counts["batches_running"] += 1
                continue
            try:
                seen = set()
                for custom_id, kind, payload in results:
                    seen.add(custom_id)
                    self.finish(custom_id, batch_id, kind, payload, api)
                missing = set(info["ids"]) - seen
                # A batch that failed as a whole (validation, the enqueued-token limit) has no
                # results: its requests are retried with the provider's reason, so an item that
                # runs out of tries says why.
                reason = (call_with_retries(lambda: api.failure(batch_id)) if missing else None) \
                    or "missing from the batch results"
                for score_id in missing:
                    self.finish(score_id, batch_id, "retry", reason, api)
            except Exception as exc:  # boundary: finished items are skipped when it is read again
                self._interrupted(batch_id, exc)
                continue
            self.store.batch_done(batch_id)
            self.summary.counts["batches_ended"] += 1
            self._cleanup(api, batch_id)

    def _cleanup(self, api: BatchAPI, batch_id: str) -> None:
        try:
            self.summary.counts["files_deleted"] += call_with_retries(lambda: api.cleanup(batch_id))
        except Exception as exc:  # boundary: a file left at the provider costs storage, not correctness
            log.warning("batch files not deleted", extra={"batch_id": batch_id, "status": status_of(exc),
                                                           "error_type": type(exc).__name__})

    def _interrupted(self, batch_id: str, exc: Exception) -> None:
        if as_transient(exc) is None and not isinstance(exc, TraceJudgeError):
            log.exception("batch results failed; retried next cycle", extra={"batch_id": batch_id})
        else:
            log.warning("batch results interrupted; retried next cycle",
                        extra={"batch_id": batch_id, "error": str(exc)[:200]})
        self.summary.counts["batches_failed_to_collect"] += 1

    def finish(self, score_id: str, batch_id: str | None, kind: str, payload: object, api: BatchAPI) -> None:
        """Settle one request's result. ``batch_id``: the batch it came back from; None for a
        pending request rejected before it was submitted."""
        item = self.store.item(score_id)
        if item is None or item.batch_id != batch_id:
            return  # finished already, or resubmitted in a later batch that owns it now
        rubric = self.rt.rubrics.get(item.rubric_key)
        if rubric is None:
            log.warning("batch result for a rubric this worker does not load; kept",
                        extra={"rubric": item.rubric_key, "score_id": score_id})
            return
        # Its result is here: the budget held back at submission is given back (the cost is
        # recorded by finish_* below, or by the resubmission's own reservation).
        self._release(item)
        if self.rt.outcomes.is_done(score_id):
            self.store.forget(score_id)
            return
        try:
            if kind == "rejected":
                raise Unscored("judge_rejected", str(payload))
            if kind == "retry":
                item.tries += 1
                if item.tries >= MAX_TRIES:
                    raise Unscored("retries_exhausted", f"batch request failed {item.tries} times; last: {payload}")
                self.summary.counts["retries"] += 1
                self.store.requeue(item)
                return
            try:
                reply = api.reply(payload, item)
            except Exception as exc:  # a result we cannot read is this item's problem, not the batch's
                raise Unscored("unparseable", f"batch result not readable: {type(exc).__name__}: {str(exc)[:200]}") from None
            item.usage = list(dataclasses.astuple(item.usage_total + reply.usage))
            item.calls += 1
            verdict = verdict_or_repair(rubric, reply, repaired=item.repair is not None)
            if isinstance(verdict, str):
                item.repair, item.tries = {"turn": reply.assistant_turn, "text": verdict}, 0
                self.summary.counts["repairs"] += 1
                self.store.requeue(item)
                return
        except Unscored as exc:
            outcome = finish_unscored(self.rt, rubric, score_id, _prepared(item).subject, exc, item.usage_total,
                                      item.calls, item.metadata, item.trace_time, batch=True)
        else:
            outcome = finish_scored(self.rt, rubric, _prepared(item), verdict, item.usage_total, item.calls,
                                    item.repair is not None, batch=True)
        self.summary.counts[outcome.status] += 1  # metrics and spend: recorded by finish_*
        self.store.forget(score_id)

    # -- submissions ------------------------------------------------------------------------
    def submit(self) -> None:
        for provider in PROVIDERS:
            ids = self.store.pending_ids(provider, MAX_BATCH)
            if not ids:
                continue
            api = self.api(provider)
            items = [i for i in (self.store.item(s) for s in ids) if i is not None]
            held = self.rt.budget.held(self.rt.rubrics.values())  # over budget: wait, as parked jobs do
            ready = []
            for item in items:
                if self.rt.outcomes.is_done(item.score_id):
                    self.store.forget(item.score_id)
                elif item.rubric_key in held:
                    self.summary.counts["held_by_budget"] += 1
                elif item.rubric_key in self.rt.rubrics:
                    ready.append(item)
            if not ready or api is None:
                continue
            by_model: dict[str, list[Item]] = {}
            for item in self._reserve(ready):  # an OpenAI batch file must hold one model only
                by_model.setdefault(item.request["model"], []).append(item)
            for group in by_model.values():
                batches, too_large = cut(group, lambda i: len(api.line(i)), max_count=MAX_BATCH,
                                         max_bytes=MAX_BYTES[provider], max_tokens=self.rt.settings.batch_max_tokens)
                for item, why in too_large:
                    self._release(item)
                    self.finish(item.score_id, None, "rejected", f"request_too_large: {why}", api)
                for batch in batches:
                    self._submit(provider, api, batch)

    def _reserve(self, items: list[Item]) -> list[Item]:
        """Hold back each request's typical cost now, as an online job does before its call, so
        a cycle cannot submit thousands of requests past the cap; a held request stays pending."""
        kept = []
        for item in items:
            reservation = self.rt.budget.admit(self.rt.rubrics[item.rubric_key])
            if isinstance(reservation, Held):
                self.summary.counts["held_by_budget"] += 1
                continue
            item.reserved = [reservation.day, reservation.rubric, reservation.micro_usd]
            kept.append(item)
        return kept

    def _release(self, item: Item) -> None:
        if item.reserved:
            day, rubric, micro_usd = item.reserved
            self.rt.budget.release(Reservation(str(day), str(rubric), int(micro_usd)))
            item.reserved = None

    def _submit(self, provider: str, api: BatchAPI, items: list[Item]) -> None:
        try:
            # One attempt, not retried in place: if the provider created the batch but its reply
            # was lost, a retry would create (and bill) a second one. The next cycle tries again.
            batch_id = api.submit(items)
        except Exception as exc:  # boundary: the items stay pending for the next cycle
            for item in items:
                self._release(item)
            log.warning("batch submission failed; requests stay pending",
                        extra={"provider": provider, "status": status_of(exc), "error": str(exc)[:200]})
            self.summary.counts["submissions_failed"] += 1
            return
        self.store.mark_submitted(batch_id, provider, items)
        self.summary.counts["batches_submitted"] += 1
        self.summary.counts["requests_submitted"] += len(items)
        log.info("batch submitted", extra={"provider": provider, "batch_id": batch_id, "requests": len(items)})

def _prepared(item: Item) -> Prepared:
    return Prepared(item.score_id, item.trace_id, item.rubric_key, item.judge_request,
                    ScoreFacts.from_json(item.facts), item.metadata, item.trace_time)

