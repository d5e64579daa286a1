"""Pacing under a provider's rate limit, and throughput under the chaos fault plan, in one run.

The real worker fleet judges a backlog against the judge emulator with a provider limit (a
token bucket per provider answering 429 + Retry-After when empty, emulators/judge_limits.py),
in short phases side by side, each with a fresh fleet and fresh limiter state:

  fault-free   no limit, no faults: the fleet's full speed (the chaos baseline)
  unconfigured the provider enforces --limit requests/min that tracejudge is not told about;
               then the limit is lifted: seconds until the fleet is back at full speed
  configured   the same limit, with TRACEJUDGE_JUDGE_RPM set to it
  chaos        judge 5% 429 + 5% 529 + 10% 500, Langfuse 10% 429 + 10% 500 (Retry-After: 1)

    python -m benchmarks.pacing [--limit 1200] [--seconds 60] [--latency-ms 500]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from emulators.seed import generate
from emulators.stack import (
    JUDGE_KEY,
    PUBLIC_KEY,
    SECRET_KEY,
    child_env,
    free_port,
    start_emulator,
    start_redis,
    stop,
)
from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.accounting.outcomes import OutcomeLog
from worker.fleet.broker import build_broker
from worker.langfuse_io.client import build_langfuse_api
from worker.rubrics.rubric import load_rubrics
from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RUBRIC = "helpfulness@v1"  # judged by Anthropic: the "anthropic" bucket is the limited one
CHAOS_JUDGE = {"fault_rate_429": 0.05, "fault_rate_529": 0.05, "fault_rate_500": 0.10, "retry_after": 1}
CHAOS_LANGFUSE = {"fault_rate_429": 0.10, "fault_rate_500": 0.10, "retry_after": 1}
NO_FAULTS = {"fault_rate_429": 0.0, "fault_rate_529": 0.0, "fault_rate_500": 0.0}
NO_LANGFUSE_FAULTS = {"fault_rate_429": 0.0, "fault_rate_500": 0.0}


class Bench:
    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.procs: list[subprocess.Popen] = []
        self.admin = httpx.Client(timeout=60)

    def start(self) -> None:
        redis_proc, self.redis_url = start_redis(self.workdir)
        lf, self.lf_url = start_emulator("emulators.langfuse_api", [
            "--port", str(free_port()), "--public-key", PUBLIC_KEY, "--secret-key", SECRET_KEY],
            self.workdir / "langfuse.log")
        judge, self.judge_url = start_emulator("emulators.judge_limits", [
            "--port", str(free_port()), "--latency-ms", str(self.args.latency_ms)], self.workdir / "judge.log")
        self.procs = [judge, lf, redis_proc]
        self.redis = redis.Redis.from_url(self.redis_url)
        self.env = {"REDIS_URL": self.redis_url, "LANGFUSE_BASE_URL": self.lf_url,
                    "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY,
                    "ANTHROPIC_API_KEY": JUDGE_KEY, "ANTHROPIC_BASE_URL": self.judge_url,
                    "OPENAI_API_KEY": JUDGE_KEY, "OPENAI_BASE_URL": self.judge_url + "/v1",
                    "TRACEJUDGE_SAMPLE_RATE": "1", "TRACEJUDGE_RUBRICS_DIR": str(REPO / "rubrics"),
                    "TRACEJUDGE_SETTLE_SECONDS": "0", "TRACEJUDGE_METRICS_PORT": "0"}

    def seed(self, n: int) -> int:
        now = dt.datetime.now(dt.timezone.utc)
        observations = generate(n, include_malformed=False, seed=23, end=now - dt.timedelta(minutes=1))
        for i in range(0, len(observations), 2000):
            self.admin.post(f"{self.lf_url}/_emulator/observations", content=json.dumps(observations[i:i + 2000]),
                            headers={"Content-Type": "application/json"}).raise_for_status()
        settings = Settings.from_env(self.env)
        rubrics = {k: v for k, v in load_rubrics(settings.rubrics_dir).items() if k == RUBRIC}
        sampler = Sampler(settings, rubrics, LangfuseTraceSource(build_langfuse_api(settings)),
                          build_broker(settings), self.redis)
        return sampler.run_pass(now - dt.timedelta(days=16), now).enqueued

    def configure(self, *, limit: int | None, judge_faults: dict, langfuse_faults: dict) -> None:
        self.admin.post(f"{self.judge_url}/_emulator/limits",
                        json={"anthropic": {"requests_per_minute": limit} if limit else None}).raise_for_status()
        self.admin.post(f"{self.judge_url}/_emulator/config", json=judge_faults).raise_for_status()
        self.admin.post(f"{self.lf_url}/_emulator/config", json=langfuse_faults).raise_for_status()

    def counts(self) -> dict:
        judge = self.admin.get(f"{self.judge_url}/_emulator/stats").json()["counts"]
        return {"judged": judge.get("status:200", 0), "limit_429": self._limits().get("anthropic:429", 0),
                "scored": OutcomeLog(self.redis).stats().get("scored", 0)}

    def _limits(self) -> dict:
        return self.admin.get(f"{self.judge_url}/_emulator/limits").json()["counts"]

    def phase(self, name: str, seconds: float, extra_env: dict, *, then=None) -> list[tuple[float, dict]]:
        """A fresh fleet (and fresh limiter state) for ``seconds``; samples every second."""
        for key in self.redis.scan_iter("tracejudge:ratelimit:*"):
            self.redis.delete(key)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from worker.cli.main import main; main()", "worker", "--processes",
             str(self.args.processes), "--threads", str(self.args.threads)],
            env=child_env({**self.env, **extra_env}), stdout=open(self.workdir / f"worker-{name}.log", "ab"),
            stderr=subprocess.STDOUT, start_new_session=True)
        samples = []
        try:
            # The phase's clock starts at the fleet's first judge call (start-up is not pacing).
            begun = self.counts()["judged"]
            deadline = time.monotonic() + 180
            while self.counts()["judged"] == begun:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker did not start judging; see {self.workdir}/worker-{name}.log")
                time.sleep(0.2)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                samples.append((elapsed, self.counts()))
                if then is not None and then(elapsed, samples):
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"worker exited; see {self.workdir}/worker-{name}.log")
                time.sleep(1.0)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(90)
        return samples

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


def rate(samples, field: str, start: float, end: float) -> float:
    """Per second of ``field`` between the samples nearest ``start`` and ``end`` (seconds in)."""
    a = min(samples, key=lambda s: abs(s[0] - start))
    b = min(samples, key=lambda s: abs(s[0] - end))
    return (b[1][field] - a[1][field]) / max(1e-9, b[0] - a[0])


def first_active(samples, field: str) -> float:
    """Seconds in when the fleet first judged (process start-up is not pacing)."""
    base = samples[0][1][field]
    return next((t for t, c in samples if c[field] > base), samples[-1][0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1200, help="the provider's requests/min")
    parser.add_argument("--seconds", type=int, default=60, help="length of each limited phase")
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--traces", type=int, default=7500)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    per_s = args.limit / 60
    bench = Bench(args, Path(tempfile.mkdtemp(prefix="tracejudge-pacing-")))
    try:
        bench.start()
        jobs = bench.seed(args.traces)
        print(f"{jobs} jobs queued; judge latency {args.latency_ms} ms; fleet {args.processes} x {args.threads}; "
              f"provider limit {args.limit}/min ({per_s:.1f}/s)", flush=True)

        bench.configure(limit=None, judge_faults=NO_FAULTS, langfuse_faults=NO_LANGFUSE_FAULTS)
        free = bench.phase("fault-free", 35, {})
        t0 = first_active(free, "scored")
        full = rate(free, "scored", t0 + 10, free[-1][0])
        full_judged = rate(free, "judged", t0 + 10, free[-1][0])
        print(f"fault-free: {full:.1f} scores/s ({full_judged:.1f} judge calls/s)", flush=True)

        bench.configure(limit=args.limit, judge_faults=NO_FAULTS, langfuse_faults=NO_LANGFUSE_FAULTS)
        lifted_at: list[float] = []

        def lift(elapsed, samples):
            if not lifted_at and elapsed >= args.seconds + 10:
                bench.configure(limit=None, judge_faults=NO_FAULTS, langfuse_faults=NO_LANGFUSE_FAULTS)
                lifted_at.append(elapsed)
            if lifted_at and elapsed - lifted_at[0] >= 5:
                return rate(samples, "judged", elapsed - 5, elapsed) >= 0.9 * full_judged
            return False

        unconf = bench.phase("unconfigured", args.seconds + 10 + 90, {}, then=lift)
        u0 = first_active(unconf, "judged")
        end = lifted_at[0] if lifted_at else unconf[-1][0]
        first_minute = rate(unconf, "judged", u0, min(u0 + 60, end)) / per_s
        steady = rate(unconf, "judged", end - 30, end) / per_s
        before = min(unconf, key=lambda s: abs(s[0] - end))[1]
        limit_429s = before["limit_429"] - unconf[0][1]["limit_429"]
        minutes = (end - u0) / 60
        recovered = unconf[-1][0] - lifted_at[0] if lifted_at else float("nan")
        back = lifted_at and rate(unconf, "judged", unconf[-1][0] - 5, unconf[-1][0]) >= 0.9 * full_judged

        bench.configure(limit=args.limit, judge_faults=NO_FAULTS, langfuse_faults=NO_LANGFUSE_FAULTS)
        conf = bench.phase("configured", args.seconds, {"TRACEJUDGE_JUDGE_RPM": str(args.limit)})
        c0 = first_active(conf, "judged")
        configured = rate(conf, "judged", c0 + 5, conf[-1][0]) / per_s
        conf_429s = conf[-1][1]["limit_429"] - conf[0][1]["limit_429"]

        bench.configure(limit=None, judge_faults=CHAOS_JUDGE, langfuse_faults=CHAOS_LANGFUSE)
        chaos = bench.phase("chaos", args.seconds, {})
        h0 = first_active(chaos, "scored")
        chaotic = rate(chaos, "scored", h0 + 10, chaos[-1][0])

        print("\n== pacing ==")
        print(f"unconfigured, first minute : {first_minute:6.1%} of the provider's limit")
        print(f"unconfigured, steady (30 s): {steady:6.1%} of the limit; {limit_429s} 429s in "
              f"{minutes:.1f} min ({limit_429s / max(minutes, 1e-9):.0f}/min)")
        print(f"configured (JUDGE_RPM set) : {configured:6.1%} of the limit; {conf_429s} 429s")
        print(f"limit lifted               : full speed (>= 90% of fault-free) "
              f"{'after %.0f s' % recovered if back else 'NOT reached in %.0f s' % recovered}")
        print(f"chaos plan                 : {chaotic:.1f} scores/s vs {full:.1f} fault-free = "
              f"{chaotic / full:.0%} of fault-free throughput")
        print(f"(logs in {bench.workdir})")
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
