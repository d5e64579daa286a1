"""A rubric's detection target and the detector inverted: how many judged traces a day a cell
needs so that worker/drift/sequential.py sees the target drop within the target hours
(samplers/power.py allocates sampling rates from it)."""
from __future__ import annotations

import dataclasses
import functools
import math

from scipy import optimize

from worker.drift import sequential as sq
from worker.drift.stats import MIN_SD

_REFERENCE_MEAN = 70.0  # the detector's delay does not depend on the reference mean
_MAX_JUDGED = 1e8  # above this many judged a day a target counts as unreachable


@dataclasses.dataclass(frozen=True)
class DetectionTarget:
    """A rubric's detection target: a ``drop`` (points, 0–100) detected within ``hours``."""
    drop: float = sq.DEFAULT_DROP
    hours: float = sq.DEFAULT_UNDERPOWERED_HOURS
    cell_years: float = 1.0  # the detector's false-alarm budget: cell-years per false alarm
    reference_days: int = sq.REFERENCE_DAYS

    def __post_init__(self) -> None:
        if self.drop <= 0 or self.hours <= 0 or self.cell_years <= 0 or self.reference_days <= 0:
            raise ValueError("a detection target needs a positive drop, hours, cell-years and reference days")

    @property
    def label(self) -> str:
        return f"{self.drop:g} points within {self.hours:g} h"



def delay_hours(judged_per_day: float, sd: float, target: DetectionTarget) -> float:
    """Expected hours for the detector (sequential.design, the target's drop and false-alarm
    budget, a reference of ``target.reference_days`` days at the same n) to see the target drop
    in a cell with ``judged_per_day`` judged traces a day; inf when the reference would stay
    under sequential.MIN_REFERENCE_N (the detector then never alarms)."""
    if judged_per_day * target.reference_days < sq.MIN_REFERENCE_N:
        return math.inf
    return _delay(judged_per_day, max(sd, MIN_SD), target)


def _delay(n: float, sd: float, target: DetectionTarget) -> float:
    ref_n = max(2, round(n * target.reference_days))
    ref = sq.Reference(_REFERENCE_MEAN, sd, ref_n, target.reference_days, None, None, "ok")
    d = sq.design(ref, target.drop, target.cell_years, n_per_day=n)
    assert d is not None  # a reference marked "ok" always gets a design
    return sq.expected_delay_hours(d)


@functools.lru_cache(maxsize=4096)
def needed_judged_per_day(sd: float, target: DetectionTarget) -> float:
    """The judged traces a day at which the detector's expected delay for the target drop meets
    the target hours (inf when no n up to 10⁸ a day does); never below the n whose 28-day
    reference reaches sequential.MIN_REFERENCE_N."""
    sd = max(sd, MIN_SD)
    floor = sq.MIN_REFERENCE_N / target.reference_days

    def f(log_n: float) -> float:
        return _delay(math.exp(log_n), sd, target) - target.hours

    lo, hi = math.log(floor), math.log(_MAX_JUDGED)
    if f(lo) <= 0:
        return floor
    if f(hi) > 0:
        return math.inf
    # A hair above the root, so the delay at the answer is at or under the target hours.
    return math.exp(float(optimize.brentq(f, lo, hi, xtol=1e-7)) + 1e-6)
