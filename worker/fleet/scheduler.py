"""The Procfile's scheduler: periodic sampler ticks, one active instance fleet-wide.

Safe to run twice: a Redis lease elects one; the other waits and takes over when the
holder stops renewing (crash, deploy).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import redis

from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.accounting.budget import Budget
from worker.alerts import outbox
from worker.alerts.sinks import sinks_for
from worker.batching.cycle import batch_tick
from worker.drift.run import run_drift
from worker.fleet.broker import build_broker
from worker.jobs import judge_message
from worker.judging.runtime import get_runtime
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.links import trace_linker
from worker.rubrics.rubric import load_rubrics
from worker.settings import Settings

LOCK_KEY = "tracejudge:scheduler:lock"
log = logging.getLogger("tracejudge.scheduler")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, ttl_seconds: float):
        self.client = client
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(ttl_seconds * 1000)
        self._renew = client.register_script(_RENEW)

    def hold(self) -> bool:
        """Take the lease if free, renew it if ours; False when another scheduler holds it."""
        if self._renew(keys=[LOCK_KEY], args=[self.token, self.ttl_ms]):
            return True
        return bool(self.client.set(LOCK_KEY, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        if (self.client.get(LOCK_KEY) or b"").decode() == self.token:
            self.client.delete(LOCK_KEY)


DRIFT_LAST_RUN = "tracejudge:drift:last_run"


def drift_due(client: redis.Redis, every_seconds: float, now: float) -> bool:
    last = client.get(DRIFT_LAST_RUN)
    return last is None or now - float(last) >= every_seconds


def budget_tick(sampler: Sampler) -> int:
    """Unpark jobs whose rubric is no longer held (a new UTC day, a raised cap) and deliver any
    alert still in the outbox; returns how many jobs went back on the queue."""
    budget = Budget(sampler.client, sampler.settings.daily_budget_usd)
    moved = budget.unpark({r.key: r for r in sampler.rubrics},
                          lambda trace_id, rubric_key: sampler.broker.enqueue(judge_message(trace_id, rubric_key)))
    if sampler.client.hlen(outbox.OUTBOX):
        outbox.deliver(sampler.client, sinks_for(sampler.settings))
    return moved


def run_scheduler(sampler: Sampler, interval: float, stop: threading.Event, drift_tick=None,
                  drift_every: float = 86400, batch_tick=None) -> None:
    """Sampler ticks every ``interval``; ``drift_tick()`` once every ``drift_every`` seconds;
    ``batch_tick()`` (submit and poll batch-mode judging) at every tick, paced by itself."""
    lease = Lease(sampler.client, ttl_seconds=max(60.0, 3 * interval))
    leading = False
    try:
        while not stop.is_set():
            if lease.hold():
                if not leading:
                    log.info("scheduler is active")
                    leading = True
                try:
                    report = sampler.tick()
                    if report:
                        log.info("sampler pass", extra={"summary": report.line()})
                except Exception:  # boundary: a failed tick is logged and retried next interval
                    log.exception("sampler tick failed; the cursor did not move")
                try:
                    budget_tick(sampler)
                except Exception:  # boundary: parked jobs stay parked until the next tick
                    log.exception("budget tick failed; parked jobs stay parked")
                if batch_tick is not None:
                    try:
                        batch_tick()
                    except Exception:  # boundary: pending and submitted batch requests wait for the next tick
                        log.exception("batch cycle failed; it runs again at the next tick")
                if drift_tick is not None and drift_due(sampler.client, drift_every, time.time()):
                    try:
                        drift_tick()
                        sampler.client.set(DRIFT_LAST_RUN, time.time())
                    except Exception:  # boundary: retried at the next tick
                        log.exception("drift check failed; it runs again at the next tick")
            else:
                if leading:
                    log.warning("lost the scheduler lease")
                leading = False
            stop.wait(interval)
    finally:
        lease.release()


def build_sampler(settings: Settings) -> Sampler:
    """The sampler as the scheduler and ``tracejudge sample``/``backfill`` run it."""
    client = redis.Redis.from_url(settings.redis_url)
    return Sampler(settings, load_rubrics(settings.rubrics_dir), LangfuseTraceSource(build_langfuse_api(settings)),
                   build_broker(settings), client)


def run_fleet_scheduler(sampler: Sampler, settings: Settings, stop: threading.Event) -> None:
    """The Procfile's scheduler: sampler ticks, the drift check and, when a batch-mode rubric is
    loaded, batch cycles, until ``stop`` is set."""
    def drift_tick():
        _, alerts, (sent, pending) = run_drift(settings, {r.key: r for r in sampler.rubrics}, sampler.client,
                                               trace_linker(settings))
        logging.getLogger("tracejudge.drift").info(
            "drift check", extra={"new_alerts": len(alerts), "delivered": sent, "pending": pending})

    batch = None
    if any(r.judge.mode == "batch" for r in sampler.rubrics):
        batch = lambda: batch_tick(get_runtime())  # noqa: E731  (the runtime is built on first use)
    run_scheduler(sampler, settings.sample_interval_seconds, stop, drift_tick, settings.drift_interval_seconds, batch)
