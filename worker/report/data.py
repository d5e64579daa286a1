"""What the quality report shows, gathered from Redis: the per-day aggregates for the charts,
the cost and unscored columns, and the drift check's verdict per cell for the tables.

Read-only: nothing here changes alert state (the report may run while the scheduler runs).
The week-over-week verdicts come from ``run_check`` so the page and ``tracejudge drift``
never disagree; the charts span ``days`` days, longer than the check's two weeks, so their
series are computed here from the same aggregates.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable

import redis

from samplers.planner import plan_lines
from worker.drift import aggregates as agg
from worker.drift import check, weighted_means
from worker.drift.check import CellReport, Series, run_check
from worker.drift.detection import describe
from worker.jobs import format_rubric_key
from worker.redis_client import as_text
from worker.review.agreement import AgreementFigures
from worker.review.agreement import read_all as read_agreement
from worker.rubrics.rubric import Rubric

MOVING_WINDOW = 7
UNITS = {"trace": "traces", "observation": "observations", "session": "sessions"}
TOP_TENANTS = 5
MAX_FEATURE_LINES = 8


@dataclasses.dataclass
class Line:
    """One segment's chart series over the report window (quality points, None = no data)."""
    segment: str
    label: str
    n_total: int
    n_daily: list[int]
    daily_mean: list[float | None]
    moving_average: list[float | None]


@dataclasses.dataclass
class DayOps:
    day: str
    scored: int
    unscored: int
    reasons: dict[str, int]
    cost_usd: float

    @property
    def unscored_rate(self) -> float | None:
        total = self.scored + self.unscored
        return self.unscored / total if total else None


@dataclasses.dataclass
class BottomTrace:
    trace_id: str
    points: float
    day: str | None
    feature: str | None
    tenant: str | None
    url: str | None


@dataclasses.dataclass
class Section:
    """One rubric × version × judge model: everything its part of the page shows."""
    rubric: str
    version: int
    judge_model: str
    description: str
    checked: bool  # False: the version is no longer in the rubric folder, so no drift check
    all_traffic: Line
    features: list[Line]
    more_features: int
    tenants: list[Line]
    ops: list[DayOps]
    cells: list[CellReport]
    bottom: list[BottomTrace]
    notified: dict[str, str]  # cell -> when its current alert was sent
    detection: dict[str, str] = dataclasses.field(default_factory=dict)  # cell -> the detector's line
    agreement: AgreementFigures | None = None  # judge-human agreement (worker/review/agreement.py), when computed
    sampling: list[str] = dataclasses.field(default_factory=list)  # a power-aware rubric's rate plan, per cell

    @property
    def key(self) -> str:
        return format_rubric_key(self.rubric, self.version)

    @property
    def anchor(self) -> str:
        return "r-" + "".join(c if c.isalnum() else "-" for c in f"{self.key}-{self.judge_model}")
    unit: str = "traces"  # what the rubric judges, as the page counts it: traces, observations, sessions


@dataclasses.dataclass
class ReportData:
    generated_at: dt.datetime
    today: dt.date
    days: list[str]
    this_week: tuple[str, str]
    last_week: tuple[str, str]
    sections: list[Section]


def day_range(today: dt.date, count: int) -> list[str]:
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(count - 1, -1, -1)]


def split_cell(cell: str) -> tuple[str, str, str, str]:
    name, version, model, segment = cell.split("|", 3)
    return name, version, model, segment


def segment_kind(segment: str) -> str:
    if segment == "all":
        return "all"
    if "|" in segment:
        return "combo"
    return segment.split("=", 1)[0]


def _line(segment: str, label: str, series: Series, days: list[str], lead: list[str]) -> Line:
    span = lead + days
    n_daily: list[int] = []
    daily: list[float | None] = []
    moving: list[float | None] = []
    for i, day in enumerate(span[len(lead):], start=len(lead)):
        d = series.get(day, {})
        n = int(d.get("n", 0))
        n_daily.append(n)
        daily.append(weighted_means.mean([d]))  # Hájek where the cell-day has weights
        moving.append(weighted_means.mean(series.get(x, {}) for x in span[max(0, i - MOVING_WINDOW + 1): i + 1]))
    return Line(segment, label, sum(n_daily), n_daily, daily, moving)


def _ops(series: Series, days: list[str]) -> list[DayOps]:
    out = []
    for day in days:
        d = series.get(day, {})
        reasons = {k.split(":", 1)[1]: int(v) for k, v in d.items() if k.startswith("unscored:") and v}
        out.append(DayOps(day, int(d.get("n", 0)), int(d.get("unscored", 0)), reasons,
                          d.get("cost_microusd", 0) / 1e6))
    return out


def _bottom(client: redis.Redis, all_cell: str, ranked: list[tuple[str, float]], days: list[str],
            segment_cells: list[str], trace_url: Callable[[str], str] | None) -> list[BottomTrace]:
    """The week's lowest traces, each with its day, feature and tenant.

    A trace among the 20 lowest of the all-traffic cell on its day is also among the 20
    lowest of its feature and tenant cells that day (they are subsets), so looking it up in
    those cells' per-day bottom sets finds its segments exactly.
    """
    if not ranked:
        return []
    pipe = client.pipeline()
    for trace_id, _ in ranked:
        for day in days:
            pipe.zscore(agg.bottom_key(all_cell, day), trace_id)
    hits = pipe.execute()
    trace_day: dict[str, str | None] = {}
    for i, (trace_id, _) in enumerate(ranked):
        found = [day for day, score in zip(days, hits[i * len(days):(i + 1) * len(days)]) if score is not None]
        trace_day[trace_id] = found[-1] if found else None
    pipe = client.pipeline()
    lookups: list[tuple[str, str]] = []
    for trace_id, _ in ranked:
        on_day = trace_day[trace_id]
        if on_day is None:
            continue
        for cell in segment_cells:
            pipe.zscore(agg.bottom_key(cell, on_day), trace_id)
            lookups.append((trace_id, cell))
    segments: dict[str, dict[str, str]] = {}
    for (trace_id, cell), score in zip(lookups, pipe.execute()):
        if score is not None:
            key, _, value = split_cell(cell)[3].partition("=")
            segments.setdefault(trace_id, {})[key] = value
    return [BottomTrace(t, p, trace_day[t], segments.get(t, {}).get("feature"), segments.get(t, {}).get("tenant"),
                        _link(t, trace_url)) for t, p in ranked]


def _link(member: str, trace_url: Callable[[str], str] | None) -> str | None:
    """A bottom entry's Langfuse link: its trace, or for a session score (``session:<id>``) the
    session page, which lives beside the traces in the UI."""
    if trace_url is None:
        return None
    if member.startswith(agg.SESSION_MEMBER):
        session_id = member[len(agg.SESSION_MEMBER):]
        url = trace_url(session_id)
        return url.replace("/traces/", "/sessions/") if "/traces/" in url else None
    return trace_url(member)


def _notified(client: redis.Redis, cells: list[CellReport]) -> dict[str, str]:
    """When each cell's current alert was sent: a quality drop's by the sequential detector
    (its open incident), an unscored-rate rise's by the weekly check's dedup state."""
    out: dict[str, str] = {}
    unscored = [c.cell for c in cells if c.unscored_alert]
    for cell, raw in zip(unscored, client.hmget(check.STATE, unscored) if unscored else []):
        try:
            out[cell] = str(json.loads(raw)["at"])[:16].replace("T", " ") if raw else ""
        except (ValueError, KeyError, TypeError):
            continue  # an unreadable state entry only loses the "sent at" note
    for c in cells:
        if c.cell not in out:
            out[c.cell] = describe(client, c.cell)[0] or ""
    return {k: v for k, v in out.items() if v}


def _detection(client: redis.Redis, cells: list[CellReport]) -> dict[str, str]:
    """What the sequential detector says of each cell (worker/drift/detection.py)."""
    return {c.cell: describe(client, c.cell)[1] for c in cells}


def _sampling(client: redis.Redis, rubric: Rubric | None) -> list[str]:
    """A power-aware rubric's rate plan as lines (samplers/planner.py ``describe``)."""
    if rubric is None or rubric.power is None:
        return []
    return plan_lines(client, rubric)[1]


def _matches(rubric_filter: str | None, name: str, version: str) -> bool:
    return rubric_filter is None or rubric_filter in (name, f"{name}@{version}")


def gather(client: redis.Redis, rubrics: dict[str, Rubric], *, days: int = 28, rubric_filter: str | None = None,
           today: dt.date | None = None, trace_url: Callable[[str], str] | None = None) -> ReportData:
    now = dt.datetime.now(dt.timezone.utc)
    today = today or now.date()
    window = day_range(today, days)
    lead = day_range(today - dt.timedelta(days=days), MOVING_WINDOW - 1)
    curr_days = day_range(today, 7)
    prev_days = day_range(today - dt.timedelta(days=7), 7)

    groups: dict[tuple[str, str, str], list[str]] = {}
    for cell in sorted(as_text(m) for m in client.smembers(agg.CELLS)):
        name, version, model, _ = split_cell(cell)
        if _matches(rubric_filter, name, version):
            groups.setdefault((name, version, model), []).append(cell)

    # The check runs over every cell, filtered or not: Benjamini–Hochberg's q-values depend on
    # all cells of the run, and the page must show the same q as `tracejudge drift --once`.
    checked = {r.cell: r for r in run_check(client, rubrics, today)} if groups else {}
    agreements = read_agreement(client) if groups else {}
    sections = []
    for (name, version, model), cells in groups.items():
        series = {cell: agg.read_days(client, cell, lead + window) for cell in cells}
        segment_of = {cell: split_cell(cell)[3] for cell in cells}
        all_cell = next((c for c in cells if segment_of[c] == "all"), None)
        if all_cell is None:
            continue  # every recorded outcome writes the all-traffic cell; a stray key is not a section
        lines = {c: _line(segment_of[c], segment_of[c].partition("=")[2], series[c], window, lead)
                 for c in cells if segment_kind(segment_of[c]) in ("feature", "tenant")}
        features = sorted((ln for c, ln in lines.items() if segment_kind(segment_of[c]) == "feature"),
                          key=lambda ln: (-ln.n_total, ln.label))
        tenants = sorted((ln for c, ln in lines.items() if segment_kind(segment_of[c]) == "tenant"),
                         key=lambda ln: (-ln.n_total, ln.label))
        reports = [checked[c] for c in cells if c in checked]
        all_report = checked.get(all_cell)
        ranked = all_report.bottom if all_report else agg.bottom(client, all_cell, curr_days)
        single = [c for c in cells if segment_kind(segment_of[c]) in ("feature", "tenant")]
        rubric = rubrics.get(f"{name}@{version}")
        sections.append(Section(
            rubric=name, version=int(version.lstrip("v") or 0), judge_model=model,
            description=rubric.description.strip() if rubric else "",
            checked=rubric is not None,
            all_traffic=_line("all", "all traffic", series[all_cell], window, lead),
            features=[f for f in features[:MAX_FEATURE_LINES] if f.n_total],
            more_features=max(0, len([f for f in features if f.n_total]) - MAX_FEATURE_LINES),
            tenants=[t for t in tenants[:TOP_TENANTS] if t.n_total],
            ops=_ops(series[all_cell], window),
            cells=reports,
            bottom=_bottom(client, all_cell, ranked, curr_days, single, trace_url),
            unit=UNITS.get(rubric.target, "traces") if rubric else "traces",
            notified=_notified(client, reports), detection=_detection(client, reports),
            agreement=agreements.get(f"{name}@{version}"), sampling=_sampling(client, rubric)))
    # Sections that alert come first: the page is opened to act on them.
    sections.sort(key=lambda s: (-sum(c.decision.status == "alert" or c.unscored_alert for c in s.cells),
                                 s.rubric, -s.version, s.judge_model))
    return ReportData(now, today, window, (curr_days[0], curr_days[-1]), (prev_days[0], prev_days[-1]), sections)


def known_rubric_names(client: redis.Redis, rubrics: dict[str, Rubric]) -> set[str]:
    """Names a ``--rubric`` filter may use: rubric names and name@vN, from the folder and Redis."""
    names = set()
    for rubric in rubrics.values():
        names |= {rubric.name, rubric.key}
    for member in client.smembers(agg.CELLS):
        name, version, _, _ = split_cell(as_text(member))
        names |= {name, f"{name}@{version}"}
    return names
