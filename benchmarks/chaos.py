"""Chaos: the Procfile fleet (scheduler + workers) under honcho on the local stack, fresh traces
arriving all along, while the infrastructure and the providers fail; then an audit.

The timeline: Redis restarted (SHUTDOWN, ~30 s down, back from its AOF); Redis stopped and
started (~30 s down); one worker process SIGKILLed; the judge key revoked for two minutes and
restored; Langfuse score writes answering 403 "ingestion suspended" for a minute. Background
noise all along: a few Langfuse 500/429 and judge 429/529. Then the fleet drains and the audit
says whether every process is alive, every (trace, rubric) the contract selects is judged once or
unscored with a reason (0 lost, 0 duplicated), every alert was delivered once, and what the
judge was paid during the outages (should be ~0). The rig: benchmarks/chaos_rig.py; the audit:
benchmarks/chaos_audit.py.

    python -m benchmarks.chaos [--quick] [--rate 0.2] [--feed 4] [--latency-ms 300]
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

from benchmarks.chaos_audit import FleetCheck, Window, audit, expected_pairs
from benchmarks.chaos_rig import (REPO, AlertReceiver, Feeder, Fleet, RedisCtl, judge_counts, judge_paid_at,
                                  langfuse_counts, worker_heartbeats)
from emulators.seed import generate
from emulators.stack import JUDGE_KEY, PUBLIC_KEY, SECRET_KEY, free_port, start_emulator, stop
from samplers.sampler import CURSOR_KEY
from worker.accounting.outcomes import OutcomeLog
from worker.fleet.queues import queue_depth
from worker.judging.finish import PENDING_WRITE
from worker.rubrics.rubric import SHARED_PROMPTS, load_rubrics

RUBRICS = ("helpfulness", "groundedness", "instruction_following")  # two judge breakers: Anthropic and OpenAI
PROCESSES, THREADS = 2, 8
FULL = {"warm": 40, "redis_down": 30, "gap": 30, "revoke": 120, "suspend": 60, "recover": 240}
QUICK = {"warm": 20, "redis_down": 10, "gap": 15, "revoke": 40, "suspend": 25, "recover": 120}


class Run:
    """The timeline's bookkeeping: events, fault windows, and a watchdog on honcho."""

    def __init__(self, fleet: Fleet, client: redis.Redis, lf_url: str, judge_url: str):
        self.fleet, self.client, self.lf_url, self.judge_url = fleet, client, lf_url, judge_url
        self.t0 = time.monotonic()
        self.events: list[str] = []
        self.windows: list[Window] = []
        self.exits: list[str] = []
        self._closing = threading.Event()
        threading.Thread(target=self._watch, name="honcho-watchdog", daemon=True).start()

    def event(self, text: str) -> None:
        self.events.append(f"t+{time.monotonic() - self.t0:5.1f}s {text}")
        print(self.events[-1], flush=True)

    def _watch(self) -> None:
        """honcho stops every process when one exits: note it and start the fleet again (as an
        operator's supervisor would), so the rest of the timeline still runs."""
        while not self._closing.wait(0.5):
            if self.fleet.proc is not None and not self.fleet.running() and not self._closing.is_set():
                why = _last_exit_line(self.fleet.log_path)
                self.exits.append(f"t+{time.monotonic() - self.t0:.0f}s rc={self.fleet.proc.returncode} ({why})")
                self.event(f"honcho EXITED (rc={self.fleet.proc.returncode}: {why}); starting the fleet again")
                self.fleet.start()

    def close(self) -> None:
        self._closing.set()

    def done(self) -> int:
        try:
            s = OutcomeLog(self.client).stats()
        except redis.RedisError:
            return -1
        return sum(s.get(k, 0) for k in ("scored", "unscored", "not_applicable", "retries_exhausted"))

    def window(self, name: str, fault, heal=None, seconds: float = 0.0) -> Window:
        """Counters around one fault: ``fault()`` (blocking for an outage), ``seconds`` later ``heal()``."""
        judge0, lf0, started = judge_counts(self.judge_url), langfuse_counts(self.lf_url), time.time()
        self.event(f"{name}: begins at {self.done()} outcomes")
        fault()
        pending = None
        if heal is not None:
            time.sleep(seconds)
            pending = sum(1 for _ in self.client.scan_iter(match=PENDING_WRITE + "*", count=500))
        ended = time.time()
        if heal is not None:
            heal()
        w = Window(name, started, ended, judge_counts(self.judge_url) - judge0, langfuse_counts(self.lf_url) - lf0,
                   pending)
        self.windows.append(w)
        self.event(f"{name}: over after {w.seconds:.0f}s at {self.done()} outcomes")
        return w

    def settle(self, minimum: float, limit: float) -> None:
        """Wait at least ``minimum`` s, then until no job waits on a delay (paused, retrying), up to ``limit``."""
        time.sleep(minimum)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                depth = queue_depth(self.client)
                if depth.delayed <= 2 and depth.ready < 20:
                    break
            except redis.RedisError:
                pass
            time.sleep(1)
        self.event(f"flowing again at {self.done()} outcomes ({queue_depth(self.client)})")


def _last_exit_line(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()
    for line in reversed(lines[-400:]):
        if "exited" in line or "stopped" in line:
            return line.strip()[-160:]
    return "no exit line in the log"


def post(url: str, body: dict) -> None:
    httpx.post(url, json=body, timeout=30).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter outages (10 s Redis, 40 s key, 25 s 403)")
    parser.add_argument("--rate", type=float, default=0.2, help="sampling rate (the default 1%% is too few to audit)")
    parser.add_argument("--feed", type=float, default=4.0, help="fresh traces arriving per second")
    parser.add_argument("--backlog", type=int, default=600, help="traces of the last 30 minutes waiting at start")
    parser.add_argument("--latency-ms", type=int, default=300, help="judge latency")
    parser.add_argument("--noise", type=float, default=0.02, help="background Langfuse 500/429 and judge 429/529 rate")
    parser.add_argument("--timeout", type=int, default=300, help="give up draining after this many seconds")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on SIGTERM too

    workdir = Path(tempfile.mkdtemp(prefix="tracejudge-chaos-"))
    rubrics_dir = workdir / "rubrics"
    for name in RUBRICS:
        shutil.copytree(REPO / "rubrics" / name, rubrics_dir / name, ignore=shutil.ignore_patterns("examples.jsonl"))
    for shared in SHARED_PROMPTS:
        shutil.copy(REPO / "rubrics" / shared, rubrics_dir / shared)
    print(f"chaos benchmark in {workdir} ({'quick' if args.quick else 'full'} timeline)", flush=True)
    redis_ctl = lf_proc = judge_proc = receiver = fleet = run = feeder = None
    try:
        redis_ctl = RedisCtl(workdir, free_port())
        lf_proc, lf_url = start_emulator("emulators.langfuse_api", [
            "--port", str(free_port()), "--public-key", PUBLIC_KEY, "--secret-key", SECRET_KEY], workdir / "langfuse.log")
        judge_proc, judge_url = start_emulator("emulators.judge_api", [
            "--port", str(free_port()), "--latency-ms", str(args.latency_ms)], workdir / "judge.log")
        receiver = AlertReceiver()
        client = redis.Redis.from_url(redis_ctl.url, socket_timeout=10)
        now = dt.datetime.now(dt.timezone.utc)
        backlog = generate(args.backlog, days=1800 / 86400, end=now - dt.timedelta(seconds=20), seed=41,
                           include_malformed=False)
        post(f"{lf_url}/_emulator/observations", backlog)
        client.set(CURSOR_KEY, (now - dt.timedelta(minutes=31)).isoformat())
        post(f"{lf_url}/_emulator/config", {"fault_rate_500": args.noise / 2, "fault_rate_429": args.noise / 2,
                                            "retry_after": 1})
        post(f"{judge_url}/_emulator/config", {"fault_rate_429": args.noise / 2, "fault_rate_529": args.noise / 2,
                                               "retry_after": 1})
        env = {"REDIS_URL": redis_ctl.url, "LANGFUSE_BASE_URL": lf_url, "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
               "LANGFUSE_SECRET_KEY": SECRET_KEY, "ANTHROPIC_API_KEY": JUDGE_KEY, "ANTHROPIC_BASE_URL": judge_url,
               "OPENAI_API_KEY": JUDGE_KEY, "OPENAI_BASE_URL": judge_url + "/v1",
               "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir), "TRACEJUDGE_SAMPLE_RATE": str(args.rate),
               "TRACEJUDGE_SETTLE_SECONDS": "5", "TRACEJUDGE_SAMPLE_INTERVAL_SECONDS": "2",
               "TRACEJUDGE_LATE_SCANS": "30:20", "TRACEJUDGE_ALERT_WEBHOOK_URL": receiver.url,
               "TRACEJUDGE_PROCESSES": str(PROCESSES), "TRACEJUDGE_THREADS": str(THREADS),
               "TRACEJUDGE_METRICS_PORT": "0", "LANGFUSE_TIMEOUT": "10"}
        fleet = Fleet(env, workdir / "procfile.log")
        fleet.start()
        if not fleet.wait_for(PROCESSES):
            raise SystemExit(f"the Procfile fleet did not come up; see {fleet.log_path}")
        run = Run(fleet, client, lf_url, judge_url)
        run.event(f"honcho up (scheduler + worker {PROCESSES}x{THREADS}); {args.backlog} traces waiting, "
                  f"{args.feed}/s arriving; logs {fleet.log_path}")
        feeder = Feeder(lf_url, args.feed)
        feeder.start()
        time.sleep(plan["warm"])
        down = plan["redis_down"]
        run.window(f"Redis restart (SHUTDOWN, {down}s down)", lambda: redis_ctl.restart(down))
        run.settle(plan["gap"], 60)
        run.window(f"Redis stop-start ({down}s down)", lambda: redis_ctl.stop_start(down))
        run.settle(plan["gap"], 60)
        killed: list[int | None] = []
        run.window("SIGKILL one worker process", lambda: killed.append(fleet.kill_worker_child()))
        run.event(f"SIGKILLed worker process pid {killed[0]}")
        time.sleep(10)
        fleet.wait_for(PROCESSES, 60)
        run.settle(plan["gap"], 90)
        run.window(f"judge key revoked ({plan['revoke']}s)",
                   lambda: post(f"{judge_url}/_emulator/config", {"revoked_keys": [JUDGE_KEY]}),
                   lambda: post(f"{judge_url}/_emulator/config", {"revoked_keys": []}), plan["revoke"])
        run.settle(plan["gap"], plan["recover"])
        run.window(f"Langfuse writes 403 ({plan['suspend']}s)",
                   lambda: post(f"{lf_url}/_emulator/config", {"ingestion_suspended": True}),
                   lambda: post(f"{lf_url}/_emulator/config", {"ingestion_suspended": False}), plan["suspend"])
        run.settle(plan["gap"], plan["recover"])
        last_fed = feeder.stop()
        post(f"{lf_url}/_emulator/config", {"fault_rate_500": 0, "fault_rate_429": 0})
        post(f"{judge_url}/_emulator/config", {"fault_rate_429": 0, "fault_rate_529": 0})
        run.event(f"feeder stopped after {len(feeder.observations)} observations; noise off; draining")
        drained = wait_for_drain(run, client, last_fed, args.timeout)
        run.event("drained" if drained else f"NOT drained after {args.timeout}s")
        time.sleep(3)
        check = FleetCheck(fleet.running(), fleet.starts, list(run.exits), fleet.processes(),
                           worker_heartbeats(client), PROCESSES)
        run.close()
        fleet.stop()
        run.event(f"fleet stopped (SIGTERM to honcho: rc={fleet.proc.returncode})")
        rubrics = load_rubrics(rubrics_dir).values()
        expected = expected_pairs(backlog + feeder.observations, rubrics, args.rate)
        deliveries = receiver.deliveries
        return audit(client, lf_url, expected, run.events, check, run.windows, receiver.counts(),
                     {d["id"]: d["kind"] for d in deliveries}, judge_counts(judge_url), judge_paid_at(judge_url),
                     OutcomeLog(client).stats().get("judge_calls", 0))
    finally:
        if run is not None:
            run.close()
        if feeder is not None:
            feeder.stop()
        if fleet is not None:
            fleet.stop()
        if receiver is not None:
            receiver.close()
        for proc in (judge_proc, lf_proc):
            stop(proc)
        if redis_ctl is not None:
            redis_ctl.close()


def wait_for_drain(run: Run, client: redis.Redis, last_fed: dt.datetime, timeout: float) -> bool:
    """Until the cursor passed the last trace fed, no job is left and every score was read back."""
    deadline = time.monotonic() + timeout
    target = last_fed + dt.timedelta(seconds=1)
    outcomes = OutcomeLog(client)
    while time.monotonic() < deadline:
        try:
            cursor = client.get(CURSOR_KEY)
            enqueued = outcomes.stats().get("enqueued", 0)
            if (cursor and dt.datetime.fromisoformat(cursor.decode()) >= target
                    and queue_depth(client).outstanding == 0 and run.done() >= enqueued and outcomes.waiting() == 0):
                return True
        except redis.RedisError:
            pass
        time.sleep(1)
    return False


if __name__ == "__main__":
    sys.exit(main())
