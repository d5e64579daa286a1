"""What the sequential detector found per cell, as records: the open incident it keeps in the
cell's state (JSON in Redis), and one check's result for ``drift``, ``status`` and the report
(worker/drift/detection.py fills them; worker/drift/explain.py settles parents' incidents)."""
from __future__ import annotations

import dataclasses
import math
from typing import NotRequired, TypedDict

from worker.drift import sequential as seq
from worker.drift.cause_records import CauseRecord


class IncidentReference(TypedDict):
    """The frozen reference an incident was held to (rounded mean)."""
    mean: float
    n: int
    since: str | None
    until: str | None


class PinnedFields(TypedDict):
    """What ``incidents.pin`` found, as an incident keeps it: times ISO but ``started_epoch``."""
    started_epoch: float
    started_at: str
    started_between: list[str]
    detected_at: str
    effect_points: float
    effect_interval: list[float]
    n_after: int
    drop_threshold: float


class IncidentRecord(PinnedFields):
    """A cell's open incident, under ``incident`` in its state (JSON): what the alert and the
    report show, the pinned fields with these. worker/drift/explain.py adds ``explained_by``, or
    ``held_for`` and ``held_since`` (the check time the hold began); worker/drift/run.py the
    ``cause``."""
    incident_id: str
    alerted_at: str
    sent: bool
    reference: IncidentReference
    explained_by: NotRequired[list[str]]
    held_for: NotRequired[list[str]]
    held_since: NotRequired[float]
    cause: NotRequired[CauseRecord]  # worker/drift/cause.py: which slice and which change, or not yet
    cause_sent: NotRequired[bool]  # a known cause went out with the alert or as its update


class ReferenceJSON(TypedDict):
    """``seq.Reference`` as ``drift --once --json`` prints it: ``mean`` None for NaN."""
    mean: float | None
    sd: float
    n: int
    days: int
    since: str | None
    until: str | None
    status: str
    skew: float | None


class CellDetectionJSON(TypedDict):
    """``CellDetection.as_dict``: one cell of ``drift --once --json``'s ``detection``."""
    cell: str
    status: str
    reference: ReferenceJSON | None
    power: str | None
    under_powered: bool
    cusum: float
    limit: float | None
    applied: int
    incident: IncidentRecord | None


@dataclasses.dataclass
class CellDetection:
    """What one check found for a cell: for ``drift``, ``status`` and the report."""
    cell: str
    status: str  # "insufficient_reference" | "watching" | "alarm" | "explained" | "held"
    reference: seq.Reference | None
    note: str | None  # the power note: what drop it can see, how fast
    under_powered: bool
    s: float
    h: float | None
    applied: int
    incident: IncidentRecord | None = None
    new_incident: bool = False

    def as_dict(self) -> CellDetectionJSON:
        r = self.reference
        ref = None if r is None else ReferenceJSON(
            mean=None if math.isnan(r.mean) else r.mean, sd=r.sd, n=r.n, days=r.days, since=r.since,
            until=r.until, status=r.status, skew=r.skew)
        return {"cell": self.cell, "status": self.status, "reference": ref, "power": self.note,
                "under_powered": self.under_powered, "cusum": round(self.s, 3),
                "limit": None if self.h is None else round(self.h, 3), "applied": self.applied,
                "incident": self.incident}
