"""Each trace on a rubric's annotation queue exactly once, through failures: a POST that fails
(the item may or may not exist), a process that died mid-post, a Redis that lost the queue's id.
Real Redis, the langfuse SDK over HTTP against the emulator (which, like the server, would
happily store a second item for the same trace)."""
from __future__ import annotations

import httpx
import pytest

from worker.review.queue import QUEUE_ID, QueueWriter, ensure_queue






def _items(langfuse_emu) -> list[str]:
    [queue] = httpx.get(langfuse_emu.base_url + "/_emulator/review").json()["queues"]
    return sorted(i["objectId"] for i in queue["items"])


def test_the_queue_is_created_once_and_found_again_by_name_after_a_redis_loss(api, redis_client, rubric,
                                                                               langfuse_emu):
    config = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    first = ensure_queue(api, redis_client, rubric, [config])
    assert ensure_queue(api, redis_client, rubric, [config]) == first
    redis_client.delete(QUEUE_ID + "tracejudge-helpfulness")
    assert ensure_queue(api, redis_client, rubric, [config]) == first
    assert len(httpx.get(langfuse_emu.base_url + "/_emulator/review").json()["queues"]) == 1


def test_a_failed_post_or_a_crash_mid_post_never_adds_a_second_item(api, redis_client, rubric, langfuse_emu):
    config = api.score_configs.create(name="helpfulness", data_type="NUMERIC", min_value=1, max_value=5).id
    queue_id = ensure_queue(api, redis_client, rubric, [config])
    writer = QueueWriter(api, redis_client, "helpfulness", queue_id)
    assert writer.add("t-1") is True
    assert writer.add("t-1") is False

    # A process posted t-2 and died before marking it done: its claim is stale.
    api.annotation_queues.create_queue_item(queue_id, object_id="t-2", object_type="TRACE")
    redis_client.set(writer.marker("t-2"), "pending 0")
    assert QueueWriter(api, redis_client, "helpfulness", queue_id).add("t-2") is False
    # A fresh claim of another process is left alone.
    redis_client.set(writer.marker("t-3"), "pending 9999999999")
    assert writer.add("t-3", now=9999999999 + 5) is False

    # The POST fails after its retries: nothing is lost, and the next tick posts it once.
    langfuse_emu.configure(fail_next=[500] * 8)
    with pytest.raises(Exception):
        writer.add("t-4")
    langfuse_emu.configure(fail_next=[])
    assert QueueWriter(api, redis_client, "helpfulness", queue_id).add("t-4") is True
    assert QueueWriter(api, redis_client, "helpfulness", queue_id).add("t-4") is False
    assert _items(langfuse_emu) == ["t-1", "t-2", "t-4"]
