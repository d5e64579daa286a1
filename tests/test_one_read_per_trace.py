"""Issue 12 item 2: a trace judged by several rubrics is read once, and scores are written in
batches where the server takes an array, each still verified and counted once."""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter

import pytest

from emulators.langfuse_api import LangfuseEmulator
from tests.helpers import copy_rubrics, PK, SK, drain, hand_built_runtime, installed, one_trace, sampler_for, whole_window
from worker.langfuse_io import shared_traces
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.score_batches import IDLE_AFTER_SECONDS, GroupCommit
from worker.langfuse_io.scores import ScoreWriter
from worker.langfuse_io.shared_traces import SharedTraces
from worker.langfuse_io.traces import Trace
from worker.errors import Unscored

THREE = ("helpfulness", "safety", "instruction_following")


@pytest.fixture
def three_rubrics(tmp_path):
    return copy_rubrics(tmp_path, *THREE)


def _trace_reads(requests: list[dict]) -> Counter:
    return Counter(r["query"]["traceId"][0] for r in requests
                   if r["path"] == "/api/public/v2/observations" and "traceId" in r["query"])


def test_three_rubrics_read_each_trace_once_and_write_scores_in_batches(
        settings, redis_client, langfuse_emu, three_rubrics):
    trace_ids = [f"{i:032x}" for i in range(1, 41)]
    for trace_id in trace_ids:
        langfuse_emu.load_observations(one_trace(trace_id, "Open Settings, then Security, then Reset."))
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=three_rubrics, sample_rate=1.0)
    with installed(rt):
        from worker.fleet.broker import build_broker
        import dramatiq

        broker = build_broker(rt.settings)
        dramatiq.set_broker(broker)
        try:
            before = len(langfuse_emu.requests())
            report = sampler_for(rt.settings, rt, broker).run_pass(*whole_window())
            assert report.enqueued == 3 * len(trace_ids)
            drain(broker, redis_client, threads=12, timeout=120)
        finally:
            broker.close()
    requests = langfuse_emu.requests()[before:]
    scores = [s for s in langfuse_emu.scores() if s["traceId"] in trace_ids]
    assert sorted(Counter((s["traceId"], s["name"]) for s in scores).values()) == [1] * 120
    assert rt.outcomes.stats()["scored"] == 120 and rt.outcomes.stats()["confirmed"] == 120
    reads = _trace_reads(requests)
    assert set(reads) == set(trace_ids) and max(reads.values()) == 1, reads  # one read per trace
    posts = [r for r in requests if r["method"] == "POST" and r["path"] == "/api/public/scores"]
    assert len(posts) < 120 / 2, len(posts)  # written in batches
    # every request but the score configs' (looked up or created once per rubric and process)
    steady = [r for r in requests if not r["path"].startswith("/api/public/score-configs")]
    assert len(steady) / len(trace_ids) <= 2.0, Counter((r["method"], r["path"]) for r in requests)


class _CountingReader:
    def __init__(self, fail: bool = False):
        self.calls: list[tuple] = []
        self.fail = fail
        self.generation = None

    def fetch(self, trace_id, names=None):
        self.calls.append((trace_id, tuple(names or ())))
        if self.fail:
            raise Unscored("trace_not_found", "gone")
        return Trace(trace_id, "chat", None, None, "q", "a", {}, [],
                     [{"name": n, "output": n} for n in names or ()], models=("m",))


def test_siblings_share_one_read_which_is_gone_once_the_last_one_took_it(redis_client):
    reader = _CountingReader()
    shared = SharedTraces(reader, redis_client)
    results = {}

    def job(i, names, others):
        results[i] = shared.fetch("t1", names, others)

    threads = [threading.Thread(target=job, args=(0, ("a",), [("b",), ()])),
               threading.Thread(target=job, args=(1, ("b",), [("a",), ()])),
               threading.Thread(target=job, args=(2, (), [("a",), ("b",)]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert reader.calls == [("t1", reader.calls[0][1])] and set(reader.calls[0][1]) == {"a", "b"}
    assert {r.observation("a")["output"] for r in results.values()} == {"a"}
    assert results[2].models == ("m",)
    assert not redis_client.exists(shared_traces.PREFIX + "t1")  # the read does not linger
    assert not redis_client.exists(shared_traces.PREFIX + "claim:t1")


def test_a_job_alone_or_needing_names_the_shared_read_lacks_reads_for_itself(redis_client):
    reader = _CountingReader()
    shared = SharedTraces(reader, redis_client)
    shared.fetch("t2", ("a",), [("a",)])  # read for {"a"}, one sibling to take it
    shared.fetch("t2", ("z",), [("a",)])  # the shared read lacks "z": read again
    shared.fetch("t3", ("a",))  # no siblings: a plain read, nothing shared
    assert reader.calls == [("t2", ("a",)), ("t2", ("z", "a")), ("t3", ("a",))]
    assert not redis_client.exists(shared_traces.PREFIX + "t3")


def test_a_failed_read_lets_the_siblings_read_for_themselves(redis_client):
    reader = _CountingReader(fail=True)
    shared = SharedTraces(reader, redis_client)
    for _ in range(2):
        with pytest.raises(Unscored):
            shared.fetch("t4", ("a",), [("a",)])
    assert len(reader.calls) == 2 and not redis_client.exists(shared_traces.PREFIX + "claim:t4")


def _body(i: int, **changes) -> dict:
    return {"id": f"00000000-0000-4000-8000-{i:012d}", "traceId": f"{i:032x}", "name": "helpfulness",
            "value": 1.0, "dataType": "NUMERIC", **changes}


def _write_concurrently(writer: ScoreWriter, bodies: list[dict]) -> dict[int, object]:
    outcomes: dict[int, object] = {}
    barrier = threading.Barrier(len(bodies))

    def write(i, body):
        barrier.wait()
        try:
            writer.write(body)
            outcomes[i] = "ok"
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[i] = exc

    threads = [threading.Thread(target=write, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def _posts(emu) -> list[dict]:
    return [r for r in emu.requests() if r["method"] == "POST" and r["path"] == "/api/public/scores"]


def test_a_batch_with_a_rejected_score_fails_only_that_score(settings, langfuse_emu):
    writer = ScoreWriter(build_langfuse_api(settings, limited=False), linger=0.2)
    bodies = [_body(i) for i in range(6)]
    bodies[3]["environment"] = "Not-Valid"  # the server rejects this one score (a 207)
    outcomes = _write_concurrently(writer, bodies)
    assert [i for i, o in outcomes.items() if o != "ok"] == [3]
    assert isinstance(outcomes[3], Unscored) and outcomes[3].reason == "score_rejected"
    assert "environment" in outcomes[3].detail
    assert {s["id"] for s in langfuse_emu.scores()} == {b["id"] for i, b in enumerate(bodies) if i != 3}
    assert writer.batches.batches < len(bodies)  # they went together first


def test_a_server_that_takes_one_object_gets_one_object_per_score(settings):
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, scores_body="object")
    emu.start()
    try:
        writer = ScoreWriter(build_langfuse_api(dataclasses.replace(settings, langfuse_base_url=emu.base_url),
                                                limited=False))
        outcomes = _write_concurrently(writer, [_body(i) for i in range(4)])
        assert set(outcomes.values()) == {"ok"} and writer.shape == "object"
        assert len(emu.scores()) == 4
        writer.write(_body(9))  # learnt: the next score goes as an object straight away
        assert isinstance(_posts(emu)[-1]["body"], dict) and len(emu.scores()) == 5
    finally:
        emu.stop()


@pytest.mark.slow  # real-time lingers and lulls
def test_the_first_batch_after_a_lull_lingers_longer_and_back_to_back_batches_do_not():
    sent: list[list[dict]] = []
    commit = GroupCommit(sent.append, linger=0.01, idle_linger=0.5)

    def wave(n: int, spread: float) -> None:
        """``n`` jobs finishing ``spread`` seconds apart, each submitting its score."""
        threads = []
        for i in range(n):
            threads.append(threading.Thread(target=commit.submit, args=({"id": i},)))
            threads[-1].start()
            time.sleep(spread)
        for t in threads:
            t.join(5)

    wave(4, 0.05)  # after a lull: the one long linger gathers the whole wave
    assert [len(b) for b in sent] == [4]
    wave(4, 0.05)  # right after a batch: short lingers, so the same wave goes out in pieces
    assert len(sent) > 2
    time.sleep(IDLE_AFTER_SECONDS + 0.1)
    wave(4, 0.05)  # a lull again
    assert len(sent[-1]) == 4


def test_a_batch_waiting_out_a_retry_after_does_not_hold_the_other_scores(settings):
    """A 429 on one batch: its job waits out the Retry-After in its own thread, while a score
    finished meanwhile goes out at once; then the first is sent again and accepted. (Retried
    inside the send, the 429 held every score of the process for its Retry-After.)"""
    from langfuse.api.core.api_error import ApiError

    writer = ScoreWriter(build_langfuse_api(settings, limited=False), linger=0.01)
    sent, done = [], {}
    started = time.monotonic()

    def post(bodies):
        sent.append([b["id"] for b in bodies])
        if len(sent) == 1:
            raise ApiError(status_code=429, headers={"retry-after": "1.5"}, body="slow down")

    writer._post_array = post

    def write(i):
        writer.write(_body(i))
        done[i] = time.monotonic() - started

    first = threading.Thread(target=write, args=(0,))
    first.start()
    time.sleep(0.4)  # the first batch (its 0.25 s linger after a lull) was refused: its job waits out 1.5 s
    second = threading.Thread(target=write, args=(1,))
    second.start()
    for t in (first, second):
        t.join(10)
    ids = [_body(i)["id"] for i in range(2)]
    assert sent == [[ids[0]], [ids[1]], [ids[0]]]
    assert done[1] < 1.0 and done[0] >= 1.75
