"""Chaos and soak: the worker fleet on the local stack while things break, then an audit.

Faults, on one timeline: 10% of Langfuse calls answer 500/429, 10% of judge calls 429/529; a
worker SIGKILLed twice; Redis restarted once (AOF on); Langfuse unreachable for a minute
(connections refused, through a proxy we close); SIGTERM during work (graceful shutdown).
Then the audit: every trace the contract says should be judged is judged exactly once, or
unscored / dead-lettered with its reason; nothing lost, nothing duplicated.

    python -m benchmarks.chaos [--traces 3000] [--rate 0.1] [--outage-seconds 60]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

from emulators.seed import generate
from emulators.stack import JUDGE_KEY, PUBLIC_KEY, SECRET_KEY, child_env, free_port, start_emulator, start_redis, stop
from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from worker.accounting.outcomes import EXHAUSTED, UNSCORED_LOG, OutcomeLog
from worker.fleet.broker import build_broker
from worker.fleet.queues import queue_depth
from worker.langfuse_io.client import build_langfuse_api
from worker.rubrics.rubric import load_rubrics
from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RUBRICS = ("helpfulness", "groundedness")


class SwitchableProxy:
    """A TCP forwarder that can go away: while down, its port refuses connections."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener:
            listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def expected_pairs(observations: list[dict], rate: float) -> set[tuple[str, str]]:
    """(trace, rubric) pairs the contract selects, computed from the seed independently of the sampler."""
    import hashlib

    with_retrieval = {o["traceId"] for o in observations if o.get("name") == "retrieval"}
    pairs = set()
    for o in observations:
        if not (o.get("isRootObservation") or not o.get("parentObservationId")):
            continue
        if (o.get("environment") or "").startswith("langfuse") or (o.get("traceName") or o.get("name") or "").startswith("tracejudge"):
            continue
        u = int.from_bytes(hashlib.sha256(("tracejudge:v1:" + o["traceId"]).encode()).digest()[:8], "big") / 2**64
        if u < rate:
            pairs.add((o["traceId"], "helpfulness"))
            if o["traceId"] in with_retrieval:
                pairs.add((o["traceId"], "groundedness"))
    return pairs


class Fleet:
    def __init__(self, env: dict, log_path: Path, processes: int, threads: int):
        self.env, self.log_path, self.processes, self.threads = env, log_path, processes, threads
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from worker.cli.main import main; main()", "worker", "--processes",
             str(self.processes), "--threads", str(self.threads)], env=child_env(self.env),
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig: int) -> float:
        started = time.monotonic()
        os.killpg(self.proc.pid, sig)
        self.proc.wait(120)
        return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=0.1, help="sampling rate (the demo's 1%% is too few to audit)")
    parser.add_argument("--latency-ms", type=int, default=300, help="judge latency")
    parser.add_argument("--outage-seconds", type=int, default=60, help="how long Langfuse is unreachable")
    parser.add_argument("--timeout", type=int, default=900, help="give up draining after this many seconds")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on SIGTERM too

    workdir = Path(tempfile.mkdtemp(prefix="tracejudge-chaos-"))
    rubrics_dir = workdir / "rubrics"
    for name in RUBRICS:
        shutil.copytree(REPO / "rubrics" / name, rubrics_dir / name, ignore=shutil.ignore_patterns("examples.jsonl"))
    shutil.copy(REPO / "rubrics" / "repair.j2", rubrics_dir / "repair.j2")
    redis_port = free_port()
    redis_proc, redis_url = start_redis(workdir, redis_port, appendonly=True)
    lf_proc, lf_url = start_emulator("emulators.langfuse_api", ["--port", str(free_port()), "--public-key", PUBLIC_KEY,
                                                                 "--secret-key", SECRET_KEY], workdir / "langfuse.log")
    judge_proc, judge_url = start_emulator("emulators.judge_api", ["--port", str(free_port()), "--latency-ms",
                                                                   str(args.latency_ms)], workdir / "judge.log")
    proxy = SwitchableProxy(int(lf_url.rsplit(":", 1)[1]))
    proxy.up()
    events: list[str] = []
    t0 = time.monotonic()
    fleet: Fleet | None = None

    def event(text: str) -> None:
        events.append(f"t+{time.monotonic() - t0:5.1f}s {text}")
        print(events[-1], flush=True)

    try:
        now = dt.datetime.now(dt.timezone.utc)
        observations = generate(args.traces, include_malformed=False, seed=41, end=now - dt.timedelta(minutes=5))
        admin = httpx.Client(timeout=60)
        for i in range(0, len(observations), 2000):
            admin.post(f"{lf_url}/_emulator/observations", json=observations[i:i + 2000]).raise_for_status()
        env = {"REDIS_URL": redis_url, "LANGFUSE_BASE_URL": f"http://127.0.0.1:{proxy.port}",
               "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY,
               "ANTHROPIC_API_KEY": JUDGE_KEY, "ANTHROPIC_BASE_URL": judge_url,
               "OPENAI_API_KEY": JUDGE_KEY, "OPENAI_BASE_URL": judge_url + "/v1",
               "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir), "TRACEJUDGE_SAMPLE_RATE": str(args.rate),
               "TRACEJUDGE_SETTLE_SECONDS": "0", "TRACEJUDGE_HEARTBEAT_TIMEOUT_SECONDS": "10",
               "TRACEJUDGE_METRICS_PORT": "0", "LANGFUSE_TIMEOUT": "10"}
        settings = Settings.from_env(env)
        client = redis.Redis.from_url(redis_url)
        expected = expected_pairs(observations, args.rate)
        sampler = Sampler(settings, load_rubrics(rubrics_dir), LangfuseTraceSource(build_langfuse_api(settings)),
                          build_broker(settings), client)
        report = sampler.run_pass(now - dt.timedelta(days=16), now)
        event(f"sampler enqueued {report.enqueued} jobs ({len(expected)} judgeable pairs by the contract)")

        admin.post(f"{lf_url}/_emulator/config", json={"fault_rate_500": 0.05, "fault_rate_429": 0.05,
                                                       "retry_after": 1}).raise_for_status()
        admin.post(f"{judge_url}/_emulator/config", json={"fault_rate_429": 0.05, "fault_rate_529": 0.05,
                                                          "retry_after": 1}).raise_for_status()
        event("faults on: Langfuse 5% 500 + 5% 429, judge 5% 429 + 5% 529")
        fleet = Fleet(env, workdir / "worker.log", processes=2, threads=8)
        outcomes = OutcomeLog(client)

        def done() -> int:
            try:
                s = outcomes.stats()
            except redis.ConnectionError:
                return -1
            return sum(s.get(k, 0) for k in ("scored", "unscored", "not_applicable", "retries_exhausted"))

        def wait_done(at_least: int, limit: float) -> None:
            deadline = time.monotonic() + limit
            while done() < at_least and time.monotonic() < deadline:
                time.sleep(0.2)

        fleet.start()
        event("fleet started: 2 processes x 8 threads")
        for i in (1, 2):
            wait_done(report.enqueued * i // 8, 120)
            fleet.kill(signal.SIGKILL)
            event(f"worker fleet SIGKILLed ({i} of 2) at {done()} outcomes")
            fleet.start()
        wait_done(report.enqueued * 3 // 8, 120)
        stop(redis_proc)
        event("redis-server stopped (AOF on)")
        time.sleep(2)
        redis_proc, _ = start_redis(workdir, redis_port, appendonly=True)
        event(f"redis-server restarted from its AOF at {done()} outcomes")
        wait_done(report.enqueued * 4 // 8, 120)
        proxy.down()
        event(f"Langfuse unreachable (connections refused) for {args.outage_seconds}s")
        time.sleep(args.outage_seconds)
        proxy.up()
        event(f"Langfuse reachable again at {done()} outcomes")
        wait_done(report.enqueued * 6 // 8, 180)
        took = fleet.kill(signal.SIGTERM)
        event(f"SIGTERM during work: fleet exited gracefully in {took:.1f}s at {done()} outcomes")
        fleet.start()

        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                if queue_depth(client).outstanding == 0 and done() >= report.enqueued:
                    break
            except redis.ConnectionError:
                pass
            time.sleep(0.5)
        fleet.kill(signal.SIGTERM)
        event("drained; fleet stopped")
        return audit(client, admin, lf_url, judge_url, expected, report.enqueued, events)
    finally:
        if fleet and fleet.proc and fleet.proc.poll() is None:
            fleet.kill(signal.SIGKILL)
        proxy.down()
        for proc in (judge_proc, lf_proc, redis_proc):
            stop(proc)


def audit(client, admin, lf_url, judge_url, expected, enqueued, events) -> int:
    scores = admin.get(f"{lf_url}/_emulator/scores").json()
    writes = admin.get(f"{lf_url}/_emulator/score-writes").json()
    pairs = [(s["traceId"], s["name"]) for s in scores]
    judged = set(pairs)
    duplicated = len(pairs) - len(judged)
    outcome_log = OutcomeLog(client)
    stats = outcome_log.stats()
    explained = {}
    entries = [json.loads(raw) for raw in client.lrange(UNSCORED_LOG, 0, -1)]
    entries += [dict(json.loads(raw), reason="dead letter: " + json.loads(raw)["reason"][:60])
                for raw in client.hgetall(EXHAUSTED).values()]
    for entry in entries:
        explained[(entry["trace_id"], entry["rubric"].split("@")[0])] = entry["reason"]
    unjudged = expected - judged
    unexplained = unjudged - set(explained)
    lf_faults = admin.get(f"{lf_url}/_emulator/stats").json()
    judge_faults = admin.get(f"{judge_url}/_emulator/stats").json()["counts"]
    reasons = Counter(explained.get(p, "?") for p in unjudged)
    print("\n== chaos audit ==")
    for line in events:
        print("  " + line)
    print(f"should have been judged (contract): {len(expected)}   jobs enqueued: {enqueued}")
    print(f"judged (a score in Langfuse):        {len(judged & expected)}")
    print(f"unscored / dead-lettered with reason: {len(unjudged) - len(unexplained)}  {dict(reasons)}")
    print(f"lost (no score, no reason):          {len(unexplained)}")
    print(f"duplicated scores:                   {duplicated}   (score writes: {sum(writes.values())} for "
          f"{len(writes)} ids — retried writes were upserts)")
    print(f"scores outside the contract's set:   {len(judged - expected)}")
    print(f"outcome counters: {dict(sorted(stats.items()))}")
    injected_lf = {k: v for k, v in lf_faults.items() if k.startswith("fault")}
    injected_judge = {k: v for k, v in judge_faults.items() if k.startswith("fault")}
    print(f"faults injected: Langfuse {injected_lf}; judge {injected_judge}")
    ok = not unexplained and not duplicated and not (judged - expected)
    print("RESULT:", "PASS — 0 lost, 0 duplicated, every unjudged trace explained" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
