"""``python -m tests.realfuse`` (``./dev langfuse-test``): see the package's docstring."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from emulators.judge_api import JudgeEmulator
from emulators.stack import free_port, start_redis, stop, stop_group
from tests.realfuse import fleet, progress, readback, report, server, slices, targets, traffic
from tests.realfuse.common import CLI, Failed, log
from tests.realfuse.proxy import CountingProxy
from worker.rubrics.rubric import load_rubrics


def run(args) -> int:
    started: list[bool] = []  # [True] once start.sh ran: stop.sh at the end
    procs: list = []
    redis_proc = judge = proxy = None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tracejudge-langfuse-test-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not Path(CLI).exists():
            raise Failed(f"{CLI} is missing: run ./dev once (it sets up .venv)")
        server.ensure_setup()
        base = server.start(lambda: started.append(True))
        t_up, run_start = time.monotonic(), dt.datetime.now(dt.timezone.utc)
        lf = readback.Langfuse(base)
        configs_before = lf.score_configs()
        queue_before = readback.queue_counts(lf)  # a shared server keeps earlier runs' items

        redis_proc, redis_url = start_redis(work, free_port())
        client = redis.Redis.from_url(redis_url)
        judge = JudgeEmulator(latency_ms=args.judge_latency_ms)
        judge_url = judge.start()
        proxy = CountingProxy(base)
        env = fleet.environment(proxy.start(), redis_url, judge_url)
        rubrics_dir = fleet.prepare_rubrics(work, env)
        env["TRACEJUDGE_RUBRICS_DIR"] = str(rubrics_dir)
        rubrics = load_rubrics(rubrics_dir)
        procs = fleet.start(env, work, client)
        log(f"tracejudge scheduler and worker (1 x 8) up: Redis {redis_url}, judge emulator {judge_url}, "
            f"counting proxy {env['LANGFUSE_BASE_URL']} -> {base}; logs in {work}")

        plan = traffic.build_plan(random.Random(args.seed if args.seed is not None else uuid.uuid4().int),
                                  dt.datetime.now(dt.timezone.utc))
        traffic.send_otlp(base, plan)
        (work / "plan.json").write_text(json.dumps({"traces": plan.traces, "sessions": plan.sessions}, indent=1))
        expected = progress.Expected(plan, rubrics)
        log(f"expected: {len(expected.items)} (subject, rubric) pairs over {len(rubrics)} rubrics; non_utf8 trace "
            f"{plan.case('non_utf8')}; waiting for the pipeline to settle...")
        waited = progress.wait_until_settled(client, expected, args.timeout, args.stall_seconds)
        log(f"   {waited['how']} ({waited['seconds']:.0f} s)")
        review_ran = fleet.run_review_tick(client)
        status = fleet.status(env)
        seconds_up = time.monotonic() - t_up

        outcomes = progress.read_outcomes(client, expected)
        found = readback.read_back(lf, plan, expected, outcomes, rubrics, run_start - dt.timedelta(minutes=10),
                                   configs_before, queue_before)
        report.figures(base, plan, expected, outcomes, found, status, proxy, waited, review_ran, seconds_up)
        problems = report.problems(expected, outcomes, found, status, review_ran, work)
        problems += slices.check(base, client, plan, run_start)
        problems += targets.check(lf, client, expected, outcomes, status, run_start - dt.timedelta(minutes=10))
        report.verdict(problems, work)
        return 1 if problems else 0
    except Failed as exc:
        log(f"langfuse-test: {exc}")
        return 2
    finally:
        for proc in reversed(procs):
            stop_group(proc, timeout=30)
        if proxy:
            proxy.stop()
        if judge:
            judge.stop()
        stop(redis_proc)
        if started and not args.keep_server:
            server.stop()
        elif started:
            log(f"left the Langfuse server running (--keep-server): {server.REALFUSE_DIR / 'stop.sh'} stops it")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="./dev langfuse-test",
                                     description="The pipeline against the real Langfuse server (../shared/realfuse).")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds the pipeline may take after the traces went in (default 300)")
    parser.add_argument("--stall-seconds", type=float, default=75,
                        help="stop waiting once nothing moved for this long (default 75)")
    parser.add_argument("--judge-latency-ms", type=int, default=100)
    parser.add_argument("--seed", type=int, help="random seed of the traces (default: a new one each run)")
    parser.add_argument("--workdir", help="where logs, plan.json and the rubric copy go (default: a new temp folder)")
    parser.add_argument("--keep-server", action="store_true", help="leave the Langfuse server running at the end")
    args = parser.parse_args(argv)

    def terminated(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted: what this run started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
