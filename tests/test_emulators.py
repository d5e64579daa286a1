"""The emulators behave like the real APIs as the real SDKs see them."""
from __future__ import annotations

import anthropic
import pytest
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from emulators.seed import generate
from tests.helpers import PK, SK


def api(emu, secret=SK):
    return LangfuseAPI(base_url=emu.base_url, username=PK, password=secret)


def test_v2_cursor_walk_returns_every_root_once_across_pages(langfuse_emu):
    observations = generate(300, include_malformed=False, seed=2)
    langfuse_emu.load_observations(observations)
    seen, cursor, pages = [], None, 0
    while True:
        page = api(langfuse_emu).observations.get_many(is_root_observation=True, limit=50, cursor=cursor,
                                                      fields="core,basic,trace_context")
        seen += [o.trace_id for o in page.data]
        pages += 1
        cursor = page.meta.cursor
        if not cursor:
            break
    assert pages > 2 and len(seen) == len(set(seen)) == 300
    assert langfuse_emu.violations() == []


def test_wrong_keys_get_401(langfuse_emu):
    with pytest.raises(ApiError) as err:
        api(langfuse_emu, secret="sk-wrong").observations.get_many(limit=1)
    assert err.value.status_code == 401


def test_a_spec_violation_is_answered_400_and_recorded(langfuse_emu):
    with pytest.raises(ApiError) as err:
        api(langfuse_emu).observations.get_many(limit=1, request_options={"additional_query_parameters": {"bogus": "1"}})
    assert err.value.status_code == 400
    assert "bogus" in str(langfuse_emu.violations())


def test_judge_emulator_counts_concurrency_and_needs_a_key(judge_emu):
    import concurrent.futures

    judge_emu.configure(latency_ms=500)
    client = anthropic.Anthropic(api_key="k", base_url=judge_emu.base_url, max_retries=0)
    # One call first: the SDK's first call in a process loads its types (slow on a loaded
    # machine), which kept the 16 threads from overlapping within a 200 ms call.
    client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "warm"}])
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                                       messages=[{"role": "user", "content": f"hi {i}"}]), range(16)))
    assert judge_emu.stats()["max_in_flight"] >= 12
    import httpx

    response = httpx.post(judge_emu.base_url + "/v1/messages", headers={"anthropic-version": "2023-06-01"},
                          json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
