"""Drift's data: the keys of the per-day aggregates, and what one judged trace adds to them.

Aggregates are kept per cell, ``rubric|v<version>|<judge model>|<segment>``, and per UTC day D
of the trace's own timestamp (a backfill lands in the right week), in quality points: 0–100,
higher is better, whatever the rubric's scale and direction. A score adds to each cell it
counts in::

    tracejudge:agg:cells              set   + cell                      (retention walks it)
    tracejudge:agg:days:<cell>        zset  + D -> D's epoch            (the cell's day index)
    tracejudge:agg:<cell>:<D>         hash  n +1, sum +points, sumsq +points², cost_microusd
                                            +cost; categorical and boolean scales also passes
                                            +1|+0 and label:<value> +1
    tracejudge:agg:bottom:<cell>:<D>  zset  + member -> points; the BOTTOM_N lowest stay
    tracejudge:seq:pending:<cell>     zset  + "<member>|<observation id>|<points!r>" -> trace
                                            epoch: the sequential detector's reorder buffer
                                            (drift/detection.py reads the points after the last |)

a power-aware rubric's score (``sampling.detection_target``) also adds its weighted sums, with
w = 1/p (p: the trace's inclusion probability, ``Weighting``), to *every* cell of the trace::

    tracejudge:agg:<cell>:<D>         hash  w:n, w:sw, w:swx, w:swx2, w:sw2, w:sw2x, w:sw2x2
                                            (worker/drift/weighting.py ``WeightedSums``), and
                                            w:spass +w for a pass

and, when the trace's slices are known (worker/drift/dimensions.py), its entry in the slice
log and the first-seen values of its cells (worker/drift/slice_log.py). An unscored trace adds
to the first two keys, and ``unscored`` +1, ``unscored:<reason>`` +1 in the day's hash.
drift/aggregates.py reads them (the report, status and the drift check through it).

``DriftContribution`` is a score's share, built here from the judged facts (``of_score``). It
is added only when the score's read-back confirms it (worker/judging/confirm.py), and until
then waits as ``to_json()`` in the pending-confirmation record. ``UnscoredContribution`` is an
unscored trace's. Neither writes anything but through ``apply``, which queues the writes on a
pipeline in MULTI mode: the caller (worker/accounting/outcomes.py) executes it with the marker
that makes it count once per score id, in one transaction.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping

from redis.client import Pipeline

from worker.drift import slice_log
from worker.drift.weighting import WEIGHTED_PASSES, WeightedSums, Weighting
from worker.rubrics.fields import metadata_text
from worker.rubrics.rubric import Rubric

PREFIX = "tracejudge:agg:"
CELLS = PREFIX + "cells"
PENDING = "tracejudge:seq:pending:"  # + cell: the sequential detector's reorder buffer (drift/detection.py)
DAYS = PREFIX + "days:"  # + cell: zset of the days it has aggregates for (score: the day's epoch)
DEFAULT_SEGMENT_KEYS = ("feature", "tenant")
BOTTOM_N = 20
SESSION_MEMBER = "session:"
# The versions of ``DriftContribution.to_json``'s shape: 1, and 2 when it carries weighted sums
# (a release that reads only 1 leaves such a record for one that reads it, rather than drop the
# sums). "slices" is optional in both: an older reader skips the slice log entry only.
FORMAT = 1
WEIGHTED_FORMAT = 2
# Under this key of a job's drift metadata (``Prepared.metadata``, never written to Langfuse):
# the trace's slices, {dimension: value} (worker/drift/dimensions.py).
SLICES_KEY = "tracejudge.slices"

ScoreValue = float | str  # a verdict's value: a number (1/0 for a boolean scale) or a label


def quality_points(rubric: Rubric, value: ScoreValue) -> float:
    scale = rubric.scale
    if scale.kind == "numeric":
        lo, hi = float(scale.minimum or 0.0), float(scale.maximum or 0.0)  # a numeric scale has both
        points = (float(value) - lo) / (hi - lo) * 100
    elif scale.kind == "categorical":
        values = [v for _, v in scale.labels]
        lo, hi = min(values), max(values)
        by_label: dict[object, float] = dict(scale.labels)
        points = (by_label[value] - lo) / (hi - lo) * 100
    else:
        points = float(value) * 100
    return points if scale.higher_is_better else 100 - points


def passed(rubric: Rubric, value: ScoreValue) -> bool:
    """Pass/fail rubrics: the best label (or true, for a boolean) counts as a pass."""
    return quality_points(rubric, value) >= 100 - 1e-9


def segments(metadata: Mapping[str, object], keys: tuple[str, ...] = DEFAULT_SEGMENT_KEYS,
             only_key: str | None = None) -> list[str]:
    """The cells a trace counts in. ``only_key``: a trace picked only because its segment's quota
    raised the rate counts in that segment's cells alone; in the all-traffic and feature cells
    it would over-weight small segments and turn a change in who is sampled into a "drop"."""
    present = [(k, metadata_text(metadata[k])) for k in keys
               if isinstance(metadata.get(k), (str, int, float)) and metadata_text(metadata[k])]
    cells = ["all"] + [f"{k}={v}" for k, v in present]
    if len(present) >= 2:
        cells.append("|".join(f"{k}={v}" for k, v in present[:2]))
    if only_key is not None:
        cells = [c for c in cells if any(part.startswith(f"{only_key}=") for part in c.split("|"))]
    return cells


def cell_key(rubric: Rubric, segment: str) -> str:
    return f"{rubric.name}|v{rubric.version}|{rubric.judge.model}|{segment}"


def day_of(timestamp: dt.datetime | None) -> str:
    return (timestamp or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).date().isoformat()


def day_key(cell: str, day: str) -> str:
    return f"{PREFIX}{cell}:{day}"


def bottom_key(cell: str, day: str) -> str:
    return f"{PREFIX}bottom:{cell}:{day}"


def days_key(cell: str) -> str:
    return DAYS + cell


def day_epoch(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp())


def bottom_member(trace_id: str | None, metadata: Mapping[str, object]) -> str:
    """What a bottom list names: the trace (trace and observation scores, which carry their
    trace), or ``session:<id>`` for a session score (which has no trace)."""
    if trace_id is not None:
        return trace_id
    return SESSION_MEMBER + str(metadata.get("session_id"))


class ContributionFormatError(ValueError):
    """A pending record's drift contribution this release does not read (another format
    version, or an opcode list other than the one the previous release wrote)."""


@dataclasses.dataclass(frozen=True)
class DriftContribution:
    """One score's share of the drift aggregates, in every cell it counts in (the keys above).
    ``label`` and ``passed`` are set for categorical and boolean scales only."""

    cells: tuple[str, ...]  # cell_key of each cell it counts in, "all" first
    day: str  # the trace's UTC day, ISO: the bucket
    points: float  # quality points, 0–100
    trace_epoch: float  # the trace's own time: the detector applies a cell's scores in this order
    cost_microusd: int  # what its judge calls cost
    member: str  # what the bottom lists name: the trace id, or session:<id>
    observation_id: str = ""  # an observation score's; "" for trace and session scores
    label: str | None = None  # the verdict's value as text: label:<value> counts it
    passed: bool | None = None  # the best label (or true): a pass
    slices: tuple[tuple[str, str], ...] = ()  # (dimension, value), sorted: its slice log entry
    weight: float | None = None  # 1/p for a power-aware rubric's score (``Weighting``); None: unweighted
    weighted_cells: tuple[str, ...] = ()  # every cell of the trace: where its weighted sums go

    def __post_init__(self) -> None:
        if (self.label is None) != (self.passed is None):
            raise ValueError("a drift contribution has both a label and a pass, or neither")

    @classmethod
    def of_score(cls, rubric: Rubric, trace_id: str | None, metadata: Mapping[str, object],
                 trace_time: dt.datetime | None, value: ScoreValue, cost_microusd: int,
                 only_key: str | None = None, weighting: Weighting | None = None) -> DriftContribution:
        """What a score of ``value`` adds. ``trace_time`` buckets it (None: now); ``only_key``:
        a trace sampled only by its segment's quota counts in that segment's cells alone;
        ``weighting`` (a power-aware rubric's): unweighted in its own cells, weighted in all."""
        when = trace_time or dt.datetime.now(dt.timezone.utc)
        categorical = rubric.scale.kind != "numeric"
        observation = metadata.get("observation_id")
        weight: float | None = None
        weighted: tuple[str, ...] = ()
        if weighting is not None:
            weight = 1.0 / weighting.probability
            weighted = tuple(cell_key(rubric, segment) for segment in segments(metadata))
        return cls(cells=_cells(rubric, metadata, only_key, weighting),
                   day=day_of(when), points=float(quality_points(rubric, value)), trace_epoch=when.timestamp(),
                   cost_microusd=int(cost_microusd), member=bottom_member(trace_id, metadata),
                   observation_id=str(observation) if observation else "",
                   label=f"{value}" if categorical else None,
                   passed=passed(rubric, value) if categorical else None,
                   slices=slices_of(metadata), weight=weight, weighted_cells=weighted)

    @property
    def pending_member(self) -> str:
        """Its member of each cell's reorder buffer: one per score (a trace's observations each
        have one), its points last."""
        return f"{self.member}|{self.observation_id}|{self.points!r}"

    def apply(self, pipe: Pipeline) -> None:
        """Queue its writes (the module docstring lists them) on ``pipe``, a pipeline in MULTI
        mode: they land when, and only when, the caller executes it."""
        points = self.points
        for cell in self.cells:
            stats, bottom = day_key(cell, self.day), bottom_key(cell, self.day)
            _index(pipe, cell, self.day)
            pipe.hincrby(stats, "n", 1)
            pipe.hincrbyfloat(stats, "sum", points)
            pipe.hincrbyfloat(stats, "sumsq", points * points)
            pipe.hincrby(stats, "cost_microusd", self.cost_microusd)
            if self.label is not None:
                pipe.hincrby(stats, "passes", 1 if self.passed else 0)
                pipe.hincrby(stats, f"label:{self.label}", 1)
            pipe.zadd(bottom, {self.member: points})
            pipe.zremrangebyrank(bottom, BOTTOM_N, -1)
            pipe.zadd(PENDING + cell, {self.pending_member: self.trace_epoch})
        slice_log.write(pipe, self.cells, self.trace_epoch, self.member, self.observation_id, points,
                        dict(self.slices))
        if self.weight is not None:
            sums = WeightedSums.increments(points, 1.0 / self.weight)
            for cell in self.weighted_cells:
                _index(pipe, cell, self.day)
                for field, amount in sums.items():
                    pipe.hincrbyfloat(day_key(cell, self.day), field, amount)
                if self.passed:
                    pipe.hincrbyfloat(day_key(cell, self.day), WEIGHTED_PASSES, self.weight)

    def to_json(self) -> dict[str, object]:
        """The JSON-able form kept in the pending-confirmation record; ``from_json`` reads it."""
        return {"v": FORMAT if self.weight is None else WEIGHTED_FORMAT, "cells": list(self.cells), "day": self.day,
                "points": self.points, "trace_epoch": self.trace_epoch, "cost_microusd": self.cost_microusd,
                "member": self.member, "observation_id": self.observation_id, "label": self.label, "passed": self.passed,
                **({"slices": [list(item) for item in self.slices]} if self.slices else {}),
                **({"w": self.weight, "wcells": list(self.weighted_cells)} if self.weight is not None else {})}

    @classmethod
    def from_json(cls, raw: object) -> DriftContribution:
        """``to_json``'s form read back; ContributionFormatError for anything else (another
        format version: left to a release that reads it)."""
        if not isinstance(raw, Mapping) or raw.get("v") not in (FORMAT, WEIGHTED_FORMAT):
            raise ContributionFormatError(f"not a drift contribution of format {FORMAT} or {WEIGHTED_FORMAT}: "
                                          f"{str(raw)[:200]}")
        try:
            cells, label, pass_, observation = raw["cells"], raw["label"], raw["passed"], raw["observation_id"]
            if not (isinstance(cells, list) and all(isinstance(c, str) for c in cells)
                    and (label is None or isinstance(label, str)) and (pass_ is None or isinstance(pass_, bool))
                    and isinstance(observation, str)):
                raise TypeError("cells, label, passed or observation_id of the wrong type")
            slices = raw.get("slices") or []
            if not (isinstance(slices, list) and all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in slices)):
                raise TypeError("slices of the wrong type")
            weight, wcells = raw.get("w"), raw.get("wcells") or []
            if not (isinstance(wcells, list) and all(isinstance(c, str) for c in wcells)):
                raise TypeError("wcells of the wrong type")
            return cls(cells=tuple(cells), day=_text(raw["day"]), points=_number(raw["points"]),
                       trace_epoch=_number(raw["trace_epoch"]), cost_microusd=_integer(raw["cost_microusd"]),
                       member=_text(raw["member"]), observation_id=observation, label=label, passed=pass_,
                       slices=tuple((p[0], p[1]) for p in slices),
                       weight=None if weight is None else _number(weight), weighted_cells=tuple(wcells))
        except (KeyError, TypeError, ValueError) as exc:
            raise ContributionFormatError(f"malformed drift contribution ({exc}): {str(raw)[:200]}") from None


@dataclasses.dataclass(frozen=True)
class UnscoredContribution:
    """A trace the judge could not score, in every cell it counts in ("not applicable" is not
    one: it adds nothing)."""

    cells: tuple[str, ...]
    day: str
    reason: str

    @classmethod
    def of_trace(cls, rubric: Rubric, metadata: Mapping[str, object], trace_time: dt.datetime | None,
                 reason: str, only_key: str | None = None, weighting: Weighting | None = None
                 ) -> UnscoredContribution:
        return cls(_cells(rubric, metadata, only_key, weighting), day_of(trace_time), reason)

    def apply(self, pipe: Pipeline) -> None:
        """Queue its writes on ``pipe``, a pipeline in MULTI mode the caller executes."""
        for cell in self.cells:
            _index(pipe, cell, self.day)
            pipe.hincrby(day_key(cell, self.day), "unscored", 1)
            pipe.hincrby(day_key(cell, self.day), f"unscored:{self.reason}", 1)


def _cells(rubric: Rubric, metadata: Mapping[str, object], only_key: str | None,
           weighting: Weighting | None) -> tuple[str, ...]:
    """The cells a trace counts in unweighted: its segments (``only_key``: the quota's alone), or
    with a ``weighting`` those whose own rate picked it."""
    found = segments(metadata, only_key=None if weighting is not None else only_key)
    if weighting is not None:
        found = [s for s in found if s in weighting.own]
    return tuple(cell_key(rubric, segment) for segment in found)


def slices_of(metadata: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """The trace's slices a job carried under SLICES_KEY, sorted; () when it carried none."""
    raw = metadata.get(SLICES_KEY)
    if not isinstance(raw, Mapping):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in raw.items() if isinstance(v, str) and v))


def _index(pipe: Pipeline, cell: str, day: str) -> None:
    """The cell in the cell set and its day in the cell's day index: what retention walks."""
    pipe.sadd(CELLS, cell)
    pipe.zadd(days_key(cell), {day: day_epoch(day)})


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{value!r} is not a finite number")
    return float(value)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value
