"""The frozen inputs and outputs of drift attribution (worker/drift/attribution.py).

Inputs: one alerting cell's score ``Moments`` (n, Σx, Σx², quality points 0–100) before and
after the estimated start, for the whole cell and for each slice (``SliceData``: a single value
of a dimension, or a pair of values of two dimensions, keyed by ``slice_key``), the change
events seen there (``ChangeEvent``), all in ``CellData``, and the search's ``Settings``.
Outputs: the ``Attribution`` with its named slices (``NamedSlice``), the traffic-mix drivers
(``MixDriver``) and the change events compared (``EventFinding``). ``label`` renders a key.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Literal

Item = tuple[str, str]  # (dimension, value), e.g. ("prompt", "summarize@13")
SliceKey = tuple[Item, ...]  # one item, or two of different dimensions, sorted by dimension
Status = Literal["slice", "mix", "unknown"]


@dataclasses.dataclass(frozen=True)
class Moments:
    """n, Σx and Σx² of scores in quality points: what the worker keeps per slice and window."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        xs = [float(v) for v in values]
        return cls(len(xs), sum(xs), sum(x * x for x in xs))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.n - other.n, self.total - other.total, self.total_sq - other.total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """The sample variance (n − 1); 0 below two scores."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


@dataclasses.dataclass(frozen=True)
class SliceData:
    """One slice's scores before and after the estimated start. ``key`` is ((dim, value),) or a
    pair of two dimensions; ``slice_key`` builds it in the canonical order."""

    key: SliceKey
    before: Moments
    after: Moments


@dataclasses.dataclass(frozen=True)
class ChangeEvent:
    """``value`` of ``dimension`` was first seen in the cell at ``first_seen`` (epoch seconds);
    ``previous`` is the value it replaced, when known (a prompt's earlier version); unknown (a
    release, say), the new value's traffic is compared with all other traffic."""

    dimension: str
    value: str
    first_seen: float
    previous: str | None = None


@dataclasses.dataclass(frozen=True)
class CellData:
    """Everything attribution reads for one alerting cell."""

    before: Moments  # the whole cell, before the estimated start
    after: Moments  # the whole cell, since the estimated start
    slices: tuple[SliceData, ...]  # single values of each dimension, and pairs of values
    events: tuple[ChangeEvent, ...] = ()
    start_interval: tuple[float, float] = (0.0, 0.0)  # the start estimate's interval (epoch s)


@dataclasses.dataclass(frozen=True)
class Settings:
    alpha: float = 0.05  # family-wise error over the slices searched (Bonferroni)
    min_after: int = 100  # fewer scores after the start: cause not yet known
    min_slice_after: int = 20  # a candidate slice needs this many scores after the start...
    min_slice_before: int = 20  # ... and before it (a new value borrows its previous value's)
    min_share: float = 0.03  # ... and this share of the traffic after the start
    ep_min: float = 0.6  # a named slice explains at least this share of the rate part
    z_complement: float = 3.0  # the rest of the cell must not drop by this many SEs itself
    event_slack_s: float = 0.0  # events this close outside the start interval still count


@dataclasses.dataclass(frozen=True)
class NamedSlice:
    key: SliceKey
    share_of_drop: float  # C_s / ΔM: the part of the whole drop this slice's rate change makes
    share_of_rate: float  # C_s / rate part (its explanatory power)
    before_mean: float
    after_mean: float
    expected_after_mean: float  # the before mean, adjusted to the after traffic mix
    n_before: int
    n_after: int
    share_before: float  # of the cell's traffic
    share_after: float
    effect: float  # δ_s = after mean − expected after mean (points)
    effect_low: float  # 95% interval of δ_s
    effect_high: float
    z: float  # δ_s against the rest of the cell's δ, in standard errors


@dataclasses.dataclass(frozen=True)
class MixDriver:
    dimension: str
    value: str
    share_before: float
    share_after: float
    before_mean: float
    contribution: float  # (w₁ − w₀)·(μ₀ − μ₀ of the cell): points of the drop from the mix


@dataclasses.dataclass(frozen=True)
class EventFinding:
    event: ChangeEvent
    old_value: str | None  # the event's previous value; None: the old traffic is every other value
    old_mean: float | None  # the old traffic's mean after the start (same days), else before it
    new_mean: float | None
    old_n: int
    new_n: int
    same_days: bool  # old and new compared on the same days (old traffic continued)
    contribution: float  # w₁(new)·(μ_new − μ_old): points of the cell's drop (negative = explains)
    share_of_drop: float  # contribution / ΔM
    z: float  # (μ_new − μ_old) in standard errors (nan without a comparison)


@dataclasses.dataclass(frozen=True)
class Attribution:
    status: Status  # "slice": named; "mix": the traffic mix explains it; "unknown": not yet
    reason: str  # one line, e.g. "cause not yet known, n = 240 after the start: ..."
    n_before: int
    n_after: int
    drop: float  # ΔM = μ₁ − μ₀ (negative for a drop)
    mix: float  # the mix part along mix_dimension
    rate: float  # ΔM − mix
    mix_dimension: str | None
    mix_drivers: tuple[MixDriver, ...]  # the mix dimension's values, largest |contribution| first
    slices: tuple[NamedSlice, ...]  # the named slice(s); empty unless status == "slice"
    events: tuple[EventFinding, ...]  # change events inside the start interval, best first
    searched: int  # candidate slices tested
    z_threshold: float  # the Bonferroni critical z over them


def slice_key(*items: Item) -> SliceKey:
    """The canonical key of a single value or a pair: items sorted by dimension."""
    if len({d for d, _ in items}) != len(items):
        raise ValueError(f"a slice takes each dimension once: {items}")
    return tuple(sorted(items))


def label(key: SliceKey) -> str:
    return " & ".join(f"{d}={v}" for d, v in key)
