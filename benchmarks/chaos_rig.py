"""The chaos benchmark's rig: a Redis it can restart, an alert receiver that counts deliveries,
a feeder of fresh traces, and the Procfile fleet under honcho with a view of its processes.

Every process started here is stopped by ``Rig.close()`` (process groups, also on Ctrl-C).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import redis

from emulators.seed import generate
from emulators.stack import child_env, start_redis, stop, stop_group

REPO = Path(__file__).resolve().parent.parent


class RedisCtl:
    """A redis-server (AOF on) on a fixed port that can go away and come back from its AOF."""

    def __init__(self, workdir: Path, port: int):
        self.workdir, self.port = workdir, port
        self.proc, self.url = start_redis(workdir, port, appendonly=True)

    def restart(self, down_seconds: float) -> None:
        """``SHUTDOWN`` (the AOF is fsynced), down for ``down_seconds``, started again."""
        try:
            redis.Redis.from_url(self.url).shutdown()
        except redis.RedisError:
            pass  # the connection drops as the server exits
        self.proc.wait(30)
        time.sleep(down_seconds)
        self.proc, _ = start_redis(self.workdir, self.port, appendonly=True)

    def stop_start(self, down_seconds: float) -> None:
        """The process stopped by a signal (``systemctl stop``), down, then started again."""
        stop(self.proc, timeout=30)
        time.sleep(down_seconds)
        self.proc, _ = start_redis(self.workdir, self.port, appendonly=True)

    def close(self) -> None:
        stop(self.proc)


class AlertReceiver:
    """The alert webhook: records every delivery it answered 2xx, by alert id."""

    def __init__(self):
        self.deliveries: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    alert = json.loads(body)
                except ValueError:
                    alert = {"id": "<not json>"}
                receiver.deliveries.append({"id": alert.get("id"), "kind": alert.get("kind"),
                                            "title": alert.get("title"), "at": time.time()})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def counts(self) -> Counter:
        return Counter(d["id"] for d in self.deliveries)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Feeder:
    """Fresh production traces arriving in the Langfuse emulator, ``per_second`` a second, each
    timestamped as it arrives (the scheduler's cursor follows them)."""

    def __init__(self, langfuse_url: str, per_second: float):
        self.url, self.per_second = langfuse_url, per_second
        self.observations: list[dict] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        tick, owed = 0, 0.0
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(1.0):
                owed += self.per_second
                n, owed = int(owed), owed - int(owed)
                if not n:
                    continue
                tick += 1
                batch = generate(n, days=1 / 86400, end=dt.datetime.now(dt.timezone.utc), seed=100_000 + tick,
                                 include_malformed=False)
                try:
                    client.post(f"{self.url}/_emulator/observations", json=batch).raise_for_status()
                    self.observations += batch
                except httpx.HTTPError:
                    self.errors += 1

    def stop(self) -> dt.datetime:
        """Stop feeding; returns the newest trace's time (the cursor must pass it)."""
        self._stop.set()
        self._thread.join(10)
        return dt.datetime.now(dt.timezone.utc)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


class Fleet:
    """``honcho start`` on the repo's Procfile (scheduler + worker), in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = child_env(env)
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "honcho", "-f", str(REPO / "Procfile"), "start"],
                                     cwd=REPO, env=self.env, stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> dict[str, list[int]]:
        """The live processes by role: scheduler, worker (dramatiq's main) and worker-child."""
        roles: dict[str, list[int]] = {"scheduler": [], "worker": [], "worker-child": []}
        if not self.running():
            return roles
        stack = [(p, None) for p in _children(self.proc.pid)]
        while stack:
            pid, parent_role = stack.pop()
            cmd = _cmdline(pid)
            role = None
            if cmd.split(" ", 1)[0] in ("/bin/sh", "sh", "/bin/bash", "bash"):
                pass  # honcho's shell around the command
            elif "scheduler" in cmd and "tracejudge" in cmd:
                role = "scheduler"
            elif "dramatiq" in cmd and "worker.fleet.boot" in cmd:
                role = "worker-child" if parent_role == "worker" else "worker"
            if role and _state(pid) not in ("Z", "gone"):
                roles[role].append(pid)
            stack += [(c, role or parent_role) for c in _children(pid)]
        return roles

    def wait_for(self, children: int, timeout: float = 90) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs = self.processes()
            if procs["scheduler"] and len(procs["worker-child"]) >= children:
                return True
            time.sleep(0.5)
        return False

    def kill_worker_child(self) -> int | None:
        children = self.processes()["worker-child"]
        if not children:
            return None
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def stop(self) -> None:
        stop_group(self.proc, timeout=90)


def worker_heartbeats(client: redis.Redis, within_ms: int = 15_000) -> int:
    """dramatiq brokers that touched the queue lately (each worker process polls about once a second)."""
    now_ms = int(time.time() * 1000)
    return client.zcount("dramatiq:__heartbeats__", now_ms - within_ms, "+inf")


def judge_counts(judge_url: str) -> Counter:
    return Counter(httpx.get(f"{judge_url}/_emulator/stats", timeout=10).json()["counts"])


def judge_paid_at(judge_url: str) -> list[float]:
    """When each call the judge answered 200 (billed) arrived (the key is checked on arrival)."""
    return httpx.get(f"{judge_url}/_emulator/stats", timeout=30).json()["paid_at"]


def langfuse_counts(langfuse_url: str) -> Counter:
    return Counter(httpx.get(f"{langfuse_url}/_emulator/stats", timeout=10).json())
