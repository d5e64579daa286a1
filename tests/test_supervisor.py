"""`tracejudge worker` keeps its fleet running when one of its processes dies (found by the
chaos benchmark under honcho: dramatiq exits when a worker process is SIGKILLed, and honcho
then stops the scheduler too)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import start_worker_command, make_env, one_trace, wait_until
from worker.fleet.supervisor import supervise
from worker.jobs import judge_message


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow  # a worker fleet, killed and restarted
def test_a_killed_worker_process_brings_the_fleet_back_and_the_command_stays_up(
        langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics, broker, runtime, tmp_path):
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_METRICS_PORT=0,
                   TRACEJUDGE_HEARTBEAT_TIMEOUT_SECONDS=5)
    log = tmp_path / "worker.log"
    proc = start_worker_command(env, log, processes=2, threads=2)
    try:
        wait_until(lambda: len(_children(proc.pid)) == 1 and len(_children(_children(proc.pid)[0])) >= 2, 60,
                   "dramatiq and its two worker processes", proc, log)
        dramatiq_main = _children(proc.pid)[0]
        os.kill(_children(dramatiq_main)[0], signal.SIGKILL)  # an OOM kill of one worker process
        wait_until(lambda: _children(proc.pid) and _children(proc.pid)[0] != dramatiq_main, 90,
                   "a new dramatiq fleet", proc, log)
        trace_id = "d" * 32
        langfuse_emu.load_observations(one_trace(trace_id, "Reset it under Settings. [[quality:0.8]]"))
        broker.enqueue(judge_message(trace_id, "helpfulness@v1"))
        wait_until(lambda: [s["traceId"] for s in langfuse_emu.scores()] == [trace_id], 90,
                   "the restarted fleet to judge", proc, log)
        os.killpg(proc.pid, signal.SIGTERM)  # what honcho does to stop the Procfile's worker
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "exited without being asked to" in log.read_text()


def test_a_fleet_that_dies_right_after_each_start_is_given_up(tmp_path):
    code = supervise([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ),
                     delays=(0.01,), quick_seconds=5, max_quick_failures=3)
    assert code == 3


@pytest.mark.slow  # a supervisor subprocess and its fleet
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_reaches_the_fleet_and_ends_the_command(tmp_path, sig):
    marker = tmp_path / "stopped"
    script = (f"import signal, sys, time\n"
              f"signal.signal(signal.{sig.name}, lambda *a: (open({str(marker)!r}, 'w').write('x'), sys.exit(0)))\n"
              f"time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", f"""
import sys
from worker.fleet.supervisor import supervise
sys.exit(supervise([sys.executable, "-c", {script!r}], dict(__import__("os").environ)))
"""], cwd=Path(__file__).resolve().parent.parent)
    time.sleep(2.0)  # both up, the child's handler installed
    proc.send_signal(sig)  # to the supervisor alone: it passes the signal on
    assert proc.wait(30) == 0 and marker.exists()
