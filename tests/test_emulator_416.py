"""The Langfuse emulator's ``release="4.16"`` mode answers as the real server 4.16.0 did where it
is harsher than the spec (shared/realfuse/README.md, "Real server vs spec: what smoke.py saw";
emulators/langfuse_release.py), one test per behaviour, through real HTTP (httpx and the
langfuse SDK). Only emulators.*, third-party libraries and the stdlib are imported here."""
from __future__ import annotations

import json

import httpx
import pytest
from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError

from tests.helpers import PK, SK  # the keys the `start` fixture serves

TRACE = "4" * 32
ARRAY_REFUSED = {"message": "Invalid request data",
                 "error": [{"expected": "object", "code": "invalid_type", "path": [],
                            "message": "Invalid input: expected object, received array"}]}





def _root(**fields) -> dict:
    return {"id": "root-4", "traceId": TRACE, "name": "support-chat", "traceName": "support-chat",
            "startTime": "2026-11-20T12:00:00.000Z", "parentObservationId": None, **fields}


def _score(score_id="s-416", **fields) -> dict:
    return {"id": score_id, "traceId": TRACE, "name": "helpfulness", "value": 4, **fields}


def test_release_implies_events_only_and_async_score_checks_unless_named(start):
    emu, client = start(release="4.16")
    assert emu.modes.view() == {"generation": "v4-events", "score_checks": "async", "observation_order": "server",
                                "legacy_fields": "server", "release": "4.16"}
    assert client.get(f"/api/public/traces/{TRACE}").status_code == 404  # events_only: no legacy reads
    emu, _ = start(release="4.16", generation="v4-dual", score_checks="sync")
    assert (emu.modes.generation, emu.modes.score_checks) == ("v4-dual", "sync")
    # switched while clients run, from Python or from another process
    emu, client = start()
    assert emu.set_modes(release="4.16")["generation"] == "v4-events"
    assert emu.set_modes(release=None) == {"generation": "v4-events", "score_checks": "async",
                                           "observation_order": "server", "legacy_fields": "server"}
    assert client.post("/_emulator/modes", json={"release": "4.16", "generation": "v3"}).json()["generation"] == "v3"
    assert client.post("/_emulator/modes", json={"release": "4.15"}).status_code == 400


def test_a_score_array_is_refused_with_the_servers_400_and_nothing_lands(start):
    emu, client = start(release="4.16")
    response = client.post("/api/public/scores", json=[_score("a1"), _score("a2")])
    assert response.status_code == 400 and response.json() == ARRAY_REFUSED
    # the official SDK 5 sends arrays: its create_score never lands on 4.16
    sdk = LangfuseAPI(base_url=emu.base_url, username=PK, password=SK)
    with pytest.raises(ApiError) as refused:
        sdk.scores.create(request=[_score("a3")])
    assert refused.value.status_code == 400
    assert client.post("/api/public/scores", json=_score("o1")).json() == {"id": "o1"}  # one object: 200 {id}
    assert emu.drain_scores()
    assert [s["id"] for s in emu.scores()] == ["o1"]
    # the spec mode (and the stand-in's default) still takes arrays
    spec, spec_client = start()
    assert spec_client.post("/api/public/scores", json=[_score("a1")]).status_code == 202


def test_v2_input_and_output_are_the_raw_stored_strings(start):
    emu, client = start(release="4.16")
    stored = '{"role":"assistant","content":"R\\udcc3sum caf\\u00e9"}'  # a JS app's JSON.stringify, verbatim
    emu.load_observations([_root(input="plain text", output=stored),
                           {**_root(id="child", parentObservationId="root-4", name="llm"),
                            "input": [{"role": "user", "content": "café \udcc3"}], "output": '"quoted"'}])
    data = {o["id"]: o for o in client.get("/api/public/v2/observations",
                                           params={"traceId": TRACE, "fields": "core,basic,io"}).json()["data"]}
    root, child = data["root-4"], data["child"]
    assert (root["input"], root["output"]) == ("plain text", stored)  # verbatim, never re-encoded
    assert json.loads(root["output"])["content"] == "R\udcc3sum café"  # the client gets a lone surrogate
    # a structured value is stored as JSON.stringify writes it: non-ASCII kept, lone surrogates escaped
    assert child["input"] == '[{"role":"user","content":"café \\udcc3"}]' and child["output"] == '"quoted"'
    # no input/output unless asked for (fields default core,basic)
    listed = client.get("/api/public/v2/observations", params={"traceId": TRACE}).json()["data"]
    assert all("input" not in o and "output" not in o for o in listed)


def test_v3_scores_carry_no_subject_comment_or_metadata_unless_asked(start):
    emu, client = start(release="4.16")
    client.post("/api/public/scores", json=_score("t1", comment="why", metadata={"k": "v"}))
    client.post("/api/public/scores", json=_score("o1", observationId="root-4"))
    client.post("/api/public/scores", json={"id": "ss1", "sessionId": "sess-1", "name": "helpfulness", "value": 3})
    assert emu.drain_scores()
    plain = client.get("/api/public/v3/scores", params={"id": "t1,o1,ss1"}).json()["data"]
    hidden = {"traceId", "observationId", "sessionId", "comment", "configId", "metadata", "subject"}
    assert len(plain) == 3 and all(not hidden & set(item) for item in plain)
    assert set(plain[0]) == {"id", "projectId", "name", "source", "timestamp", "environment", "createdAt",
                             "updatedAt", "dataType", "value"}
    full = {s["id"]: s for s in client.get("/api/public/v3/scores", params={
        "id": "t1,o1,ss1", "fields": "details,subject"}).json()["data"]}
    assert full["t1"]["subject"] == {"kind": "trace", "id": TRACE}
    assert full["o1"]["subject"] == {"kind": "observation", "id": "root-4", "traceId": TRACE}
    assert full["ss1"]["subject"] == {"kind": "session", "id": "sess-1"}
    assert (full["t1"]["comment"], full["t1"]["metadata"]) == ("why", {"k": "v"})
    assert all("traceId" not in s for s in full.values())
    # through the SDK, as the worker's read-back does: the items parse without those fields
    sdk = LangfuseAPI(base_url=emu.base_url, username=PK, password=SK)
    assert sorted(s.id for s in sdk.scores.get_many(id="t1,o1,ss1").data) == ["o1", "ss1", "t1"]


def test_metadata_strings_that_are_json_come_back_as_json(start):
    emu, client = start(release="4.16")
    metadata = {"rubric_version": "1", "ratio": "0.5", "flag": "true", "nothing": "null", "tenant": "acme",
                "zip": "007", "big": "12345678901234567890", "obj": '{"a":1}', "nan": "NaN", "num": 2}
    client.post("/api/public/scores", json=_score("m1", metadata=metadata))
    assert emu.drain_scores()
    [read] = client.get("/api/public/v3/scores", params={"id": "m1", "fields": "details"}).json()["data"]
    assert read["metadata"] == {"rubric_version": 1, "ratio": 0.5, "flag": True, "nothing": None, "tenant": "acme",
                                "zip": "007", "big": "12345678901234567890", "obj": {"a": 1}, "nan": "NaN",
                                "num": 2}
    # observations' metadata too (parseMetadataCHRecordToDomain on the events table)
    emu.load_observations([_root(metadata={"tenant": "42", "feature": "support-chat"})])
    [obs] = client.get("/api/public/v2/observations", params={"fields": "core,metadata"}).json()["data"]
    assert obs["metadata"] == {"tenant": 42, "feature": "support-chat"}


def test_unknown_routes_answer_an_html_404_before_auth(start):
    emu, client = start(release="4.16")
    for path in ("/api/public/no-such-route", "/api/public/v9/observations", "/no-such-page"):
        for auth in ((PK, SK), (PK, "sk-wrong")):
            response = httpx.get(emu.base_url + path, auth=auth)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("text/html")
            assert "This page could not be found" in response.text
            with pytest.raises(ValueError):
                response.json()
    # a known route with a method it has not: 405 JSON
    response = client.delete("/api/public/score-configs")
    assert response.status_code == 405 and response.json() == {"message": "Method not allowed",
                                                               "error": "MethodNotAllowedError"}
    # still recorded: a client that calls them is off the spec
    assert {v["path"] for v in emu.violations()} == {"/api/public/no-such-route", "/api/public/v9/observations",
                                                     "/api/public/score-configs"}
    # the SDK's error carries the page as text
    sdk = LangfuseAPI(base_url=emu.base_url + "/api/public/v9", username=PK, password=SK)
    with pytest.raises(ApiError) as missing:
        sdk.health.health()
    assert missing.value.status_code == 404
    # the spec mode keeps its JSON answers
    _, spec_client = start()
    assert spec_client.get("/api/public/no-such-route").headers["content-type"] == "application/json"
