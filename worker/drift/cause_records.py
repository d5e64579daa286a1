"""An incident's cause as it is kept (JSON in the detector's state) and shown: the alert,
``drift``, ``status`` and the report read these (worker/drift/cause.py fills them)."""
from __future__ import annotations

from typing import TypedDict


class NamedSliceJSON(TypedDict):
    slice: str  # "input_tokens=3k-10k & prompt=summarize@13"
    share_of_drop: float
    before_mean: float
    after_mean: float
    n_before: int
    n_after: int
    share_after: float
    effect: float
    effect_interval: list[float]


class EventJSON(TypedDict):
    dimension: str
    value: str
    previous: str | None  # the value it replaced, when known (a prompt's earlier version)
    first_seen: str  # ISO, the first judged trace that had it
    old_mean: float | None  # the old traffic's mean (same days when ``same_days``)
    new_mean: float | None
    old_n: int
    new_n: int
    same_days: bool
    share_of_drop: float


class ExampleJSON(TypedDict):
    trace_id: str
    observation_id: str
    points: float
    at: str  # the trace's time, ISO


class CauseRecord(TypedDict):
    """An incident's ``cause``: attribution's finding as the alert and the commands show it."""
    status: str  # "slice" | "mix" | "unknown"
    reason: str  # one line: what is named, or why nothing is yet ("cause not yet known, n = …")
    lines: list[str]  # the alert's WHERE / MIX / CHANGED lines
    slices: list[NamedSliceJSON]
    events: list[EventJSON]
    after: list[ExampleJSON]  # the lowest-scoring traces of the named slice since the start
    before: list[ExampleJSON]  # comparable traces of the same slice before it (around its median)
    n_before: int
    n_after: int
    computed_at: str
    signals: list[str]  # every trace's output tokens, latency and errors for the change (signals.py)
