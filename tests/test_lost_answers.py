"""Exactly once under lost answers, for every review-loop write that is not an upsert by id.

A lost answer: Langfuse stores the write, then the reply is a 500 (or never comes), so the
client cannot tell it from a write that failed. The emulator plays it as the real 4.16 does
(``configure(lost_answer_next=[...])``: stored, then answered 500), and is as harsh as the real
server where it matters here: the same trace posted twice is a second queue item, a second queue
of a name is a 400 "A queue with this name already exists.", a second score config of a name is a
200 and a second config. Real Redis, the langfuse SDK over HTTP."""
from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

import httpx
import pytest

from emulators import langfuse_review
from tests.helpers import PK, REPO, SK, hand_built_runtime, one_trace
from worker.langfuse_io.client import build_langfuse_api, raw_request
from worker.langfuse_io.score_configs import ScoreConfigs
from worker.langfuse_io.scores import score_id_for
from worker.review import datasets
from worker.review.queue import SYNCED, QUEUE_ID, QueueWriter, ensure_queue
from worker.review.tick import review_tick
from worker.rubrics.rubric import SHARED_PROMPTS

ITEMS = "POST annotation-queues/items"
REVIEW = """review:
  calibration_share: 1.0
  boundary: false
  dataset:
    below: 3
    user_feedback: {name: user_feedback, below: 0}
"""


@pytest.fixture(autouse=True)
def real_release(langfuse_emu):
    """Every test here against the emulator answering as the real 4.16 does (events_only reads,
    config checks after the 200, arrays refused): emulators/langfuse_release.py."""
    langfuse_emu.set_modes(release="4.16")








def review_state(langfuse_emu) -> dict:
    return httpx.get(langfuse_emu.base_url + "/_emulator/review").json()


def queued(langfuse_emu) -> list[str]:
    [queue] = review_state(langfuse_emu)["queues"]
    return sorted(i["objectId"] for i in queue["items"])


def requests_to(langfuse_emu, method: str, suffix: str, since: int = 0) -> list[dict]:
    return [r for r in langfuse_emu.requests()[since:] if r["method"] == method and r["path"].endswith(suffix)]


def reviewed_runtime(settings, redis_client, tmp_path, applies_to: str = "{}"):
    """A runtime whose helpfulness@v1 has a review section (every judged trace to the queue)."""
    root = tmp_path / "rubrics"
    shutil.copytree(REPO / "rubrics" / "helpfulness", root / "helpfulness")
    for shared in SHARED_PROMPTS:
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    meta = root / "helpfulness" / "v1" / "rubric.yaml"
    text = meta.read_text()
    assert "applies_to: {}" in text
    meta.write_text(text.replace("applies_to: {}", f"applies_to: {applies_to}") + REVIEW)
    return hand_built_runtime(dataclasses.replace(settings, sample_rate=1.0), redis_client, rubrics_dir=root)


def judged(rt, langfuse_emu, trace_id: str, value: int) -> None:
    """Our judge's score of a trace, as the worker writes it (deterministic id, version metadata)."""
    rubric = rt.rubrics["helpfulness@v1"]
    raw_request(build_langfuse_api(rt.settings), "POST", "api/public/scores", json={
        "id": score_id_for(trace_id, rubric.name, rubric.version), "traceId": trace_id, "name": "helpfulness",
        "value": value, "dataType": "NUMERIC", "configId": rt.score_configs.config_id(rubric),
        "metadata": {"rubric_version": rubric.version}})
    assert langfuse_emu.drain_scores()  # the server's config checks run after its 200


# -- the emulator answers as the real 4.16 ---------------------------------------------------------

def test_the_emulator_stores_a_write_whose_answer_it_loses_and_is_as_harsh_as_the_real_server(api, langfuse_emu):
    config = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    twin = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    assert twin != config and len(langfuse_emu.store.configs) == 2  # no uniqueness on config names

    langfuse_emu.configure(lost_answer_next=["POST annotation-queues"])
    auth = (PK, SK)
    lost = httpx.post(langfuse_emu.base_url + "/api/public/annotation-queues", auth=auth,
                      json={"name": "q", "scoreConfigIds": [config]})
    assert lost.status_code == 500
    [queue] = review_state(langfuse_emu)["queues"]  # stored all the same
    again = httpx.post(langfuse_emu.base_url + "/api/public/annotation-queues", auth=auth,
                       json={"name": "q", "scoreConfigIds": [config]})
    assert (again.status_code, again.json()["message"]) == (400, "A queue with this name already exists.")

    langfuse_emu.configure(lost_answer_next=[ITEMS])
    item = {"objectId": "t-1", "objectType": "TRACE"}
    url = f"{langfuse_emu.base_url}/api/public/annotation-queues/{queue['id']}/items"
    assert httpx.post(url, auth=auth, json=item).status_code == 500
    assert httpx.post(url, auth=auth, json=item).status_code == 200  # the same object: a second item
    assert queued(langfuse_emu) == ["t-1", "t-1"]
    assert langfuse_emu.faults["lost_answer_next"] == [] and langfuse_emu.stats()["fault lost answer"] == 2
    with pytest.raises(ValueError):
        langfuse_emu.configure(lost_answer_nxt=[ITEMS])
    assert langfuse_emu.violations() == []


# -- annotation queue items: look before posting again ------------------------------------------

def test_a_lost_answer_on_an_item_post_leaves_one_item_on_the_queue(api, redis_client, rubric, langfuse_emu):
    config = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    queue_id = ensure_queue(api, redis_client, rubric, [config])
    writer = QueueWriter(api, redis_client, "helpfulness", queue_id)
    for i in range(150):  # a queue longer than one page of items, routed two days ago
        api.annotation_queues.create_queue_item(queue_id, object_id=f"old-{i}", object_type="TRACE")
    two_days_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).isoformat().replace("+00:00", "Z")
    for item in langfuse_review.state(langfuse_emu.store).items.values():
        item["createdAt"] = two_days_ago
    redis_client.set(SYNCED + queue_id, 1)  # a Redis that has known this queue all along

    langfuse_emu.configure(lost_answer_next=[ITEMS])
    seen = len(langfuse_emu.requests())
    assert writer.add("t-1") is True  # stored by the first POST; found by the retry's look
    assert queued(langfuse_emu).count("t-1") == 1
    assert redis_client.get(writer.marker("t-1")).decode().startswith("done ")
    assert len(requests_to(langfuse_emu, "POST", "/items", seen)) == 1
    assert len(requests_to(langfuse_emu, "GET", "/items", seen)) == 1  # newest first: one page found it
    assert writer.add("t-1") is False

    # A 500 before the server stored anything: the retry looks back to a day before its first
    # POST (the list is newest first: one page here, not the whole queue) and posts once.
    langfuse_emu.configure(fail_next=[500])
    seen = len(langfuse_emu.requests())
    assert writer.add("t-2") is True
    assert queued(langfuse_emu).count("t-2") == 1
    assert len(requests_to(langfuse_emu, "GET", "/items", seen)) == 1
    assert len(requests_to(langfuse_emu, "POST", "/items", seen)) == 1  # (the failed one is not recorded)
    assert langfuse_emu.stats()["fault 500"] == 1
    assert writer.looks == 2

    # A trace the writer lost track of, posted days ago: a stale claim reads the whole queue.
    redis_client.set(writer.marker("old-7"), "pending 0")
    seen = len(langfuse_emu.requests())
    assert QueueWriter(api, redis_client, "helpfulness", queue_id).add("old-7") is False
    assert len(requests_to(langfuse_emu, "GET", "/items", seen)) == 2
    assert len(requests_to(langfuse_emu, "POST", "/items", seen)) == 0


def test_a_flushed_redis_reads_the_queue_once_and_posts_nothing_already_on_it(api, redis_client, rubric,
                                                                               langfuse_emu):
    """Found by ./dev langfuse-test: a new Redis beside a Langfuse with data re-scanned the past
    week and posted every routed trace again (the real server keeps each as a second item)."""
    config = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    queue_id = ensure_queue(api, redis_client, rubric, [config])
    for i in range(120):
        assert QueueWriter(api, redis_client, "helpfulness", queue_id).add(f"t-{i}") is True
    redis_client.flushdb()  # Redis lost: the markers are gone, the queue's 120 items are not
    queue_id = ensure_queue(api, redis_client, rubric, [config])
    writer, seen = QueueWriter(api, redis_client, "helpfulness", queue_id), len(langfuse_emu.requests())
    assert [writer.add(f"t-{i}") for i in range(120)] == [False] * 120
    assert writer.add("t-new") is True
    assert sorted(queued(langfuse_emu)) == sorted([f"t-{i}" for i in range(120)] + ["t-new"])
    assert len(requests_to(langfuse_emu, "GET", "/items", seen)) == 2  # the queue read once (two pages)
    assert QueueWriter(api, redis_client, "helpfulness", queue_id).add("t-new") is False  # synced: no read


def test_lost_answers_and_failed_looks_then_the_next_tick_still_adds_nothing(api, redis_client, rubric,
                                                                              langfuse_emu):
    config = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    queue_id = ensure_queue(api, redis_client, rubric, [config])
    writer = QueueWriter(api, redis_client, "helpfulness", queue_id)
    writer.add("t-0")
    # The POST is stored and its answer lost; every look after it fails too: the call gives up.
    langfuse_emu.configure(lost_answer_next=[ITEMS], fail_next=[500] * 3)
    with pytest.raises(Exception):
        writer.add("t-1")
    assert redis_client.get(writer.marker("t-1")) == b"pending 0"
    # The same tick meets the trace again (another reason to route it): it lists afresh, finds it.
    assert writer.add("t-1") is False
    # And so does the next tick's writer, without a cached listing.
    redis_client.set(writer.marker("t-1"), "pending 0")
    assert QueueWriter(api, redis_client, "helpfulness", queue_id).add("t-1") is False
    assert queued(langfuse_emu) == ["t-0", "t-1"]


# -- queue creation: "already exists" means find it ---------------------------------------------

def test_a_lost_answer_on_queue_creation_finds_the_queue_and_routes_in_the_same_tick(
        settings, redis_client, langfuse_emu, tmp_path):
    rt = reviewed_runtime(settings, redis_client, tmp_path)
    for trace_id in ("t-1", "t-2"):
        langfuse_emu.load_observations(one_trace(trace_id, "Open Settings > Security."))
        judged(rt, langfuse_emu, trace_id, 4)
    langfuse_emu.configure(lost_answer_next=["POST annotation-queues"])
    summary = review_tick(rt)
    assert summary.errors == []
    assert summary.queued["calibration"] == 2
    [queue] = review_state(langfuse_emu)["queues"]
    assert queue["name"] == "tracejudge-helpfulness" and queued(langfuse_emu) == ["t-1", "t-2"]
    assert redis_client.get(QUEUE_ID + "tracejudge-helpfulness").decode() == queue["id"]
    creates = requests_to(langfuse_emu, "POST", "/annotation-queues")
    assert [r["status"] for r in creates] == [500, 400]  # lost, then "already exists": found by name
    assert len(requests_to(langfuse_emu, "GET", "/annotation-queues")) == 2  # before the create, after the 400
    assert review_tick(rt).queued == {} and queued(langfuse_emu) == ["t-1", "t-2"]


def test_a_refused_queue_that_does_not_exist_is_still_a_configuration_error(api, redis_client, rubric):
    with pytest.raises(Exception) as refused:
        ensure_queue(api, redis_client, rubric, ["no-such-config"])
    assert "refused the annotation queue" in str(refused.value)


# -- score configs: found in Langfuse, not only in Redis ------------------------------------------

def test_a_lost_answer_on_config_creation_makes_one_config(settings, redis_client, langfuse_emu, rubric):
    langfuse_emu.configure(lost_answer_next=["POST score-configs"])
    config_id = ScoreConfigs(build_langfuse_api(settings), redis_client).config_id(rubric)
    assert list(langfuse_emu.store.configs) == [config_id]
    assert [r["status"] for r in requests_to(langfuse_emu, "POST", "/score-configs")] == [500]
    # a listing before the create, one before its retry (found: no second POST), one after
    assert len(requests_to(langfuse_emu, "GET", "/score-configs")) == 3


def test_a_cold_redis_reuses_the_config_langfuse_has(settings, redis_client, langfuse_emu, rubric):
    first = ScoreConfigs(build_langfuse_api(settings), redis_client).config_id(rubric)
    redis_client.flushdb()  # a Redis restart: the cache and the lock are gone
    assert ScoreConfigs(build_langfuse_api(settings), redis_client).config_id(rubric) == first
    assert list(langfuse_emu.store.configs) == [first]


def test_configs_made_twice_by_racing_creators_converge_on_the_oldest(settings, redis_client, langfuse_emu,
                                                                     rubric):
    body = {"name": "helpfulness", "dataType": "NUMERIC", "minValue": 1, "maxValue": 5}
    oldest = langfuse_emu.store.create_config(body)
    oldest["createdAt"] = "2026-01-01T00:00:00.000Z"  # a minute before the other creator's
    langfuse_emu.store.create_config(dict(body))["createdAt"] = "2026-01-01T00:01:00.000Z"
    langfuse_emu.store.create_config(body | {"maxValue": 10})["createdAt"] = "2025-01-01T00:00:00.000Z"
    assert ScoreConfigs(build_langfuse_api(settings), redis_client).config_id(rubric) == oldest["id"]
    assert len(langfuse_emu.store.configs) == 3


# -- datasets hold only traces their rubric applies to -------------------------------------------

def test_a_user_flagged_trace_outside_the_rubrics_scope_stays_out_of_its_dataset(
        settings, redis_client, langfuse_emu, tmp_path):
    rt = reviewed_runtime(settings, redis_client, tmp_path, applies_to="{trace_names: [support-chat]}")
    langfuse_emu.load_observations(one_trace("chat-1", "Open Settings > Security.", name="support-chat"))
    langfuse_emu.load_observations(one_trace("agent-1", "Open Settings > Security.", name="support-agent"))
    langfuse_emu.load_observations(one_trace("own-1", "x", name="tracejudge-batch"))
    api = build_langfuse_api(rt.settings)
    for trace_id in ("chat-1", "agent-1", "own-1", "ghost-1"):
        raw_request(api, "POST", "api/public/scores", json={"name": "user_feedback", "value": -1,
                                                           "traceId": trace_id, "dataType": "NUMERIC"})
    assert langfuse_emu.drain_scores()
    summary = review_tick(rt)
    assert summary.errors == [] and summary.dataset_items["user_feedback"] == 1
    [dataset] = review_state(langfuse_emu)["datasets"]
    assert [i["sourceTraceId"] for i in dataset["items"]] == ["chat-1"]
    stats = {k.decode(): int(v) for k, v in redis_client.hgetall("tracejudge:review:stats").items()}
    assert stats["dataset_out_of_scope:helpfulness"] == 2  # support-agent, and our own trace
    # A flagged trace that never becomes readable cannot be checked: it stays out too.
    for _ in range(datasets.MAX_ATTEMPTS):
        review_tick(rt)
    [dataset] = review_state(langfuse_emu)["datasets"]
    assert [i["sourceTraceId"] for i in dataset["items"]] == ["chat-1"]
    assert not redis_client.hexists(datasets.PENDING + dataset["name"], "ghost-1")
    assert review_tick(rt).dataset_items == {}


def test_scope_checks_follow_the_samplers_and_the_workers(rubric):
    from worker.langfuse_io.traces import Trace
    from worker.rubrics.fields import AppliesTo

    def trace(name="support-chat", env="production", observations=()):
        return Trace(id="t", name=name, environment=env, timestamp=None, input=None, output=None,
                     metadata={"tenant": "acme"}, tags=["prod"], observations=list(observations))

    def scoped(**applies):
        return dataclasses.replace(rubric, applies_to=AppliesTo(**applies))

    assert not datasets.checks_scope(rubric) and datasets.out_of_scope(rubric, trace()) is None
    assert datasets.out_of_scope(rubric, trace(env="langfuse-prompt-experiment"))
    assert datasets.out_of_scope(scoped(environments=("staging",)), trace())
    assert datasets.out_of_scope(scoped(tags=("prod",), metadata=(("tenant", "acme"),)), trace()) is None
    assert datasets.out_of_scope(scoped(metadata=(("tenant", "other"),)), trace())
    steps = scoped(observations=("retrieval",))
    assert datasets.out_of_scope(steps, trace())
    assert datasets.out_of_scope(steps, trace(observations=[{"name": "retrieval", "startTime": "x"}])) is None
    llm = dataclasses.replace(scoped(types=("GENERATION",), models=("gpt-4o",)), target="observation")
    assert datasets.checks_scope(llm)
    assert datasets.out_of_scope(llm, trace(observations=[{"type": "SPAN", "name": "root"}]))
    assert datasets.out_of_scope(llm, trace(observations=[{"type": "GENERATION", "model": "gpt-4o"}])) is None


def test_the_look_stops_early_only_on_pages_that_come_newest_first():
    from types import SimpleNamespace

    from worker.review.queue import _queued_traces

    now = dt.datetime.now(dt.timezone.utc)
    old = [SimpleNamespace(object_id=f"o-{i}", id=f"i-{i}", created_at=now - dt.timedelta(days=3, minutes=i))
           for i in range(250)]

    def lister(items):
        calls = []

        def list_queue_items(queue_id, page, limit, request_options):
            calls.append(page)
            return SimpleNamespace(data=items[(page - 1) * limit: page * limit],
                                   meta=SimpleNamespace(total_pages=(len(items) + limit - 1) // limit))
        return SimpleNamespace(annotation_queues=SimpleNamespace(list_queue_items=list_queue_items)), calls

    since = now - dt.timedelta(days=1)
    api, calls = lister(old)  # newest first, all older than the look-back: one page
    assert "t-1" not in _queued_traces(api, "q", trace_id="t-1", since=since) and calls == [1]
    api, calls = lister(old[::-1])  # oldest first (another server): read to the end
    assert len(_queued_traces(api, "q", trace_id="t-1", since=since)) == 250 and calls == [1, 2, 3]
    api, calls = lister(old)  # no look-back (a stale claim): the whole queue
    assert len(_queued_traces(api, "q")) == 250 and calls == [1, 2, 3]
