"""Issue 24, item 5: whether ``POST /api/public/scores`` takes an array or one object is learnt
once per deployment, in Redis, not once per process: a second worker process never sends the
array a 4.16 server refuses; the answer expires (a server upgrade is re-learnt) and then only
one process of the fleet asks again; the group commit still writes one object per request."""
from __future__ import annotations

import dataclasses

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from emulators.langfuse_api import LangfuseEmulator
from tests.helpers import PK, SK, free_port
from tests.test_one_read_per_trace import _body, _write_concurrently
from worker.langfuse_io import scores
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.scores import ScoreWriter, ShapeMemory, _refuses_arrays


@pytest.fixture
def object_only(settings):
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, scores_body="object")  # as the real 4.16
    emu.start()
    yield emu, dataclasses.replace(settings, langfuse_base_url=emu.base_url)
    emu.stop()


def _posts(emu, since: int = 0) -> list[dict]:
    return [r for r in emu.requests()[since:] if r["method"] == "POST" and r["path"] == "/api/public/scores"]


def _arrays(emu, since: int = 0) -> list[dict]:
    return [r for r in _posts(emu, since) if isinstance(r["body"], list)]


def _process(settings, redis_client, **kw) -> ScoreWriter:
    """A worker process's writer: its own API client, the fleet's Redis."""
    return ScoreWriter(build_langfuse_api(settings, limited=False), redis_client=redis_client, linger=0.05, **kw)


def test_the_second_process_never_sends_an_array_the_first_one_saw_refused(object_only, redis_client):
    emu, settings = object_only
    first = _process(settings, redis_client)
    outcomes = _write_concurrently(first, [_body(i) for i in range(6)])
    assert set(outcomes.values()) == {"ok"} and first.shape == "object"
    # one refused array (the batch), learnt by its sender: its six jobs then send objects, not
    # six arrays of one that the server refuses again
    assert len(_arrays(emu)) == 1 and len(_posts(emu)) == 1 + 6
    key = scores.SHAPE_KEY + emu.base_url
    assert redis_client.get(key) == b"object"
    assert 0 < redis_client.ttl(key) <= scores.SHAPE_TTL_SECONDS

    mark = len(emu.requests())
    second = _process(settings, redis_client)  # another process, started later
    assert second.shape == "object"  # read before its first write
    outcomes = _write_concurrently(second, [_body(i) for i in range(10, 18)])
    assert set(outcomes.values()) == {"ok"}
    assert _arrays(emu, mark) == [] and len(_posts(emu, mark)) == 8  # one object per score, never an array
    assert len(emu.scores()) == 14 and emu.violations() == []


def test_a_process_already_running_adopts_the_fleets_answer_at_its_next_read(object_only, redis_client):
    emu, settings = object_only
    running = _process(settings, redis_client)  # started before anyone learnt anything
    assert running.shape == "array"
    _write_concurrently(_process(settings, redis_client), [_body(1), _body(2)])
    running.shapes._next_read = float("-inf")  # SHAPE_REFRESH_SECONDS later
    mark = len(emu.requests())
    running.write(_body(3))
    assert _arrays(emu, mark) == [] and len(_posts(emu, mark)) == 1


def test_an_expired_answer_is_asked_again_by_one_process_only(settings, redis_client, monkeypatch):
    """After the TTL one process probes arrays: on a 4.16 server the probe costs one refused
    request for the fleet and "object" is stored again; after an upgrade to a server that takes
    arrays, the probe stores "array" and the other processes batch again."""
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, scores_body="object")
    emu.start()
    try:
        there = dataclasses.replace(settings, langfuse_base_url=emu.base_url)
        fleet = [_process(there, redis_client) for _ in range(3)]
        fleet[0].write(_body(0))
        for w in fleet:
            w.shapes._next_read = float("-inf")
            w.write(_body(1))
        assert [w.shape for w in fleet] == ["object"] * 3 and len(_arrays(emu)) == 1
        key = scores.SHAPE_KEY + emu.base_url

        redis_client.delete(key)  # the day is over: the answer expired
        mark = len(emu.requests())
        for w in fleet:
            w.shapes._next_read = float("-inf")
            w.write(_body(2))
        assert len(_arrays(emu, mark)) == 1  # one probe for the fleet, refused
        assert redis_client.get(key) == b"object" and [w.shape for w in fleet] == ["object"] * 3

        emu.scores_body = "both"  # the server was upgraded: it takes arrays now
        redis_client.delete(key, key + ":probe")
        for w in fleet:
            w.shapes._next_read = float("-inf")
            w.write(_body(3))
        assert redis_client.get(key) == b"array"  # the prober's array was accepted
        for w in fleet:
            w.shapes._next_read = float("-inf")
        mark = len(emu.requests())
        outcomes = _write_concurrently(fleet[1], [_body(i) for i in range(20, 25)])
        assert set(outcomes.values()) == {"ok"} and fleet[1].shape == "array"
        assert len(_posts(emu, mark)) == 1 and len(_arrays(emu, mark)) == 1  # batched again
    finally:
        emu.stop()


def test_redis_trouble_never_fails_a_write(object_only):
    emu, settings = object_only
    gone = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))  # (redis-py's default retries take 4 s a call)
    writer = _process(settings, gone)
    writer.write(_body(1))  # learnt (not stored), written
    writer.write(_body(2))
    assert writer.shape == "object" and len(emu.scores()) == 2


def test_the_real_servers_array_refusal_is_told_from_one_bad_score():
    real = {"message": "Invalid request data", "error": [
        {"expected": "object", "code": "invalid_type", "path": [],
         "message": "Invalid input: expected object, received array"}]}
    assert _refuses_arrays(real)
    assert _refuses_arrays({"message": "Expected object, received array"})  # in words
    bad_metadata = {"message": "Invalid request data", "error": [
        {"expected": "object", "code": "invalid_type", "path": [0, "metadata"],
         "message": "Invalid input: expected object, received array"}]}
    assert not _refuses_arrays(bad_metadata)
    assert not _refuses_arrays({"message": "value: expected number, received string"})


def test_without_redis_the_answer_is_the_processes_own():
    memory = ShapeMemory(None)
    assert memory.read() == "array"
    memory.learnt("object")
    assert memory.read() == "object"


def test_against_the_416_mode_too_the_fleet_sends_one_refused_array_in_all(settings, redis_client):
    """The emulator as harsh as the real 4.16 (its 400 body, zod's issue at the body's root)."""
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, release="4.16")
    emu.start()
    try:
        there = dataclasses.replace(settings, langfuse_base_url=emu.base_url)
        for process in range(3):
            outcomes = _write_concurrently(_process(there, redis_client),
                                           [_body(10 * process + i) for i in range(4)])
            assert set(outcomes.values()) == {"ok"}
        assert len(_arrays(emu)) == 1 and len(_posts(emu)) == 1 + 12
        assert emu.drain_scores() and len(emu.scores()) == 12
    finally:
        emu.stop()
