"""Score batches linger less while the process works through a backlog: every worker thread busy
and more messages waiting (worker/fleet/occupancy.py, worker/langfuse_io/score_batches.py)."""
from __future__ import annotations

import threading
import time

import dramatiq
from dramatiq.brokers.stub import StubBroker

from tests.helpers import hand_built_runtime, wait_until
from worker.fleet.broker import build_broker
from worker.fleet.occupancy import Occupancy, occupancy_of
from worker.langfuse_io.score_batches import GroupCommit
from worker.runtime import Runtime


def _two_scores_apart(commit: GroupCommit, gap: float) -> None:
    first = threading.Thread(target=commit.submit, args=({"id": 1},))
    first.start()
    time.sleep(gap)
    commit.submit({"id": 2})
    first.join(5)


def test_a_saturated_process_sends_its_batch_after_the_short_linger():
    sent: list[list[dict]] = []
    busy = [False]
    commit = GroupCommit(sent.append, linger=0.6, idle_linger=0.6, busy_linger=0.01, saturated=lambda: busy[0])
    commit.submit({"id": 0})  # the batch after a lull, out of the way
    _two_scores_apart(commit, 0.2)  # threads to spare: the 0.6 s linger gathers both
    assert [len(b) for b in sent[1:]] == [2]
    busy[0] = True
    _two_scores_apart(commit, 0.2)  # a backlog: the first goes alone after 10 ms
    assert [len(b) for b in sent[2:]] == [1, 1]


def test_the_busy_linger_never_exceeds_the_normal_one():
    sent: list[list[dict]] = []
    commit = GroupCommit(sent.append, linger=0.01, idle_linger=0.01, busy_linger=5.0, saturated=lambda: True)
    started = time.monotonic()
    commit.submit({"id": 0})
    commit.submit({"id": 1})
    assert time.monotonic() - started < 2 and len(sent) == 2


def test_occupancy_follows_a_real_workers_threads():
    broker = StubBroker()
    occupancy = Occupancy()
    broker.add_middleware(occupancy)
    release, running = threading.Event(), threading.Semaphore(0)

    @dramatiq.actor(broker=broker, queue_name="busy")
    def hold():
        running.release()
        release.wait(10)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        assert occupancy.threads == 2 and not occupancy.saturated()
        hold.send()
        assert running.acquire(timeout=5)
        assert not occupancy.saturated()  # one of two threads busy
        hold.send()
        assert running.acquire(timeout=5)
        assert not occupancy.saturated()  # both busy, nothing waiting: a wave, not a backlog
        hold.send()
        wait_until(occupancy.saturated, 5, "the third job to wait for a thread", interval=0.01)
        release.set()
        broker.join(hold.queue_name, timeout=5000)
        worker.join()
        wait_until(lambda: not occupancy.saturated(), 5, "the backlog to clear", interval=0.01)
    finally:
        release.set()
        worker.stop()


def test_a_message_skipped_before_it_was_counted_does_not_unbalance_the_count():
    occupancy = Occupancy()
    occupancy.before_worker_boot(None, type("W", (), {"worker_threads": 1, "work_queue": type("Q", (), {
        "qsize": staticmethod(lambda: 1)})()})())
    skipped = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    occupancy.after_skip_message(None, skipped)  # another middleware skipped it before ours counted it
    busy = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    occupancy.before_process_message(None, busy)
    assert occupancy.saturated()
    occupancy.after_process_message(None, busy, exception=RuntimeError("failed"))
    assert not occupancy.saturated()


def test_the_fleets_broker_counts_and_the_runtime_asks_it(settings, redis_client):
    broker = build_broker(settings)
    try:
        occupancy = occupancy_of(broker)  # one per broker; worker/fleet/boot.py hands its signal to the Runtime
        assert isinstance(occupancy, Occupancy) and occupancy in broker.middleware
        rt = Runtime(settings, redis_client=redis_client, saturated=occupancy.saturated)
        assert rt.scores.batches._saturated == occupancy.saturated
        assert not hand_built_runtime(settings, redis_client).scores.batches._saturated()  # no threads: never
        assert occupancy_of(StubBroker()).saturated() is False  # a broker without one: a fresh one, never saturated
    finally:
        broker.close()


def test_no_worker_booted_means_never_saturated():
    occupancy = Occupancy()  # a CLI command or the scheduler: no worker threads to fill
    occupancy.before_process_message(None, dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={},
                                                            options={}))
    assert not occupancy.saturated()
