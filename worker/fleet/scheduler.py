"""The Procfile's scheduler: periodic sampler ticks, one active instance fleet-wide.

Safe to run twice: a Redis lease elects one; the other waits and takes over when the
holder stops renewing (crash, deploy). Its command builds one Runtime (worker/runtime.py) at
start-up and hands it to every phase, as celery beat's Scheduler is handed its app.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.alerts import outbox
from worker.drift import signals
from worker.drift.run import run_detection, run_drift
from worker.fleet.broker import build_broker
from worker.fleet.confirmer import confirm_due
from worker.fleet.housekeeping import housekeep
from worker.fleet.lease import LOCK_KEY, Lease  # noqa: F401  (LOCK_KEY: where the lease lives)
from worker.jobs import judge_message
from worker.judging.batch_cycle import batch_tick
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.links import trace_linker
from worker.logs import register_settings_secrets
from worker.redis_client import connect
from worker.review.tick import review_tick
from worker.rubrics.rubric import load_rubrics
from worker.runtime import Runtime
from worker.settings import Settings

log = logging.getLogger("tracejudge.scheduler")


DRIFT_LAST_RUN = "tracejudge:drift:last_run"
REVIEW_LAST_RUN = "tracejudge:review:last_run"
DETECT_LAST_RUN = "tracejudge:detect:last_run"
DETECT_EVERY_SECONDS = 300  # the sequential detector (worker/drift/detection.py): a drop paged within minutes of crossing
REVIEW_EVERY_SECONDS = 900  # review routing, human labels and agreement (worker/review/tick.py)


def drift_due(client: redis.Redis, every_seconds: float, now: float, key: str = DRIFT_LAST_RUN) -> bool:
    last = client.get(key)
    return last is None or now - float(last) >= every_seconds


def budget_tick(sampler: Sampler, rt: Runtime) -> int:
    """Unpark jobs whose rubric is no longer held (a new UTC day, a raised cap) and deliver any
    alert still in the outbox (``rt``'s budget and sinks); returns how many jobs went back on
    the queue."""
    def requeue(trace_id: str, rubric_key: str) -> None:
        sampler.broker.enqueue(judge_message(trace_id, rubric_key))

    moved = rt.budget.unpark({r.key: r for r in sampler.rubrics}, requeue)
    if rt.redis.hlen(outbox.OUTBOX):
        outbox.deliver(rt.redis, rt.sinks)
    return moved


Tick = Callable[[], object]  # a phase's body; what it returns is not used
Phase = tuple[str, Tick, str]  # name, body, what a failure means


def run_scheduler(sampler: Sampler, interval: float, stop: threading.Event, drift_tick: Tick | None = None,
                  drift_every: float = 86400, batch_tick: Tick | None = None, review_tick: Tick | None = None,
                  review_every: float = REVIEW_EVERY_SECONDS, detect_tick: Tick | None = None,
                  detect_every: float = DETECT_EVERY_SECONDS, budget_tick: Tick | None = None) -> None:
    """Sampler ticks every ``interval``, each followed by ``budget_tick()`` (unpark what the
    budget no longer holds) and ``batch_tick()`` (batch cycles, paced by themselves, and the
    read-back); ``drift_tick()`` once every ``drift_every`` seconds, ``detect_tick()`` every
    ``detect_every``, ``review_tick()`` (the human-review loop) every ``review_every``.

    Nothing that goes wrong in a tick ends the loop: a Redis outage longer than the client
    rides out, a sink or provider error, a lost lease are logged and the next tick tries again,
    so a blip never takes the scheduler (and, under honcho, the fleet) down."""
    lease = Lease(sampler.client, ttl_seconds=max(60.0, 3 * interval))
    phases: list[Phase] = [("sampler tick", lambda: _sample(sampler), "the cursor did not move")]
    if any(r.power is not None for r in sampler.rubrics):  # samplers/planner.py: recomputed when due
        phases.insert(0, ("rate plan", sampler.refresh_plans, "the sampler keeps the last plan"))
    if budget_tick is not None:
        phases.append(("budget tick", budget_tick, "parked jobs stay parked"))
    if batch_tick is not None:
        phases.append(("batch cycle and write read-back", batch_tick, "it runs again at the next tick"))
    if drift_tick is not None:
        phases.append(("drift check", lambda: _if_due(sampler.client, DRIFT_LAST_RUN, drift_tick, drift_every),
                       "it runs again at the next tick"))
    if detect_tick is not None:
        phases.append(("sequential detection", lambda: _if_due(sampler.client, DETECT_LAST_RUN, detect_tick,
                                                               detect_every), "it runs again at the next tick"))
    if review_tick is not None:
        phases.append(("review loop", lambda: _if_due(sampler.client, REVIEW_LAST_RUN, review_tick, review_every),
                       "it runs again at the next tick"))
    leading = False
    try:
        while not stop.is_set():
            try:
                leading = _tick_as_leader(lease, phases, leading)
            except Exception:  # boundary: Redis unreachable for longer than the client rides out
                log.exception("scheduler tick failed (is Redis reachable?); retried at the next interval")
                leading = False
            stop.wait(interval)
    finally:
        try:
            lease.release()
        except Exception:  # boundary: the lease expires on its own
            log.warning("could not release the scheduler lease; it expires by itself")


def _tick_as_leader(lease: Lease, phases: list[Phase], leading: bool) -> bool:
    """One tick if the lease is ours: the phases in order, each guarded, the lease kept alive
    while they run and checked between them. Returns whether this scheduler leads."""
    if not lease.hold():
        if leading:
            log.warning("lost the scheduler lease")
        return False
    if not leading:
        log.info("scheduler is active")
    with lease.kept_alive():
        for name, phase, consequence in phases:
            if lease.lost.is_set():
                log.warning("scheduler lease lost mid-tick; the remaining phases are left to the new holder",
                            extra={"phase": name})
                return False
            try:
                phase()
            except Exception:  # boundary: a failed phase is logged and retried next interval
                log.exception(f"{name} failed; {consequence}")
    return True


def _sample(sampler: Sampler) -> None:
    report = sampler.tick()
    if report:
        log.info("sampler pass", extra={"summary": report.line()})


def _if_due(client: redis.Redis, last_run_key: str, tick: Tick, every_seconds: float) -> None:
    if drift_due(client, every_seconds, time.time(), last_run_key):
        tick()
        client.set(last_run_key, time.time())


def build_sampler(settings: Settings, rt: Runtime | None = None) -> Sampler:
    """The sampler as the scheduler and ``tracejudge sample``/``backfill`` run it: Redis through
    the fleet's one connection policy, and the settings' secrets masked in its logs. The
    scheduler passes its runtime (``rt``): the sampler shares its Redis client and rubrics."""
    register_settings_secrets(settings)
    client = connect(settings.redis_url) if rt is None else rt.redis
    rubrics = load_rubrics(settings.rubrics_dir) if rt is None else rt.rubrics
    # The legacy listing (v3 servers) carries metadata only with I/O: asked for only when a rubric needs it.
    source = LangfuseTraceSource.for_rubrics(build_langfuse_api(settings), list(rubrics.values()))
    return Sampler(settings, rubrics, source, build_broker(settings), client)


def run_fleet_scheduler(sampler: Sampler, rt: Runtime, stop: threading.Event) -> None:
    """The Procfile's scheduler: sampler ticks, the drift check, batch cycles when a batch-mode
    rubric is loaded, and the read-back of written scores, until ``stop`` is set. ``rt``, built
    once at start-up from the scheduler's settings, serves every phase."""
    settings = rt.settings

    def drift_tick() -> None:
        run = run_drift(settings, {r.key: r for r in sampler.rubrics}, sampler.client, trace_linker(settings),
                        sinks=rt.sinks)
        logging.getLogger("tracejudge.drift").info(
            "drift check", extra={"new_alerts": len(run.alerts), "delivered": run.delivery[0],
                                  "pending": run.delivery[1]})
        try:  # daily, with the drift check: expire old cell-days, trim logs (worker/fleet/housekeeping.py)
            housekeep(sampler.client, {r.key for r in sampler.rubrics})
        except Exception:  # boundary: the bounds are applied again tomorrow
            log.exception("housekeeping failed; it runs again with the next drift check")

    has_batch = any(r.judge.mode == "batch" for r in sampler.rubrics)

    def write_tick() -> None:  # every tick: batch cycles (paced by themselves), then the read-back of written scores
        if has_batch:
            batch_tick(rt)
        confirm_due(rt)  # the worker processes read back too; whoever holds the read-back lease does

    def detect_tick() -> None:  # every few minutes: the sequential detector pages a drop with when it began
        _, alerts = run_detection(settings, {r.key: r for r in sampler.rubrics}, sampler.client,
                                  trace_linker(settings), sinks=rt.sinks)
        if alerts:
            outbox.deliver(sampler.client, rt.sinks)
            logging.getLogger("tracejudge.drift").info("quality drop detected", extra={"new_alerts": len(alerts)})
        try:  # then every trace's signals, for the causes (a day of traffic a tick at most)
            signals.catch_up(rt.langfuse, sampler.client, time.time(), max_windows=12)
        except Exception:  # boundary: the causes lack the newest signals; the next tick catches up
            log.exception("counting every trace's signals failed; the next detection tick catches up")

    def review() -> None:  # the human-review loop: never raises, a failed step is redone next time
        summary = review_tick(rt)
        logging.getLogger("tracejudge.review").info("review loop", extra={"summary": summary.as_dict()})

    run_scheduler(sampler, settings.sample_interval_seconds, stop, drift_tick, settings.drift_interval_seconds,
                  write_tick, review, detect_tick=detect_tick, budget_tick=lambda: budget_tick(sampler, rt))
