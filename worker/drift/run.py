"""``tracejudge drift --once`` and the scheduler's checks: the sequential detector per cell (it
pages a quality drop, with when it began), the weekly summary (it pages only a rise in the
unscored rate), the alerts into the outbox and their delivery."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable

import redis

from worker.alerts import outbox
from worker.alerts.kinds import CauseFound, DriftAlert, QualityDrop, TraceLink, UnscoredRise, Week
from worker.alerts.sinks import Sink, sinks_for
from worker.drift import aggregates as agg
from worker.drift.check import DEFAULT_THRESHOLD, CellReport, new_alerts, remember_alert, run_check
from worker.drift.cause import find_cause
from worker.drift.cause_records import ExampleJSON
from worker.drift.detection import budget_cell_years, check_cells, update_incident
from worker.drift.records import CellDetection
from worker.jobs import format_rubric_key
from worker.langfuse_io.ordering import epoch_of
from worker.redis_client import as_text
from worker.rubrics.rubric import Rubric
from worker.settings import Settings


log = logging.getLogger("tracejudge.drift")
ATTRIBUTE_EVERY_SECONDS = 900  # an incident whose cause is not yet known is searched again this often


@dataclasses.dataclass
class DriftRun:
    reports: list[CellReport]  # the weekly summary, one per cell
    detections: list[CellDetection]  # the sequential detector, one per cell
    alerts: list[DriftAlert]  # sent (into the outbox) by this run
    delivery: tuple[int, int]  # (delivered, still in the outbox)


def unscored_alert(report: CellReport, rubric: Rubric, trace_url: Callable[[str], str],
                   today: dt.date) -> UnscoredRise:
    d = report.decision
    owner = rubric.owner or {}
    return UnscoredRise(
        id=hashlib.sha256(f"{report.cell}|{UnscoredRise.kind}|{d.drop}|{today}".encode()).hexdigest()[:20],
        title=f"{rubric.name} v{rubric.version}: unscored rate rose to {100 * report.unscored_rate_curr:.1f}% "
              f"for {report.segment}",
        cell=report.cell, rubric=rubric.name, owner=owner.get("team", "unowned"),
        route=owner.get("alert_route"), version=rubric.version, judge_model=report.judge_model,
        segment=report.segment, prev=Week(d.prev_mean, d.n_prev), curr=Week(d.curr_mean, d.n_curr),
        drop_points=d.drop if d.drop is not None else 0.0, p_value=d.p, q_value=d.q,
        unscored_rate={"prev": report.unscored_rate_prev, "curr": report.unscored_rate_curr},
        bottom_traces=[TraceLink(t, p, trace_url(t)) for t, p in report.bottom],
    )


def drop_alert(client: redis.Redis, detection: CellDetection, rubric: Rubric,
               trace_url: Callable[[str], str], kind: type[QualityDrop] = QualityDrop) -> QualityDrop:
    """A sequential detection's alert: the start, the effect and the reference it was held to,
    and what explains it as far as known (``CauseFound``: the update once the cause is known)."""
    inc = detection.incident
    if inc is None:
        raise ValueError(f"{detection.cell} has no open incident to alert")
    _name, _version, model, segment = detection.cell.split("|", 3)
    owner = rubric.owner or {}
    ref = inc["reference"]
    after_mean = ref["mean"] - inc["effect_points"]
    since = dt.datetime.fromisoformat(inc["started_at"].replace("Z", "+00:00")).date()
    days = [(since + dt.timedelta(days=i)).isoformat()
            for i in range((dt.datetime.now(dt.timezone.utc).date() - since).days + 1)]
    lo, hi = inc["effect_interval"]
    title = (f"{rubric.name} v{rubric.version} {segment}: −{inc['effect_points']:.1f} points "
             f"[−{hi:.1f}, −{lo:.1f}], started {_short(inc['started_at'])} "
             f"({_short(inc['started_between'][0])}–{_short(inc['started_between'][1])}), "
             f"detected {_hours(inc['started_at'], inc['detected_at'])} later, reference {ref['mean']:.1f} "
             f"over {ref['since']}..{ref['until']}, n = {ref['n']:,}")
    cause = inc.get("cause")
    if cause is not None:
        title += f"; {cause['reason']}"

    def links(examples: list[ExampleJSON]) -> list[TraceLink]:
        return [TraceLink(e["trace_id"], e["points"], trace_url(e["trace_id"])) for e in examples]

    return kind(
        id=inc["incident_id"] + (":cause" if kind is CauseFound else ""), title=title, cell=detection.cell, rubric=rubric.name,
        owner=owner.get("team", "unowned"), route=owner.get("alert_route"), version=rubric.version,
        judge_model=model, segment=segment, prev=Week(ref["mean"], ref["n"]), curr=Week(after_mean, inc["n_after"]),
        drop_points=inc["effect_points"], p_value=None, q_value=None, unscored_rate={},
        bottom_traces=[TraceLink(t, p, trace_url(t)) for t, p in agg.bottom(client, detection.cell, days)],
        started_at=inc["started_at"], started_between=inc["started_between"], detected_at=inc["detected_at"],
        alerted_at=inc["alerted_at"], effect_points=inc["effect_points"], effect_interval=inc["effect_interval"],
        reference=dict(ref), incident_id=inc["incident_id"], explained_by=inc.get("explained_by"),
        cause=dict(cause) if cause is not None else None,
        examples_after=links(cause["after"] if cause else []), examples_before=links(cause["before"] if cause else []))


def _short(iso: str) -> str:
    moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%a %H:%M")


def _hours(since: str, until: str) -> str:
    a, b = (dt.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (since, until))
    return f"{(b - a).total_seconds() / 3600:.1f} h"


def detection_cells(client: redis.Redis, rubrics: dict[str, Rubric]) -> dict[str, tuple[Rubric, float]]:
    """Every cell with aggregates whose rubric version is loaded, with its threshold drop."""
    cells = {}
    for raw in client.smembers(agg.CELLS):
        cell = as_text(raw)
        name, version, _model, _segment = cell.split("|", 3)
        rubric = rubrics.get(format_rubric_key(name, int(version.lstrip("v"))))
        if rubric is not None:
            cells[cell] = (rubric, float((rubric.owner or {}).get("drift_threshold_points", DEFAULT_THRESHOLD)))
    return cells


def run_detection(settings: Settings, rubrics: dict[str, Rubric], client: redis.Redis, trace_url: Callable[[str], str],
                  now: float | None = None, *,
                  sinks: list[Sink] | None = None) -> tuple[list[CellDetection], list[QualityDrop]]:
    """One pass of the sequential detector over every cell; alerts for incidents not yet sent
    (explained ones are kept, not paged), each with its cause as far as known, and the update of
    an incident sent before its cause was known (``CauseFound``, once), go into the outbox, for
    ``sinks`` (default: the settings'; a runtime passes its own)."""
    now = time.time() if now is None else now
    cells = detection_cells(client, rubrics)
    detections = check_cells(client, cells, now, settings.settle_seconds,
                             budget_cell_years(settings.false_alarms, len(cells)))
    sinks = sinks_for(settings) if sinks is None else sinks
    alerts: list[QualityDrop] = []
    for det in detections:
        inc = det.incident
        if inc is None or inc.get("explained_by") or inc.get("held_for"):
            continue
        known = _attribute(client, det, now)
        if not inc.get("sent"):
            alert = drop_alert(client, det, cells[det.cell][0], trace_url)
            outbox.enqueue(client, alert, sinks)  # stored before the state says "sent"
            update_incident(client, det.cell, sent=True, cause_sent=known)
            alerts.append(alert)
        elif known and not inc.get("cause_sent"):  # one incident, updated with its cause
            alert = drop_alert(client, det, cells[det.cell][0], trace_url, CauseFound)
            outbox.enqueue(client, alert, sinks)
            update_incident(client, det.cell, cause_sent=True)
            alerts.append(alert)
    return detections, alerts


def _attribute(client: redis.Redis, det: CellDetection, now: float) -> bool:
    """Look for the open incident's cause until it is known (worker/drift/cause.py), keeping the
    finding on the incident; True once it is known (a slice, or the traffic mix)."""
    inc = det.incident
    assert inc is not None
    cause = inc.get("cause")
    if cause is None or (cause["status"] == "unknown"
                         and now - epoch_of(cause["computed_at"]) >= ATTRIBUTE_EVERY_SECONDS):
        try:
            cause = find_cause(client, det.cell, inc, now)
        except Exception:  # boundary: the page goes out without its cause, searched again next check
            log.exception("looking for a quality drop's cause failed; the alert goes without it",
                          extra={"cell": det.cell})
            return False
        inc["cause"] = cause
        update_incident(client, det.cell, cause=cause)
    return cause["status"] != "unknown"


def run_drift(settings: Settings, rubrics: dict[str, Rubric], client: redis.Redis, trace_url: Callable[[str], str],
              today: dt.date | None = None, now: float | None = None, *,
              sinks: list[Sink] | None = None) -> DriftRun:
    """The detector, then the weekly summary (paging only a rise in the unscored rate), then
    delivery of everything in the outbox to ``sinks`` (default: the settings')."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    sinks = sinks_for(settings) if sinks is None else sinks
    detections, drops = run_detection(settings, rubrics, client, trace_url, now, sinks=sinks)
    alerts: list[DriftAlert] = list(drops)
    reports = run_check(client, rubrics, today)
    for report in new_alerts(client, reports):
        if not report.unscored_alert:
            report.new_alert = False  # the weekly table shows the drop; the detector pages it
            remember_alert(client, report)
            continue
        rubric = rubrics[format_rubric_key(report.rubric, report.version)]
        alert = unscored_alert(report, rubric, trace_url, today)
        outbox.enqueue(client, alert, sinks)  # stored before the state says "alerted"
        remember_alert(client, report)
        alerts.append(alert)
    return DriftRun(reports, detections, alerts, outbox.deliver(client, sinks))
