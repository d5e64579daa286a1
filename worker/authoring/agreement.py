"""How well a judge agrees with human labels: pure functions over two parallel label lists.

Labels are plain values (any hashable; a scale's are ``Level``s); ``levels`` lists a scale's
categories in order (lowest value first),
so the same code serves integer numeric scales (1..5), categorical scales ordered by value
(fail < partial < pass) and booleans (False < True). Kappa is "undefined" (None), not a crash
and not a made-up number, when chance agreement is already total (every label in one class).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from worker.rubrics.scales import Level

WEIGHTS = ("quadratic", "linear")


def exact_match(human: Sequence[Hashable], judge: Sequence[Hashable]) -> float | None:
    _check_pairs(human, judge)
    if not human:
        return None
    return sum(h == j for h, j in zip(human, judge)) / len(human)


def within_one(human: Sequence[Hashable], judge: Sequence[Hashable], levels: Sequence[Hashable]) -> float | None:
    """Share of pairs at most one step apart on the ordered ``levels`` (adjacent categories)."""
    _check_pairs(human, judge)
    if not human:
        return None
    rank = {level: i for i, level in enumerate(levels)}
    return sum(abs(rank[h] - rank[j]) <= 1 for h, j in zip(human, judge)) / len(human)


def confusion(human: Sequence[Hashable], judge: Sequence[Hashable], levels: Sequence[Hashable]) -> list[list[int]]:
    """Counts with human labels as rows and judge labels as columns, both in ``levels`` order."""
    _check_pairs(human, judge)
    index = {level: i for i, level in enumerate(levels)}
    unknown = {v for v in itertools.chain(human, judge) if v not in index}
    if unknown:
        raise ValueError(f"labels {sorted(map(repr, unknown))} are not among the levels {list(levels)}")
    table = [[0] * len(levels) for _ in levels]
    for h, j in zip(human, judge):
        table[index[h]][index[j]] += 1
    return table


def disagreement_weights(k: int, weights: str | None) -> list[list[float]]:
    """0 on the diagonal; unweighted 1 off it; linear |i-j|/(k-1); quadratic ((i-j)/(k-1))²."""
    if weights not in (None, *WEIGHTS):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    span = max(k - 1, 1)
    if weights is None:
        return [[0.0 if i == j else 1.0 for j in range(k)] for i in range(k)]
    power = 1 if weights == "linear" else 2
    return [[(abs(i - j) / span) ** power for j in range(k)] for i in range(k)]


def kappa_from_table(table: Sequence[Sequence[int]], weights: str | None = None) -> float | None:
    """Cohen's kappa (weighted when ``weights`` is given) of a square confusion table.

    kappa = 1 - Σ w·observed / Σ w·expected, expected from the two raters' marginals. None when
    the expected disagreement is zero (both raters used one and the same class only).
    """
    k = len(table)
    if any(len(row) != k for row in table):
        raise ValueError("the confusion table must be square")
    n = sum(map(sum, table))
    if n == 0:
        return None
    rows = [sum(row) for row in table]
    cols = [sum(table[i][j] for i in range(k)) for j in range(k)]
    w = disagreement_weights(k, weights)
    observed = sum(w[i][j] * table[i][j] for i in range(k) for j in range(k)) / n
    expected = sum(w[i][j] * rows[i] * cols[j] for i in range(k) for j in range(k)) / (n * n)
    if expected == 0:
        return None
    return 1 - observed / expected


def cohen_kappa(human: Sequence[Hashable], judge: Sequence[Hashable], levels: Sequence[Hashable],
                weights: str | None = None) -> float | None:
    return kappa_from_table(confusion(human, judge, levels), weights)


def spearman(human: Sequence[float], judge: Sequence[float]) -> float | None:
    """Spearman's rho; None when either side is constant (no ranking to correlate)."""
    return _correlation("spearmanr", human, judge)


def kendall_tau_b(human: Sequence[float], judge: Sequence[float]) -> float | None:
    """Kendall's tau-b (tie-corrected); None when either side is constant."""
    return _correlation("kendalltau", human, judge)


def _correlation(name: str, a: Sequence[float], b: Sequence[float]) -> float | None:
    from scipy import stats

    _check_pairs(a, b)
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(getattr(stats, name)(a, b)[0])
    return None if math.isnan(value) else value


def numbers(values: Sequence[Level]) -> list[float]:
    """The labels of a numeric scale as the numbers they are; a label string is not one."""
    out: list[float] = []
    for value in values:
        if isinstance(value, str):
            raise TypeError(f"label {value!r} is not a number")
        out.append(value)
    return out


def reference_label(values: Sequence[Level], levels: Sequence[Level] | None, *, numeric: bool) -> Level:
    """One human label from several raters.

    Numeric scales take the median; on a scale with levels (integer steps) an even split takes
    the lower middle value so the reference stays on the scale. Categorical and boolean scales
    take the majority, a tie going to the lowest value (the conservative reading).
    """
    if not values:
        raise ValueError("no labels")
    if numeric:
        return statistics.median_low(numbers(values)) if levels is not None else statistics.median(numbers(values))
    counts = Counter(values)
    best = max(counts.values())
    tied = [v for v in counts if counts[v] == best]
    order = {level: i for i, level in enumerate(levels or sorted(tied))}
    return min(tied, key=lambda v: order[v])


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """Human-vs-human agreement on examples with two or more raters: what a judge can hope for."""

    examples: int  # examples with 2+ raters
    pairs: int  # label pairs compared (every two raters of one example)
    exact: float | None
    within_one: float | None
    kappa: float | None  # Light's kappa: mean Cohen's kappa over rater pairs where it is defined
    rater_pairs: int  # rater pairs whose kappa is defined


def human_ceiling(ratings: Sequence[Mapping[str, Hashable]], levels: Sequence[Hashable] | None,
                  weights: str | None = None) -> Ceiling | None:
    """``ratings``: per example, rater -> label. None when no example has two raters."""
    multi = [r for r in ratings if len(r) >= 2]
    if not multi:
        return None
    a: list[Hashable] = []
    b: list[Hashable] = []
    by_raters: dict[tuple[str, str], tuple[list[Hashable], list[Hashable]]] = {}
    for example in multi:
        for r1, r2 in itertools.combinations(sorted(example), 2):
            a.append(example[r1])
            b.append(example[r2])
            left, right = by_raters.setdefault((r1, r2), ([], []))
            left.append(example[r1])
            right.append(example[r2])
    kappas: list[float] = []
    if levels is not None:
        for left, right in by_raters.values():
            value = cohen_kappa(left, right, levels, weights)
            if value is not None:
                kappas.append(value)
    return Ceiling(
        examples=len(multi),
        pairs=len(a),
        exact=exact_match(a, b),
        within_one=within_one(a, b, levels) if levels is not None and len(levels) > 2 else None,
        kappa=statistics.fmean(kappas) if kappas else None,
        rater_pairs=len(kappas),
    )


def _check_pairs(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"label lists differ in length: {len(a)} vs {len(b)}")
