"""What every alert is and how people read it: ``Alert`` (its id, title, cell, rubric, owner and
route), ``Description`` (what the Slack and PagerDuty sinks render) with its ``Line``s, the
figures drift alerts carry (``Week``, ``TraceLink``) and the number formats they share."""
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
