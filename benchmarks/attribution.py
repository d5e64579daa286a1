"""Attribution of a quality drop to a slice and a change event (issue 27): planted cases.

    python -m benchmarks.attribution [--quick] [--per-row 200] [--seed N]

Each case is one alerting cell (worker/drift/attribution.py reads only its aggregates):
7 dimensions — input_tokens (4 buckets), tool (3–6), tenant (6–12, Zipf shares, the last is
"other"), model (2–3), prompt (3 name@versions), release (2), environment (2) — with skewed
shares and a per-value baseline offset (N(0, 4) points), a cell baseline of 65–78 and a score
SD of 25–35 on 0–100, scores either 5-level ({0, 25, 50, 75, 100}: a normal rounded and
clipped) or continuous (clipped). 7,000 scores before the start, 300 / 1,000 / 3,000 after.
Kinds:
  * single: one value (post share ≥ max(5%, drop/50)) gets worse so the cell drops 5 or 12;
  * pair: a conjunction of two values of two dimensions, the same way;
  * event: prompt summarize@12 is replaced by summarize@13 inside the start interval (70–100%
    of its traffic moves) and summarize@13 is the bad slice, alone or with an input bucket (the
    worked case); a harmless release app@c3 (half the traffic) also starts inside the interval
    and model m-new, first seen 2 days earlier, is outside it;
  * null: every score drops the same (no slice to name); decoy-only: nothing gets worse, only the
    mix moves (see below), dropping the cell 3–6 points.
70% of planted cases (all decoy-only ones) carry a traffic-mix decoy: a value of another
dimension sits 12–20 points lower at baseline and its share grows by 10–25 points.
The start interval is ±30 min around the change.

Measured: top-1 slice exact (the named slice is exactly the planted one, alone); "no true
effect" = an alert names a slice whose traffic holds none of the planted effect (a value of the
planted dimension other than the planted one, any slice in a null or decoy-only case); change-
event accuracy = the first-ranked event in the start interval is the planted prompt version
(and the out-of-interval event is never listed). Prints a table and PASS/FAIL per goal of
issue 27 and writes benchmarks/results/attribution.json (--quick too, marked "quick": true).
About 15 s of CPU (1,200 cases, ~10 ms an attribution); --quick (240 cases) about 3 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time
from itertools import combinations
from typing import Any

import numpy as np

from worker.drift.attribution import (Attribution, CellData, ChangeEvent, Moments, SliceData,
                                      attribute, slice_key)

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
N_BEFORE = 7000
NS_AFTER = (300, 1000, 3000)
DROPS = (12, 5)
LEVELS = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
CHANGE_T = 1_800_000_000.0
INTERVAL = (CHANGE_T - 1800, CHANGE_T + 1800)


def zipf(k: int, a: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** a
    w = w * rng.uniform(0.7, 1.3, k)
    return w / w.sum()


@dataclasses.dataclass
class Dim:
    name: str
    values: list[str]
    shares0: np.ndarray
    shares1: np.ndarray
    offsets: np.ndarray


def make_dims(rng: np.random.Generator) -> list[Dim]:
    dims = []

    def add(name: str, values: list[str], shares: np.ndarray) -> None:
        offsets = rng.normal(0, 4, len(values))
        dims.append(Dim(name, values, shares.copy(), shares.copy(), offsets))

    add("input_tokens", ["<1k", "1k-3k", "3k-10k", ">10k"], zipf(4, 0.6, rng))
    k = int(rng.integers(3, 7))
    add("tool", [f"tool{i}" for i in range(k)], zipf(k, 1.0, rng))
    k = int(rng.integers(6, 13))
    add("tenant", [f"t{i}" for i in range(k - 1)] + ["other"], zipf(k, 1.1, rng))
    k = int(rng.integers(2, 4))
    add("model", [f"m{i}" for i in range(k - 1)] + ["m-new"], zipf(k, 0.8, rng))
    add("prompt", ["summarize@12", "classify@4", "extract@7"], zipf(3, 0.7, rng))
    add("release", ["app@a1", "app@b2"], zipf(2, 0.5, rng))
    add("environment", ["prod", "canary"], np.array([0.9, 0.1]))
    return dims


@dataclasses.dataclass
class Case:
    kind: str
    drop: int
    n_after: int
    scale: str
    planted: tuple[tuple[str, str], ...] | None
    has_decoy: bool
    cell: CellData


def build_case(kind: str, drop: int, n1: int, rng: np.random.Generator) -> Case:
    dims = make_dims(rng)
    by = {d.name: d for d in dims}
    scale = "5-level" if rng.random() < 0.5 else "continuous"
    sd = rng.uniform(25, 35)
    base = rng.uniform(65, 78)
    event = kind.startswith("event")
    decoy = kind == "decoy" or (kind not in ("null",) and rng.random() < 0.7)
    if event:  # summarize is the busiest prompt; a new version and a harmless release arrive
        p = by["prompt"]
        p.shares0 = np.array([0.6, 0.25, 0.15]) * rng.uniform(0.9, 1.1, 3)
        p.shares0 /= p.shares0.sum()
        p.shares1 = p.shares0.copy()
    decoy_item = None
    if decoy:
        dd = by[str(rng.choice(["tenant", "tool", "input_tokens"]))]
        j = int(rng.integers(1, len(dd.values)))  # not the busiest
        dd.offsets[j] = -rng.uniform(12, 20)
        s1 = dd.shares1.copy()
        grow = rng.uniform(0.10, 0.25) if kind != "decoy" else rng.uniform(0.15, 0.30)
        s1 = s1 * (1 - s1[j] - grow) / (1 - s1[j])
        s1[j] = dd.shares0[j] + grow
        dd.shares1 = s1 / s1.sum()
        decoy_item = (dd.name, dd.values[j])

    codes0 = {d.name: rng.choice(len(d.values), N_BEFORE, p=d.shares0) for d in dims}
    codes1 = {d.name: rng.choice(len(d.values), n1, p=d.shares1) for d in dims}
    values = {d.name: list(d.values) for d in dims}
    offsets = {d.name: d.offsets.copy() for d in dims}
    events: list[ChangeEvent] = []
    release_before = codes1["release"]
    if event:
        pv = values["prompt"]
        pv.append("summarize@13")
        offsets["prompt"] = np.append(offsets["prompt"], offsets["prompt"][0])
        cut = rng.uniform(0.7, 1.0) if rng.random() < 0.8 else 1.0
        moved = (codes1["prompt"] == 0) & (rng.random(n1) < cut)
        codes1["prompt"][moved] = 3
        rv = values["release"]
        rv.append("app@c3")
        offsets["release"] = np.append(offsets["release"], 0.0)
        release_before = codes1["release"].copy()  # a harmless release: its traffic scores as before
        codes1["release"][rng.random(n1) < rng.uniform(0.4, 1.0)] = 2  # a rollout to a share of all traffic
        events = [ChangeEvent("prompt", "summarize@13", CHANGE_T - rng.uniform(0, 1500), "summarize@12"),
                  ChangeEvent("release", "app@c3", CHANGE_T + rng.uniform(-1700, 1700)),
                  ChangeEvent("model", "m-new", CHANGE_T - 2 * 86400)]

    def mu(codes: dict[str, np.ndarray], n: int) -> np.ndarray:
        out = np.full(n, base)
        for name, c in codes.items():
            out += offsets[name][c]
        return out

    mu0 = mu(codes0, N_BEFORE)
    mu1 = mu({**codes1, "release": release_before} if event else codes1, n1)
    planted: tuple[tuple[str, str], ...] | None = None
    if kind == "null":
        mu1 -= drop
    elif kind != "decoy":
        for _ in range(200):
            if kind == "event_single":
                items = [("prompt", 3)]
            elif kind == "event_pair":
                items = [("prompt", 3), ("input_tokens", int(rng.integers(0, 4)))]
            else:
                names = [d.name for d in dims if decoy_item is None or d.name != decoy_item[0]]
                chosen = rng.choice(names, 1 if kind == "single" else 2, replace=False)
                items = [(str(n), int(rng.integers(0, len(values[str(n)])))) for n in chosen]
                items = [(n, c) for n, c in items if values[n][c] != "other"]
                if len(items) != (1 if kind == "single" else 2):
                    continue
            mask = np.ones(n1, bool)
            for n, c in items:
                mask &= codes1[n] == c
            share = mask.mean()
            if max(0.05, drop / 50) <= share <= 0.6:
                break
        else:
            return build_case(kind, drop, n1, rng)
        mu1[mask] -= drop / share
        planted = slice_key(*((n, values[n][c]) for n, c in items))

    def draw(m: np.ndarray) -> np.ndarray:
        x = np.clip(rng.normal(m, sd), 0, 100)
        return LEVELS[np.abs(x[:, None] - LEVELS[None, :]).argmin(1)] if scale == "5-level" else x

    x0, x1 = draw(mu0), draw(mu1)
    slices: list[SliceData] = []

    def moments(x: np.ndarray, code: np.ndarray, k: int) -> list[Moments]:
        n = np.bincount(code, minlength=k)
        s = np.bincount(code, weights=x, minlength=k)
        q = np.bincount(code, weights=x * x, minlength=k)
        return [Moments(int(n[i]), float(s[i]), float(q[i])) for i in range(k)]

    names = [d.name for d in dims]
    for name in names:
        k = len(values[name])
        b, a = moments(x0, codes0[name], k), moments(x1, codes1[name], k)
        for i in range(k):
            if b[i].n or a[i].n:
                slices.append(SliceData(((name, values[name][i]),), b[i], a[i]))
    for n_a, n_b in combinations(names, 2):
        ka, kb = len(values[n_a]), len(values[n_b])
        b = moments(x0, codes0[n_a] * kb + codes0[n_b], ka * kb)
        a = moments(x1, codes1[n_a] * kb + codes1[n_b], ka * kb)
        for i in range(ka * kb):
            if b[i].n or a[i].n:
                key = slice_key((n_a, values[n_a][i // kb]), (n_b, values[n_b][i % kb]))
                slices.append(SliceData(key, b[i], a[i]))
    cell = CellData(Moments(N_BEFORE, float(x0.sum()), float((x0 * x0).sum())),
                    Moments(n1, float(x1.sum()), float((x1 * x1).sum())),
                    tuple(slices), tuple(events), INTERVAL)
    return Case(kind, drop, n1, scale, planted, decoy, cell)


def no_true_effect(case: Case, named: tuple[tuple[str, str], ...]) -> bool:
    """The named slice's traffic holds none of the planted effect."""
    if case.planted is None:
        return True
    planted = dict(case.planted)
    return any(d in planted and planted[d] != v for d, v in named)


def score(case: Case, a: Attribution) -> dict[str, Any]:
    named = [s.key for s in a.slices]
    exact = case.planted is not None and named == [case.planted]
    wrong = bool(named) and any(no_true_effect(case, k) for k in named)
    out: dict[str, Any] = {"kind": case.kind, "drop": case.drop, "n_after": case.n_after,
                           "scale": case.scale, "decoy": case.has_decoy, "status": a.status,
                           "exact": exact, "named": bool(named), "no_true_effect": wrong}
    if case.kind.startswith("event"):
        out["event_top"] = bool(a.events) and a.events[0].event.value == "summarize@13"
        out["event_outside_listed"] = any(f.event.value == "m-new" for f in a.events)
    return out


def rate(rows: list[dict[str, Any]], key: str) -> tuple[float, int]:
    return (sum(bool(r[key]) for r in rows) / len(rows) if rows else math.nan), len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 cases per row (~3 s)")
    parser.add_argument("--per-row", type=int, default=200, help="cases per drop × n after")
    parser.add_argument("--seed", type=int, default=27)
    args = parser.parse_args(argv)
    per_row = 40 if args.quick else args.per_row
    rng = np.random.default_rng(args.seed)
    mix = [("single", 0.30), ("pair", 0.25), ("event_single", 0.15), ("event_pair", 0.10),
           ("null", 0.10), ("decoy", 0.10)]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    t_attr = 0.0
    for drop in DROPS:
        for n1 in NS_AFTER:
            for kind, share in mix:
                for _ in range(max(2, round(per_row * share))):
                    case = build_case(kind, drop, n1, rng)
                    t = time.perf_counter()
                    a = attribute(case.cell)
                    t_attr += time.perf_counter() - t
                    rows.append(score(case, a))
    elapsed = time.perf_counter() - t0
    planted = [r for r in rows if r["kind"] not in ("null", "decoy")]

    print(f"{len(rows)} cases ({len(planted)} planted), {elapsed:.1f} s "
          f"(attribute(): {1000 * t_attr / len(rows):.1f} ms a case)")
    print(f"{'drop':>4} {'n after':>7} {'kind':<12} {'cases':>5} {'top-1 exact':>11} "
          f"{'unknown':>8} {'no true effect':>14}")
    table: list[dict[str, Any]] = []
    for drop in DROPS:
        for n1 in NS_AFTER:
            for group in ("single", "pair", "event", "null+decoy"):
                sel = [r for r in rows if r["drop"] == drop and r["n_after"] == n1 and
                       (r["kind"] in ("null", "decoy") if group == "null+decoy" else
                        r["kind"].startswith(group) if group == "event" else r["kind"] == group)]
                exact = rate(sel, "exact")[0] if group != "null+decoy" else math.nan
                unknown = sum(r["status"] != "slice" for r in sel) / len(sel)
                wrong = rate(sel, "no_true_effect")[0]
                table.append({"drop": drop, "n_after": n1, "group": group, "cases": len(sel),
                              "top1_exact": exact, "not_named": unknown, "no_true_effect": wrong})
                ex = f"{exact:.2f}" if not math.isnan(exact) else "—"
                print(f"{drop:>4} {n1:>7} {group:<12} {len(sel):>5} {ex:>11} {unknown:>8.2f} {wrong:>14.2f}")

    goals: list[tuple[str, bool, str]] = []
    g1 = [r for r in planted if r["drop"] == 12 and r["n_after"] >= 1000]
    v1, c1 = rate(g1, "exact")
    goals.append(("top-1 exact ≥ 90% of 12-point cases at ≥ 1,000 after", v1 >= 0.90, f"{v1:.1%} of {c1}"))
    g2 = [r for r in planted if r["drop"] == 5 and r["n_after"] >= 3000]
    v2, c2 = rate(g2, "exact")
    goals.append(("top-1 exact ≥ 75% of 5-point cases at ≥ 3,000 after", v2 >= 0.75, f"{v2:.1%} of {c2}"))
    v3, c3 = rate(rows, "no_true_effect")
    nd = [r for r in rows if r["kind"] in ("null", "decoy")]
    v3b, c3b = rate(nd, "named")
    goals.append(("≤ 5% of alerts name a slice with no true effect", v3 <= 0.05,
                  f"{v3:.1%} of {c3} alerts (null/decoy-only cases naming any slice: {v3b:.1%} of {c3b})"))
    ev = [r for r in rows if "event_top" in r]
    v4, c4 = rate(ev, "event_top")
    outside = sum(r["event_outside_listed"] for r in ev)
    goals.append(("the change event named in ≥ 95% of cases that have one", v4 >= 0.95 and outside == 0,
                  f"{v4:.1%} of {c4}; the out-of-interval event listed {outside} times"))
    for scale in ("5-level", "continuous"):
        sel = [r for r in g1 if r["scale"] == scale]
        print(f"  12-pt ≥ 1,000, {scale}: top-1 exact {rate(sel, 'exact')[0]:.1%} of {len(sel)}")
    for decoy in (True, False):
        sel = [r for r in g1 if r["decoy"] == decoy]
        print(f"  12-pt ≥ 1,000, {'with' if decoy else 'without'} a mix decoy: top-1 exact "
              f"{rate(sel, 'exact')[0]:.1%} of {len(sel)}")
    print()
    for name, ok, figs in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {figs}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"issue": 27, "quick": args.quick, "seed": args.seed, "cases": len(rows),
           "planted": len(planted), "seconds": round(elapsed, 1),
           "ms_per_attribution": round(1000 * t_attr / len(rows), 2), "table": table,
           "goals": [{"goal": n, "pass": ok, "figures": f} for n, ok, f in goals]}
    path = RESULTS / "attribution.json"
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
