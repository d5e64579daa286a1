"""A Redis restart loses no job: clients ride it out, and a retry that cannot be scheduled is
dead-lettered instead of acked away (dramatiq's Retries acks the original either way)."""
from __future__ import annotations

import threading
import time

import dramatiq
import pytest
import redis
from dramatiq.message import Message
from dramatiq.middleware import Retries

from emulators.stack import start_redis, stop
from tests.helpers import free_port
from worker.fleet.broker import build_broker
from worker.fleet.durable_retries import DurableRetries, use_durable_retries
from worker.jobs import JUDGE_ACTOR
from worker.redis_client import connect


@pytest.mark.slow  # restarts redis-server after 1.5 s of real time
def test_a_client_rides_out_a_redis_restart(tmp_path):
    port = free_port()
    proc, url = start_redis(tmp_path, port, appendonly=True)
    client = connect(url)
    client.set("kept", "1")
    stop(proc)
    restarted = []

    def restart_later():
        time.sleep(1.5)
        restarted.append(start_redis(tmp_path, port, appendonly=True)[0])

    thread = threading.Thread(target=restart_later)
    thread.start()
    try:
        assert client.get("kept") == b"1"  # blocked through the outage, then answered from the AOF
    finally:
        thread.join()
        for p in restarted:
            stop(p)


class _UnreachableBroker:
    """The part of a broker Retries uses, with Redis gone: enqueue raises a connection error."""

    def __init__(self, actor):
        self.actor = actor
        self.enqueued = []

    def get_actor(self, name):
        return self.actor

    def enqueue(self, message, *, delay=None):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_a_retry_that_cannot_be_enqueued_fails_the_job_into_the_dead_letters(settings):
    broker = build_broker(settings)
    actor = broker.get_actor(JUDGE_ACTOR)
    message = dramatiq.MessageProxy(Message(queue_name="judge", actor_name=JUDGE_ACTOR, args=("t1", "helpfulness@v1"),
                                            kwargs={}, options={}))
    try:
        raise RuntimeError("judge timed out")
    except RuntimeError as exc:
        DurableRetries(max_retries=8).after_process_message(_UnreachableBroker(actor), message, exception=exc)
    assert message.failed  # nacked into the dead-letter queue, not acked away
    assert "Redis unreachable" in message.options["traceback"]

    plain = dramatiq.MessageProxy(Message(queue_name="judge", actor_name=JUDGE_ACTOR, args=("t2", "helpfulness@v1"),
                                          kwargs={}, options={}))
    try:
        raise RuntimeError("judge timed out")
    except RuntimeError as exc:
        try:
            Retries(max_retries=8).after_process_message(_UnreachableBroker(actor), plain, exception=exc)
        except redis.ConnectionError:
            pass
    assert not plain.failed  # what dramatiq alone does: the job would be acked, i.e. lost


def test_the_broker_uses_durable_retries_with_dramatiq_defaults(settings):
    broker = build_broker(settings)
    kinds = [type(m) for m in broker.middleware]
    assert DurableRetries in kinds and Retries not in kinds
    try:
        use_durable_retries(broker)
    except RuntimeError as exc:
        assert "no Retries middleware" in str(exc)
    else:
        raise AssertionError("replacing twice must say there is nothing left to replace")


def test_a_process_may_hold_more_redis_connections_than_redis_py_allows_by_default(redis_url):
    """redis-py 8 caps a pool at 100 connections and raises past it; a worker runs more threads."""
    client = connect(redis_url)
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            client.blpop("tracejudge:test:nothing", timeout=1)  # holds its connection for a second
        except BaseException as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
