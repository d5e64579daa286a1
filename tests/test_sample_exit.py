"""Issue 24, finding 6: ``tracejudge sample --once`` exited 1 right after printing its summary
line, under load. Once the pass has done its work (its jobs enqueued, its summary in Redis for
``status``), the command exits 0, whatever happens to the one line it still has to print: a
reader too slow to take it (the write blocks) and a stop signal meanwhile (Ctrl-C, a harness's
timeout), or a reader that went away (EPIPE). Run as a real process against the emulators, with
the interpreter stopping while the summary is still in flight."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from emulators.stack import child_env
from samplers.sampler import LAST_PASS_KEY
from tests.helpers import REPO, make_env, one_trace, utc

pytestmark = pytest.mark.slow  # each test runs `tracejudge sample` as a process and signals it, 3-7 s each

TRACES = [f"{i:032x}" for i in range(1, 6)]


@pytest.fixture
def cli(langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics):
    for trace_id in TRACES:
        langfuse_emu.load_observations(one_trace(trace_id, "Open Settings, then Security, then Reset."))
    env = child_env(make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_SAMPLE_RATE="1.0"))
    args = [sys.executable, "-m", "worker.cli.main", "sample", "--once",
            "--since", utc(days=1).isoformat(), "--until", utc(seconds=0).isoformat()]

    def start(stdout) -> subprocess.Popen:
        # SIGINT back to its default in the child: a harness started in the background (`cmd &`
        # in a non-interactive shell) ignores SIGINT, and an ignored SIGINT is inherited.
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    return start


def _full_pipe() -> tuple[int, int, int]:
    """A pipe whose buffer is already full (a reader under load that has not caught up): the
    child's summary write blocks. Returns (read end, write end, bytes already in it)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    filled = 0
    try:
        while True:
            filled += os.write(w, b"." * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w, filled


def _pass_done(redis_client, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not redis_client.exists(LAST_PASS_KEY):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the pass did not finish"
        time.sleep(0.05)
    time.sleep(0.5)  # the summary write is next, and blocks on the full pipe


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_the_summary_waits_for_a_slow_reader_exits_0(cli, redis_client, stop):
    r, w, filled = _full_pipe()
    proc = cli(w)
    os.close(w)
    _pass_done(redis_client, proc)
    assert proc.poll() is None  # blocked writing its summary
    proc.send_signal(stop)  # e.g. Ctrl-C, or a harness's timeout, while the pipe is still full
    try:
        code = proc.wait(30)  # with the pipe still full: a line kept for the exit would block it here
    finally:
        proc.kill()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(b"".join(iter(lambda: os.read(r, 65536), b""))))
    reader.start()  # the reader catches up, only now: had it read first, the write could finish
    reader.join(10)
    os.close(r)
    err = proc.stderr.read().decode()
    assert out[0] == b"." * filled  # the line is dropped (it was printed in full at exit, then exit 1)
    assert code == 0, err  # was 1 ("Aborted!") on SIGINT, -15 on SIGTERM: after the work was done
    assert "Aborted" not in err and "Traceback" not in err
    assert redis_client.llen("dramatiq:judge") == len(TRACES) * 2  # the work: every job is enqueued


def test_a_reader_that_went_away_does_not_fail_a_finished_pass(cli, redis_client):
    r, w = os.pipe()
    os.close(r)  # nobody reads stdout any more (EPIPE on the summary)
    proc = cli(w)
    os.close(w)
    code = proc.wait(60)
    err = proc.stderr.read().decode()
    assert code == 0, err  # was 1: click turns EPIPE into exit status 1
    assert "Traceback" not in err and "Exception ignored" not in err
    assert b"scanned 5, excluded 0, selected 10, enqueued 10" in redis_client.hget(LAST_PASS_KEY, "line")  # in status
    assert redis_client.llen("dramatiq:judge") == len(TRACES) * 2


def test_an_interrupt_before_the_work_is_done_still_fails(cli, langfuse_emu, redis_client):
    langfuse_emu.configure(latency_ms=3000)  # the listing is slow: the pass is in flight
    proc = cli(subprocess.PIPE)
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"scanned" not in out
    assert not redis_client.exists(LAST_PASS_KEY)
