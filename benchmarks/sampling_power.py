"""Power-aware sampling (issue 27, item 4): samplers/power.py's rates and worker/drift/weighting.py's
weighted means, on synthetic days. One command, one run:

    python -m benchmarks.sampling_power [--quick] [--replays 1000] [--seed N] [--usd-per-judgement 0.004]

(a) **Bias of the weighted means.** A synthetic day of 4 features × 5 tenants (20 pair segments,
    ~75,000 traces, pair means 40–88 on 0–100, scores a normal with SD 20 clipped to the scale,
    frozen for the run: the truth is the day's own mean per cell). Rates: base 1%, a tenant quota
    of 60 judged a day (samplers/quota.py's max(rate, min(1, per_day / traffic))), the power-aware
    rate of each pair for "5 points within 72 h" (samplers/power.allocate over the all / feature /
    tenant / pair cells with their strata), and one low-scoring pair boosted ×10 by a new prompt
    version; a trace's inclusion probability is the max over its cells. Each replay draws every
    trace's hash point afresh (numpy uniforms: the hash is uniform; one replay is checked against
    samplers.power.selected on real sha256 ids) and estimates every parent cell (all traffic, each
    feature, each tenant) by the plain mean, Hájek and Horvitz–Thompson (N known). Goal: the Hájek
    mean within 0.2 points of the truth on average over 1,000 replays in every cell; beside it the
    plain mean's bias and the 95% interval's coverage (finite-population variance).
(b) **Judge cost per cell per day**, on a realistic deployment: 40 disjoint cells (feature ×
    tenant), traffic Zipf-like from 200,000 to 200 traces a day, score SDs 15–40, three priority
    tiers, target "5 points within 72 h", at ``--usd-per-judgement`` (default $0.004, a Sonnet-class
    judge on a ~1.5k-token trace; only the ratio matters). Power-aware (allocate) against the flat
    rate that meets the same targets: as high as the hardest cell above the traffic floor needs,
    applied to all traffic; and against today's flat 1% (how many cells it leaves too slow).
(c) **Targets within the budget.** The budget is declared (12,000 judged a day, $48 at the default
    cost). The declared traffic floor is the n a day the target needs at the deployment's largest
    SD (40): every cell with more traffic must meet its target within the budget; the cells that do
    not are listed with why (the allocation's own notes). The same with a release boost on one
    cell (×10 for 48 h, within the budget). For information, the same cells under a budget too small
    for all (4,000 judged a day): which miss, by priority, with reason "budget".

Prints the tables and PASS/FAIL per goal with the figures; writes
benchmarks/results/sampling_power.json. About 4 s; --quick (300 replays) about 2 s.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
from typing import Any

import numpy as np

from samplers import power as pw
from samplers.hashing import sample_point
from worker.drift.weighting import WeightedSums

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET = pw.DetectionTarget(drop=5.0, hours=72.0)
BIAS_GOAL = 0.2
BASE_RATE = 0.01
QUOTA_PER_DAY = 60.0
BOOST_AT = 1_800_000_000.0  # epoch seconds of the change event; "now" is 6 h later
DEPLOY_BUDGET_JUDGED = 12_000.0
TIGHT_BUDGET = 4_000.0
DEPLOY_MAX_SD = 40.0


# --- (a) bias of the weighted means ------------------------------------------------------------

def synthetic_day(rng: np.random.Generator) -> dict[str, Any]:
    features, tenants = ["chat", "search", "summarize", "extract"], ["t1", "t2", "t3", "t4", "t5"]
    f_share = np.array([0.45, 0.3, 0.15, 0.1])
    t_share = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    total = 75_000
    traffic = np.maximum(50, np.round(total * np.outer(f_share, t_share))).astype(int)
    means = rng.uniform(55, 88, traffic.shape)
    means[2, 3] = 40.0  # the boosted pair scores low: counted at 10× its rate, it drags a plain mean
    f_idx, t_idx, scores = [], [], []
    for i in range(len(features)):
        for j in range(len(tenants)):
            n = int(traffic[i, j])
            f_idx.append(np.full(n, i))
            t_idx.append(np.full(n, j))
            scores.append(np.clip(rng.normal(means[i, j], 20.0, n), 0, 100))
    return {"features": features, "tenants": tenants, "traffic": traffic, "boosted": (2, 3),
            "f": np.concatenate(f_idx), "t": np.concatenate(t_idx), "x": np.concatenate(scores)}


def day_probabilities(day: dict[str, Any]) -> tuple[np.ndarray, pw.Allocation, dict[str, float]]:
    """Each trace's inclusion probability: max(power-aware cell rates, tenant quota)."""
    feats, tens, traffic = day["features"], day["tenants"], day["traffic"]
    bi, bj = day["boosted"]
    cells = [pw.Cell("all", float(traffic.sum()))]
    cells += [pw.Cell(f"feature={f}", float(traffic[i].sum())) for i, f in enumerate(feats)]
    cells += [pw.Cell(f"tenant={t}", float(traffic[:, j].sum())) for j, t in enumerate(tens)]
    strata = []
    for i, f in enumerate(feats):
        for j, t in enumerate(tens):
            key = f"{f}x{t}"
            cells.append(pw.Cell(key, float(traffic[i, j]), changed_at=BOOST_AT if (i, j) == (bi, bj) else None))
            strata.append(pw.Stratum(float(traffic[i, j]), ("all", f"feature={f}", f"tenant={t}", key)))
    policy = pw.Policy(TARGET, pw.Budget(judged_per_day=20_000), base_rate=BASE_RATE)
    alloc = pw.allocate(policy, cells, now=BOOST_AT + 6 * 3600, strata=strata)
    quota = {t: max(BASE_RATE, min(1.0, QUOTA_PER_DAY / float(traffic[:, j].sum()))) for j, t in enumerate(tens)}
    rates = alloc.rates
    p_pair = np.zeros(traffic.shape)
    for i, f in enumerate(feats):
        for j, t in enumerate(tens):
            p_pair[i, j] = max(pw.inclusion_probability(rates, ("all", f"feature={f}", f"tenant={t}", f"{f}x{t}"),
                                                        BASE_RATE), quota[t])
    return p_pair[day["f"], day["t"]], alloc, quota


def hash_check(day: dict[str, Any], alloc: pw.Allocation, quota: dict[str, float], p: np.ndarray) -> bool:
    """One replay on real ids: power.selected (with the quota as one more cell) == u < p."""
    rates = dict(alloc.rates)
    rates.update({f"quota:{t}": r for t, r in quota.items()})
    ids = [f"bench-{k}" for k in range(len(p))]
    u = np.array([sample_point(i) for i in ids])
    feats, tens = day["features"], day["tenants"]
    ok = True
    for k in range(0, len(ids), 7):  # every 7th trace: enough, and keeps it quick
        f, t = feats[day["f"][k]], tens[day["t"][k]]
        cells = ("all", f"feature={f}", f"tenant={t}", f"{f}x{t}", f"quota:{t}")
        ok &= pw.selected(ids[k], rates, cells, BASE_RATE) == bool(u[k] < p[k])
    return ok


def sums_by(group: np.ndarray, groups: int, x: np.ndarray, p: np.ndarray) -> list[WeightedSums]:
    w = 1.0 / p
    cols = [np.ones_like(x), w, w * x, w * x * x, w * w, w * w * x, w * w * x * x]
    tot = [np.bincount(group, weights=c, minlength=groups) for c in cols]
    return [WeightedSums(int(round(tot[0][g])), *(float(t[g]) for t in tot[1:])) for g in range(groups)]


def bias_replays(day: dict[str, Any], p: np.ndarray, replays: int, rng: np.random.Generator) -> dict[str, Any]:
    x = day["x"]
    parents = [("all", np.zeros(len(x), dtype=int), 1)]
    parents += [("feature", day["f"], len(day["features"])), ("tenant", day["t"], len(day["tenants"]))]
    names: list[str] = ["all"] + [f"feature={f}" for f in day["features"]] + [f"tenant={t}" for t in day["tenants"]]
    truth = np.concatenate([np.bincount(g, weights=x, minlength=k) / np.bincount(g, minlength=k)
                            for _, g, k in parents])
    pop = np.concatenate([np.bincount(g, minlength=k) for _, g, k in parents]).astype(float)
    est = {k: np.zeros((replays, len(names))) for k in ("hajek", "ht", "plain")}
    covered = np.zeros(len(names))
    judged = np.zeros(replays)
    for r in range(replays):
        keep = rng.random(len(x)) < p
        judged[r] = keep.sum()
        row: list[WeightedSums] = []
        for _, g, k in parents:
            row += sums_by(g[keep], k, x[keep], p[keep])
        plain: list[float] = []
        for _, g, k in parents:
            plain += list(np.bincount(g[keep], weights=x[keep], minlength=k) / np.bincount(g[keep], minlength=k))
        for c, s in enumerate(row):
            est["hajek"][r, c] = s.mean
            est["ht"][r, c] = s.ht_mean(pop[c])
            est["plain"][r, c] = plain[c]
            covered[c] += abs(s.mean - truth[c]) <= 1.96 * s.se(finite_population=True)
    out: dict[str, Any] = {"replays": replays, "judged_per_day_mean": float(judged.mean()), "cells": {}}
    for c, name in enumerate(names):
        cell = {"truth": float(truth[c]), "traffic": int(pop[c]), "coverage95": float(covered[c] / replays)}
        for k, v in est.items():
            col = v[:, c]
            cell[f"{k}_bias"] = float(np.nanmean(col) - truth[c])
            cell[f"{k}_bias_se"] = float(np.nanstd(col) / math.sqrt(replays))
            cell[f"{k}_rmse"] = float(math.sqrt(np.nanmean((col - truth[c]) ** 2)))
        out["cells"][name] = cell
    return out


# --- (b), (c) the deployment -----------------------------------------------------------------------

def deployment(rng: np.random.Generator, cells_n: int = 40) -> list[pw.Cell]:
    s = math.log(1000) / math.log(cells_n)  # 200,000 · rank^-s reaches 200 at rank 40
    traffic = np.round(200_000 * np.arange(1, cells_n + 1, dtype=float) ** -s)
    sds = rng.uniform(15, DEPLOY_MAX_SD, cells_n)
    priority = rng.choice([1.0, 2.0, 3.0], cells_n, p=[0.5, 0.3, 0.2])
    return [pw.Cell(f"cell{k + 1:02d}", float(traffic[k]), sd=float(sds[k]), priority=float(priority[k]))
            for k in range(cells_n)]


def cost_comparison(cells: list[pw.Cell], usd: float, floor: float) -> dict[str, Any]:
    budget = pw.Budget(judged_per_day=DEPLOY_BUDGET_JUDGED, usd_per_judgement=usd)
    policy = pw.Policy(TARGET, budget, base_rate=BASE_RATE)
    alloc = pw.allocate(policy, cells)
    # The flat rate that meets the same targets: the hardest above-floor cell's need, for all.
    above = [c for c in cells if c.traffic_per_day >= floor]
    flat = max(pw.needed_judged_per_day(c.sd, TARGET) / c.traffic_per_day for c in above)
    flat = min(1.0, max(flat, BASE_RATE))
    traffic_total = sum(c.traffic_per_day for c in cells)
    rows = []
    for c, r in zip(cells, alloc.cells):
        rows.append({"cell": c.key, "traffic": c.traffic_per_day, "sd": round(c.sd, 1), "priority": c.priority,
                     "needed_per_day": r.needed_per_day, "rate": r.rate, "judged": r.judged_per_day,
                     "usd": r.judged_per_day * usd, "hours": r.achieved_hours, "meets": r.meets_target,
                     "reason": r.reason, "note": r.note,
                     "flat_judged": flat * c.traffic_per_day, "flat_usd": flat * c.traffic_per_day * usd,
                     "flat_hours": pw.delay_hours(flat * c.traffic_per_day, c.sd, TARGET),
                     "one_percent_hours": pw.delay_hours(BASE_RATE * c.traffic_per_day, c.sd, TARGET)})
    boosted_cells = [pw.Cell(c.key, c.traffic_per_day, c.sd, c.priority, BOOST_AT if k == 2 else None)
                     for k, c in enumerate(cells)]
    boost = pw.allocate(policy, boosted_cells, now=BOOST_AT + 3600)
    boost_after = pw.allocate(policy, boosted_cells, now=BOOST_AT + 49 * 3600)
    above_keys = {c.key for c in above}
    tight = pw.allocate(pw.Policy(TARGET, pw.Budget(judged_per_day=TIGHT_BUDGET), base_rate=BASE_RATE), cells)
    big = [c for c in cells if c.traffic_per_day >= 2000]
    flat_big = max(pw.needed_judged_per_day(c.sd, TARGET) / c.traffic_per_day for c in big)
    return {
        "tight_budget": {"budget_judged": TIGHT_BUDGET, "judged": tight.judged_per_day,
                         "unmet": [{"cell": r.key, "priority": c.priority, "reason": r.reason, "note": r.note}
                                   for c, r in zip(cells, tight.cells) if not r.meets_target]},
        "flat_rate_cells_over_2000": flat_big,
        "flat_judged_cells_over_2000": flat_big * traffic_total,
        "cells": rows, "flat_rate": flat, "traffic_per_day": traffic_total,
        "power_judged": alloc.judged_per_day, "power_usd": alloc.judged_per_day * usd,
        "flat_judged": flat * traffic_total, "flat_usd": flat * traffic_total * usd,
        "one_percent_judged": BASE_RATE * traffic_total,
        "one_percent_meeting": sum(r["one_percent_hours"] <= TARGET.hours for r in rows),
        "budget_judged": DEPLOY_BUDGET_JUDGED, "budget_usd": DEPLOY_BUDGET_JUDGED * usd,
        "floor": floor, "above_floor": len(above),
        "above_floor_unmet": [r.key for r in alloc.cells if r.key in above_keys and not r.meets_target],
        "unmet": [{"cell": r.key, "reason": r.reason, "note": r.note} for r in alloc.unmet],
        "boost": {"cell": boosted_cells[2].key, "rate": boost.cell(boosted_cells[2].key).rate,
                  "rate_unboosted": alloc.cell(boosted_cells[2].key).rate,
                  "rate_after_48h": boost_after.cell(boosted_cells[2].key).rate,
                  "judged": boost.judged_per_day,
                  "above_floor_unmet": [r.key for r in boost.cells if r.key in above_keys and not r.meets_target]},
    }


# --- report ------------------------------------------------------------------------------------------

def _h(hours: float) -> str:
    return "never" if math.isinf(hours) else f"{hours:.0f}"


def print_bias(res: dict[str, Any]) -> None:
    print(f"\n(a) weighted means over {res['replays']} replays of a boosted + quota day "
          f"(~{res['judged_per_day_mean']:.0f} judged a day); bias in points (± its Monte Carlo SE)")
    print(f"{'cell':<20}{'traffic':>8}{'truth':>8}{'Hájek bias':>16}{'HT bias':>15}{'plain bias':>14}"
          f"{'Hájek RMSE':>12}{'cover95':>9}")
    for name, c in res["cells"].items():
        print(f"{name:<20}{c['traffic']:>8}{c['truth']:>8.2f}{c['hajek_bias']:>+9.3f} ±{c['hajek_bias_se']:.3f}"
              f"{c['ht_bias']:>+8.3f} ±{c['ht_bias_se']:.3f}{c['plain_bias']:>+14.2f}{c['hajek_rmse']:>12.2f}"
              f"{c['coverage95']:>9.3f}")


def print_deployment(res: dict[str, Any]) -> None:
    print(f"\n(b) judge cost per cell per day, target {TARGET.label}; flat rate meeting the same targets "
          f"= {res['flat_rate']:.2%} (the hardest cell above the floor)")
    print(f"{'cell':<8}{'traffic':>9}{'sd':>6}{'prio':>5}{'need/d':>8}{'rate':>8}{'judged':>8}{'USD':>8}"
          f"{'hours':>7}{'flat judged':>12}{'flat USD':>9}{'1% hours':>9}  status")
    for r in res["cells"]:
        status = "ok" if r["meets"] else r["reason"]
        print(f"{r['cell']:<8}{r['traffic']:>9.0f}{r['sd']:>6.1f}{r['priority']:>5.0f}{r['needed_per_day']:>8.0f}"
              f"{r['rate']:>8.2%}{r['judged']:>8.0f}{r['usd']:>8.2f}{_h(r['hours']):>7}{r['flat_judged']:>12.0f}"
              f"{r['flat_usd']:>9.2f}{_h(r['one_percent_hours']):>9}  {status}")
    print(f"total: power-aware {res['power_judged']:.0f} judged/day (${res['power_usd']:.2f}), flat "
          f"{res['flat_judged']:.0f} (${res['flat_usd']:.2f}): {res['flat_judged'] / res['power_judged']:.1f}× "
          f"the cost; today's flat 1%: {res['one_percent_judged']:.0f} judged/day, "
          f"{res['one_percent_meeting']} of {len(res['cells'])} cells meet the target")
    print(f"context: the flat rate that meets only the cells with ≥ 2,000 traces a day is "
          f"{res['flat_rate_cells_over_2000']:.2%} ({res['flat_judged_cells_over_2000']:.0f} judged/day, "
          f"{res['flat_judged_cells_over_2000'] / res['power_judged']:.1f}× power-aware's cost for all 40)")
    b = res["boost"]
    print(f"boost: {b['cell']} at {b['rate_unboosted']:.2%} -> {b['rate']:.2%} for 48 h "
          f"(then {b['rate_after_48h']:.2%}); day at {b['judged']:.0f} judged (budget {res['budget_judged']:.0f})")
    print(f"\n(c) declared traffic floor {res['floor']:.0f} traces a day (the n a day {TARGET.label} needs "
          f"at SD {DEPLOY_MAX_SD:g}); {res['above_floor']} cells above it; cells not meeting the target:")
    for u in res["unmet"]:
        print(f"  {u['cell']}: {u['note']}")
    t = res["tight_budget"]
    print(f"for information, at a budget of {t['budget_judged']:.0f} judged a day ({t['judged']:.0f} spent):")
    for u in t["unmet"]:
        print(f"  {u['cell']} (priority {u['priority']:.0f}): {u['note']}")


def goals(bias: dict[str, Any], dep: dict[str, Any], hash_ok: bool) -> list[tuple[str, bool, str]]:
    worst = max(bias["cells"].items(), key=lambda kv: abs(kv[1]["hajek_bias"]))
    worst_plain = max(bias["cells"].items(), key=lambda kv: abs(kv[1]["plain_bias"]))
    b = dep["boost"]
    return [
        (f"(a) Hájek mean within {BIAS_GOAL} points of the truth in every parent cell", abs(worst[1]["hajek_bias"]) <= BIAS_GOAL,
         f"worst {worst[0]} {worst[1]['hajek_bias']:+.3f} ± {worst[1]['hajek_bias_se']:.3f} over {bias['replays']} "
         f"replays; unweighted worst {worst_plain[0]} {worst_plain[1]['plain_bias']:+.2f}"),
        ("(a) sampling is the hash against the max of the cells' rates", hash_ok,
         "power.selected on sha256 ids agrees with u < p on every checked trace" if hash_ok else "mismatch"),
        ("(b) power-aware costs less than the flat rate meeting the same targets",
         dep["power_judged"] < dep["flat_judged"],
         f"${dep['power_usd']:.2f}/day vs ${dep['flat_usd']:.2f}/day ({dep['flat_judged'] / dep['power_judged']:.1f}×)"),
        ("(c) every cell above the traffic floor meets its target within the budget",
         not dep["above_floor_unmet"] and dep["power_judged"] <= dep["budget_judged"] * (1 + 1e-9),
         f"{dep['above_floor']} cells ≥ {dep['floor']:.0f}/day, unmet {dep['above_floor_unmet'] or 'none'}; "
         f"{dep['power_judged']:.0f} of {dep['budget_judged']:.0f} judged/day"),
        ("(c) cells that do not meet it are named with why", all(u["reason"] for u in dep["unmet"]),
         ", ".join(f"{u['cell']} ({u['reason']})" for u in dep["unmet"]) or "none"),
        ("(c) a boost stays within the budget and keeps the targets", not b["above_floor_unmet"]
         and b["judged"] <= dep["budget_judged"] * (1 + 1e-9) and b["rate"] > b["rate_unboosted"]
         and b["rate_after_48h"] == b["rate_unboosted"],
         f"{b['cell']} ×{b['rate'] / b['rate_unboosted']:.1f}, {b['judged']:.0f} judged/day"),
    ]


def _finite(v: Any) -> Any:
    """JSON without Infinity/NaN: a delay that never comes is null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 replays instead of 1,000")
    parser.add_argument("--replays", type=int, default=None)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--usd-per-judgement", type=float, default=0.004)
    parser.add_argument("--out", default=str(RESULTS / "sampling_power.json"))
    args = parser.parse_args(argv)
    replays = args.replays or (300 if args.quick else 1000)
    started = time.monotonic()
    rng = np.random.default_rng(args.seed)

    day = synthetic_day(rng)
    p, alloc, quota = day_probabilities(day)
    hash_ok = hash_check(day, alloc, quota, p)
    bias = bias_replays(day, p, replays, rng)
    bi, bj = day["boosted"]
    bias["boosted_pair"] = f"{day['features'][bi]}x{day['tenants'][bj]}"
    bias["pair_rates"] = {c.key: c.rate for c in alloc.cells}

    floor = pw.needed_judged_per_day(DEPLOY_MAX_SD, TARGET)
    dep = cost_comparison(deployment(rng), args.usd_per_judgement, floor)

    print_bias(bias)
    print_deployment(dep)
    results = goals(bias, dep, hash_ok)
    print()
    for name, ok, figures in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {figures}")
    elapsed = time.monotonic() - started
    print(f"\n{elapsed:.1f} s")
    out = {"target": {"drop": TARGET.drop, "hours": TARGET.hours}, "seed": args.seed,
           "usd_per_judgement": args.usd_per_judgement, "bias": bias, "deployment": dep,
           "goals": [{"goal": n, "pass": ok, "figures": f} for n, ok, f in results], "seconds": elapsed}
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(out), indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
