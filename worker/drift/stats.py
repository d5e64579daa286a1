"""The drift test's statistics: one-sided Welch and two-proportion tests, Benjamini–Hochberg,
the minimum sample size for 90% power, and the decision rule of the public contract.

The minimum n is sized for the run, not for one test: Benjamini–Hochberg lets the most
significant of m cells through only when p < α·1/m (its first-rank threshold), and with one
drifted cell among m stable ones that is the bar it must clear. Sizing a single test at α
gave 0.61 power over 20 cells; sizing at α/m gives 0.9 whatever m is (more drifted cells
only loosen BH's thresholds, so one drifted cell is the worst case).

All means and drops are in quality points (0–100, higher is better).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from scipy import stats as sps

ALPHA = 0.01
POWER = 0.9
# The smallest spread assumed for a cell, in quality points (0-100): judge scores spread about 20;
# a cell whose few scores are all equal is not thereby certain.
MIN_SD = 10.0


@dataclasses.dataclass(frozen=True)
class WeekStats:
    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        if self.n < 2:
            return float("nan")
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


@dataclasses.dataclass(frozen=True)
class WeekRate:
    n: int
    passes: int

    @property
    def rate(self) -> float:
        return self.passes / self.n if self.n else float("nan")

    @property
    def mean(self) -> float:
        return 100 * self.rate


def to_points(value: float, lo: float, hi: float) -> float:
    return (value - lo) / (hi - lo) * 100


def floored_variance(week: WeekStats) -> float:
    """A week's variance, never below MIN_SD²: a handful of identical scores is a small sample,
    not certainty (two 5s then two 4s must not page anyone)."""
    return max(week.variance, MIN_SD ** 2)


def welch_drop_p(prev: WeekStats, curr: WeekStats) -> float:
    """One-sided p-value of H1: this week's mean is below last week's."""
    if prev.n < 2 or curr.n < 2:
        return 1.0
    v1, v2 = floored_variance(prev), floored_variance(curr)
    se2 = v1 / prev.n + v2 / curr.n
    t = (curr.mean - prev.mean) / math.sqrt(se2)
    df = se2 ** 2 / ((v1 / prev.n) ** 2 / (prev.n - 1) + (v2 / curr.n) ** 2 / (curr.n - 1))
    return float(sps.t.cdf(t, df))


def proportion_drop_p(prev: WeekRate, curr: WeekRate) -> float:
    """One-sided pooled two-proportion z-test of H1: this week's rate is below last week's."""
    pooled = (prev.passes + curr.passes) / (prev.n + curr.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / prev.n + 1 / curr.n))
    diff = curr.rate - prev.rate
    if se == 0:
        return 0.0 if diff < 0 else 1.0
    return float(sps.norm.cdf(diff / se))


def _z(alpha: float, power: float) -> float:
    return sps.norm.ppf(1 - alpha) + sps.norm.ppf(power)


def min_n_means(sd: float, drop: float, alpha: float = ALPHA, power: float = POWER, cells: int = 1) -> int:
    """Per-week n for a one-sided two-sample test to detect ``drop`` with this power when
    ``cells`` tests share one Benjamini–Hochberg correction (each sized at alpha / cells)."""
    return max(2, math.ceil(2 * (_z(alpha / max(1, cells), power) * sd / drop) ** 2))


def min_n_rates(p: float, drop: float, alpha: float = ALPHA, power: float = POWER, cells: int = 1) -> int:
    """The same for a pass rate ``p`` (0..1) falling by ``drop`` (0..1): pooled two-proportion z."""
    p1, p2 = p, max(0.0, p - drop)
    pbar = (p1 + p2) / 2
    za, zb = sps.norm.ppf(1 - alpha / max(1, cells)), sps.norm.ppf(power)
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / drop ** 2
    return max(2, math.ceil(n))


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    q = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        q[i] = min(1.0, running)
    return q


@dataclasses.dataclass
class CellInput:
    key: str
    prev: WeekStats | WeekRate
    curr: WeekStats | WeekRate
    threshold_points: float = 5.0


@dataclasses.dataclass
class CellDecision:
    key: str
    status: str  # alert | ok | insufficient_data
    prev_mean: float | None
    curr_mean: float | None
    drop: float | None
    p: float
    q: float
    n_prev: int
    n_curr: int
    n_needed: int | None  # per week, for 90% power at the threshold drop over this run's cells
    cells_in_run: int = 1  # the Benjamini–Hochberg family the n was sized for

    @property
    def n_have(self) -> int:
        """The n that counts against ``n_needed``: the smaller week."""
        return min(self.n_prev, self.n_curr)


def _test(cell: CellInput, cells: int) -> tuple[float, int | None]:
    """(one-sided p, minimum n per week) for a cell; p = 1 when it can't be tested."""
    prev, curr, drop = cell.prev, cell.curr, cell.threshold_points
    if prev.n < 2 or curr.n < 2:
        return 1.0, None
    if isinstance(prev, WeekRate) and isinstance(curr, WeekRate):
        pooled = (prev.passes + curr.passes) / (prev.n + curr.n)
        return proportion_drop_p(prev, curr), min_n_rates(min(max(pooled, 0.05), 0.999), drop / 100, cells=cells)
    if isinstance(prev, WeekStats) and isinstance(curr, WeekStats):
        sd = math.sqrt(((prev.n - 1) * prev.variance + (curr.n - 1) * curr.variance) / (prev.n + curr.n - 2))
        return welch_drop_p(prev, curr), min_n_means(max(sd, MIN_SD), drop, cells=cells)
    raise TypeError(f"{cell.key}: last week and this week are not of one kind (a mean and a pass rate)")


def decide(cells: Sequence[CellInput], q_level: float = ALPHA) -> list[CellDecision]:
    """The contract's rule over one run's cells. The minimum n is sized at the contract's α
    (not ``q_level``, which only moves the alert bar) divided by the number of cells."""
    m = len(cells)
    tested = [_test(c, m) for c in cells]
    qvalues = benjamini_hochberg([p for p, _ in tested]) if cells else []
    out = []
    for cell, (p, n_needed), q in zip(cells, tested, qvalues):
        has_data = cell.prev.n > 0 and cell.curr.n > 0
        prev_mean = cell.prev.mean if cell.prev.n else None
        curr_mean = cell.curr.mean if cell.curr.n else None
        drop = prev_mean - curr_mean if has_data and prev_mean is not None and curr_mean is not None else None
        if n_needed is not None and q < q_level and drop is not None and drop >= cell.threshold_points / 2:
            status = "alert"
        elif n_needed is None or min(cell.prev.n, cell.curr.n) < n_needed:
            status = "insufficient_data"
        else:
            status = "ok"
        out.append(CellDecision(cell.key, status, prev_mean, curr_mean, drop, p, q, cell.prev.n, cell.curr.n,
                                n_needed, m))
    return out
