"""``tracejudge worker`` keeps its dramatiq fleet running.

dramatiq's main process stops every worker process, and exits, as soon as one of them dies (an
OOM kill, a segfault in a native library): it never starts a replacement. Under honcho (the
Procfile) that exit stops every other process of the host, the scheduler included. So the
worker command supervises: it runs dramatiq as its child (in its process group, so honcho's
group signal reaches both; dramatiq's worker processes take a repeated SIGTERM as the same
stop, worker/fleet/boot.py), passes SIGTERM/SIGINT on, and starts dramatiq again (after a short back-off) when it exits
without having been asked to. A fleet that keeps dying right after its start is a
configuration problem, not a crash: after ``MAX_QUICK_FAILURES`` such exits in a row it gives
up with dramatiq's exit code.

A job in flight in the killed process is not lost: its message was not acked, so dramatiq's
Redis broker hands it to another worker once the process's heartbeat lapses; its verdict, if it
was judged already, is kept (worker/judging/finish.py) and not paid for again.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("tracejudge.supervisor")
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # by how many quick failures came before
QUICK_FAILURE_SECONDS = 15.0  # an exit sooner than this after a start counts as a quick failure
MAX_QUICK_FAILURES = 5


def supervise(args: Sequence[str], env: dict[str, str], *, delays: Sequence[float] = RESTART_DELAYS,
              quick_seconds: float = QUICK_FAILURE_SECONDS, max_quick_failures: int = MAX_QUICK_FAILURES) -> int:
    """Run ``args`` until a stop signal; returns the exit code to exit with."""
    stop = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if child and child[0].poll() is None:
            child[0].send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    quick = 0
    try:
        while True:
            started = time.monotonic()
            child[:] = [subprocess.Popen(list(args), env=env)]
            code = child[0].wait()
            if stop.is_set():
                # Stopped as asked, whatever dramatiq's code: a worker process still starting when the
                # stop came (before boot.py takes a repeated SIGTERM as one stop) exits with 1, and
                # has no job in flight to lose.
                if code:
                    log.info("the worker fleet stopped", extra={"exit_code": code})
                return 0
            quick = quick + 1 if time.monotonic() - started < quick_seconds else 0
            if quick >= max_quick_failures:
                log.error("the worker fleet keeps exiting right after it starts; giving up",
                          extra={"exit_code": code, "failures": quick})
                return code or 1
            delay = delays[min(quick, len(delays) - 1)]
            log.error("the worker fleet exited without being asked to (a worker process died); starting it "
                      "again", extra={"exit_code": code, "restart_in_s": delay})
            if stop.wait(delay):
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
