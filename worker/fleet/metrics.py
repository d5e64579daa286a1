"""Prometheus metrics of the worker fleet, correct with many processes.

dramatiq's own ``Prometheus`` middleware makes every worker process write its metrics into one
multiprocess directory (env ``dramatiq_prom_db``; ``tracejudge worker`` gives each metrics port a
fresh one). Our per-job metrics are created after process boot, like dramatiq's, so they land
in the same directory. One forked exposition process (``serve_metrics``, on
``TRACEJUDGE_METRICS_PORT``) serves the sum over processes plus the fleet-wide figures kept in
Redis (queues, dead letters, sampler, budget, rate-limit waits), read at scrape time.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

import dramatiq
import redis
from dramatiq.middleware.prometheus import DB_PATH, HTTP_HOST, Prometheus

from samplers.sampler import CURSOR_KEY
from worker.accounting import job_metrics
from worker.accounting.budget import ALL, Budget
from worker.accounting.outcomes import EXHAUSTED, STATS, UNCONFIRMED
from worker.fleet.queues import queue_depth
from worker.jobs import RubricKey
from worker.logs import configure_logging, register_settings_secrets
from worker.redis_client import as_text
from worker.review.agreement import AgreementFigures
from worker.review.agreement import read_all as read_agreement
from worker.rubrics.rubric import Rubric, load_rubrics
from worker.settings import Settings

if TYPE_CHECKING:  # prometheus_client is imported at run time only once dramatiq set its directory
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("tracejudge.metrics")
# Written by worker/rate_limits (its Redis backend): limiter key -> number of waits / seconds waited.
RATELIMIT_WAITS = "tracejudge:ratelimit:waits"
RATELIMIT_WAIT_SECONDS = "tracejudge:ratelimit:wait_seconds"


class FleetPrometheus(Prometheus):
    """dramatiq's middleware, with our job metrics beside its own and our exposition server."""

    @property
    def forks(self) -> list[Callable[[], int]]:
        return [serve_metrics]

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # sets PROMETHEUS_MULTIPROC_DIR before the import below; dramatiq's Prometheus is unannotated
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]
        job_metrics.enable()


class FleetCollector:
    """Fleet-wide figures from Redis, read when Prometheus scrapes (one exposition process)."""

    def __init__(self, settings: Settings, rubrics: Mapping[str, Rubric], client: redis.Redis | None = None):
        self.settings = settings
        self.rubrics = rubrics
        self.client = client or redis.Redis.from_url(settings.redis_url, socket_timeout=5)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("tracejudge_redis_up", "1 when the fleet's Redis answered this scrape.")
        try:
            families = list(self._families(CounterMetricFamily, GaugeMetricFamily))
        except Exception as exc:  # boundary: a scrape reports Redis down instead of failing
            log.warning("metrics scrape could not read Redis", extra={"error": str(exc)[:200]})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, Counter: type[CounterMetricFamily], Gauge: type[GaugeMetricFamily]) -> Iterator[Metric]:
        depth = queue_depth(self.client)
        queue = Gauge("tracejudge_queue_messages", "Judge queue messages by state.", labels=["queue", "state"])
        for state, value in (("ready", depth.ready), ("in_flight", depth.unacked), ("delayed", depth.delayed)):
            queue.add_metric(["judge", state], value)
        yield queue
        dead = Gauge("tracejudge_dead_letters", "Dead-lettered judge jobs.", labels=["queue"])
        dead.add_metric(["judge"], depth.dead)
        yield dead

        stats = {as_text(k): float(v) for k, v in self.client.hgetall(STATS).items()}
        sampler = Counter("tracejudge_sampler_traces", "Traces the sampler scanned, excluded, selected, "
                          "enqueued, or held back for budget.", labels=["stage"])
        for stage, field in (("scanned", "sampler_scanned"), ("excluded", "sampler_excluded"),
                             ("selected", "sampler_selected"), ("enqueued", "enqueued"),
                             ("budget_held", "sampler_budget_held")):
            sampler.add_metric([stage], stats.get(field, 0))
        yield sampler
        outcomes = Counter("tracejudge_fleet_outcomes", "Fleet-wide job outcomes, counted once per score id.",
                           labels=["outcome"])
        for outcome in ("scored", "unscored", "not_applicable"):
            outcomes.add_metric([outcome], stats.get(outcome, 0))
        outcomes.add_metric(["retries_exhausted"], self.client.hlen(EXHAUSTED))
        yield outcomes
        written = Counter("tracejudge_scores_written", "Scores Langfuse accepted, by what its read-back found: "
                          "confirmed (stored), missing (dropped after a re-write), rewritten (written again).",
                          labels=["state"])
        for state in ("confirmed", "missing", "rewritten"):
            written.add_metric([state], stats.get(state, 0))
        yield written
        waiting = Gauge("tracejudge_scores_unconfirmed", "Written scores not yet read back from Langfuse.")
        waiting.add_metric([], self.client.zcard(UNCONFIRMED))
        yield waiting

        cursor = self.client.get(CURSOR_KEY)
        lag = Gauge("tracejudge_sampler_lag_seconds", "Now minus the sampler's cursor (-1: no cursor yet).")
        lag.add_metric([], (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(as_text(cursor)))
                       .total_seconds() if cursor else -1)
        yield lag

        waits = Counter("tracejudge_ratelimit_waits", "Times a call waited for a fleet-wide rate limit.",
                        labels=["limiter"])
        waited = Counter("tracejudge_ratelimit_wait_seconds", "Seconds calls waited for a fleet-wide rate limit.",
                         labels=["limiter"])
        for family, key in ((waits, RATELIMIT_WAITS), (waited, RATELIMIT_WAIT_SECONDS)):
            for limiter, amount in self.client.hgetall(key).items():
                family.add_metric([as_text(limiter)], float(amount))
            yield family

        budget = Budget(self.client, self.settings.daily_budget_usd)
        fields = budget.day_fields()
        spent = budget.spent()
        parked = budget.parked()
        spent_f = Gauge("tracejudge_budget_spent_usd", "Judge spend today (UTC); rubric=\"*\" is the fleet.",
                        labels=["rubric"])
        left_f = Gauge("tracejudge_budget_left_usd", "Daily budget left today (UTC); only capped scopes.",
                       labels=["rubric"])
        held_f = Gauge("tracejudge_budget_held", "1 while a rubric's jobs are held back by a budget cap.",
                       labels=["rubric"])
        parked_f = Gauge("tracejudge_budget_parked_jobs", "Jobs parked until the budget allows them.",
                         labels=["rubric"])
        spent_f.add_metric([ALL], spent.get(ALL, 0.0))
        if self.settings.daily_budget_usd is not None:
            left_f.add_metric([ALL], max(0.0, self.settings.daily_budget_usd - spent.get(ALL, 0.0)))
        for name, rubric in _latest_versions(self.rubrics).items():
            rubric_state = budget.state(rubric, fields)
            spent_f.add_metric([name], rubric_state.spent_usd)
            if rubric_state.left_usd is not None:
                left_f.add_metric([name], rubric_state.left_usd)
            held_f.add_metric([name], 1 if rubric_state.held_by else 0)
            parked_f.add_metric([name], sum(n for key, n in parked.items() if RubricKey.parse(key).name == name))
        yield from (spent_f, left_f, held_f, parked_f)
        yield from _agreement_families(Gauge, read_agreement(self.client))


def _agreement_families(Gauge: type[GaugeMetricFamily],
                        results: Mapping[str, AgreementFigures]) -> Iterator[GaugeMetricFamily]:
    """Judge-human agreement per rubric version, as the review tick last computed it."""
    measure = Gauge("tracejudge_agreement", "Judge-human agreement over the rolling window: exact, within_one, "
                    "kappa (with kappa_low/kappa_high, its 95% bootstrap interval), spearman.",
                    labels=["rubric", "version", "measure"])
    pairs = Gauge("tracejudge_agreement_pairs", "Human-labelled traces paired with the judge's score.",
                  labels=["rubric", "version"])
    low = Gauge("tracejudge_agreement_low", "1 while kappa is below the rubric's calibration.min_kappa.",
                labels=["rubric", "version"])
    for result in results.values():
        labels = [str(result["rubric"]), str(result["version"])]
        for name, value in (("exact", result.get("exact")), ("within_one", result.get("within_one")),
                            ("kappa", result.get("kappa")), ("kappa_low", result.get("kappa_low")),
                            ("kappa_high", result.get("kappa_high")), ("spearman", result.get("spearman"))):
            if value is not None:
                measure.add_metric(labels + [name], float(value))
        pairs.add_metric(labels, result["n"])
        low.add_metric(labels, 1 if result["status"] == "low" else 0)
    yield from (measure, pairs, low)


def _latest_versions(rubrics: Mapping[str, Rubric]) -> dict[str, Rubric]:
    latest: dict[str, Rubric] = {}
    for rubric in rubrics.values():
        if rubric.name not in latest or rubric.version > latest[rubric.name].version:
            latest[rubric.name] = rubric
    return latest


def prepare_metrics_dir(port: int, environ: MutableMapping[str, str]) -> bool:
    """Before a fleet starts: False when ``port`` is taken (another fleet on this host; its files
    are left alone). Else empties the multiprocess directory, one per port (stale files would
    add a dead fleet's counts), and points dramatiq's middleware at it through ``environ``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((environ.get("dramatiq_prom_host", "0.0.0.0"), port))
        except OSError:
            return False
    path = Path(environ.get("dramatiq_prom_db") or Path(tempfile.gettempdir()) / f"tracejudge-prometheus-{port}")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # only the metric files: the directory may be the operator's
        os.unlink(stale)
    environ["dramatiq_prom_db"] = environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return True


def serve_metrics() -> int:
    """The exposition process (a dramatiq fork): all worker processes' metrics plus Redis's."""
    import prometheus_client as prom  # only in the forked process, after dramatiq set its directory
    from prometheus_client import multiprocess

    configure_logging()
    settings = Settings.from_env()
    register_settings_secrets(settings)
    registry = prom.CollectorRegistry()
    # prometheus_client leaves MultiProcessCollector.__init__ unannotated: hence the ignore.
    multiprocess.MultiProcessCollector(registry, path=DB_PATH)  # type: ignore[no-untyped-call]
    registry.register(FleetCollector(settings, load_rubrics(settings.rubrics_dir)))
    try:
        _, thread = prom.start_http_server(settings.metrics_port, addr=HTTP_HOST, registry=registry)
    except OSError as exc:  # the fleet keeps judging; only its metrics are missing
        log.error("cannot serve metrics", extra={"port": settings.metrics_port, "error": str(exc)})
        return 1
    log.info("serving metrics", extra={"port": settings.metrics_port, "db": DB_PATH})
    thread.join()
    return 0
