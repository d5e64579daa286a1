"""The alerts tracejudge sends, one type per kind, each with the fields that kind has.

Drift gives ``QualityDrop`` and ``UnscoredRise`` (one cell of one rubric version); the budget
gives ``BudgetHeld``; the write-back's read-back gives ``ScoresMissing``; a circuit breaker that opens gives ``WorkPaused``;
the review loop gives ``AgreementLow`` (judge–human kappa below the rubric's ``calibration.min_kappa``). The outbox stores an alert as JSON (``as_json``) and reads it back with
``from_json``; the webhook sink posts that same JSON. Every kind also says once how people read it
(``describe``: labelled values, the traces it names, a closing note, and what PagerDuty files it
under), and the Slack and PagerDuty sinks render that description, whatever the kind.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from worker.json_types import JSONDict


@dataclasses.dataclass(frozen=True)
class Week:
    mean: float | None
    n: int


@dataclasses.dataclass(frozen=True)
class TraceLink:
    trace_id: str
    points: float
    url: str


@dataclasses.dataclass(frozen=True)
class Line:
    """One trace an alert names below its fields: what it scored, linked when it has a URL."""

    trace_id: str
    score: str  # for people: "12", "human 1 · judge 5"
    url: str | None = None
    unit: str = ""  # after the score in a message ("12 pts"); a PagerDuty link shows the score alone


@dataclasses.dataclass(frozen=True)
class Description:
    """An alert as people read it: what the Slack and PagerDuty sinks render, for every kind.
    Texts are plain (a sink escapes them for its markup); never a secret, only the alert's own fields."""

    fields: list[tuple[str, str]]  # (label, value), in reading order
    details: JSONDict  # PagerDuty's custom_details: the kind's fields, machine-readable
    group: str  # PagerDuty's group
    note: str = ""  # one closing line: who owns it, what happens now
    headline: str | None = None  # a short header; None: the title
    lines_title: str | None = None  # a list of traces below the fields (shown even when empty), or none
    lines: list[Line] = dataclasses.field(default_factory=list)


def count(n: int, noun: str = "") -> str:
    """``1,234 scores``: thousands separated, the noun in the number it needs."""
    return f"{n:,}" + (f" {noun}" + ("" if n == 1 else "s") if noun else "")


def percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def usd(amount: float) -> str:
    return f"${amount:,.4f}"  # judge calls cost fractions of a cent: four decimals


@dataclasses.dataclass(frozen=True)
class Alert:
    kind: ClassVar[str]
    severity: ClassVar[str] = "warning"  # PagerDuty's: critical, error, warning or info
    id: str
    title: str
    cell: str  # what the alert is about, deduplicated per sink (PagerDuty's dedup key)
    rubric: str
    owner: str
    route: str | None

    def as_json(self) -> JSONDict:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def dedup_key(self) -> str:
        """One PagerDuty incident per condition: a new alert on the same cell updates it."""
        return f"tracejudge:{self.cell}"

    def details(self) -> JSONDict:
        """The fields this kind adds to every alert's, and the owner: PagerDuty's custom_details."""
        shared = {f.name for f in dataclasses.fields(Alert)}
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in shared},
                "owner": self.owner}

    def describe(self) -> Description:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class DriftAlert(Alert):
    """One drift cell: a rubric version x judge model x segment, this week against last."""

    version: int
    judge_model: str
    segment: str
    prev: Week
    curr: Week
    drop_points: float
    p_value: float | None
    q_value: float | None
    unscored_rate: dict[str, float]  # {"prev": rate, "curr": rate}
    bottom_traces: list[TraceLink]

    def describe(self) -> Description:
        fields = [("Rubric", f"{self.rubric} v{self.version}"), ("Cell", self.segment), *self._figures()]
        if self.q_value is not None:
            fields.append(("q-value", f"{self.q_value:.2g}"))
        return Description(fields=fields, details=self.details(), group=self.segment,
                           note=f"owner: {self.owner} · judge {self.judge_model}",
                           lines_title=f"Lowest-scoring traces {self._period()}",
                           lines=[Line(t.trace_id, f"{t.points:.0f}", t.url, " pts") for t in self.bottom_traces[:20]])

    def details(self) -> JSONDict:
        return {"prev": dataclasses.asdict(self.prev), "curr": dataclasses.asdict(self.curr),
                "drop_points": self.drop_points, "q_value": self.q_value, "unscored_rate": self.unscored_rate,
                "owner": self.owner}

    def _figures(self) -> list[tuple[str, str]]:
        """The weekly rule's: both weeks and the drop."""
        return [("Last week", f"{self.prev.mean:.1f} (n={self.prev.n})"),
                ("This week", f"{self.curr.mean:.1f} (n={self.curr.n})"),
                ("Drop", f"{self.drop_points:.1f} points")]

    def _period(self) -> str:
        return "this week"


@dataclasses.dataclass(frozen=True)
class QualityDrop(DriftAlert):
    """A cell's quality dropped. From the sequential detector (worker/drift/detection.py) it
    pins the change (DESIGN.md, "Quality alerts"); times are ISO, trace time but ``alerted_at``.
    ``prev``/``curr`` are then the reference and the scores since the start."""

    kind: ClassVar[str] = "quality_drop"
    started_at: str | None = None  # the estimated start of the drop
    started_between: list[str] | None = None  # its 95% interval
    detected_at: str | None = None  # the trace whose confirmed score took the detector over its limit
    alerted_at: str | None = None  # wall time the alert was first sent
    effect_points: float | None = None  # reference mean − mean since the start (positive = worse)
    effect_interval: list[float] | None = None  # 95%, always valid
    reference: dict[str, object] | None = None  # {mean, n, since, until}: the frozen baseline
    incident_id: str | None = None  # stable across updates of the same incident
    explained_by: list[str] | None = None  # narrower cells whose incident explains this one

    _INCIDENT: ClassVar[tuple[str, ...]] = ("started_at", "started_between", "detected_at", "alerted_at",
                                            "effect_points", "effect_interval", "reference", "incident_id")

    def details(self) -> JSONDict:
        details = super().details()
        if self.incident_id:
            details.update({name: getattr(self, name) for name in self._INCIDENT})
        return details

    def _figures(self) -> list[tuple[str, str]]:
        """What the sequential detector pinned: the effect, when it began, when it was seen, the reference."""
        if not self.incident_id:
            return super()._figures()
        ref, (lo, hi) = self.reference or {}, self.effect_interval or (None, None)
        effect = f"−{self.effect_points:.1f} points" + (f" [−{hi:.1f}, −{lo:.1f}]" if lo is not None else "")
        between = self.started_between or ["?", "?"]
        return [("Effect", f"{effect} (95%, always valid; n={self.curr.n} since the start)"),
                ("Started", f"{self.started_at} ({between[0]} – {between[1]})"),
                ("Detected", f"{self.detected_at} (trace time); alerted {self.alerted_at}"),
                ("Reference", f"{ref.get('mean', 0):.1f} over {ref.get('since')}..{ref.get('until')} "
                              f"(n={ref.get('n')})")]

    def _period(self) -> str:
        return "since the start" if self.incident_id else "this week"


@dataclasses.dataclass(frozen=True)
class UnscoredRise(DriftAlert):
    kind: ClassVar[str] = "unscored_rise"

    def dedup_key(self) -> str:
        return f"tracejudge:unscored:{self.cell}"  # its own incident, not the same cell's quality drop

    def _figures(self) -> list[tuple[str, str]]:
        rate = self.unscored_rate or {}
        return [("Unscored last week", f"{percent(rate.get('prev') or 0)} (n={count(self.prev.n)})"),
                ("Unscored this week", f"{percent(rate.get('curr') or 0)} (n={count(self.curr.n)})")]


@dataclasses.dataclass(frozen=True)
class BudgetHeld(Alert):
    """A rubric's (or the fleet's) daily judge budget is spent: its jobs are parked."""

    kind: ClassVar[str] = "budget_held"
    day: str
    held_by: str  # "global" | "rubric"
    spent_usd: float
    cap_usd: float
    typical_job_usd: float

    def describe(self) -> Description:
        scope = "fleet" if self.held_by == "global" else "rubric"
        return Description(
            headline=f"Judging paused: {self.rubric}: the {scope}'s daily budget is spent",
            fields=[("Rubric", self.rubric), ("Cap", f"{scope} {usd(self.cap_usd)} a day"),
                    ("Spent", f"{usd(self.spent_usd)} on {self.day} (UTC)"
                              + (f", {percent(self.spent_usd / self.cap_usd)} of the cap" if self.cap_usd else "")),
                    ("Typical job", usd(self.typical_job_usd))],
            note="queued jobs are parked until the next UTC day or a raised cap (`tracejudge budget unpark`)",
            details=self.details(), group=self.held_by)


@dataclasses.dataclass(frozen=True)
class ScoresMissing(Alert):
    """Scores Langfuse accepted but did not keep (read back and not found, after a re-write)."""

    kind: ClassVar[str] = "scores_missing"
    severity: ClassVar[str] = "error"  # scores are being lost
    version: int
    day: str
    missing: int  # this rubric version's missing scores so far
    reason: str

    def describe(self) -> Description:
        return Description(
            headline=f"Scores missing in Langfuse: {self.rubric} v{self.version}",
            fields=[("Rubric", f"{self.rubric} v{self.version}"), ("Missing", f"{count(self.missing, 'score')} so far"),
                    ("Why", self.reason), ("Day", f"{self.day} (UTC)")],
            note=f"owner: {self.owner} · written to Langfuse, never found on read-back: counted as missing, "
                 "not scored (`tracejudge status`)",
            details=self.details(), group=f"v{self.version}")


@dataclasses.dataclass(frozen=True)
class WorkPaused(Alert):
    """A circuit breaker opened: a judge endpoint x model, or Langfuse writes, failed in a way no
    retry heals (a revoked key, a retired model, ingestion suspended); its jobs wait for a probe."""

    kind: ClassVar[str] = "work_paused"
    severity: ClassVar[str] = "error"  # every job behind the circuit waits
    circuit: str
    reason: str
    opened_at: str

    def describe(self) -> Description:
        return Description(
            headline=f"Work paused: {self.circuit}",
            fields=[("Paused", self.circuit), ("Why", self.reason), ("Since", self.opened_at),
                    ("Opened by", f"a {self.rubric} job")],
            note="its jobs wait (nothing is paid or dead-lettered) and resume by themselves once a probe succeeds",
            details=self.details(), group=self.circuit)


@dataclasses.dataclass(frozen=True)
class AgreementLow(Alert):
    """A rubric version's judge agrees less with human reviewers than its ``calibration.min_kappa``
    (production traces people labelled in Langfuse, over a rolling window)."""

    kind: ClassVar[str] = "agreement_low"
    version: int
    kappa: float
    kappa_low: float | None  # 95% bootstrap interval
    kappa_high: float | None
    min_kappa: float
    pairs: int
    exact: float | None
    window_days: int
    disagreements: list[dict[str, object]]  # the widest: {"trace_id", "human", "judge"} (and "url" when known)

    def describe(self) -> Description:
        kappa = f"{self.kappa:.2f}"
        if self.kappa_low is not None and self.kappa_high is not None:
            kappa += f" (95% {self.kappa_low:.2f} – {self.kappa_high:.2f})"
        fields = [("Rubric", f"{self.rubric} v{self.version}"), ("Kappa", kappa),
                  ("Minimum", f"{self.min_kappa:.2f}"),
                  ("Pairs", f"{count(self.pairs, 'human-labelled trace')} over {count(self.window_days, 'day')}")]
        if self.exact is not None:
            fields.append(("Exact agreement", percent(self.exact)))
        return Description(
            headline=f"Judge–human agreement low: {self.rubric} v{self.version}",
            fields=fields, details=self.details(), group=f"v{self.version}",
            note=f"owner: {self.owner} · recalibrate the rubric against the reviewers' labels "
                 "(`tracejudge agreement`)",
            lines_title="Widest disagreements",
            lines=[Line(str(d.get("trace_id", "?")),
                        f"human {_level(d.get('human'))} · judge {_level(d.get('judge'))}", _url(d.get("url")))
                   for d in self.disagreements[:10]])


def _url(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _level(value: object) -> str:
    """A scale level as people write it: 4, not 4.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


KINDS: dict[str, type[Alert]] = {k.kind: k for k in (QualityDrop, UnscoredRise, BudgetHeld, ScoresMissing,
                                                     WorkPaused, AgreementLow)}


def from_json(raw: JSONDict) -> Alert:
    """The alert an outbox entry holds (unknown keys are ignored, so older entries still read)."""
    cls = KINDS.get(raw.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown alert kind {raw.get('kind')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in raw.items() if k in names}
    if issubclass(cls, DriftAlert):
        values["prev"], values["curr"] = Week(**raw["prev"]), Week(**raw["curr"])
        values["bottom_traces"] = [TraceLink(**t) for t in raw.get("bottom_traces") or []]
    if cls is BudgetHeld and "held_by" not in values:  # written before the kinds: the scope sat in "segment"
        values["held_by"] = raw.get("segment") or "rubric"
    return cls(**values)
