"""Soak: months of traffic on the local stack, Redis memory measured day by day.

One command: ``python -m benchmarks.soak --jobs 200000 --days 150``. Each simulated day seeds
``jobs / days`` traces dated that day, runs the sampler's pass over the day (sample rate 1,
one rubric), lets the worker fleet (``tracejudge worker``, a fast judge) judge them, reads the
scores back as the scheduler does, runs the daily housekeeping (aggregate retention, log
bounds) for that date, and then moves Redis's clock a day: every tracejudge key's TTL is
shortened by 24 h (keys due in that time are deleted), which is exactly what a day does to
them. Memory should grow while the retention windows fill (dedup markers 45 d, done markers
90 d, cell-days 120 d) and then stay flat.

Prints memory per day, the plateau, and bytes per judged trace and per drift cell-day by key
family (``MEMORY USAGE`` of every key at the end).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

from emulators.seed import generate
from emulators.stack import LocalStack, child_env
from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.drift import aggregates as agg
from worker.fleet.broker import build_broker
from worker.fleet.housekeeping import housekeep
from worker.fleet.queues import queue_depth
from worker.judging.confirm import GRACE_SECONDS, confirm_writes
from worker.langfuse_io.client import build_langfuse_api
from worker.rubrics.rubric import SHARED_PROMPTS, load_rubrics
from worker.runtime import Runtime
from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RUBRIC = "helpfulness"

# One step of "a day passes" over tracejudge's keys: ARGV cursor, milliseconds.
_AGE = """
local r = redis.call('SCAN', ARGV[1], 'MATCH', 'tracejudge:*', 'COUNT', 2000)
local shift = tonumber(ARGV[2])
for _, k in ipairs(r[2]) do
  local t = redis.call('PTTL', k)
  if t > 0 then
    if t <= shift then redis.call('DEL', k) else redis.call('PEXPIRE', k, t - shift) end
  end
end
return r[1]
"""


def age_one_day(client: redis.Redis) -> None:
    cursor = "0"
    while True:
        cursor = client.eval(_AGE, 0, cursor, 86_400_000)
        cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if cursor == "0":
            return


# Families with one key per judged trace, and how long each key lives (days).
PER_TRACE = {"tracejudge:enqueued": 45, "tracejudge:done": 90, "tracejudge:confirmed": 90,
             "tracejudge:budget:counted": 3}


def family_of(name: str) -> str:
    parts = name.split(":")
    if name.startswith("tracejudge:agg:"):
        return "tracejudge:agg:" + (parts[2] if parts[2] in ("bottom", "days", "cells") else "cell-day")
    if len(parts) > 2 and parts[1] in ("budget", "batch", "alerts", "confirm", "ratelimit"):
        return ":".join(parts[:3])
    return ":".join(parts[:2])


def families(client: redis.Redis) -> tuple[Counter, Counter]:
    """Bytes (MEMORY USAGE) and key counts per key family."""
    size, count = Counter(), Counter()
    keys = [k for k in client.scan_iter(match="*", count=5000)]
    for i in range(0, len(keys), 2000):
        pipe = client.pipeline(transaction=False)
        for key in keys[i:i + 2000]:
            pipe.memory_usage(key, samples=0)
        for key, used in zip(keys[i:i + 2000], pipe.execute()):
            family = family_of(key.decode(errors="replace"))
            size[family] += used or 0
            count[family] += 1
    return size, count


def seed_day(stack: LocalStack, n: int, day_end: dt.datetime, seed: int) -> list[str]:
    observations = generate(n, days=1, end=day_end, seed=seed, include_malformed=False)
    with httpx.Client(base_url=stack.langfuse_url, timeout=120) as http:
        for i in range(0, len(observations), 2000):
            http.post("/_emulator/observations", content=json.dumps(observations[i:i + 2000]),
                      headers={"Content-Type": "application/json"}).raise_for_status()
    return [o["traceId"] for o in observations if o.get("isRootObservation")]


def wait_drained(client: redis.Redis, rt: Runtime, proc: subprocess.Popen, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while queue_depth(client).outstanding:
        if proc.poll() is not None:
            raise SystemExit("the worker fleet exited; see its log")
        if time.monotonic() > deadline:
            raise SystemExit("the fleet did not drain the day's jobs in time")
        time.sleep(0.2)
    while rt.outcomes.waiting():
        confirm_writes(rt, now=time.time() + GRACE_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000, help="judged traces in all (>= 200,000 for the issue)")
    parser.add_argument("--days", type=int, default=150, help="simulated days (past the 120-day retention)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--json", dest="json_out", help="also write the figures here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack and the fleet on the way out
    per_day = max(1, args.jobs // args.days)

    rubrics_dir = Path(tempfile.mkdtemp(prefix="soak-rubrics-"))
    shutil.copytree(REPO / "rubrics" / RUBRIC, rubrics_dir / RUBRIC)
    for shared in SHARED_PROMPTS:  # the prompt files every version is hashed with
        shutil.copy(REPO / "rubrics" / shared, rubrics_dir / shared)
    # the indexed emulator: the store grows to the whole run's traces, which a plain scan per
    # request would make the emulator, not the fleet, set the pace
    with LocalStack(judge_latency_ms=0, langfuse_module=("benchmarks.fast_emulators", "langfuse")) as stack:
        env = {**stack.env(), "TRACEJUDGE_SAMPLE_RATE": "1", "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir),
               "TRACEJUDGE_SETTLE_SECONDS": "0", "TRACEJUDGE_METRICS_PORT": "0"}
        settings = Settings.from_env(env)
        client = redis.Redis.from_url(settings.redis_url)
        rubrics = load_rubrics(settings.rubrics_dir)
        rt = Runtime(settings, redis_client=client)
        sampler = Sampler(settings, rubrics, LangfuseTraceSource(build_langfuse_api(settings)),
                          build_broker(settings), client)
        log = open(stack.workdir / "soak-worker.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "worker", "--processes",
                                 str(args.processes), "--threads", str(args.threads)],
                                env=child_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        baseline = client.info("memory")["used_memory"]
        today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - dt.timedelta(days=args.days)
        rows, judged, started = [], 0, time.monotonic()
        try:
            for d in range(args.days):
                day_end = first + dt.timedelta(days=d + 1)
                seed_day(stack, per_day, day_end, seed=1000 + d)
                sampler.run_pass(day_end - dt.timedelta(days=1), day_end)
                wait_drained(client, rt, proc)
                housekeep(client, set(rubrics), now=time.time(), today=day_end.date())
                stats = rt.outcomes.stats()
                judged = stats.get("scored", 0) + stats.get("unscored", 0) + stats.get("not_applicable", 0)
                used = client.info("memory")["used_memory"] - baseline
                cells_days = sum(client.zcard(agg.days_key(c.decode())) for c in client.smembers(agg.CELLS))
                rows.append({"day": d + 1, "judged_total": judged, "used_bytes": used, "keys": client.dbsize(),
                             "cell_days": cells_days})
                print(f"day {d + 1:>4}: judged {judged:>8,}  redis {used / 1e6:8.2f} MB  keys {client.dbsize():>9,}"
                      f"  live cell-days {cells_days:>6,}  ({time.monotonic() - started:.0f} s)", flush=True)
                age_one_day(client)
            size, count = families(client)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(90)
    report(rows, size, count, per_day, args, judged)


def report(rows: list[dict], size: Counter, count: Counter, per_day: int, args, judged: int) -> None:
    print("\nkey families at the end (bytes by MEMORY USAGE, keys):")
    for family, total in size.most_common():
        print(f"  {family:<34}{total / 1e6:10.2f} MB  {count[family]:>9,} keys  {total / max(1, count[family]):7.0f} B/key")
    # A judged trace leaves one key in each per-trace family for that family's TTL.
    per_key = {f: size[f] / count[f] for f in PER_TRACE if count[f]}
    per_trace = sum(per_key.values())
    predicted = sum(per_day * per_key[f] * PER_TRACE[f] for f in per_key)
    agg_bytes = sum(v for f, v in size.items() if f in ("tracejudge:agg:cell-day", "tracejudge:agg:bottom",
                                                         "tracejudge:agg:days"))
    cell_days = rows[-1]["cell_days"] if rows else 0
    last = rows[-30:] if len(rows) >= 60 else rows[len(rows) // 2:]
    first_of_last = last[0]["used_bytes"] if last else 0
    growth = (rows[-1]["used_bytes"] - first_of_last) / max(1, first_of_last) if last else 0.0
    figures = {
        "jobs_judged": judged, "days": args.days, "traces_per_day": per_day,
        "plateau_mb": round(rows[-1]["used_bytes"] / 1e6, 2) if rows else None,
        "growth_over_last_window": round(growth, 4),
        "bytes_per_judged_trace": round(per_trace, 1), "per_trace_bytes_by_family": per_key,
        "predicted_per_trace_plateau_mb": round(predicted / 1e6, 2),
        "bytes_per_cell_day": round(agg_bytes / max(1, cell_days), 1),
        "live_cell_days": cell_days,
        "families_bytes": dict(size), "families_keys": dict(count), "days_series": rows,
    }
    print(f"\njudged {judged:,} traces over {args.days} simulated days ({per_day:,} a day)")
    print(f"memory at the end {figures['plateau_mb']} MB; change over the last {len(last)} days: {100 * growth:+.1f}%")
    print(f"bytes per judged trace while its markers live: {per_trace:.0f} "
          f"({', '.join(f'{f.split(chr(58), 1)[1]} {b:.0f} for {PER_TRACE[f]} d' for f, b in per_key.items())}); "
          f"at {per_day:,} traces a day they plateau at {predicted / 1e6:.2f} MB")
    print(f"bytes per drift cell-day ({cell_days:,} live): {figures['bytes_per_cell_day']:.0f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
