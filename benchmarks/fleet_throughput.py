"""Fleet throughput vs a hand-written sequential loop, side by side in one run.

Both judge the same kind of trace, with the same SDKs, against the same emulators with a
fixed judge latency. Efficiency = fleet throughput ÷ (calls in flight ÷ judge latency): 1.0
means every in-flight slot is always waiting on the judge and nothing else.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import redis

from benchmarks.sdk_batched_baseline import langfuse_batched
from emulators.seed import generate
from emulators.stack import LocalStack, child_env
from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.accounting.outcomes import OutcomeLog
from worker.fleet.broker import build_broker
from worker.fleet.queues import queue_depth
from worker.langfuse_io.client import NO_SDK_RETRIES, build_langfuse_api
from worker.rubrics.rubric import load_rubrics
from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def seed(stack: LocalStack, n: int) -> list[dict]:
    observations = generate(n, include_malformed=False, seed=21, end=dt.datetime.now(dt.timezone.utc))
    with httpx.Client(base_url=stack.langfuse_url, timeout=60) as client:
        for i in range(0, len(observations), 2000):
            client.post("/_emulator/observations", content=json.dumps(observations[i:i + 2000]),
                        headers={"Content-Type": "application/json"}).raise_for_status()
    return observations


def sequential(settings: Settings, trace_ids: list[str], model: str) -> float:
    """The baseline a team writes first: one trace after another, same SDKs, same calls."""
    api = build_langfuse_api(settings)
    judge = anthropic.Anthropic(api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url,
                                max_retries=0)
    tool = {"name": "record_verdict", "description": "verdict", "input_schema": {
        "type": "object", "properties": {"reasoning": {"type": "string"},
                                         "score": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["reasoning", "score"]}}
    started = time.perf_counter()
    for i, trace_id in enumerate(trace_ids):
        page = api.observations.get_many(trace_id=trace_id, fields="core,basic,io,metadata", limit=1000,
                                         request_options=NO_SDK_RETRIES)
        root = next(o for o in page.data if o.is_root_observation or not o.parent_observation_id)
        reply = judge.messages.create(model=model, max_tokens=512, tools=[tool],
                                      tool_choice={"type": "tool", "name": "record_verdict"},
                                      messages=[{"role": "user", "content": f"Grade:\n{root.input}\n{root.output}"}])
        verdict = next(b.input for b in reply.content if b.type == "tool_use")
        api.scores.create(request=[{"id": f"seq-{i}", "traceId": trace_id, "name": "sequential-baseline",
                                    "value": verdict["score"], "comment": verdict["reasoning"]}],
                          request_options=NO_SDK_RETRIES)
    return len(trace_ids) / (time.perf_counter() - started)


def fleet(settings: Settings, env: dict, processes: int, threads: int, jobs: int, log_path: Path) -> dict:
    client = redis.Redis.from_url(settings.redis_url)
    outcomes = OutcomeLog(client)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "worker", "--processes", str(processes),
         "--threads", str(threads)], env=child_env(env), stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT, start_new_session=True)
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            stats = outcomes.stats()
            done = sum(stats.get(k, 0) for k in ("scored", "unscored", "not_applicable"))
            samples.append((time.perf_counter(), done))
            if done >= jobs and queue_depth(client).outstanding == 0:
                break
            if proc.poll() is not None:
                raise SystemExit(f"worker exited; see {log_path}")
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    # Steady state: from 10% to 90% of the jobs, so process start-up and the tail don't count.
    lo = next(s for s in samples if s[1] >= jobs * 0.1)
    hi = next(s for s in samples if s[1] >= jobs * 0.9)
    stats = outcomes.stats()
    return {"throughput": (hi[1] - lo[1]) / (hi[0] - lo[0]), "scored": stats.get("scored", 0),
            "unscored": stats.get("unscored", 0), "wall": samples[-1][0] - samples[0][0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=int, default=1000, help="fixed judge latency")
    parser.add_argument("--traces", type=int, default=2500, help="seeded traces (all sampled)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=15, help="traces for the sequential loop")
    parser.add_argument("--sdk-items", type=int, default=60,
                        help="traces for the langfuse SDK's run_batched_evaluation baseline")
    args = parser.parse_args(argv)
    latency = args.latency_ms / 1000

    with LocalStack(judge_latency_ms=args.latency_ms) as stack:
        observations = seed(stack, args.traces)
        env = {**stack.env(), "TRACEJUDGE_SAMPLE_RATE": "1", "TRACEJUDGE_RUBRICS_DIR": str(REPO / "rubrics"),
               "TRACEJUDGE_SETTLE_SECONDS": "0"}
        settings = Settings.from_env(env)
        rubrics = {k: v for k, v in load_rubrics(settings.rubrics_dir).items() if k == "helpfulness@v1"}
        broker = build_broker(settings)
        sampler = Sampler(settings, rubrics, LangfuseTraceSource(build_langfuse_api(settings)), broker,
                          redis.Redis.from_url(settings.redis_url))
        now = dt.datetime.now(dt.timezone.utc)
        report = sampler.run_pass(now - dt.timedelta(days=15), now)
        roots = [o["traceId"] for o in observations if o.get("isRootObservation")
                 and not (o.get("environment") or "").startswith("langfuse")
                 and not (o.get("traceName") or o.get("name") or "").startswith("tracejudge")]
        model = rubrics["helpfulness@v1"].judge.model
        seq = sequential(settings, roots[: args.sequential], model)
        sdk, sdk_scores = langfuse_batched(settings, model, args.sdk_items)
        in_flight = args.processes * args.threads
        result = fleet(settings, env, args.processes, args.threads, report.enqueued,
                       stack.workdir / "bench-worker.log")

    ideal = in_flight / latency
    print(f"judge latency {args.latency_ms} ms; {report.enqueued} jobs; fleet {args.processes} processes x "
          f"{args.threads} threads = {in_flight} calls in flight")
    print(f"sampler: {report.scanned} traces scanned in {report.requests} Langfuse requests "
          f"({1000 * report.requests / max(1, report.scanned):.1f} per 1,000 traces)")
    print(f"sequential loop : {seq:8.2f} traces/s   (ideal {1 / latency:.2f}; efficiency {seq * latency:.2f})")
    print(f"fleet           : {result['throughput']:8.2f} traces/s   (ideal {ideal:.1f}; "
          f"efficiency {result['throughput'] / ideal:.2f}); scored {result['scored']}, unscored {result['unscored']}")
    print(f"langfuse SDK run_batched_evaluation (default concurrency 5): {sdk:8.2f} traces/s "
          f"(ideal {5 / latency:.2f}; efficiency {sdk * latency / 5:.2f}); {sdk_scores} scores created")
    print(f"fleet / sequential = {result['throughput'] / seq:.1f}x;  fleet / SDK batched = {result['throughput'] / sdk:.1f}x")


if __name__ == "__main__":
    main()
