"""The drift alerts: one cell of one rubric version (``DriftAlert``): the weekly rule's
``UnscoredRise``, the sequential detector's ``QualityDrop`` and its update once attribution names
the cause (``CauseFound``). worker/alerts/kinds.py lists every kind and reads them back."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from worker.alerts.base import Alert, Description, Line, TraceLink, Week, count, percent
from worker.json_types import JSONDict


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
    # What explains it (worker/drift/cause.py, a CauseRecord): the slice, the change events, or
    # "cause not yet known, n = …"; with the slice's lowest traces since the start and comparable
    # ones before it, linked.
    cause: dict[str, object] | None = None
    examples_after: list[TraceLink] = dataclasses.field(default_factory=list)
    examples_before: list[TraceLink] = dataclasses.field(default_factory=list)

    _INCIDENT: ClassVar[tuple[str, ...]] = ("started_at", "started_between", "detected_at", "alerted_at",
                                            "effect_points", "effect_interval", "reference", "incident_id", "cause")

    def details(self) -> JSONDict:
        details = super().details()
        if self.incident_id:
            details.update({name: getattr(self, name) for name in self._INCIDENT})
        return details

    def describe(self) -> Description:
        d = super().describe()
        raw = (self.cause or {}).get("lines")
        lines = [str(x) for x in raw] if isinstance(raw, list) else []
        if not lines:
            return d
        where = [x.removeprefix("WHERE ") for x in lines if x.startswith("WHERE ")]
        mix = [x.removeprefix("MIX ") for x in lines if x.startswith("MIX ")]
        changed = [x.removeprefix("CHANGED ") for x in lines if x.startswith("CHANGED ")]
        traffic = [x.removeprefix("SIGNALS ") for x in lines if x.startswith("SIGNALS ")]
        fields = [*d.fields, ("Where", "; ".join(where))]
        if mix:
            fields.append(("Traffic mix", mix[0]))
        if changed:
            fields.append(("What changed", "; ".join(changed[:3])))
        if traffic:
            fields.append(("Every trace", "; ".join(traffic)))
        examples = [Line(t.trace_id, f"{t.points:.0f}", t.url, " pts since the start") for t in self.examples_after]
        examples += [Line(t.trace_id, f"{t.points:.0f}", t.url, " pts before it") for t in self.examples_before]
        if not examples:
            return dataclasses.replace(d, fields=fields)
        return dataclasses.replace(d, fields=fields, lines_title="The named slice: its lowest traces since the "
                                                                   "start, and comparable ones before it",
                                   lines=examples)

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
class CauseFound(QualityDrop):
    """An incident already alerted, updated with its cause once attribution could name it: the
    same incident (PagerDuty's dedup key, ``incident_id``), a new message where there are no
    incidents (Slack, the webhook)."""

    kind: ClassVar[str] = "quality_drop_cause"

    def describe(self) -> Description:
        d = super().describe()
        reason = str((self.cause or {}).get("reason", ""))
        return dataclasses.replace(d, headline=f"Cause found: {self.rubric} v{self.version} {self.segment}: "
                                               f"{reason}"[:150])


@dataclasses.dataclass(frozen=True)
class UnscoredRise(DriftAlert):
    kind: ClassVar[str] = "unscored_rise"

    def dedup_key(self) -> str:
        return f"tracejudge:unscored:{self.cell}"  # its own incident, not the same cell's quality drop

    def _figures(self) -> list[tuple[str, str]]:
        rate = self.unscored_rate or {}
        return [("Unscored last week", f"{percent(rate.get('prev') or 0)} (n={count(self.prev.n)})"),
                ("Unscored this week", f"{percent(rate.get('curr') or 0)} (n={count(self.curr.n)})")]
