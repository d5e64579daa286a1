"""Means of judged scores weighted by their known inclusion probabilities (issue 27, item 4).

A cell's traces are not all sampled at one rate: a segment quota (samplers/quota.py) or a
power-aware rate or boost (samplers/power.py) raises the rate of some segments, and a trace's
inclusion probability is p = the max of its cells' rates. The plain mean of a parent cell (all
traffic, a tenant) then over-counts the raised segments: a segment sampled at 10× the rate of
the rest carries 10× its share of the scores. Each score is weighted by w = 1/p instead:

* **Hájek** (the default): m = Σw·x / Σw, a ratio estimator, nearly unbiased whatever the traffic
  (bias O(1/n)), needs no population count; what the drift cells use.
* **Horvitz–Thompson**: Σw·x / N with the population count N (traces a day, e.g. the quota's
  HyperLogLog count) known: exactly unbiased, noisier when N is itself estimated.

Variances, for hash sampling (each trace independently with its own p: Poisson sampling):
* ``variance()``: the linearised Hájek variance as a with-replacement approximation,
  Σw²(x − m)² / (Σw)²: the variance of the mean *as an estimate of the process's mean*, which is
  what a drift test or the CUSUM needs (scores are noisy even under a census);
* ``variance(finite_population=True)``: the design variance of the mean *of this day's traces*,
  Σ(w² − w)(x − m)² / (Σw)² (0 for a census), and ``ht_variance(N)`` = Σ(w² − w)x² / N².
``effective_n`` is Kish's (Σw)²/Σw²: the n an equal-rate sample with the same precision would
have; ``to_day_aggregate`` turns the sums into a sequential.DayAggregate with that n, the
weighted mean and the weighted SD, so the detector's reference and design see the weighted cell.

Aggregates: the sums below are additive, so a cell-day keeps them as Redis hash fields
(``fields``, ``from_fields``; HINCRBYFLOAT per judged trace) and days and cells combine by
``+``. The mean needs only (Σw, Σw·x, Σw·x²) (``triple``); the variance and effective n need
(Σw², Σw²·x, Σw²·x²) too. With every p equal the weighted figures equal the unweighted ones.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from worker.drift.sequential import DayAggregate

_FIELDS = ("n", "sw", "swx", "swx2", "sw2", "sw2x", "sw2x2")
FIELD_PREFIX = "w:"  # the hash fields' prefix beside a cell-day's unweighted n/total/total_sq
WEIGHTED_PASSES = "w:spass"  # Σw over a cell-day's passes (pass/fail rubrics): the weighted pass rate
# Score metadata of a power-aware rubric (samplers/inclusion_log.py writes them).
METADATA_P, METADATA_OWN = "inclusion_probability", "sampled_in"


@dataclasses.dataclass(frozen=True)
class Weighting:
    """How a power-aware rubric's trace was sampled: ``probability`` p, its inclusion probability
    (the max of its cells' rates), and ``own``, the segments whose own rate picked it. The sampler
    decides it (``of``, samplers/selection.py), the score carries it (``as_metadata``), and the
    drift contribution reads it back (``from_metadata``). It counts
    unweighted (n/sum/sumsq, the bottom lists, the detector's stream) in its ``own`` cells only,
    so each cell's plain stream stays a uniform sample of the cell at the cell's own rate, and in
    the weighted sums (w = 1/p) of every cell, where a boosted or quota-picked trace is unbiased
    (Hájek) in its parents too. ``only_key`` (the quota's rule) is its special case."""
    probability: float
    own: tuple[str, ...]

    @classmethod
    def of(cls, rates: Mapping[str, float], u: float) -> Weighting:
        """A trace's, from its cells' rates (segment -> rate) and its sampling point ``u``."""
        p = min(1.0, max(rates.values(), default=0.0))
        return cls(p, tuple(s for s, r in rates.items() if u < r))

    @property
    def selected(self) -> bool:
        return bool(self.own)

    def as_metadata(self) -> dict[str, float | list[str]]:
        return {METADATA_P: self.probability, METADATA_OWN: list(self.own)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> Weighting | None:
        """From a score's metadata (None when it carries none: a rubric without a target)."""
        p, own = metadata.get(METADATA_P), metadata.get(METADATA_OWN)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1 or not isinstance(own, list):
            return None
        return cls(float(p), tuple(str(s) for s in own))


@dataclasses.dataclass(frozen=True)
class WeightedSums:
    """Additive sums of scores x with weights w = 1/p: n, Σw, Σw·x, Σw·x², Σw², Σw²·x, Σw²·x²."""
    n: int = 0
    sw: float = 0.0
    swx: float = 0.0
    swx2: float = 0.0
    sw2: float = 0.0
    sw2x: float = 0.0
    sw2x2: float = 0.0

    # --- building and combining ---

    @classmethod
    def of(cls, scores: npt.ArrayLike, probabilities: npt.ArrayLike) -> WeightedSums:
        """The sums of ``scores`` judged with inclusion probabilities ``probabilities`` (0 < p ≤ 1)."""
        x = np.asarray(scores, dtype=float).ravel()
        p = np.broadcast_to(np.asarray(probabilities, dtype=float), x.shape).ravel()
        if x.size and (not np.all(p > 0) or not np.all(p <= 1)):
            raise ValueError("inclusion probabilities must be in (0, 1]")
        w = 1.0 / p
        w2 = w * w
        return cls(int(x.size), float(w.sum()), float((w * x).sum()), float((w * x * x).sum()),
                   float(w2.sum()), float((w2 * x).sum()), float((w2 * x * x).sum()))

    def add(self, score: float, probability: float) -> WeightedSums:
        """These sums with one more judged score."""
        return self + WeightedSums.of([score], [probability])

    def __add__(self, other: WeightedSums) -> WeightedSums:
        return WeightedSums(self.n + other.n, *(getattr(self, f) + getattr(other, f) for f in _FIELDS[1:]))

    @classmethod
    def combine(cls, parts: Iterable[WeightedSums]) -> WeightedSums:
        out = cls()
        for part in parts:
            out = out + part
        return out

    @staticmethod
    def increments(score: float, probability: float) -> dict[str, float]:
        """What one judged score adds to a cell-day's hash (HINCRBYFLOAT each field)."""
        return WeightedSums.of([score], [probability]).fields()

    def fields(self) -> dict[str, float]:
        return {FIELD_PREFIX + f: float(getattr(self, f)) for f in _FIELDS}

    @classmethod
    def from_fields(cls, raw: Mapping[str, float]) -> WeightedSums:
        """From a cell-day hash read as {field: float} (aggregates.read_days); missing fields are 0."""
        vals = [float(raw.get(FIELD_PREFIX + f, 0.0)) for f in _FIELDS]
        return cls(int(round(vals[0])), *vals[1:])

    @property
    def triple(self) -> tuple[float, float, float]:
        """(Σw, Σw·x, Σw·x²): enough for the mean and the weighted SD."""
        return self.sw, self.swx, self.swx2

    # --- estimates ---

    @property
    def mean(self) -> float:
        """The Hájek mean Σw·x / Σw (nan when empty)."""
        return self.swx / self.sw if self.sw > 0 else math.nan

    @property
    def sd(self) -> float:
        """The weighted SD of the scores (an estimate of the population's), with Kish's n − 1."""
        if self.sw <= 0:
            return math.nan
        m = self.mean
        pop = max(0.0, self.swx2 / self.sw - m * m)
        n_eff = self.effective_n
        return math.sqrt(pop * n_eff / (n_eff - 1)) if n_eff > 1 else math.sqrt(pop)

    @property
    def effective_n(self) -> float:
        """Kish's effective sample size (Σw)² / Σw²."""
        return self.sw * self.sw / self.sw2 if self.sw2 > 0 else 0.0

    def variance(self, finite_population: bool = False) -> float:
        """The variance of the Hájek mean (module docstring): with-replacement by default,
        Σw²(x − m)²/(Σw)²; the design variance for this day's traces when ``finite_population``."""
        if self.sw <= 0:
            return math.nan
        m = self.mean
        sq = self.sw2x2 - 2 * m * self.sw2x + m * m * self.sw2  # Σw²(x − m)²
        if finite_population:
            sq -= self.swx2 - m * m * self.sw  # − Σw(x − m)², using Σw·x = m·Σw
        return max(0.0, sq) / (self.sw * self.sw)

    def se(self, finite_population: bool = False) -> float:
        return math.sqrt(self.variance(finite_population))

    def ht_mean(self, population: float) -> float:
        """The Horvitz–Thompson mean Σw·x / N for a known population count N."""
        return self.swx / population if population > 0 else math.nan

    def ht_variance(self, population: float) -> float:
        """Its unbiased variance under Poisson (hash) sampling: Σ(w² − w)x² / N²."""
        if population <= 0:
            return math.nan
        return max(0.0, self.sw2x2 - self.swx2) / (population * population)

    def to_day_aggregate(self, day: str, changed: bool = False) -> DayAggregate:
        """A sequential.DayAggregate with the effective n, the weighted mean and the weighted SD,
        for the detector's reference and design (sums of cubes are not kept)."""
        n = int(round(self.effective_n))
        if n <= 0:
            return DayAggregate(day, 0, 0.0, 0.0, changed)
        m = self.mean
        var = self.sd ** 2
        # Pooled by sequential.reference as mean = total/n, var = (total_sq − total²/n)/(n − 1).
        return DayAggregate(day, n, m * n, var * (n - 1) + m * m * n, changed)


def hajek_mean(scores: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Σ(x/p) / Σ(1/p)."""
    return WeightedSums.of(scores, probabilities).mean


def horvitz_thompson_mean(scores: npt.ArrayLike, probabilities: npt.ArrayLike, population: float) -> float:
    """Σ(x/p) / N."""
    return WeightedSums.of(scores, probabilities).ht_mean(population)
