"""The alerts tracejudge sends, one type per kind, each with the fields that kind has.

Drift gives ``QualityDrop`` (and ``CauseFound``, its update once the cause is known) and ``UnscoredRise`` (one cell of one rubric version); the budget
gives ``BudgetHeld``; the write-back's read-back gives ``ScoresMissing``; a circuit breaker that opens gives ``WorkPaused``;
the review loop gives ``AgreementLow`` (judge–human kappa below the rubric's ``calibration.min_kappa``). The outbox stores an alert as JSON (``as_json``) and reads it back with
``from_json``; the webhook sink posts that same JSON. Every kind also says once how people read it
(``describe``: labelled values, the traces it names, a closing note, and what PagerDuty files it
under), and the Slack and PagerDuty sinks render that description, whatever the kind. The base
types are in worker/alerts/base.py, the drift kinds in drift_kinds.py; all are importable here.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from worker.alerts.base import Alert, Description, Line, TraceLink, Week, count, percent, usd
from worker.alerts.drift_kinds import CauseFound, DriftAlert, QualityDrop, UnscoredRise
from worker.json_types import JSONDict

__all__ = ["KINDS", "AgreementLow", "Alert", "BudgetHeld", "CauseFound", "Description", "DriftAlert", "Line",
           "QualityDrop", "ScoresMissing", "TraceLink", "UnscoredRise", "Week", "WorkPaused", "count", "from_json",
           "percent", "usd"]


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


KINDS: dict[str, type[Alert]] = {k.kind: k for k in (QualityDrop, CauseFound, UnscoredRise, BudgetHeld,
                                                     ScoresMissing, WorkPaused, AgreementLow)}


def from_json(raw: JSONDict) -> Alert:
    """The alert an outbox entry holds (unknown keys are ignored, so older entries still read)."""
    cls = KINDS.get(raw.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown alert kind {raw.get('kind')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in raw.items() if k in names}
    if issubclass(cls, DriftAlert):
        values["prev"], values["curr"] = Week(**raw["prev"]), Week(**raw["curr"])
        for name in ("bottom_traces", "examples_after", "examples_before"):
            if name in names:
                values[name] = [TraceLink(**t) for t in raw.get(name) or []]
    if cls is BudgetHeld and "held_by" not in values:  # written before the kinds: the scope sat in "segment"
        values["held_by"] = raw.get("segment") or "rubric"
    return cls(**values)
