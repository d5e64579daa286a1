"""Power and false alarms of the drift test, next to the naive "weekly mean fell by ≥ 5" rule.

Scores on 0–100 with sd 20 (clipped), a true drop of 0, 2, 5 or 10 points, n judged traces per
week per cell. Each run checks 20 cells together, as production does, so Benjamini–Hochberg
is exercised: the target cell (with the drop) and 19 stable cells. The tool's rule is the
one in worker/drift/stats.py, vectorised here (and cross-checked against it at start).

    python -m benchmarks.drift_power [--runs 2000] [--quick]
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy import stats as sps

from worker.drift.stats import CellInput, WeekStats, decide, min_n_means

SD, THRESHOLD, Q_LEVEL, CELLS = 20.0, 5.0, 0.01, 20


def simulate(n: int, drop: float, runs: int, rng: np.random.Generator, cells: int = CELLS) -> tuple[float, float, float, float]:
    """(tool power on the target cell, tool false alarms per null cell-week, naive power, naive false alarms)."""
    prev = np.clip(rng.normal(70, SD, (runs, cells, n)), 0, 100)
    curr = np.clip(rng.normal(70, SD, (runs, cells, n)), 0, 100)
    curr[:, 0, :] = np.clip(rng.normal(70 - drop, SD, (runs, n)), 0, 100)
    m1, m2 = prev.mean(-1), curr.mean(-1)
    v1, v2 = prev.var(-1, ddof=1), curr.var(-1, ddof=1)
    se2 = v1 / n + v2 / n
    t = (m2 - m1) / np.sqrt(se2)
    df = se2**2 / ((v1 / n) ** 2 / (n - 1) + (v2 / n) ** 2 / (n - 1))
    p = sps.t.cdf(t, df)
    q = bh(p)
    tool = (q < Q_LEVEL) & ((m1 - m2) >= THRESHOLD / 2)
    naive = (m1 - m2) >= THRESHOLD
    null_tool = tool[:, 1:] if cells > 1 else tool[:, :0]
    null_naive = naive[:, 1:] if cells > 1 else naive[:, :0]
    fa = null_tool.mean() if null_tool.size else (tool[:, 0].mean() if drop == 0 else float("nan"))
    naive_fa = null_naive.mean() if null_naive.size else (naive[:, 0].mean() if drop == 0 else float("nan"))
    return tool[:, 0].mean(), fa, naive[:, 0].mean(), naive_fa


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values along the last axis."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, -1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    q = np.empty_like(p)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), -1)
    return q


def cross_check(rng: np.random.Generator) -> None:
    """The vectorised rule must agree with worker.drift.stats.decide on a few runs."""
    for _ in range(20):
        prev, curr = rng.normal(70, SD, (CELLS, 60)), rng.normal(66, SD, (CELLS, 60))
        cells = [CellInput(str(i), WeekStats(60, a.sum(), (a * a).sum()), WeekStats(60, b.sum(), (b * b).sum()))
                 for i, (a, b) in enumerate(zip(prev, curr))]
        expected = [d.status == "alert" for d in decide(cells)]
        m1, m2 = prev.mean(-1), curr.mean(-1)
        se2 = prev.var(-1, ddof=1) / 60 + curr.var(-1, ddof=1) / 60
        df = se2**2 / ((prev.var(-1, ddof=1) / 60) ** 2 / 59 + (curr.var(-1, ddof=1) / 60) ** 2 / 59)
        got = (bh(sps.t.cdf((m2 - m1) / np.sqrt(se2), df)) < Q_LEVEL) & ((m1 - m2) >= THRESHOLD / 2)
        assert list(got) == expected, "vectorised rule disagrees with worker.drift.stats.decide"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs (of 20 cells each) per setting")
    parser.add_argument("--quick", action="store_true", help="400 runs per setting")
    parser.add_argument("--cells", type=int, default=CELLS, help="cells checked together per run (BH family size)")
    args = parser.parse_args(argv)
    runs = 400 if args.quick else args.runs
    rng = np.random.default_rng(20261123)
    cross_check(rng)
    own_n = min_n_means(SD, THRESHOLD)
    print(f"sd {SD:.0f}, threshold {THRESHOLD:.0f} points, one-sided alpha {Q_LEVEL}, BH over {CELLS} cells per run, "
          f"{runs} runs per setting; the tool's minimum n per week: {own_n}".replace(f"{CELLS} cells", f"{args.cells} cells"))
    print(f"{'n/week':>7} {'drop':>5} | {'tool alerts':>11} {'false alarms':>12} | {'naive alerts':>12} {'false alarms':>12}")
    results = {}
    for n in (50, 100, 200, 400, own_n):
        for drop in (0, 2, 5, 10):
            power, fa, naive_power, naive_fa = simulate(n, drop, runs, rng, args.cells)
            results[(n, drop)] = (power, fa)
            print(f"{n:>7} {drop:>5} | {power:>11.3f} {fa:12.4f} | {naive_power:>12.3f} {naive_fa:12.4f}")
    power_at_min = results[(own_n, 5)][0]
    worst_fa = max(fa for (_, _), (_, fa) in results.items() if fa == fa)
    print(f"goal power >= 0.9 for a 5-point drop at the minimum n ({own_n}): {power_at_min:.3f} "
          f"{'MET' if power_at_min >= 0.9 else 'NOT MET'}")
    print(f"goal <= 1% false alarms per cell-week with no drift: worst {worst_fa:.4f} "
          f"{'MET' if worst_fa <= 0.01 else 'NOT MET'}")


if __name__ == "__main__":
    main()
