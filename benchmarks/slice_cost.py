"""What attribution costs in Redis per judged trace (issue 27, item 1): the slice log and
first-seen values a confirmed score writes (worker/drift/slice_log.py), beside the same score
without slices (today's cells only) and beside the design it replaced on paper, per-hour
aggregates of every single value and pair of every cell. One run, one real redis-server, the same
scores applied to each in turn, side by side:

    python -m benchmarks slice_cost [--scores 20000] [--days 14]

Prints per judged trace: Redis commands, bytes of memory at the end (``MEMORY USAGE`` of every key
the variant writes, divided by the scores), and the time to apply one contribution (median of
the batch, µs), with the ratios to the no-slices baseline.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

import redis

from emulators.stack import start_redis
from worker.drift import slice_log
from worker.drift.contribution import SLICES_KEY, DriftContribution
from worker.rubrics.rubric import load_rubrics

REPO = Path(__file__).resolve().parents[1]
FEATURES = ("summarize", "support-chat", "search-qa")
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")


def stream(n: int, days: int, seed: int = 7) -> list[tuple[float, int, dict[str, object]]]:
    rng = random.Random(seed)
    end = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc).timestamp()
    out = []
    for i in range(n):
        t = end - days * 86400 + (i + rng.random()) * days * 86400 / n
        feature, tenant = rng.choice(FEATURES), rng.choice(TENANTS)
        dims = {"prompt": f"{feature}@{12 + (t > end - 3 * 86400)}", "release": f"2026.12.{int(t // 86400) % 5}",
                "version": "app-v43", "environment": "production", "model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                "input_tokens": rng.choice(["<1k", "1k-3k", "3k-10k", "≥10k"]),
                "tool": rng.choice(["none", "search", "calc+search"])}
        out.append((t, rng.randint(1, 5), {"feature": feature, "tenant": tenant, SLICES_KEY: dims}))
    return out


def hourly_aggregates(pipe: redis.client.Pipeline, c: DriftContribution) -> None:
    """The replaced design: n, Σx, Σx² per single value and pair of every cell, per hour."""
    dims = dict(c.slices)
    hour = int(c.trace_epoch // 3600)
    for cell in c.cells:
        segment = cell.split("|", 3)[3]
        fixed = {p.split("=", 1)[0] for p in segment.split("|") if "=" in p}
        items = sorted((k, v) for k, v in {**dims, "feature": "?", "tenant": "?"}.items() if k not in fixed)
        keys = [f"{k}={v}" for k, v in items] + [f"{a[0]}={a[1]}&{b[0]}={b[1]}"
                                                   for a, b in itertools.combinations(items, 2)]
        key = f"bench:hourly:{cell}:{hour}"
        for k in keys:
            pipe.hincrbyfloat(key, f"{k}|n", 1)
            pipe.hincrbyfloat(key, f"{k}|s", c.points)
            pipe.hincrbyfloat(key, f"{k}|q", c.points * c.points)


def run(client: redis.Redis, contributions: list[DriftContribution], variant: str) -> dict[str, float]:
    client.flushdb()
    client.config_resetstat()
    times = []
    for c in contributions:
        start = time.perf_counter()
        pipe = client.pipeline(transaction=True)
        if variant == "no slices":
            DriftContribution(**{**c.__dict__, "slices": ()}).apply(pipe)
        else:
            c.apply(pipe)
            if variant == "hourly aggregates":
                hourly_aggregates(pipe, c)
        pipe.execute()
        times.append(time.perf_counter() - start)
    stats = client.info("commandstats")
    commands = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_multi", "cmdstat_exec",
                                                                       "cmdstat_config"))
    memory = sum(client.memory_usage(k) or 0 for k in client.scan_iter(count=1000))
    n = len(contributions)
    return {"commands": commands / n, "bytes": memory / n, "us": statistics.median(times) * 1e6,
            "log_entries": client.zcard(slice_log.log_key(contributions[0].cells[0]))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks slice_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scores", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args(argv)
    rubric = load_rubrics(REPO / "rubrics")["helpfulness@v1"]
    contributions = [DriftContribution.of_score(rubric, f"t{i}", meta, dt.datetime.fromtimestamp(t, dt.timezone.utc),
                                                value, 1000)
                     for i, (t, value, meta) in enumerate(stream(args.scores, args.days))]
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            client = redis.Redis.from_url(url)
            results = {v: run(client, contributions, v) for v in ("no slices", "slice log", "hourly aggregates")}
        finally:
            proc.terminate()
    base = results["no slices"]
    print(f"{args.scores:,} confirmed scores over {args.days} days, 4 cells each "
          f"({len(FEATURES)} features × {len(TENANTS)} tenants), 9 slice dimensions")
    print(f"{'variant':<20}{'commands':>10}{'×':>6}{'bytes':>10}{'×':>6}{'µs/apply':>10}{'×':>6}")
    for name, r in results.items():
        print(f"{name:<20}{r['commands']:>10.1f}{r['commands'] / base['commands']:>6.1f}{r['bytes']:>10,.0f}"
              f"{r['bytes'] / base['bytes']:>6.1f}{r['us']:>10.0f}{r['us'] / base['us']:>6.1f}")
    log = results["slice log"]
    print(f"slice log: +{log['commands'] - base['commands']:.1f} commands and "
          f"+{log['bytes'] - base['bytes']:,.0f} bytes per judged trace "
          f"({log['log_entries']:,} entries kept of {args.scores:,})")


if __name__ == "__main__":
    main()
