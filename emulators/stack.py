"""The local stack: a real redis-server and the Langfuse and judge emulators, as processes.

Used by ``tracejudge demo``, ``tracejudge stack``, the tests and the benchmarks.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from worker.errors import ConfigError

PUBLIC_KEY = "pk-lf-local-demo"
SECRET_KEY = "sk-lf-local-demo"
JUDGE_KEY = "local-emulator-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path, port: int | None = None, *, appendonly: bool = False) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigError("redis-server not found: install it (sudo apt-get install redis-server); ./dev does this")
    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--appendonly", "yes" if appendonly else "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise ConfigError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)


def start_emulator(module: str, args: list[str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start ``python -m module`` and wait for its ``ready <url>`` line."""
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=log,
                            text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready "):
            return proc, line.split()[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise ConfigError(f"{module} did not start; see {log_path}")


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_group(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and all its children (a worker
    fleet, honcho), then SIGKILL the group if it has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class LocalStack:
    def __init__(self, workdir: Path | None = None, *, judge_latency_ms: int = 200,
                 langfuse_args: tuple[str, ...] = (), judge_args: tuple[str, ...] = (),
                 langfuse_module: tuple[str, ...] = ("emulators.langfuse_api",)):
        """``langfuse_module``: the module (and its leading arguments) that serves Langfuse, e.g.
        ("benchmarks.fast_emulators", "langfuse"), the indexed emulator for benchmark-sized stores."""
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tracejudge-stack-"))
        self.judge_latency_ms = judge_latency_ms
        self.langfuse_args = list(langfuse_args)
        self.langfuse_module = list(langfuse_module)
        self.judge_args = list(judge_args)
        self.procs: list[subprocess.Popen] = []
        self.redis_url = self.langfuse_url = self.judge_url = ""

    def start(self) -> "LocalStack":
        try:
            redis_proc, self.redis_url = start_redis(self.workdir)
            self.procs.append(redis_proc)
            lf, self.langfuse_url = start_emulator(
                self.langfuse_module[0],
                [*self.langfuse_module[1:], "--port", str(free_port()), "--public-key", PUBLIC_KEY,
                 "--secret-key", SECRET_KEY, *self.langfuse_args], self.workdir / "langfuse-emulator.log")
            self.procs.append(lf)
            judge, self.judge_url = start_emulator(
                "emulators.judge_api",
                ["--port", str(free_port()), "--latency-ms", str(self.judge_latency_ms), *self.judge_args],
                self.workdir / "judge-emulator.log")
            self.procs.append(judge)
        except BaseException:
            self.stop()
            raise
        return self

    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "LANGFUSE_BASE_URL": self.langfuse_url,
            "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
            "LANGFUSE_SECRET_KEY": SECRET_KEY,
            "ANTHROPIC_API_KEY": JUDGE_KEY,
            "ANTHROPIC_BASE_URL": self.judge_url,
            "OPENAI_API_KEY": JUDGE_KEY,
            "OPENAI_BASE_URL": self.judge_url + "/v1",
        }

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child process: ours, plus ``extra``, with the repo importable."""
    env = dict(os.environ)
    env.update(extra)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
