"""The alerts tracejudge sends, one type per kind, each with the fields that kind has.

Drift gives ``QualityDrop`` and ``UnscoredRise`` (one cell of one rubric version); the budget
gives ``BudgetHeld``; the write-back's read-back gives ``ScoresMissing``; a circuit breaker that opens gives ``WorkPaused``;
the review loop gives ``AgreementLow`` (judge–human kappa below the rubric's ``calibration.min_kappa``). The outbox stores an alert as JSON (``as_json``) and reads it back with
``from_json``; the webhook sink posts that same JSON, the other sinks render each kind their way.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


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
class Alert:
    kind: ClassVar[str]
    id: str
    title: str
    cell: str  # what the alert is about, deduplicated per sink (PagerDuty's dedup key)
    rubric: str
    owner: str
    route: str | None

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


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
    unscored_rate: dict  # {"prev": rate, "curr": rate}
    bottom_traces: list[TraceLink]


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
    reference: dict | None = None  # {mean, n, since, until}: the frozen baseline
    incident_id: str | None = None  # stable across updates of the same incident
    explained_by: list[str] | None = None  # narrower cells whose incident explains this one


@dataclasses.dataclass(frozen=True)
class UnscoredRise(DriftAlert):
    kind: ClassVar[str] = "unscored_rise"


@dataclasses.dataclass(frozen=True)
class BudgetHeld(Alert):
    """A rubric's (or the fleet's) daily judge budget is spent: its jobs are parked."""

    kind: ClassVar[str] = "budget_held"
    day: str
    held_by: str  # "global" | "rubric"
    spent_usd: float
    cap_usd: float
    typical_job_usd: float


@dataclasses.dataclass(frozen=True)
class ScoresMissing(Alert):
    """Scores Langfuse accepted but did not keep (read back and not found, after a re-write)."""

    kind: ClassVar[str] = "scores_missing"
    version: int
    day: str
    missing: int  # this rubric version's missing scores so far
    reason: str


@dataclasses.dataclass(frozen=True)
class WorkPaused(Alert):
    """A circuit breaker opened: a judge endpoint x model, or Langfuse writes, failed in a way no
    retry heals (a revoked key, a retired model, ingestion suspended); its jobs wait for a probe."""

    kind: ClassVar[str] = "work_paused"
    circuit: str
    reason: str
    opened_at: str


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
    disagreements: list[dict]  # the widest: {"trace_id", "human", "judge"}


KINDS: dict[str, type[Alert]] = {k.kind: k for k in (QualityDrop, UnscoredRise, BudgetHeld, ScoresMissing,
                                                     WorkPaused, AgreementLow)}


def from_json(raw: dict[str, Any]) -> Alert:
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
