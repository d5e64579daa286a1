"""``tracejudge drift --once``: check every cell, turn new drifts into alerts, deliver them."""
from __future__ import annotations

import datetime as dt
import hashlib

import redis

from worker.alerts import outbox
from worker.alerts.kinds import DriftAlert, QualityDrop, TraceLink, UnscoredRise, Week
from worker.alerts.sinks import sinks_for
from worker.drift.check import CellReport, new_alerts, remember_alert, run_check
from worker.jobs import format_rubric_key
from worker.rubrics.rubric import Rubric
from worker.settings import Settings


def alert_for(report: CellReport, rubric: Rubric, trace_url, today: dt.date) -> DriftAlert:
    d = report.decision
    cls = QualityDrop if d.status == "alert" else UnscoredRise
    title = (f"{rubric.name} v{rubric.version} dropped {d.drop:.1f} points for {report.segment}"
             if cls is QualityDrop else
             f"{rubric.name} v{rubric.version}: unscored rate rose to {100 * report.unscored_rate_curr:.1f}% for {report.segment}")
    owner = rubric.owner or {}
    return cls(
        id=hashlib.sha256(f"{report.cell}|{cls.kind}|{d.drop}|{today}".encode()).hexdigest()[:20],
        title=title, cell=report.cell, rubric=rubric.name, owner=owner.get("team", "unowned"),
        route=owner.get("alert_route"), version=rubric.version, judge_model=report.judge_model,
        segment=report.segment, prev=Week(d.prev_mean, d.n_prev), curr=Week(d.curr_mean, d.n_curr),
        drop_points=d.drop, p_value=d.p, q_value=d.q,
        unscored_rate={"prev": report.unscored_rate_prev, "curr": report.unscored_rate_curr},
        bottom_traces=[TraceLink(t, p, trace_url(t)) for t, p in report.bottom],
    )


def run_drift(settings: Settings, rubrics: dict[str, Rubric], client: redis.Redis, trace_url,
              today: dt.date | None = None) -> tuple[list[CellReport], list[DriftAlert], tuple[int, int]]:
    today = today or dt.datetime.now(dt.timezone.utc).date()
    reports = run_check(client, rubrics, today)
    sinks = sinks_for(settings)
    alerts = []
    for report in new_alerts(client, reports):
        rubric = rubrics[format_rubric_key(report.rubric, report.version)]
        alert = alert_for(report, rubric, trace_url, today)
        outbox.enqueue(client, alert, sinks)  # stored before the state says "alerted"
        remember_alert(client, report)
        alerts.append(alert)
    delivery = outbox.deliver(client, sinks)
    return reports, alerts, delivery
