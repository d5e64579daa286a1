"""Power and false alarms of the drift test, next to the naive "weekly mean fell by ≥ 5" rule.

Scores on 0–100: a normal with sd 20 clipped to the scale (sd ≈ 19 after clipping), n judged
traces per week per cell, and a drop of 0, 2, 5 or 10 points in the *mean score* (clipping
squeezes a shift of the underlying normal, so that shift is solved for the stated drop). Each run checks 20 cells together, as production does, so Benjamini–Hochberg
is exercised: the target cell (with the drop) and 19 stable cells. The tool's rule is the
one in worker/drift/stats.py, vectorised here (and cross-checked against it at start).

Beside the measured figures it prints the Neyman–Pearson ceiling: the power of a one-sided z
test with the variance known, at α = 0.01 for one cell on its own. No test whose false-alarm
rate per cell-week is 1% can beat it, so it shows which goals are reachable at all.

    python -m benchmarks.drift_power [--runs 4000] [--quick] [--cells 20]
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import integrate, optimize
from scipy import stats as sps

from worker.drift.stats import ALPHA, POWER, CellInput, WeekStats, decide, min_n_means

SD, BASE, THRESHOLD, Q_LEVEL, CELLS = 20.0, 70.0, 5.0, ALPHA, 20
ISSUE_N = 200  # the issue asks for power >= 0.9 at 200 judged traces per week
CHUNK = 250  # runs simulated at once: keeps memory near 30 MB at n = 700


def clipped_moments(mu: float, sd: float = SD) -> tuple[float, float]:
    """(mean, sd) of a normal(mu, sd) clipped to 0..100 (the mass below 0 sits at 0, adding nothing)."""
    hi = sps.norm.sf(100, mu, sd)
    inner = integrate.quad(lambda x: x * sps.norm.pdf(x, mu, sd), 0, 100)[0]
    inner_sq = integrate.quad(lambda x: x * x * sps.norm.pdf(x, mu, sd), 0, 100)[0]
    mean = inner + 100 * hi
    return mean, math.sqrt(inner_sq + 100 * 100 * hi - mean * mean)


def shifted_centre(drop: float) -> float:
    """The centre of the underlying normal whose clipped mean is ``drop`` below the baseline's."""
    target = clipped_moments(BASE)[0] - drop
    return BASE if drop == 0 else optimize.brentq(lambda mu: clipped_moments(mu)[0] - target, BASE - 3 * drop, BASE)


def simulate(n: int, drop: float, runs: int, rng: np.random.Generator, cells: int = CELLS) -> tuple[float, ...]:
    """(tool power on the target cell, tool false alarms per stable cell-week,
    naive power, naive false alarms)."""
    tool_hits = naive_hits = tool_fa = naive_fa = null_cells = 0
    centre = shifted_centre(drop)
    for start in range(0, runs, CHUNK):
        k = min(CHUNK, runs - start)
        prev = np.clip(rng.normal(BASE, SD, (k, cells, n)), 0, 100)
        curr = np.clip(rng.normal(BASE, SD, (k, cells, n)), 0, 100)
        curr[:, 0, :] = np.clip(rng.normal(centre, SD, (k, n)), 0, 100)
        tool, naive = rules(prev, curr)
        tool_hits += tool[:, 0].sum()
        naive_hits += naive[:, 0].sum()
        # Every stable cell-week is a chance of a false alarm; so is the target with no drop.
        stable = slice(0, None) if drop == 0 else slice(1, None)
        tool_fa += tool[:, stable].sum()
        naive_fa += naive[:, stable].sum()
        null_cells += tool[:, stable].size
    fa = tool_fa / null_cells if null_cells else float("nan")
    nfa = naive_fa / null_cells if null_cells else float("nan")
    return tool_hits / runs, fa, naive_hits / runs, nfa


def rules(prev: np.ndarray, curr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the tool's alerts, the naive rule's alerts) per run × cell; scores on the last axis."""
    n1, n2 = prev.shape[-1], curr.shape[-1]
    m1, m2 = prev.mean(-1), curr.mean(-1)
    v1, v2 = prev.var(-1, ddof=1) / n1, curr.var(-1, ddof=1) / n2
    se2 = v1 + v2
    df = se2**2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    p = sps.t.cdf((m2 - m1) / np.sqrt(se2), df)
    tool = (bh(p) < Q_LEVEL) & ((m1 - m2) >= THRESHOLD / 2)
    naive = (m1 - m2) >= THRESHOLD
    return tool, naive


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values along the last axis."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, -1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    q = np.empty_like(p)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), -1)
    return q


def ceiling(n: int, drop: float, sd: float, alpha: float = ALPHA) -> float:
    """Neyman–Pearson bound: one-sided z test, variance known, per-cell false-alarm rate alpha."""
    return float(sps.norm.cdf(drop / (sd * math.sqrt(2 / n)) - sps.norm.ppf(1 - alpha)))


def largest_sd(n: int, drop: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The largest score sd at which ``power`` for ``drop`` at ``n`` per week is reachable at all."""
    return drop / ((sps.norm.ppf(1 - alpha) + sps.norm.ppf(power)) * math.sqrt(2 / n))


def cross_check(rng: np.random.Generator, cells: int) -> None:
    """The vectorised rule must agree with worker.drift.stats.decide on a few runs."""
    disagreements = 0
    for _ in range(20):
        prev, curr = rng.normal(70, SD, (cells, 60)), rng.normal(66, SD, (cells, 60))
        inputs = [CellInput(str(i), WeekStats(60, a.sum(), (a * a).sum()), WeekStats(60, b.sum(), (b * b).sum()))
                  for i, (a, b) in enumerate(zip(prev, curr))]
        expected = [d.status == "alert" for d in decide(inputs)]
        got, _ = rules(prev[None], curr[None])
        disagreements += list(got[0]) != expected
    if disagreements:
        raise SystemExit(f"vectorised rule disagrees with worker.drift.stats.decide in {disagreements}/20 runs")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000, help="runs (of --cells cells each) per setting")
    parser.add_argument("--quick", action="store_true", help="400 runs per setting")
    parser.add_argument("--cells", type=int, default=CELLS, help="cells checked together per run (BH family size)")
    args = parser.parse_args(argv)
    runs = 400 if args.quick else args.runs
    rng = np.random.default_rng(20261123)
    cross_check(rng, args.cells)
    # The sd the tool sees in a cell whose mean fell by the threshold: both weeks pooled.
    sd = math.sqrt((clipped_moments(BASE)[1] ** 2 + clipped_moments(shifted_centre(THRESHOLD))[1] ** 2) / 2)
    own_n = min_n_means(sd, THRESHOLD, cells=args.cells)
    single_n = min_n_means(sd, THRESHOLD)
    print(f"scores: normal sd {SD:.0f} clipped to 0..100 (sd {sd:.2f}), threshold {THRESHOLD:.0f} points, "
          f"q < {Q_LEVEL}, BH over {args.cells} cells per run, {runs} runs per setting")
    print(f"the tool's minimum n per week at sd {sd:.2f}: {own_n} (90% power at alpha/{args.cells}; "
          f"a single test at alpha {ALPHA} would need {single_n})")
    print("ceiling = Neyman-Pearson bound for ANY test at 1% false alarms per cell-week (one cell, z test, sd known)")
    print(f"{'n/week':>7} {'drop':>5} | {'tool power':>10} {'false alarms':>12} | {'naive power':>11} "
          f"{'false alarms':>12} | {'ceiling':>7}")
    results = {}
    for n in sorted({50, 100, ISSUE_N, 400, own_n}):
        for drop in (0, 2, 5, 10):
            power, fa, naive_power, naive_fa = simulate(n, drop, runs, rng, args.cells)
            results[(n, drop)] = (power, fa, naive_power, naive_fa)
            bound = f"{ceiling(n, drop, sd):7.3f}" if drop else f"{ALPHA:7.3f}"
            label = f"{n}*" if n == own_n else str(n)
            print(f"{label:>7} {drop:>5} | {power:>10.3f} {fa:12.4f} | {naive_power:>11.3f} {naive_fa:12.4f} | {bound}")
    print("* the tool's own minimum n; with drop 0, 'power' is the target cell's false-alarm rate")
    power_at_min = results[(own_n, 5)][0]
    half_width = 1.96 * math.sqrt(power_at_min * (1 - power_at_min) / runs)
    worst_fa = max(r[1] for r in results.values())
    worst_naive = max(r[3] for r in results.values())
    print(f"goal: power >= 0.9 for a 5-point drop at the minimum n ({own_n}): {power_at_min:.3f} "
          f"(95% CI {power_at_min - half_width:.3f}-{power_at_min + half_width:.3f}) "
          f"{'MET' if power_at_min >= 0.9 else 'NOT MET'}")
    print(f"goal: <= 1% false alarms per cell-week: tool worst {worst_fa:.4f} {'MET' if worst_fa <= 0.01 else 'NOT MET'}"
          f" (naive worst {worst_naive:.4f}, at n = 50: {results[(50, 0)][3]:.4f})")
    at_issue = results[(ISSUE_N, 5)][0]
    print(f"issue's goal: power >= 0.9 for a 5-point drop at n = {ISSUE_N}: tool {at_issue:.3f}, naive "
          f"{results[(ISSUE_N, 5)][2]:.3f}; ceiling for any test at 1% false alarms {ceiling(ISSUE_N, THRESHOLD, sd):.3f} "
          f"-> unreachable at sd {sd:.1f}")
    print(f"  reachable only when sd <= {largest_sd(ISSUE_N, THRESHOLD):.1f} for one cell alone, "
          f"or sd <= {largest_sd(ISSUE_N, THRESHOLD, ALPHA / args.cells):.1f} with BH over {args.cells} cells; "
          f"at sd {sd:.1f} one cell alone needs n >= {single_n}")


if __name__ == "__main__":
    main()
