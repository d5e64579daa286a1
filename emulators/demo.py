"""``tracejudge demo``: the whole pipeline on the local stack, then a summary.

Starts redis-server and both emulators, seeds two weeks of traces, runs the Procfile's
processes (scheduler + worker fleet) under honcho, waits for the queue to drain, prints what
happened, and stops everything it started.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import click
import httpx
import redis

from emulators.stack import LocalStack, child_env, stop_group
from samplers.sampler import CURSOR_KEY, LAST_PASS_KEY
from worker.accounting.outcomes import OutcomeLog
from worker.fleet.queues import queue_depth

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class DemoOptions:
    traces: int = 3000
    rate: float = 0.05
    judge_latency_ms: int = 300
    processes: int = 2
    threads: int = 16
    timeout: float = 900
    keep: bool = False


def seed_traces(stack: LocalStack, n: int, end: dt.datetime) -> dict:
    from emulators.seed import generate, generate_targets

    # beside the traces: agent runs (observation rubrics) and multi-turn sessions (session rubrics)
    observations = generate(n, end=end) + generate_targets(max(1, n // 10), max(1, n // 20), end=end)
    with httpx.Client(base_url=stack.langfuse_url, timeout=60) as client:
        for start in range(0, len(observations), 2000):
            # json.dumps escapes lone surrogates (the non-UTF-8 trace); httpx's json= would refuse them
            client.post("/_emulator/observations", content=json.dumps(observations[start:start + 2000]),
                        headers={"Content-Type": "application/json"}).raise_for_status()
    roots = [o for o in observations if o.get("isRootObservation") or not o.get("parentObservationId")]
    return {"observations": len(observations), "traces": len(roots),
            "since": min(o["startTime"] for o in roots)}


def run_demo(opts: DemoOptions, echo=click.echo) -> int:
    started = time.monotonic()
    stack = LocalStack(judge_latency_ms=opts.judge_latency_ms)
    echo(f"starting the local stack in {stack.workdir} (redis-server, Langfuse emulator, judge emulator)")
    stack.start()
    honcho = None
    try:
        now = dt.datetime.now(dt.timezone.utc)
        settle = 600
        seeded = seed_traces(stack, opts.traces, end=now - dt.timedelta(seconds=settle // 2))
        echo(f"seeded {seeded['traces']} traces ({seeded['observations']} observations) over 14 days")
        env = {**stack.env(), "TRACEJUDGE_SAMPLE_RATE": str(opts.rate), "TRACEJUDGE_SETTLE_SECONDS": str(settle),
               "TRACEJUDGE_SAMPLE_INTERVAL_SECONDS": "2", "TRACEJUDGE_PROCESSES": str(opts.processes),
               "TRACEJUDGE_THREADS": str(opts.threads), "TRACEJUDGE_RUBRICS_DIR": str(REPO / "rubrics")}
        client = redis.Redis.from_url(stack.redis_url)
        start_cursor = dt.datetime.fromisoformat(seeded["since"].replace("Z", "+00:00")) + dt.timedelta(hours=1)
        client.set(CURSOR_KEY, start_cursor.isoformat())  # a fresh deployment would start at "now"
        log_path = stack.workdir / "procfile.log"
        echo(f"running the Procfile (scheduler + worker x{opts.processes} processes x{opts.threads} threads); "
             f"logs: {log_path}")
        run_env = child_env(env)
        run_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + run_env.get("PATH", "")
        honcho = subprocess.Popen([sys.executable, "-m", "honcho", "-f", str(REPO / "Procfile"), "start"],
                                  cwd=REPO, env=run_env, stdout=open(log_path, "ab"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        finished = wait_for_drain(client, honcho, now - dt.timedelta(seconds=settle), opts.timeout, echo)
        summary(stack, client, started, echo)
        if opts.keep:
            echo("\n--keep: the stack stays up; press Ctrl-C to stop it")
            _wait_forever()
        return 0 if finished else 1
    finally:
        stop_group(honcho)
        stack.stop()


def wait_for_drain(client: redis.Redis, honcho: subprocess.Popen, scan_target: dt.datetime,
                   timeout: float, echo) -> bool:
    deadline = time.monotonic() + timeout
    outcomes = OutcomeLog(client)
    with click.progressbar(length=1, label="judging", show_pos=True, file=sys.stderr) as bar:
        while time.monotonic() < deadline:
            if honcho.poll() is not None:
                echo("the Procfile processes exited early; see the log")
                return False
            stats = outcomes.stats()
            enqueued = stats.get("enqueued", 0)
            done = sum(stats.get(k, 0) for k in ("scored", "unscored", "not_applicable", "retries_exhausted"))
            bar.length = max(1, enqueued)
            bar.update(min(done, bar.length) - bar.pos)
            cursor = client.get(CURSOR_KEY)
            scanned = cursor and dt.datetime.fromisoformat(cursor.decode()) >= scan_target
            if (scanned and client.exists(LAST_PASS_KEY) and queue_depth(client).outstanding == 0 and done >= enqueued
                    and outcomes.waiting() == 0):  # every written score read back (the scheduler confirms them)
                return True
            time.sleep(0.5)
    echo(f"timed out after {timeout:.0f} s with work still queued")
    return False


def summary(stack: LocalStack, client: redis.Redis, started: float, echo) -> None:
    stats = OutcomeLog(client).stats()
    depth = queue_depth(client)
    scores = fetch_scores(stack)
    out = stack.workdir / "scores.jsonl"
    out.write_text("".join(json.dumps(s) + "\n" for s in scores))
    per_rubric = defaultdict(list)
    for s in scores:
        per_rubric[s["name"]].append(s["value"])
    unscored = {k.split(":", 1)[1]: v for k, v in stats.items()
                if k.startswith("unscored:") and k.count(":") == 1 and k != "unscored:not_applicable"}
    echo("\n=== tracejudge demo summary ===")
    echo(f"traces scanned        {stats.get('sampler_scanned', 0)} (with late passes) "
         f"({stats.get('sampler_excluded', 0)} excluded: langfuse-* environments and tracejudge's own)")
    echo(f"sampled (trace x rubric) {stats.get('sampler_selected', 0)}, enqueued {stats.get('enqueued', 0)}")
    confirmed = stats.get("confirmed", 0)
    wait = (f", {stats.get('confirm_wait_ms', 0) / confirmed / 1000:.1f} s from write to read-back, "
            f"{stats.get('confirm_requests', 0) / confirmed:.3f} Langfuse reads per score" if confirmed else "")
    echo(f"scored                {stats.get('scored', 0)} ({confirmed} confirmed by reading them back from Langfuse"
         f"{wait}; {stats.get('missing', 0)} missing, {OutcomeLog(client).waiting()} unconfirmed)")
    echo(f"unscored              {stats.get('unscored', 0)}"
         + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(unscored.items())) + ")" if unscored else ""))
    echo(f"not applicable        {stats.get('not_applicable', 0)} (e.g. groundedness on a trace without retrieval)")
    echo(f"dead letters          {depth.dead}")
    echo(f"judge calls           {stats.get('judge_calls', 0)}; tokens in {stats.get('input_tokens', 0):,}, "
         f"out {stats.get('output_tokens', 0):,}, cache read {stats.get('cache_read_tokens', 0):,}")
    echo(f"judge cost            ${stats.get('cost_microusd', 0) / 1e6:.4f}")
    echo(f"time taken            {time.monotonic() - started:.1f} s")
    for name, values in sorted(per_rubric.items()):
        numeric = [v for v in values if isinstance(v, (int, float))]
        labels = Counter(v for v in values if isinstance(v, str))
        summary = (f", mean {sum(numeric) / len(numeric):.2f}" if numeric else "") + (
            ", " + ", ".join(f"{label} {n}" for label, n in labels.most_common()) if labels else "")
        echo(f"rubric {name:<22} {len(values)} scores in Langfuse{summary}")
    _targets(stats, echo)
    echo(f"scores read back through GET /api/public/v3/scores: {len(scores)}; saved to {out}")
    report = write_report(stack, client)
    echo(f"quality report        {report}  (open it in a browser: per rubric and target, quality per feature "
         "and tenant, week over week, the lowest-scoring traces and sessions)")
    echo(f"raw scores: run `tracejudge demo --keep` and open "
         f"{stack.langfuse_url}/api/public/v3/scores?fields=details,subject (Basic auth pk-lf-local-demo / "
         "sk-lf-local-demo), or point the same services at your Langfuse (README) to see them in the trace UI")


def _targets(stats: dict, echo) -> None:
    """The three targets' figures: what each kind of rubric judged."""
    from worker.rubrics.rubric import load_rubrics

    by_target: dict[str, list[str]] = defaultdict(list)
    for key, rubric in load_rubrics(REPO / "rubrics").items():
        by_target[rubric.target].append(key)
    echo("by target:")
    for target, unit in (("trace", "traces"), ("observation", "observations"), ("session", "sessions")):
        keys = sorted(by_target.get(target, []))
        scored = sum(stats.get(f"scored:{k}", 0) for k in keys)
        na = sum(stats.get(f"unscored:{k}:not_applicable", 0) for k in keys)
        extra = {"trace": "", "observation": " (generations that call no tool are not applicable)",
                 "session": f"; {stats.get('sessions_enqueued', 0)} sessions enqueued once idle, "
                            f"{stats.get('sessions_rejudged', 0)} re-judged after resuming"}[target]
        echo(f"  {unit:<13} {scored} scored, {na} not applicable{extra} - {', '.join(keys) or 'no rubric'}")


def write_report(stack: LocalStack, client: redis.Redis) -> Path:
    """The quality report of the demo's scores, as ``tracejudge report`` writes it."""
    from worker.report.data import gather
    from worker.report.page import render
    from worker.rubrics.rubric import load_rubrics

    path = stack.workdir / "report.html"
    path.write_text(render(gather(client, load_rubrics(REPO / "rubrics"))), encoding="utf-8")
    return path


def fetch_scores(stack: LocalStack) -> list[dict]:
    from worker.langfuse_io.client import build_langfuse_api
    from worker.settings import Settings

    api = build_langfuse_api(Settings.from_env({**stack.env(), "TRACEJUDGE_RUBRICS_DIR": str(REPO / "rubrics")}))
    scores, cursor = [], None
    while True:
        page = api.scores.get_many(limit=100, cursor=cursor, fields="details", source="API")
        scores += [s.dict(by_alias=True) for s in page.data]
        cursor = page.meta.cursor
        if not cursor or not page.data:
            return [json.loads(json.dumps(s, default=str)) for s in scores]


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
