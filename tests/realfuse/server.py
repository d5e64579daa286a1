"""The real Langfuse server of ``../shared/realfuse``: setup.sh when it is not set up (or waiting
for one already running), start.sh unless the server already answers, stop.sh at the end."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.realfuse.common import PUBLIC_KEY, REPO, SECRET_KEY, Failed, log

# The defaults of realfuse's common.sh, overridable through the same variables.
REALFUSE_DIR = Path(os.environ.get("TRACEJUDGE_REALFUSE_DIR") or REPO.parent / "shared" / "realfuse")
REALFUSE_HOME = Path(os.environ.get("REALFUSE_HOME") or Path(os.environ.get("TMPDIR") or "/tmp") / "realfuse")
LANGFUSE_SRC = Path(os.environ.get("LANGFUSE_SRC") or REALFUSE_HOME / "src")
REALFUSE_CACHE = Path(os.environ.get("REALFUSE_CACHE") or REALFUSE_HOME / "cache")
REALFUSE_DATA = Path(os.environ.get("REALFUSE_DATA") or REALFUSE_HOME / "data")
PORT = int(os.environ.get("LANGFUSE_PORT") or 3300)


def not_set_up() -> list[str]:
    """What setup.sh would still have to make (empty: set up)."""
    needed = {
        "the Langfuse source": LANGFUSE_SRC / "package.json",
        "the web build": LANGFUSE_SRC / "web" / ".next" / "standalone" / "web" / "server.js",
        "the worker build": LANGFUSE_SRC / "worker" / "dist" / "index.js",
        "the python venv (chDB, moto)": REALFUSE_CACHE / "venv" / "bin" / "moto_server",
        "the Postgres cluster": REALFUSE_DATA / "pg" / "PG_VERSION",
        "the chDB database": REALFUSE_DATA / "chdb",
    }
    return [what for what, path in needed.items() if not path.exists()]


def setup_running() -> int | None:
    """The pid of a realfuse setup.sh running now, if any (two must not build at once)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"realfuse/setup.sh") for part in cmd[:3]):
            return int(proc.name)
    return None


def ensure_setup() -> None:
    pid = setup_running()
    if pid:
        log(f"a realfuse setup.sh (pid {pid}) is running; waiting for it (about 12 minutes from nothing)...")
        while setup_running():
            time.sleep(5)
    missing = not_set_up()
    if not missing:
        return
    log(f"realfuse is not set up ({', '.join(missing)} missing): running {REALFUSE_DIR / 'setup.sh'} "
        "(about 12 minutes from nothing, 7 GB of disk)")
    proc = subprocess.run(["bash", str(REALFUSE_DIR / "setup.sh")])
    if proc.returncode == 2:
        raise Failed("realfuse setup.sh exited 2: the Langfuse source is missing (its message above says how to "
                     "fetch it: fetch github:langfuse/langfuse, then LANGFUSE_GIT_DIR=<git dir> ./dev langfuse-test)")
    if proc.returncode != 0:
        raise Failed(f"realfuse setup.sh failed (exit {proc.returncode}); see its output above")
    still = not_set_up()
    if still:
        raise Failed(f"realfuse setup.sh finished but {', '.join(still)} is still missing")


def answers(base: str) -> bool:
    try:
        health = httpx.get(base + "/api/public/health", timeout=5)
        keys = httpx.get(base + "/api/public/projects", auth=(PUBLIC_KEY, SECRET_KEY), timeout=10)
    except httpx.HTTPError:
        return False
    return health.status_code == 200 and keys.status_code == 200


def start(on_start) -> str:
    """The server's base URL. ``on_start()`` is called before start.sh runs: whatever it starts,
    stop.sh stops at the end, even when start.sh fails half-way."""
    base = f"http://127.0.0.1:{PORT}"
    if answers(base):
        log(f"Langfuse already answers at {base}: using it (and leaving it running)")
        return base
    on_start()
    for attempt in (1, 2):
        log("starting the real Langfuse server (start.sh: 20-50 s)...")
        t0 = time.monotonic()
        proc = subprocess.run(["bash", str(REALFUSE_DIR / "start.sh")], capture_output=True, text=True)
        if proc.returncode == 0:
            break
        sys.stdout.write(proc.stdout[-2000:])
        sys.stderr.write(proc.stderr[-2000:])
        if attempt == 2:
            raise Failed(f"realfuse start.sh failed twice (exit {proc.returncode})")
        # Seen once here: Langfuse's worker logged "Listening" on its fixed port 53030 (inside
        # Linux's ephemeral port range) but held no listening socket. Stop everything, start again.
        log(f"realfuse start.sh failed (exit {proc.returncode}); stopping what it started and trying once more")
        stop()
    found = re.search(r"LANGFUSE_BASE_URL=(\S+)", proc.stdout)
    version = re.search(r"Langfuse (\S+) is up \(v4 write mode: (\S+)\)", proc.stdout)
    base = found.group(1) if found else base
    log(f"   Langfuse {version.group(1) if version else '?'} up at {base} in {time.monotonic() - t0:.0f} s"
        + (f" (write mode {version.group(2)})" if version else ""))
    return base


def stop() -> None:
    log("stopping the real Langfuse server (stop.sh: about 40 s)...")
    subprocess.run(["bash", str(REALFUSE_DIR / "stop.sh")], stdout=subprocess.DEVNULL)
