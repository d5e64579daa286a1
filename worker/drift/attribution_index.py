"""One cell's slices indexed for attribution, and the statistics the searches share.

``CellIndex`` finds a slice's scores by key and gives a new value (first seen in the start
interval) its previous value's scores before the start; ``diff_variance`` is the variance of a
difference of two means, each variance floored; ``mean_or`` a mean with a default for no scores.
"""
from __future__ import annotations

from worker.drift.attribution_types import CellData, Item, Moments, Settings, SliceData, SliceKey, slice_key


class CellIndex:
    """Indexes of one CellData: singles by dimension, pairs by key, new values' baselines."""

    def __init__(self, cell: CellData, settings: Settings) -> None:
        self.cell = cell
        self.settings = settings
        self.singles: dict[str, dict[str, SliceData]] = {}
        self.pairs: dict[SliceKey, SliceData] = {}
        for s in cell.slices:
            if len(s.key) == 1:
                self.singles.setdefault(s.key[0][0], {})[s.key[0][1]] = s
            elif len(s.key) == 2:
                self.pairs[slice_key(*s.key)] = s
        # A value first seen in the start interval (or with no scores before) stands in for its
        # previous value: its traffic before the start *was* the previous value's.
        # A new value whose previous is unknown (a release taking a share of all traffic)
        # stands in for the cell itself: it is dropped from the key.
        self.previous: dict[Item, str] = {}
        self.new: set[Item] = set()
        for e in cell.events:
            self.new.add((e.dimension, e.value))
            if e.previous is not None and e.previous != e.value:
                self.previous[(e.dimension, e.value)] = e.previous

    def singles_list(self) -> list[SliceData]:
        return [s for values in self.singles.values() for s in values.values()]

    def single(self, item: Item) -> SliceData | None:
        return self.singles.get(item[0], {}).get(item[1])

    def get(self, key: SliceKey) -> SliceData | None:
        return self.single(key[0]) if len(key) == 1 else self.pairs.get(key)

    def merged(self, item: Item) -> Item:
        prev = self.previous.get(item)
        return (item[0], prev) if prev is not None else item

    def before(self, key: SliceKey) -> Moments:
        """The slice's scores before the start, with new values replaced by their previous."""
        s = self.get(key)
        if s is not None and not any(item in self.new for item in key):
            return s.before
        items = [self.merged(item) for item in key if item in self.previous or item not in self.new]
        if not items:
            return self.cell.before
        base = self.get(slice_key(*items))
        return base.before if base is not None else (s.before if s is not None else Moments())


def diff_variance(after: Moments, before: Moments, floor: float) -> float:
    """The variance of (after mean − before mean), each variance floored at ``floor``."""
    v1 = max(after.variance, floor) / max(after.n, 1)
    v0 = max(before.variance, floor) / max(before.n, 1)
    return v1 + v0


def mean_or(m: Moments, default: float) -> float:
    return m.mean if m.n > 0 else default
