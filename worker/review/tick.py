"""The review loop's periodic part, in one call for the scheduler: ``review_tick(rt)``.

Each run: route the newly judged traces (calibration share, boundary verdicts) to their
rubric's annotation queue and the failures to its dataset; route the week's bottom N per
segment; put the traces users flagged into the datasets; read the human labels back and
refresh the judge–human agreement of every rubric version, alerting the owner when kappa falls
below ``calibration.min_kappa``; deliver pending alerts. Everything is idempotent (markers in
Redis, deterministic ids in Langfuse), so a rerun, or two schedulers, add nothing twice.

This is a documented boundary: a step that fails (Langfuse down, a refused queue) is logged and
named in the summary, the other steps still run, and the failed step's scan cursor does not
move, so the next run does its work again.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import TypedDict

import redis
from langfuse.api import LangfuseAPI

from worker.alerts import outbox
from worker.alerts.sinks import Sink
from worker.review import agreement, labels, routing
from worker.review.agreement import AgreementFigures, Status
from worker.review.datasets import DatasetWriter, feedback_specs, flagged
from worker.review.queue import QueueWriter, ensure_queue, queue_name
from worker.review.reads import scores_since, trace_id_of
from worker.rubrics.review_spec import CalibrationSpec, FeedbackSpec
from worker.rubrics.rubric import Rubric
from worker.runtime import Runtime

log = logging.getLogger("tracejudge.review")


class AgreementBrief(TypedDict):
    """A rubric version's refreshed agreement, in the summary (the figures: agreement.py)."""

    status: Status
    n: int
    kappa: float | None


@dataclasses.dataclass
class ReviewSummary:
    judged_scanned: int = 0
    queued: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # reason -> new items
    dataset_items: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    agreement: dict[str, AgreementBrief] = dataclasses.field(default_factory=dict)  # by rubric key
    alerts: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "queued": dict(self.queued), "dataset_items": dict(self.dataset_items)}


class _Writers:
    """One queue writer and one dataset writer per rubric name, built on first use."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self._queues: dict[str, QueueWriter] = {}
        self._datasets: dict[str, DatasetWriter] = {}

    def queue(self, rubric: Rubric) -> QueueWriter:
        if rubric.name not in self._queues:
            versions = sorted((r for r in self.rt.rubrics.values() if r.name == rubric.name and r.review),
                              key=lambda r: r.version)
            configs = list(dict.fromkeys(self.rt.score_configs.config_id(r) for r in versions))
            queue_id = ensure_queue(self.rt.langfuse, self.rt.redis, versions[-1], configs)
            self._queues[rubric.name] = QueueWriter(self.rt.langfuse, self.rt.redis, rubric.name, queue_id,
                                                    queue_name(versions[-1]))
        return self._queues[rubric.name]

    def dataset(self, rubric: Rubric) -> DatasetWriter:
        if rubric.name not in self._datasets:
            # the plain reader: a dataset item's read has no sibling jobs to share it with
            self._datasets[rubric.name] = DatasetWriter(self.rt.langfuse, self.rt.redis, self.rt.traces.reader, rubric)
        return self._datasets[rubric.name]


def review_tick(rt: Runtime, *, now: dt.datetime | None = None) -> ReviewSummary:
    now = now or dt.datetime.now(dt.timezone.utc)
    summary = ReviewSummary()
    writers = _Writers(rt)
    reviewed = {key: r for key, r in rt.rubrics.items() if r.review}
    for name in sorted({r.name for r in reviewed.values()}):
        _step(summary, f"judged scores of {name}", lambda: _route_judged(rt, writers, reviewed, name, now, summary))
    for rubric in sorted(reviewed.values(), key=lambda r: r.key):
        _step(summary, f"bottom traces of {rubric.key}", lambda: _route_bottom(rt, writers, rubric, now, summary))
    for rubric, spec in feedback_specs(rt.rubrics):
        _step(summary, f"user feedback {spec.name} for {rubric.name}",
              lambda: _route_feedback(rt, writers, rubric, spec, now, summary))
    for rubric in _newest(reviewed).values():
        if rubric.review and rubric.review.dataset:
            _step(summary, f"pending dataset items of {rubric.name}", lambda: _retry_pending(writers, rubric, summary))
    _step(summary, "agreement", lambda: refresh_agreement(rt.langfuse, rt.redis, rt.rubrics, rt.sinks, now, summary))
    _step(summary, "alert delivery", lambda: outbox.deliver(rt.redis, rt.sinks))
    return summary


def _newest(rubrics: dict[str, Rubric]) -> dict[str, Rubric]:
    newest: dict[str, Rubric] = {}
    for rubric in rubrics.values():
        if rubric.name not in newest or rubric.version > newest[rubric.name].version:
            newest[rubric.name] = rubric
    return newest


def _step(summary: ReviewSummary, what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # boundary (see the module docstring): the next tick redoes this step
        summary.errors.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
        log.warning("review step failed; retried next tick",
                    extra={"step": what, "error_type": type(exc).__name__, "error": str(exc)[:200]})


def _route_judged(rt: Runtime, writers: _Writers, reviewed: dict[str, Rubric], name: str, now: dt.datetime,
                  summary: ReviewSummary) -> None:
    since, until = routing.scan_window(rt.redis, f"judged:{name}", now)
    for score in routing.judged_scores(rt.langfuse, reviewed, {name}, since, until):
        summary.judged_scanned += 1
        reasons = routing.review_reasons(score, rt.settings.sample_rate)
        if reasons and writers.queue(score.rubric).add(score.trace_id):
            summary.queued[reasons[0]] += 1
        if routing.below_threshold(score) and writers.dataset(score.rubric).add(
                score.trace_id, "below_threshold",
                {"rubric_version": score.rubric.version, "judge_value": score.value,
                 "judge_points": score.points, "judge_comment": (score.comment or "")[:1000]}):
            summary.dataset_items["below_threshold"] += 1
    routing.finish_scan(rt.redis, f"judged:{name}", until)


def _route_bottom(rt: Runtime, writers: _Writers, rubric: Rubric, now: dt.datetime, summary: ReviewSummary) -> None:
    for trace_id, cell, week in routing.bottom_candidates(rt.redis, rubric, now.date()):
        if routing.claim_bottom(rt.redis, rubric, cell, week, trace_id) and writers.queue(rubric).add(trace_id):
            summary.queued["bottom"] += 1


def _route_feedback(rt: Runtime, writers: _Writers, rubric: Rubric, spec: FeedbackSpec, now: dt.datetime,
                    summary: ReviewSummary) -> None:
    what = f"feedback:{spec.name}:{rubric.name}"
    since, until = routing.scan_window(rt.redis, what, now)
    for score in scores_since(rt.langfuse, names={spec.name}, since=since, until=until):
        trace_id = trace_id_of(score)
        if trace_id and flagged(spec, score.value) and writers.dataset(rubric).add(
                trace_id, "user_feedback", {"feedback_name": spec.name, "feedback_value": score.value,
                                            "feedback_comment": (score.comment or "")[:1000]}):
            summary.dataset_items["user_feedback"] += 1
    routing.finish_scan(rt.redis, what, until)


def _retry_pending(writers: _Writers, rubric: Rubric, summary: ReviewSummary) -> None:
    added = writers.dataset(rubric).retry_pending()
    if added:
        summary.dataset_items["retried"] += added


def window_days(rubric: Rubric) -> int:
    return (rubric.calibration or CalibrationSpec()).window_days


def refresh_agreement(api: LangfuseAPI, client: redis.Redis, rubrics: dict[str, Rubric], sinks: list[Sink],
                      now: dt.datetime | None = None,
                      summary: ReviewSummary | None = None) -> dict[str, AgreementFigures]:
    """Read the human labels of the longest window, pair them per version, store the figures,
    raise the alerts they call for (into the outbox, for ``sinks``). Returns the figures by rubric key."""
    now = now or dt.datetime.now(dt.timezone.utc)
    summary = summary or ReviewSummary()
    by_name: dict[str, list[Rubric]] = {}
    for rubric in rubrics.values():
        by_name.setdefault(rubric.name, []).append(rubric)
    if not by_name:
        return {}
    longest = max(window_days(r) for r in rubrics.values())
    human = labels.human_labels(api, set(by_name), now - dt.timedelta(days=longest), now)
    results: dict[str, AgreementFigures] = {}
    for name, versions in sorted(by_name.items()):
        days = max(window_days(r) for r in versions)
        start = now - dt.timedelta(days=days)
        labelled = {t: {who: v for who, v in ratings.items() if v[1] >= start}
                    for t, ratings in human.get(name, {}).items()}
        labelled = {t: ratings for t, ratings in labelled.items() if ratings}
        if not labelled and not any(r.review or r.calibration for r in versions):
            continue
        pairs, unpaired = labels.pair_up(api, client, versions, labelled)
        for rubric in versions:
            result = agreement.figures(rubric, pairs[rubric.key], window_days=days, unpaired=unpaired, now=now)
            agreement.store(client, rubric, result)
            results[rubric.key] = result
            summary.agreement[rubric.key] = {"status": result["status"], "n": result["n"], "kappa": result["kappa"]}
            alert = agreement.new_alert(client, rubric, result, now.date())
            if alert is not None:
                outbox.enqueue(client, alert, sinks)  # stored before the state says "alerted"
                agreement.remember_alert(client, rubric, result)
                summary.alerts.append(alert.title)
    return results
