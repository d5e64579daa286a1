"""``tracejudge drift --once``: check every cell, turn new drifts into alerts, deliver them."""
from __future__ import annotations

import datetime as dt
import hashlib

import redis

from worker.alerts import outbox
from worker.alerts.sinks import PagerDutySink, SlackSink, WebhookSink
from worker.drift.check import CellReport, new_alerts, remember_alert, run_check
from worker.rubrics import Rubric
from worker.settings import Settings


def sinks_for(settings: Settings) -> list:
    sinks = []
    if settings.alert_webhook_url:
        sinks.append(WebhookSink(settings.alert_webhook_url))
    if settings.slack_webhook_url:
        sinks.append(SlackSink(settings.slack_webhook_url))
    if settings.pagerduty_routing_key:
        sinks.append(PagerDutySink(settings.pagerduty_routing_key, settings.pagerduty_events_url))
    return sinks


def alert_payload(report: CellReport, rubric: Rubric, trace_url) -> dict:
    d = report.decision
    kind = "quality_drop" if d.status == "alert" else "unscored_rise"
    title = (f"{rubric.name} v{rubric.version} dropped {d.drop:.1f} points for {report.segment}"
             if kind == "quality_drop" else
             f"{rubric.name} v{rubric.version}: unscored rate rose to {100 * report.unscored_rate_curr:.1f}% for {report.segment}")
    owner = rubric.owner or {}
    return {
        "id": hashlib.sha256(f"{report.cell}|{kind}|{d.drop}|{dt.date.today()}".encode()).hexdigest()[:20],
        "kind": kind, "title": title, "cell": report.cell, "rubric": rubric.name, "version": rubric.version,
        "judge_model": report.judge_model, "segment": report.segment,
        "owner": owner.get("team", "unowned"), "route": owner.get("alert_route"),
        "prev": {"mean": d.prev_mean, "n": d.n_prev}, "curr": {"mean": d.curr_mean, "n": d.n_curr},
        "drop_points": d.drop, "p_value": d.p, "q_value": d.q,
        "unscored_rate": {"prev": report.unscored_rate_prev, "curr": report.unscored_rate_curr},
        "bottom_traces": [{"trace_id": t, "points": p, "url": trace_url(t)} for t, p in report.bottom],
    }


def run_drift(settings: Settings, rubrics: dict[str, Rubric], client: redis.Redis, trace_url,
              today: dt.date | None = None) -> tuple[list[CellReport], list[dict], tuple[int, int]]:
    reports = run_check(client, rubrics, today)
    sinks = sinks_for(settings)
    alerts = []
    for report in new_alerts(client, reports):
        rubric = rubrics[f"{report.rubric}@v{report.version}"]
        alert = alert_payload(report, rubric, trace_url)
        outbox.enqueue(client, alert, sinks)  # stored before the state says "alerted"
        remember_alert(client, report)
        alerts.append(alert)
    delivery = outbox.deliver(client, sinks)
    return reports, alerts, delivery
