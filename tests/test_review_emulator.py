"""The Langfuse emulator's review side through the official SDK over HTTP: annotation queues
and items, datasets and dataset items, and a reviewer's ANNOTATION score, with the real
server's rules (unique queue names, no item dedup, upserts by dataset name and item id)."""
from __future__ import annotations

import httpx
import pytest
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from tests.helpers import PK, SK


@pytest.fixture
def api(langfuse_emu) -> LangfuseAPI:
    return LangfuseAPI(base_url=langfuse_emu.base_url, username=PK, password=SK)


def _config(api, name="helpfulness"):
    return api.score_configs.create(name=name, data_type="NUMERIC", min_value=1, max_value=5).id


def test_a_queue_name_is_unique_and_its_score_configs_must_exist(api, langfuse_emu):
    config = _config(api)
    queue = api.annotation_queues.create_queue(name="review-helpfulness", score_config_ids=[config])
    assert queue.score_config_ids == [config]
    with pytest.raises(ApiError) as conflict:
        api.annotation_queues.create_queue(name="review-helpfulness", score_config_ids=[config])
    assert conflict.value.status_code == 400  # the real 4.16's answer (Prisma P2002)
    assert "A queue with this name already exists." in str(conflict.value.body)
    with pytest.raises(ApiError) as unknown:
        api.annotation_queues.create_queue(name="other", score_config_ids=["no-such-config"])
    assert unknown.value.status_code == 400
    assert [q.name for q in api.annotation_queues.list_queues().data] == ["review-helpfulness"]
    assert api.annotation_queues.get_queue(queue.id).id == queue.id
    assert langfuse_emu.violations() == []


def test_the_server_does_not_dedup_queue_items_and_a_reviewer_completes_them(api, langfuse_emu):
    queue = api.annotation_queues.create_queue(name="q", score_config_ids=[_config(api)])
    first = api.annotation_queues.create_queue_item(queue.id, object_id="t-1", object_type="TRACE")
    api.annotation_queues.create_queue_item(queue.id, object_id="t-1", object_type="TRACE")
    items = api.annotation_queues.list_queue_items(queue.id).data
    assert [i.object_id for i in items] == ["t-1", "t-1"]  # two items for one trace: dedup is the client's job
    assert first.status == "PENDING"
    with pytest.raises(ApiError) as missing:
        api.annotation_queues.create_queue_item("no-queue", object_id="t-1", object_type="TRACE")
    assert missing.value.status_code == 404

    reply = httpx.post(langfuse_emu.base_url + "/_emulator/annotations", json={
        "queueId": queue.id, "traceId": "t-1", "name": "q", "value": 4, "authorUserId": "alice"})
    assert reply.status_code == 400  # no config named "q": the reviewer scores under the queue's config
    reply = httpx.post(langfuse_emu.base_url + "/_emulator/annotations", json={
        "queueId": queue.id, "traceId": "t-1", "name": "helpfulness", "value": 4, "authorUserId": "alice"})
    assert reply.status_code == 200, reply.text
    assert {i.status for i in api.annotation_queues.list_queue_items(queue.id).data} == {"COMPLETED"}
    page = api.scores.get_many(source="ANNOTATION", name="helpfulness", fields="details,subject,annotation")
    [score] = page.data
    assert (score.value, score.source, score.author_user_id, score.queue_id, score.subject.id) == (
        4.0, "ANNOTATION", "alice", queue.id, "t-1")
    off_scale = httpx.post(langfuse_emu.base_url + "/_emulator/annotations", json={
        "traceId": "t-2", "name": "helpfulness", "value": 9})
    assert off_scale.status_code == 400  # checked against the config like any score
    assert langfuse_emu.violations() == []


def test_datasets_upsert_by_name_and_items_by_id(api, langfuse_emu):
    with pytest.raises(ApiError) as no_dataset:
        api.dataset_items.create(dataset_name="failures", input={"q": 1})
    assert no_dataset.value.status_code == 404
    one = api.datasets.create(name="failures", description="first")
    again = api.datasets.create(name="failures")
    assert one.id == again.id and again.description == "first"
    api.dataset_items.create(dataset_name="failures", id="item-1", input={"q": 1}, source_trace_id="t-1")
    api.dataset_items.create(dataset_name="failures", id="item-1", input={"q": 2}, source_trace_id="t-1")
    items = api.dataset_items.list(dataset_name="failures").data
    assert [(i.id, i.input, i.source_trace_id) for i in items] == [("item-1", {"q": 2}, "t-1")]
    api.datasets.create(name="other")
    with pytest.raises(ApiError) as elsewhere:
        api.dataset_items.create(dataset_name="other", id="item-1", input={})
    assert elsewhere.value.status_code == 404  # an item id belongs to one dataset
    assert api.dataset_items.list(source_trace_id="t-1").meta.total_items == 1
    assert langfuse_emu.violations() == []
