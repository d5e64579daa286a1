"""The benchmarks' local stack: redis-server and both emulators (benchmarks/fast_emulators.py) on free
ports, and real worker fleets beside them. Shared by benchmarks/continuous.py and benchmarks/cpu.py
(each imports it; neither imports the other's internals)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from emulators.stack import JUDGE_KEY, PUBLIC_KEY, SECRET_KEY, child_env, free_port, start_emulator, start_redis, \
    stop, stop_group

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


class Stack:
    """redis-server, the Langfuse emulator and a judge emulator (benchmarks/fast_emulators.py), on
    free ports; ``close()`` stops all (and every fleet started through ``fleet()``)."""

    def __init__(self, workdir: Path, *, judge_latency_ms: int, rubrics: tuple[str, ...], judge: str = "judge"):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.fleets: list[subprocess.Popen] = []
        try:
            rubrics_dir = workdir / "rubrics"
            for name in rubrics:
                shutil.copytree(REPO / "rubrics" / name, rubrics_dir / name,
                                ignore=shutil.ignore_patterns("examples.jsonl"))
            for shared in ("repair.j2", "json_answer.j2"):
                if (REPO / "rubrics" / shared).is_file():
                    shutil.copy(REPO / "rubrics" / shared, rubrics_dir / shared)
            redis_proc, self.redis_url = start_redis(workdir)
            self.procs.append(redis_proc)
            lf, self.langfuse_url = start_emulator("benchmarks.fast_emulators", [
                "langfuse", "--port", str(free_port()), "--public-key", PUBLIC_KEY, "--secret-key", SECRET_KEY],
                workdir / "langfuse.log")
            self.procs.append(lf)
            jd, self.judge_url = start_emulator("benchmarks.fast_emulators", [
                judge, "--port", str(free_port()), "--latency-ms", str(judge_latency_ms)], workdir / "judge.log")
            self.procs.append(jd)
        except BaseException:
            self.close()
            raise
        self.redis = redis.Redis.from_url(self.redis_url)
        self.admin = httpx.Client(timeout=120)
        self.env = {"REDIS_URL": self.redis_url, "LANGFUSE_BASE_URL": self.langfuse_url,
                    "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY, "LANGFUSE_SECRET_KEY": SECRET_KEY,
                    "ANTHROPIC_API_KEY": JUDGE_KEY, "ANTHROPIC_BASE_URL": self.judge_url,
                    "OPENAI_API_KEY": JUDGE_KEY, "OPENAI_BASE_URL": self.judge_url + "/v1",
                    "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir), "TRACEJUDGE_METRICS_PORT": "0"}

    def load(self, observations: list[dict]) -> None:
        for i in range(0, len(observations), 2000):
            self.admin.post(f"{self.langfuse_url}/_emulator/observations",
                            content=json.dumps(observations[i:i + 2000]),
                            headers={"Content-Type": "application/json"}).raise_for_status()

    def langfuse(self, view: str):
        return self.admin.get(f"{self.langfuse_url}/_emulator/{view}").json()

    def judge_counts(self) -> dict:
        return self.admin.get(f"{self.judge_url}/_emulator/stats").json()["counts"]

    def fleet(self, processes: int, threads: int, env: dict, log_name: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from worker.cli.main import main; main()", "worker", "--processes",
             str(processes), "--threads", str(threads)], env=child_env({**self.env, **env}),
            stdout=open(self.workdir / log_name, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.fleets.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.fleets:
            stop_group(proc, 60)
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        self.fleets.clear()
