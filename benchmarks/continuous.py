"""Continuous mode at scale (issue 12), side by side in one run.

    python -m benchmarks.continuous [--quick] [--parts continuous,cpu,pacing]

Three parts, each printed as it finishes and then together, and saved to benchmarks/results/:

1. continuous: today's schedule (every tick re-lists overlap + interval: TRACEJUDGE_OVERLAP_SECONDS
   3600, TRACEJUDGE_LATE_SCANS off) beside the new one (the default late passes, 3600:900 and
   86400:21600, overlap 0), each on a fresh stack with a real worker fleet and three rubrics
   (helpfulness, instruction_following, safety) judging every selected trace. The scheduler's
   production phases (Sampler.tick, the budget tick, the read-back of written scores) run in
   this process on a *stepped clock*: Sampler.tick(now) takes its clock as an argument, so each
   tick advances simulated time by the tick interval (60 s), and 30 simulated hours of traffic
   (traces arriving continuously, 10% ingested late: startTime up to 24 h in the past when they
   reach Langfuse) take a few minutes. Everything else (the fleet, Redis TTLs, the read-back
   grace) runs on the real clock. The Langfuse emulator counts every request by endpoint and how
   many listing replies each trace's root appeared in; printed: listings per trace (over the
   traces whose every pass has run), late traces judged, Langfuse requests per judged trace by
   endpoint. --quick: 2 simulated hours, the new schedule scaled down to 300:120,1800:600 (so
   every pass runs in that time), settle 60 s.
2. cpu (benchmarks/cpu.py): CPU ms per judged trace of the worker processes (user+sys from
   /proc), efficiency, Redis commands per job at 64 and 256 calls in flight against a 500 ms
   judge, and a py-spy profile of the fleet at 64 written to benchmarks/results/profile-<date>.txt.
3. pacing (benchmarks/pacing.py, called, not duplicated): throughput under a provider's limit,
   unconfigured and configured, recovery after it lifts, and under the chaos plan.

Both emulators run with TCP_NODELAY and the Langfuse emulator with a trace-id index
(benchmarks/fast_emulators.py): same answers, without the emulators' own ~40 ms per request.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import cpu
from benchmarks.bench_stack import RESULTS, Stack
from emulators.seed import generate

THREE_RUBRICS = ("helpfulness", "instruction_following", "safety")  # every one applies to every trace
LISTING = "GET v2/observations (listing)"


# -- continuous mode ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scenario:
    hours: float
    interval: int
    settle: int
    new_scans: str  # TRACEJUDGE_LATE_SCANS of the new schedule
    max_late: int  # the longest late-pass delay: late traces arrive up to this late
    traces_per_minute: float
    sample_rate: float
    late_share: float
    real_seconds: float  # pace of the stepped clock: the simulated hours take about this long


def scenario(args) -> Scenario:
    sc = _scenario(args)
    if args.tick_real_seconds:  # real time between ticks: the fleet sees each tick's jobs as a wave
        sc = dataclasses.replace(sc, real_seconds=args.tick_real_seconds * sc.hours * 3600 / sc.interval)
    return sc


def _scenario(args) -> Scenario:
    if args.quick:
        return Scenario(hours=2, interval=60, settle=60, new_scans="300:120,1800:600", max_late=1800,
                        traces_per_minute=args.traces_per_minute or 4, sample_rate=args.sample_rate or 0.25,
                        late_share=0.1, real_seconds=5)
    return Scenario(hours=30, interval=60, settle=600, new_scans="3600:900,86400:21600", max_late=86400,
                    traces_per_minute=args.traces_per_minute or 8, sample_rate=args.sample_rate or 0.15,
                    late_share=0.1, real_seconds=150)


def schedules(sc: Scenario) -> list[tuple[str, dict]]:
    base = {"TRACEJUDGE_SAMPLE_INTERVAL_SECONDS": str(sc.interval), "TRACEJUDGE_SETTLE_SECONDS": str(sc.settle),
            "TRACEJUDGE_SAMPLE_RATE": str(sc.sample_rate)}
    return [("today", {**base, "TRACEJUDGE_OVERLAP_SECONDS": "3600", "TRACEJUDGE_LATE_SCANS": "off"}),
            ("new", {**base, "TRACEJUDGE_OVERLAP_SECONDS": "0", "TRACEJUDGE_LATE_SCANS": sc.new_scans})]


@dataclasses.dataclass
class Traffic:
    start: dt.datetime
    end: dt.datetime
    arrivals: list[tuple[dt.datetime, list[dict]]]  # (ingested at, the trace's observations), in time order
    lateness: dict[str, float]  # trace id -> seconds between its startTime and its ingestion
    roots: dict[str, dict]  # trace id -> root observation


def traffic(sc: Scenario, seed: int = 12) -> Traffic:
    """Traces over the simulated hours (the seed's daily rhythm and mix); ``late_share`` of them
    reach Langfuse 10 minutes to ``max_late`` after their startTime, the rest when they start."""
    end = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).replace(microsecond=0)
    start = end - dt.timedelta(hours=sc.hours)
    n = int(sc.traces_per_minute * sc.hours * 60)
    observations = generate(n, days=1, end=end, seed=seed, include_malformed=False)
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for obs in observations:
        by_trace[obs["traceId"]].append(obs)
    rng = random.Random(seed)
    span = (end - start).total_seconds()
    arrivals, lateness, roots = [], {}, {}
    for trace_id, group in by_trace.items():
        # the seed spreads traces over whole days: fold each into the simulated window, keeping offsets
        root = next(o for o in group if o.get("isRootObservation"))
        t0 = dt.datetime.fromisoformat(root["startTime"].replace("Z", "+00:00"))
        shift = start + dt.timedelta(seconds=rng.uniform(0, span)) - t0
        for obs in group:
            for key in ("startTime", "endTime"):
                if obs.get(key):
                    moved = dt.datetime.fromisoformat(obs[key].replace("Z", "+00:00")) + shift
                    obs[key] = moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        late = rng.uniform(600, sc.max_late) if rng.random() < sc.late_share else 0.0
        begun = t0 + shift
        arrivals.append((begun + dt.timedelta(seconds=late), group))
        lateness[trace_id] = late
        roots[trace_id] = root
    arrivals.sort(key=lambda a: a[0])
    return Traffic(start, end, arrivals, lateness, roots)


def run_schedule(sc: Scenario, name: str, env: dict, tr: Traffic, args, log) -> dict:
    """One schedule on a fresh stack: the stepped-clock scheduler here, the real fleet beside it."""
    from samplers.late import LATE_CURSOR
    from worker.accounting.outcomes import UNCONFIRMED, OutcomeLog
    from worker.fleet.queues import queue_depth
    from worker.fleet.scheduler import budget_tick, build_sampler
    from worker.judging.confirm import confirm_writes
    from worker.runtime import Runtime
    from worker.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix=f"tracejudge-continuous-{name}-"))
    stack = Stack(workdir, judge_latency_ms=args.judge_latency_ms, rubrics=THREE_RUBRICS)
    try:
        settings = Settings.from_env({**stack.env, **env})
        sampler = build_sampler(settings)
        rt = Runtime(settings)
        fleet = stack.fleet(args.processes, args.threads, env, f"worker-{name}.log")
        ticks = int(sc.hours * 3600 // sc.interval)
        per_tick = sc.real_seconds / ticks
        now, i, pending = tr.start, 0, tr.arrivals
        t_real = time.monotonic()
        tick_seconds = 0.0
        for k in range(ticks):
            now += dt.timedelta(seconds=sc.interval)
            batch = []
            while i < len(pending) and pending[i][0] <= now:
                batch += pending[i][1]
                i += 1
            if batch:
                stack.load(batch)
            began = time.monotonic()
            # the scheduler's phases, in its order (worker/fleet/scheduler.py run_fleet_scheduler)
            sampler.tick(now)
            budget_tick(sampler, rt)
            confirm_writes(rt)
            tick_seconds += time.monotonic() - began
            if fleet.poll() is not None:
                raise SystemExit(f"worker fleet exited; see {workdir}/worker-{name}.log")
            lag = t_real + (k + 1) * per_tick - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        loop_seconds = time.monotonic() - t_real
        # drain: the fleet finishes the queue, the read-back confirms every written score
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            depth = queue_depth(stack.redis)
            if depth.outstanding == 0 and stack.redis.zcard(UNCONFIRMED) == 0:
                break
            confirm_writes(rt)
            time.sleep(1.0)
        drained = queue_depth(stack.redis).outstanding == 0 and stack.redis.zcard(UNCONFIRMED) == 0
        cursors = {int(k.decode().rsplit(":", 1)[1]): dt.datetime.fromisoformat(stack.redis.get(k).decode())
                   for k in stack.redis.scan_iter(LATE_CURSOR + "*")}
        fresh = sampler.cursor()
        outcomes = OutcomeLog(stack.redis).stats()
        endpoints = stack.langfuse("endpoints")
        counts = stack.langfuse("stats")
        listed = stack.langfuse("listings")
        scores = stack.langfuse("scores")
        judge = stack.judge_counts()
    finally:
        stack.close()
    judged = {s["traceId"] for s in scores}
    covered_until = min([fresh - dt.timedelta(seconds=settings.overlap_seconds), *cursors.values()])
    log(f"  {name}: {ticks} ticks of {sc.interval} s simulated in {loop_seconds:.0f} s "
        f"(scheduler phases {1000 * tick_seconds / ticks:.1f} ms a tick); {len(judged)} traces judged, "
        f"{len(scores)} scores; {'drained' if drained else 'NOT drained'}; logs in {workdir}")
    return {"name": name, "env": env, "ticks": ticks, "endpoints": endpoints, "counts": counts, "listed": listed,
            "judged": judged, "scores": len(scores), "outcomes": outcomes, "covered_until": covered_until,
            "start_key": tr.start, "judge_calls": judge.get("status:200", 0), "drained": drained,
            "loop_seconds": loop_seconds, "workdir": str(workdir)}


def summarize(sc: Scenario, tr: Traffic, runs: list[dict]) -> tuple[str, dict]:
    """The printed table and the same figures as JSON (see ``figures``)."""
    from samplers.hashing import is_sampled

    cover = min(r["covered_until"] for r in runs)
    first = tr.start + dt.timedelta(seconds=sc.interval)  # the first tick's window starts here
    cohort = [tid for tid, root in tr.roots.items()
              if first <= dt.datetime.fromisoformat(root["startTime"].replace("Z", "+00:00")) < cover]
    late = [tid for tid in cohort if tr.lateness[tid] > 0]
    judgeable = [tid for tid in late if is_sampled(tid, sc.sample_rate)
                 and not (tr.roots[tid].get("environment") or "").startswith("langfuse")
                 and not (tr.roots[tid].get("traceName") or "").startswith("tracejudge")]
    out = io.StringIO()
    w = out.write
    w(f"continuous mode: {sc.hours:g} simulated hours, a tick every {sc.interval} s (stepped clock), settle "
      f"{sc.settle} s; {len(tr.roots)} traces ({sc.traces_per_minute:g}/min), {sc.late_share:.0%} ingested "
      f"10 min to {sc.max_late / 3600:g} h late; sample rate {sc.sample_rate:g}, 3 rubrics per selected trace\n")
    w(f"listings counted over the {len(cohort)} traces with startTime in {first:%H:%M} .. {cover:%Y-%m-%d %H:%M} "
      f"UTC (every pass of both schedules had run over them); {len(late)} of them late, {len(judgeable)} of those "
      f"sampled\n\n")
    names = [r["name"] for r in runs]
    rows: list[tuple[str, list[str]]] = []

    def row(label, values):
        rows.append((label, values))

    row("schedule", [f"overlap {r['env']['TRACEJUDGE_OVERLAP_SECONDS']} s, late "
                     f"{r['env']['TRACEJUDGE_LATE_SCANS']}" for r in runs])
    per = [[r["listed"].get(tid, 0) for tid in cohort] for r in runs]
    row("listings per trace (mean)", [f"{sum(p) / max(1, len(p)):.2f}" for p in per])
    row("  max / never listed", [f"{max(p, default=0)} / {sum(1 for x in p if x == 0)}" for p in per])
    row("  on-time traces", [f"{_mean([r['listed'].get(t, 0) for t in cohort if not tr.lateness[t]]):.2f}" for r in runs])
    row("  late traces", [f"{_mean([r['listed'].get(t, 0) for t in late]):.2f}" for r in runs])
    for lo, hi, label in ((0, 3600, "<= 1 h"), (3600, 86400 + 1, "1-24 h")):
        group = [t for t in judgeable if lo < tr.lateness[t] <= hi]
        if group:
            row(f"late {label} sampled traces judged", [f"{sum(t in r['judged'] for t in group)}/{len(group)}"
                                                        for r in runs])
    listing = [r["endpoints"].get(LISTING, 0) for r in runs]
    row("listing requests", [f"{n} ({n / r['ticks']:.2f} a tick)" for n, r in zip(listing, runs)])
    row("listed roots per 1,000 traces", [f"{1000 * sum(r['listed'].values()) / len(tr.roots):.0f}" for r in runs])
    total = [sum(r["endpoints"].values()) for r in runs]
    row("Langfuse requests (all)", [str(t) for t in total])
    row("judged traces / scores", [f"{len(r['judged'])} / {r['scores']}" for r in runs])
    row("requests per judged trace", [f"{t / max(1, len(r['judged'])):.2f}" for t, r in zip(total, runs)])
    row("  without the listing", [f"{(t - n) / max(1, len(r['judged'])):.2f}" for t, n, r in zip(total, listing, runs)])
    endpoints = sorted({e for r in runs for e in r["endpoints"]}, key=lambda e: -max(r["endpoints"].get(e, 0) for r in runs))
    for e in endpoints:
        row(f"  {e}", [f"{r['endpoints'].get(e, 0) / max(1, len(r['judged'])):.3f} ({r['endpoints'].get(e, 0)})"
                       for r in runs])
    outcome_keys = ("scored", "unscored", "not_applicable")
    row("outcomes scored/unscored/n.a.", ["/".join(str(r["outcomes"].get(k, 0)) for k in outcome_keys) for r in runs])
    width = max(len(label) for label, _ in rows) + 2
    col = max(22, *(len(v) + 2 for _, vs in rows for v in vs))
    w(" " * width + "".join(f"{n:>{col}}" for n in names) + "\n")
    for label, values in rows:
        w(f"{label:<{width}}" + "".join(f"{v:>{col}}" for v in values) + "\n")
    ratio = [sum(p) / max(1, len(p)) for p in per]
    if ratio[1]:
        w(f"\nnew vs today: {ratio[0] / ratio[1]:.1f}x fewer listings per trace; listing requests {listing[0]} vs "
          f"{listing[1]} (at this volume every tick's listing is one page either way)\n")
    w("arithmetic, not measured: at 1M traces a day (694 a minute, pages of 1,000, 60 s ticks) today's schedule "
      f"lists {_pages_per_minute(694, 3600, ()):.1f} pages a minute, the new default "
      f"{_pages_per_minute(694, 0, ((3600, 900), (86400, 21600))):.1f}\n")
    w("(requests per judged trace: all requests of the fleet and the scheduler, counted by the emulator, divided by "
      "the traces with a score; the listing and the read-back are per tick, so their share per judged trace "
      f"falls as the traffic grows: here {sc.traces_per_minute * sc.sample_rate:.2f} judged traces a tick)\n")
    return out.getvalue(), figures(sc, tr, runs, cohort, per)


def figures(sc: Scenario, tr: Traffic, runs: list[dict], cohort: list[str], per: list[list[int]]) -> dict:
    """The table's figures, unrounded, by schedule: what tests and later runs read instead of the text."""
    out = {"scenario": dataclasses.asdict(sc), "traces": len(tr.roots), "cohort": len(cohort),
           "late_in_cohort": sum(1 for t in cohort if tr.lateness[t] > 0), "schedules": {}}
    for r, listed in zip(runs, per):
        judged = len(r["judged"])
        total = sum(r["endpoints"].values())
        out["schedules"][r["name"]] = {
            "env": r["env"], "ticks": r["ticks"], "drained": r["drained"],
            "listings_per_trace_mean": sum(listed) / max(1, len(listed)),
            "listings_per_trace_max": max(listed, default=0),
            "never_listed": sum(1 for x in listed if x == 0),
            "listing_requests": r["endpoints"].get(LISTING, 0),
            "requests_total": total,
            "requests_counted_by_emulator": sum(v for k, v in r["counts"].items() if not k.startswith("fault")),
            "judged_traces": judged, "scores": r["scores"],
            "requests_per_judged_trace": total / max(1, judged),
            "requests_by_endpoint": dict(sorted(r["endpoints"].items())),
            "outcomes": r["outcomes"], "judge_calls": r["judge_calls"], "loop_seconds": r["loop_seconds"],
            "problems": consistency(r), "workdir": r["workdir"]}
    return out


def _pages_per_minute(per_minute: float, overlap: int, passes) -> float:
    import math
    pages = math.ceil(per_minute * (60 + overlap) / 60 / 1000)
    return pages + sum(math.ceil(per_minute * every / 60 / 1000) * 60 / every for _, every in passes)


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def consistency(run: dict) -> list[str]:
    """Problems with a run's counts: the endpoint counters must add up to the emulator's own."""
    problems = []
    counted = sum(v for k, v in run["counts"].items() if not k.startswith("fault"))
    if counted != sum(run["endpoints"].values()):
        problems.append(f"{run['name']}: endpoint counts {sum(run['endpoints'].values())} != requests {counted}")
    return problems


def continuous(args, log) -> tuple[str, dict]:
    """The continuous part: its printed table, and its figures (``figures``)."""
    sc = scenario(args)
    tr = traffic(sc)
    log(f"continuous: {len(tr.roots)} traces over {sc.hours:g} simulated hours; fleet {args.processes} x "
        f"{args.threads}, judge {args.judge_latency_ms} ms")
    runs = [run_schedule(sc, name, env, tr, args, log) for name, env in schedules(sc)]
    problems = [p for r in runs for p in consistency(r)]
    text, figs = summarize(sc, tr, runs)
    return text + "".join(f"COUNT MISMATCH: {p}\n" for p in problems), figs


# -- one command ---------------------------------------------------------------------------------
class Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run of every part (about 2 minutes)")
    parser.add_argument("--parts", default="continuous,cpu,pacing", help="comma-separated: continuous,cpu,pacing")
    parser.add_argument("--processes", type=int, default=2, help="continuous: worker processes")
    parser.add_argument("--threads", type=int, default=8, help="continuous: threads per worker process")
    parser.add_argument("--judge-latency-ms", type=int, default=100, help="continuous: judge latency")
    parser.add_argument("--traces-per-minute", type=float, default=None)
    parser.add_argument("--sample-rate", type=float, default=None)
    parser.add_argument("--drain-timeout", type=float, default=240)
    parser.add_argument("--tick-real-seconds", type=float, default=None,
                        help="continuous: real seconds per tick (default: the simulated hours in a few minutes; "
                             "production's 60 s ticks leave the fleet idle between ticks' jobs)")
    parser.add_argument("--no-profile", action="store_true", help="cpu: skip the py-spy profile")
    parser.add_argument("--out", default=None, help="where to save the output (default: benchmarks/results/)")
    parser.add_argument("--json", default=None,
                        help="where to write the continuous part's figures as JSON (default: --out's path with .json)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out) if args.out else RESULTS / f"continuous-{stamp}{'-quick' if args.quick else ''}.txt"
    json_path = Path(args.json) if args.json else out_path.with_suffix(".json")
    with open(out_path, "w") as saved:
        tee = Tee(sys.stdout, saved)

        def log(line: str) -> None:
            tee.write(line + "\n")

        log(f"# python -m benchmarks.continuous {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
        log(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; 2 shared cores")
        sections = []
        if "continuous" in parts:
            text, figs = continuous(args, log)
            sections.append(("continuous mode", text))
            log("\n== continuous mode ==\n" + text.rstrip())
            json_path.write_text(json.dumps(figs, indent=2, default=str) + "\n")
        if "cpu" in parts:
            sections.append(("cpu", cpu.run(args, log, profile_path=None if args.no_profile else
                                            RESULTS / f"profile-{stamp}{'-quick' if args.quick else ''}.txt")))
            log("\n== cpu ==\n" + sections[-1][1].rstrip())
        if "pacing" in parts:
            from benchmarks import pacing
            buf = io.StringIO()
            pacing_args = ["--seconds", "20", "--traces", "3000"] if args.quick else []
            with contextlib.redirect_stdout(Tee(sys.stdout, buf)):
                pacing.main(pacing_args)
            text = buf.getvalue()
            sections.append(("pacing", text[text.find("== pacing =="):] if "== pacing ==" in text else text))
        if len(sections) > 1:
            tee.write("\n\n######## all parts, side by side ########\n")
            for title, text in sections:
                tee.write(f"\n== {title} ==\n{text.rstrip()}\n")
        log(f"\n(saved to {out_path}{f'; figures in {json_path}' if 'continuous' in parts else ''})")


if __name__ == "__main__":
    main()
