"""The week-over-week check: read the aggregates, test every cell, decide, deduplicate.

This week = the 7 trace-days ending today; last week = the 7 before. Cells compare only the
same rubric version and judge model (both are part of the cell key).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TypedDict

import redis

from worker.drift import aggregates as agg
from worker.drift import weighted_means
from worker.drift.stats import (
    CellDecision,
    CellInput,
    WeekRate,
    WeekStats,
    benjamini_hochberg,
    decide,
    proportion_drop_p,
)
from worker.redis_client import as_text
from worker.rubrics.rubric import Rubric

STATE = "tracejudge:alerts:state"
DEFAULT_THRESHOLD = 5.0
UNSCORED_RISE_POINTS = 5.0

Series = dict[str, dict[str, float]]  # day -> that day's aggregate hash (aggregates.read_days)
WeekData = WeekStats | WeekRate


class DecisionJSON(TypedDict):
    """``CellDecision`` as ``drift --once --json`` prints it, with the n that counts."""
    key: str
    status: str
    prev_mean: float | None
    curr_mean: float | None
    drop: float | None
    p: float
    q: float
    n_prev: int
    n_curr: int
    n_needed: int | None
    cells_in_run: int
    n_have: int


class CellReportJSON(TypedDict):
    """``CellReport.as_dict``: one cell of ``drift --once --json``'s ``cells``."""
    cell: str
    rubric: str
    version: int
    judge_model: str
    segment: str
    decision: DecisionJSON
    moving_average: list[tuple[str, float | None]]
    daily_mean: list[tuple[str, float | None]]
    unscored_rate_prev: float
    unscored_rate_curr: float
    unscored_alert: bool
    bottom: list[tuple[str, float]]
    cost_usd_curr: float
    explained_by: list[str]
    new_alert: bool


@dataclasses.dataclass
class CellReport:
    cell: str
    rubric: str
    version: int
    judge_model: str
    segment: str
    decision: CellDecision
    moving_average: list[tuple[str, float | None]]  # (day, 7-day mean up to that day)
    daily_mean: list[tuple[str, float | None]]
    unscored_rate_prev: float
    unscored_rate_curr: float
    unscored_alert: bool
    bottom: list[tuple[str, float]]
    cost_usd_curr: float
    explained_by: list[str] = dataclasses.field(default_factory=list)
    new_alert: bool = False

    def as_dict(self) -> CellReportJSON:
        d = self.decision
        decision = DecisionJSON(key=d.key, status=d.status, prev_mean=d.prev_mean, curr_mean=d.curr_mean, drop=d.drop,
                                p=d.p, q=d.q, n_prev=d.n_prev, n_curr=d.n_curr, n_needed=d.n_needed,
                                cells_in_run=d.cells_in_run, n_have=d.n_have)
        return CellReportJSON(
            cell=self.cell, rubric=self.rubric, version=self.version, judge_model=self.judge_model,
            segment=self.segment, decision=decision, moving_average=list(self.moving_average),
            daily_mean=list(self.daily_mean), unscored_rate_prev=self.unscored_rate_prev,
            unscored_rate_curr=self.unscored_rate_curr, unscored_alert=self.unscored_alert, bottom=list(self.bottom),
            cost_usd_curr=self.cost_usd_curr, explained_by=list(self.explained_by), new_alert=self.new_alert)


# One cell of a run: (cell, its rubric version, judge model, segment, its days, the test's input).
_Row = tuple[str, Rubric, str, str, Series, CellInput]


def week_days(today: dt.date, offset: int) -> list[str]:
    return [(today - dt.timedelta(days=offset + i)).isoformat() for i in range(6, -1, -1)]


def _week(days: Series, pass_fail: bool) -> WeekData:
    # A power-aware rubric's cells carry weights: its week is the Hájek estimate (weighted_means.py).
    found = (weighted_means.week_rate if pass_fail else weighted_means.week_stats)(days.values())
    if found is not None:
        return found
    n = sum(d.get("n", 0) for d in days.values())
    if pass_fail:
        return WeekRate(int(n), int(sum(d.get("passes", 0) for d in days.values())))
    return WeekStats(int(n), sum(d.get("sum", 0) for d in days.values()), sum(d.get("sumsq", 0) for d in days.values()))


def _moving_average(series: Series, days: list[str]
                    ) -> tuple[list[tuple[str, float | None]], list[tuple[str, float | None]]]:
    daily: list[tuple[str, float | None]] = []
    moving: list[tuple[str, float | None]] = []
    for i, day in enumerate(days):
        daily.append((day, weighted_means.mean([series.get(day, {})])))
        moving.append((day, weighted_means.mean(series.get(x, {}) for x in days[max(0, i - 6): i + 1])))
    return daily, moving


def run_check(client: redis.Redis, rubrics: dict[str, Rubric], today: dt.date | None = None,
              q_level: float = 0.01) -> list[CellReport]:
    today = today or dt.datetime.now(dt.timezone.utc).date()
    curr_days, prev_days = week_days(today, 0), week_days(today, 7)
    all_days = prev_days + curr_days
    rows: list[_Row] = []
    for raw_cell in sorted(as_text(m) for m in client.smembers(agg.CELLS)):
        name, version, model, segment = raw_cell.split("|", 3)
        rubric = rubrics.get(f"{name}@{version}")
        if rubric is None:
            continue  # a retired version: nothing new to compare
        series = agg.read_days(client, raw_cell, all_days)
        pass_fail = rubric.scale.kind != "numeric"
        prev = _week({d: series[d] for d in prev_days}, pass_fail)
        curr = _week({d: series[d] for d in curr_days}, pass_fail)
        threshold = float((rubric.owner or {}).get("drift_threshold_points", DEFAULT_THRESHOLD))
        rows.append((raw_cell, rubric, model, segment, series, CellInput(raw_cell, prev, curr, threshold)))
    decisions = decide([r[-1] for r in rows], q_level=q_level)
    explained = _explained_by_features(rows, decisions, q_level)
    unscored = [_unscored_rates(r[4], prev_days, curr_days) for r in rows]
    unscored_q = benjamini_hochberg([u[2] for u in unscored]) if unscored else []
    reports = []
    for (raw_cell, rubric, model, segment, series, _), decision, (up, uc, _p), uq in zip(rows, decisions, unscored, unscored_q):
        if raw_cell in explained:
            decision.status = "explained"
        daily, moving = _moving_average(series, all_days)
        reports.append(CellReport(
            raw_cell, rubric.name, rubric.version, model, segment, decision, moving, daily, up, uc,
            uq < q_level and (uc - up) * 100 >= UNSCORED_RISE_POINTS / 2,
            agg.bottom(client, raw_cell, curr_days),
            sum(series[d].get("cost_microusd", 0) for d in curr_days) / 1e6,
            explained_by=explained.get(raw_cell, [])))
    return reports


def _minus(a: WeekData, b: WeekData) -> WeekData:
    if isinstance(a, WeekRate) and isinstance(b, WeekRate):
        return WeekRate(a.n - b.n, a.passes - b.passes)
    if isinstance(a, WeekStats) and isinstance(b, WeekStats):
        return WeekStats(a.n - b.n, a.total - b.total, a.total_sq - b.total_sq)
    raise TypeError("a cell and its feature's cell are weeks of one kind (a mean or a pass rate)")


def _explained_by_features(rows: list[_Row], decisions: list[CellDecision],
                           q_level: float) -> dict[str, list[str]]:
    """An alerting all-traffic or tenant cell whose drop vanishes once the alerting features'
    traffic is taken out is *explained* by those features: the owners get one alert, at the
    feature, not three for the same cause."""
    by_key = {r[0]: (r[-1], d) for r, d in zip(rows, decisions)}
    out: dict[str, list[str]] = {}
    for (raw_cell, _, _, segment, _, cell), decision in zip(rows, decisions):
        if decision.status != "alert" or not (segment == "all" or (segment.startswith("tenant=") and "|" not in segment)):
            continue
        prefix = raw_cell.rsplit("|", 1)[0]
        features = [k.rsplit("|", 1)[1] for k, (_, d) in by_key.items()
                    if k.startswith(prefix + "|feature=") and "|tenant=" not in k[len(prefix):] and d.status == "alert"]
        if not features:
            continue
        prev, curr = cell.prev, cell.curr
        for feature in features:
            child = f"{prefix}|{feature}" if segment == "all" else f"{prefix}|{feature}|{segment}"
            if child in by_key:
                prev, curr = _minus(prev, by_key[child][0].prev), _minus(curr, by_key[child][0].curr)
        [residual] = decide([CellInput(raw_cell, prev, curr, cell.threshold_points)], q_level=1.0)
        multiplier = decision.q / decision.p if decision.p else 1.0
        if not (residual.p * multiplier < q_level and (residual.drop or 0) >= cell.threshold_points / 2):
            out[raw_cell] = features
    return out


def _unscored_rates(series: Series, prev_days: list[str], curr_days: list[str]) -> tuple[float, float, float]:
    def rate(days: list[str]) -> tuple[float, int]:
        bad = sum(series[d].get("unscored", 0) for d in days)
        total = bad + sum(series[d].get("n", 0) for d in days)
        return bad, int(total)

    pb, pt = rate(prev_days)
    cb, ct = rate(curr_days)
    if pt < 2 or ct < 2:
        return (pb / pt if pt else 0.0), (cb / ct if ct else 0.0), 1.0
    # A rise in the unscored rate is a drop in the scored rate.
    p = proportion_drop_p(WeekRate(int(pt), int(pt - pb)), WeekRate(int(ct), int(ct - cb)))
    return pb / pt, cb / ct, p


def new_alerts(client: redis.Redis, reports: list[CellReport]) -> list[CellReport]:
    """Deduplicate: a cell alerts again only after it recovered, or when its drop grew by half
    the threshold or more since it last alerted. Recovered cells are forgotten here."""
    fresh = []
    for report in reports:
        alerting = report.decision.status == "alert" or report.unscored_alert
        previous = client.hget(STATE, report.cell)
        if not alerting:
            if previous is not None:
                client.hdel(STATE, report.cell)  # recovered: the next drop alerts again
            continue
        drop = report.decision.drop or 0.0
        if previous is None or drop >= json.loads(previous)["drop"] + DEFAULT_THRESHOLD / 2:
            report.new_alert = True
            fresh.append(report)
    return fresh


def remember_alert(client: redis.Redis, report: CellReport) -> None:
    client.hset(STATE, report.cell, json.dumps({"drop": report.decision.drop or 0.0,
                                                "at": dt.datetime.now(dt.timezone.utc).isoformat()}))
