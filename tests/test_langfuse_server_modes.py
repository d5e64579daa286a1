"""The Langfuse emulator's server-faithful modes reproduce what the real server does where it is
harsher than its spec (shared/langfuse/API-NOTES.md section 11; langfuse/langfuse @6275144).
Only emulators.*, third-party libraries and the stdlib are imported here."""
from __future__ import annotations

import datetime as dt

import httpx
import pytest
from langfuse.api import LangfuseAPI

from emulators.agent_trace import load_agent_trace
from emulators.langfuse_api import LangfuseEmulator
from emulators.redirect_front import RedirectFront
from tests.helpers import PK, SK  # the keys the `start` fixture serves

EVENTS_ONLY = "not available on deployments running in Langfuse v4 events_only mode"
V3_ONLY = "only available in a Langfuse v4 write mode"
SUSPENDED = "Ingestion suspended: Usage threshold exceeded. Please upgrade your plan."





def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


def _small_trace(trace_id="a" * 32, *, metadata=None):
    root = {"id": "root-" + trace_id[:4], "traceId": trace_id, "name": "support-chat", "traceName": "support-chat",
            "startTime": _iso(T0), "endTime": _iso(T0 + dt.timedelta(seconds=2)), "parentObservationId": None,
            "metadata": metadata or {"tenant": "acme"}, "input": "question?", "output": "answer.",
            "tags": ["prod"], "environment": "production"}
    child = {"id": "gen-" + trace_id[:4], "traceId": trace_id, "name": "llm-call", "type": "GENERATION",
             "startTime": _iso(T0 + dt.timedelta(milliseconds=10)), "endTime": _iso(T0 + dt.timedelta(seconds=1)),
             "parentObservationId": root["id"], "input": "prompt", "output": "completion", "totalCost": 0.002}
    return [root, child]


# -- 1. server generations ----------------------------------------------------------------------
def test_v3_server_answers_v2_observations_404_and_serves_legacy_reads(start):
    emu, client = start(generation="v3")
    emu.load_observations(_small_trace())
    response = client.get("/api/public/v2/observations", params={"limit": 10})
    assert response.status_code == 404 and V3_ONLY in response.json()["message"]
    assert client.get("/api/public/traces").status_code == 200
    assert client.get(f"/api/public/traces/{'a' * 32}").status_code == 200


def test_v4_events_only_answers_legacy_trace_reads_404_even_before_auth(start):
    emu, client = start(generation="v4-events")
    emu.load_observations(_small_trace())
    for path in ("/api/public/traces", f"/api/public/traces/{'a' * 32}"):
        response = client.get(path)
        assert response.status_code == 404 and EVENTS_ONLY in response.json()["message"]
        # the server checks the write mode before the credentials
        assert httpx.get(emu.base_url + path, auth=(PK, "sk-wrong")).status_code == 404
    assert len(client.get("/api/public/v2/observations").json()["data"]) == 2


def test_v4_dual_serves_both_read_families(start):
    emu, client = start(generation="v4-dual")
    emu.load_observations(_small_trace())
    assert len(client.get("/api/public/v2/observations").json()["data"]) == 2
    assert client.get("/api/public/traces").json()["meta"]["totalItems"] == 1


def test_set_generation_upgrades_the_server_under_a_running_client(start):
    emu, client = start(generation="v3")
    emu.load_observations(_small_trace())
    assert client.get("/api/public/v2/observations").status_code == 404
    emu.set_generation("v4-dual")
    assert client.get("/api/public/v2/observations").status_code == 200
    assert client.get("/api/public/traces").status_code == 200
    # the admin hook does the same for an emulator in another process
    assert client.post("/_emulator/modes", json={"generation": "v4-events"}).json()["generation"] == "v4-events"
    assert client.get("/api/public/traces").status_code == 404
    assert client.post("/_emulator/modes", json={"generation": "v5"}).status_code == 400


def test_spec_generation_is_todays_emulator(start):
    emu, client = start()
    emu.load_observations(_small_trace())
    listed = client.get("/api/public/traces", params={"fields": "core"}).json()["data"][0]
    assert listed["metadata"] == {"tenant": "acme"}  # the kinder, spec-only reading of `core`
    assert client.get("/api/public/scores").status_code == 400  # not in the spec: a recorded violation
    assert emu.violations() and emu.modes.view() == {"generation": "spec", "score_checks": "sync",
                                                     "observation_order": "spec", "legacy_fields": "spec"}


# -- 2. legacy `fields` --------------------------------------------------------------------------
def test_legacy_trace_list_core_fields_carry_no_metadata_input_or_output(start):
    emu, client = start(generation="v3")
    emu.load_observations(_small_trace())
    core = client.get("/api/public/traces", params={"fields": "core"}).json()["data"][0]
    assert core["metadata"] == {} and core["input"] is None and core["output"] is None
    assert core["observations"] == [] and core["scores"] == [] and core["latency"] == -1 and core["totalCost"] == -1
    with_io = client.get("/api/public/traces", params={"fields": "core,io"}).json()["data"][0]
    assert with_io["metadata"] == {"tenant": "acme"} and with_io["input"] == "question?"
    everything = client.get("/api/public/traces").json()["data"][0]  # no fields: every group
    assert sorted(everything["observations"]) == ["gen-aaaa", "root-aaaa"] and everything["totalCost"] == 0.002


def test_legacy_trace_get_core_fields_carry_no_metadata_and_no_observations(start):
    emu, client = start(generation="v4-dual")
    emu.load_observations(_small_trace())
    core = client.get(f"/api/public/traces/{'a' * 32}", params={"fields": "core"}).json()
    assert core["metadata"] == {} and core["input"] is None and core["observations"] == []
    full = client.get(f"/api/public/traces/{'a' * 32}").json()
    assert full["metadata"] == {"tenant": "acme"} and len(full["observations"]) == 2
    missing = client.get("/api/public/traces/" + "f" * 32)
    assert missing.status_code == 404 and "not found within authorized project" in missing.json()["message"]


# -- 3. score checks after the 200 -----------------------------------------------------------------
def _config(client, **body) -> dict:
    response = client.post("/api/public/score-configs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _read_back(client, ids: list[str]) -> list[dict]:
    return client.get("/api/public/v3/scores", params={"id": ",".join(ids), "limit": 100}).json()["data"]


@pytest.mark.parametrize("case", ["config_not_found", "config_archived", "data_type_mismatch", "out_of_range",
                                  "not_a_category"])
def test_async_score_checks_answer_200_then_drop_the_score_silently(start, case):
    emu, client = start(score_checks="async")
    numeric = _config(client, name="helpfulness", dataType="NUMERIC", minValue=0, maxValue=1)
    categorical = _config(client, name="tone", dataType="CATEGORICAL",
                          categories=[{"label": "polite", "value": 1}, {"label": "rude", "value": 0}])
    body = {"id": f"score-{case}", "traceId": "a" * 32, "name": "helpfulness", "value": 0.5, "configId": numeric["id"]}
    if case == "config_not_found":
        body["configId"] = "config-of-another-project"
    elif case == "config_archived":
        emu.archive_config(numeric["id"])
    elif case == "data_type_mismatch":
        body["dataType"] = "BOOLEAN"
        body["value"] = 1
    elif case == "out_of_range":
        body["value"] = 7
    else:
        body.update(name="tone", value="sarcastic", configId=categorical["id"])
    response = client.post("/api/public/scores", json=body)
    assert response.status_code == 200 and response.json() == {"id": body["id"]}
    assert emu.drain_scores()
    assert _read_back(client, [body["id"]]) == []
    reason = {"out_of_range": "value_invalid", "not_a_category": "value_invalid"}.get(case, case)
    assert [(d["id"], d["reason"]) for d in emu.dropped_scores()] == [(body["id"], reason)]
    assert client.get("/_emulator/dropped-scores").json()[0]["reason"] == reason


def test_async_score_with_another_name_than_its_config_is_stored_under_the_config_name(start):
    emu, client = start(score_checks="async")
    config = _config(client, name="helpfulness", dataType="NUMERIC", minValue=0, maxValue=1)
    client.post("/api/public/scores", json={"id": "renamed", "traceId": "a" * 32, "name": "helpfulness-v2",
                                            "value": 0.5, "configId": config["id"]})
    assert emu.drain_scores()
    assert [s["name"] for s in _read_back(client, ["renamed"])] == ["helpfulness"] and emu.dropped_scores() == []


def test_async_score_is_accepted_before_it_is_readable(start):
    emu, client = start(score_checks="async", score_check_delay_s=0.5)
    config = _config(client, name="helpfulness", dataType="NUMERIC", minValue=0, maxValue=1)
    response = client.post("/api/public/scores", json={"id": "late", "traceId": "a" * 32, "name": "helpfulness",
                                                       "value": 0.9, "configId": config["id"]})
    assert response.status_code == 200 and _read_back(client, ["late"]) == []
    assert client.post("/_emulator/drain-scores").json()["drained"] is True
    assert [s["id"] for s in _read_back(client, ["late"])] == ["late"]


def test_async_mode_still_refuses_a_malformed_body_with_400(start):
    emu, client = start(score_checks="async")
    for body in ({"traceId": "t", "name": "x", "value": 2, "dataType": "BOOLEAN"},
                 {"traceId": "t", "name": "x", "value": 1, "source": "EVAL"},
                 {"traceId": "t", "name": "x", "value": "long" * 200, "dataType": "TEXT"}):
        assert client.post("/api/public/scores", json=body).status_code == 400
    assert emu.drain_scores() and emu.scores() == [] and emu.dropped_scores() == []


def test_sync_mode_keeps_answering_config_violations_with_400(start):
    emu, client = start()
    config = _config(client, name="helpfulness", dataType="NUMERIC", minValue=0, maxValue=1)
    response = client.post("/api/public/scores", json={"traceId": "t", "name": "helpfulness", "value": 7,
                                                       "configId": config["id"]})
    assert response.status_code == 400 and emu.scores() == []


def test_patch_score_config_archives_it_and_later_scores_vanish(start):
    emu, client = start(score_checks="async")
    config = _config(client, name="helpfulness", dataType="NUMERIC", minValue=0, maxValue=1)
    api = LangfuseAPI(base_url=emu.base_url, username=PK, password=SK)
    assert api.score_configs.update(config["id"], is_archived=True).is_archived is True
    client.post("/api/public/scores", json={"id": "s1", "traceId": "t", "name": "helpfulness", "value": 0.5,
                                            "configId": config["id"]})
    assert emu.drain_scores() and emu.dropped_score_counts() == {"config_archived": 1}
    assert client.post(f"/_emulator/score-configs/{config['id']}/archive").json()["isArchived"] is True
    assert emu.archive_config(config["id"], archived=False)["isArchived"] is False
    assert emu.violations() == []


def test_v3_scores_id_filter_reads_back_a_comma_list_a_page_of_100_at_a_time(start):
    emu, client = start(score_checks="async")
    ids = [f"score-{i:03d}" for i in range(150)]
    batch = [{"id": score_id, "traceId": "t", "name": "helpfulness", "value": 0.5} for score_id in ids + ["not-asked"]]
    assert client.post("/api/public/scores", json=batch).status_code == 202  # one request, as SDK 5 sends them
    assert emu.drain_scores()
    api = LangfuseAPI(base_url=emu.base_url, username=PK, password=SK)
    first = api.scores.get_many(id=" , ".join(ids), limit=100)  # the server trims items and drops empty ones
    assert len(first.data) == 100 and first.meta.cursor
    second = api.scores.get_many(id=",".join(ids), limit=100, cursor=first.meta.cursor)
    assert sorted(s.id for s in first.data + second.data) == ids and not second.meta.cursor
    assert client.get("/api/public/v3/scores", params={"id": ids[0], "limit": 101}).status_code == 400


# -- 4. orderings ----------------------------------------------------------------------------------
def _same_start(n=3):
    return [{"id": f"obs-{i}", "traceId": "b" * 32, "name": "step", "startTime": _iso(T0),
             "parentObservationId": "root"} for i in range(n)]


def test_server_order_lists_v2_observations_newest_first_with_the_server_tie_break(start):
    later = {"id": "obs-late", "traceId": "b" * 32, "name": "step", "startTime": _iso(T0 + dt.timedelta(seconds=5)),
             "parentObservationId": "root"}
    ids = {}
    for order in ("spec", "server"):
        emu, client = start(observation_order=order)
        emu.load_observations(_same_start() + [later])
        ids[order] = [o["id"] for o in client.get("/api/public/v2/observations", params={"limit": 2}).json()["data"]]
        cursor = client.get("/api/public/v2/observations", params={"limit": 2}).json()["meta"]["cursor"]
        ids[order] += [o["id"] for o in client.get("/api/public/v2/observations",
                                                   params={"limit": 2, "cursor": cursor}).json()["data"]]
    assert ids["spec"] == ["obs-late", "obs-0", "obs-1", "obs-2"]
    assert ids["server"] == ["obs-late", "obs-2", "obs-1", "obs-0"]  # span_id DESC on equal start times


def test_server_order_lists_legacy_trace_observations_latest_ingested_first(start):
    root = {"id": "root", "traceId": "c" * 32, "name": "agent", "startTime": _iso(T0), "parentObservationId": None}
    steps = [{"id": f"step-{i}", "traceId": "c" * 32, "name": "retrieval",
              "startTime": _iso(T0 + dt.timedelta(seconds=i)), "parentObservationId": "root"} for i in (1, 2, 3)]
    load_order = [steps[1], steps[0], steps[2], root]  # as spans end, not as they start
    got = {}
    for order in ("spec", "server"):
        emu, client = start(generation="v4-dual", observation_order=order)
        emu.load_observations(load_order)
        if order == "server":
            emu.load_observations([steps[0]])  # an update is a new ingestion
        got[order] = [o["id"] for o in client.get(f"/api/public/traces/{'c' * 32}").json()["observations"]]
    assert got["spec"] == ["root", "step-1", "step-2", "step-3"]
    assert got["server"] == ["step-1", "root", "step-3", "step-2"]


def test_server_generations_imply_server_order_and_fields_unless_overridden(start):
    emu, _ = start(generation="v4-events")
    assert emu.modes.view() == {"generation": "v4-events", "score_checks": "sync", "observation_order": "server",
                                "legacy_fields": "server"}
    emu, _ = start(generation="v3", observation_order="spec", legacy_fields="spec")
    assert (emu.modes.order, emu.modes.fields) == ("spec", "spec")
    emu.set_modes(observation_order=None)
    assert emu.modes.order == "server"
    with pytest.raises(ValueError):
        LangfuseEmulator(generation="v5")


# -- 5. a redirecting front ----------------------------------------------------------------------
def test_followed_301_turns_a_score_post_into_a_get_that_answers_200_with_a_list(start):
    emu, _ = start(generation="v4-dual")
    front = RedirectFront(emu.base_url, location="same-origin")
    front.start()
    try:
        with httpx.Client(base_url=front.base_url, auth=(PK, SK), follow_redirects=True) as client:
            response = client.post("/api/public/scores", json={"id": "s1", "traceId": "t", "name": "x", "value": 1})
        assert [r.status_code for r in response.history] == [301] and response.request.method == "GET"
        assert response.status_code == 200 and "data" in response.json() and "id" not in response.json()
        # the SDK's batch create sees the same 200 and reports success
        sdk = LangfuseAPI(base_url=front.base_url, username=PK, password=SK)
        sdk.scores.create(request=[{"id": "s2", "traceId": "t", "name": "x", "value": 1}])
        assert emu.scores() == []
        assert [(r["method"], r["path"]) for r in emu.requests()] == [("GET", "/api/public/scores")] * 2
    finally:
        front.stop()


def test_followed_308_keeps_the_post(start):
    emu, _ = start(generation="v4-dual")
    front = RedirectFront(emu.base_url, status=308, location="same-origin")
    front.start()
    try:
        response = httpx.post(front.base_url + "/api/public/scores", auth=(PK, SK), follow_redirects=True,
                              json={"id": "s1", "traceId": "t", "name": "x", "value": 1})
        assert response.status_code == 200 and response.json() == {"id": "s1"}
        assert [s["id"] for s in emu.scores()] == ["s1"]
    finally:
        front.stop()


def test_redirect_to_another_origin_loses_the_authorization_header(start):
    emu, _ = start(generation="v4-dual")
    front = RedirectFront(emu.base_url)
    front.start()
    try:
        response = httpx.get(front.base_url + "/api/public/v3/scores", auth=(PK, SK), follow_redirects=True)
        assert response.history[0].headers["Location"].startswith(emu.base_url)
        assert response.status_code == 401  # httpx keeps Authorization only for the same origin
    finally:
        front.stop()


# -- 6. agent-sized traces -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def agent():
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, generation="v4-dual")
    emu.start()
    info = load_agent_trace(emu, n_observations=500, payload_bytes=50_000)
    client = httpx.Client(base_url=emu.base_url, auth=(PK, SK), timeout=120)
    yield emu, client, info
    client.close()
    emu.stop()


def test_agent_trace_v2_filters_fetch_only_the_root_and_the_named_steps(agent):
    emu, client, info = agent
    assert info["observation_count"] == 500 and info["io_bytes"] > 20_000_000
    base = {"traceId": info["trace_id"], "fields": "core,basic,io"}
    root = client.get("/api/public/v2/observations", params=base | {"isRootObservation": "true"}).json()["data"]
    assert [o["id"] for o in root] == [info["root_id"]]
    named = client.get("/api/public/v2/observations", params=base | {"name": "retrieval"}).json()["data"]
    assert [o["id"] for o in named] == info["retrieval_ids"][::-1]  # newest first: sort before picking one
    assert all(isinstance(o["input"], str) and len(o["input"]) > 20_000 for o in named)
    lean = client.get("/api/public/v2/observations",
                      params={"traceId": info["trace_id"], "fields": "core,basic", "limit": 1000})
    assert len(lean.json()["data"]) == 500 and "input" not in lean.json()["data"][0]
    assert len(lean.content) < 500_000
    assert emu.violations() == []


def test_agent_trace_legacy_reads_list_every_observation_and_refuse_past_the_size_limit(agent):
    emu, client, info = agent
    listed = client.get("/api/public/traces", params={"fields": "core,observations"}).json()["data"]
    assert [len(t["observations"]) for t in listed] == [500]
    full = client.get(f"/api/public/traces/{info['trace_id']}")
    assert full.status_code == 200 and len(full.content) > 20_000_000
    assert [o["id"] for o in full.json()["observations"]] == info["ingestion_order"][::-1]
    emu.trace_size_limit_bytes = 10_000_000
    try:
        too_big = client.get(f"/api/public/traces/{info['trace_id']}")
        assert too_big.status_code == 422 and too_big.json()["error"] == "PayloadTooLargeError"
        assert client.get(f"/api/public/traces/{info['trace_id']}", params={"fields": "core,io"}).status_code == 200
    finally:
        emu.trace_size_limit_bytes = 80_000_000


# -- 7. Cloud over quota -------------------------------------------------------------------------
def test_ingestion_suspended_answers_writes_403_until_cleared(start):
    emu, client = start()
    assert client.post("/_emulator/config", json={"ingestion_suspended": True}).status_code == 200
    score = {"id": "s1", "traceId": "t", "name": "x", "value": 1}
    refused = client.post("/api/public/scores", json=score)
    assert refused.status_code == 403 and refused.json()["message"] == SUSPENDED
    assert client.post("/api/public/ingestion", json={"batch": []}).status_code == 403
    assert client.get("/api/public/v3/scores").status_code == 200  # reads still work
    emu.configure(ingestion_suspended=False)
    assert client.post("/api/public/scores", json=score).status_code == 200 and len(emu.scores()) == 1
