"""Every rubric version's scores carry a Langfuse score config that matches its scale.

Small rubrics are written to tmp folders so each data type, a shared scale and a changed scale
are each tested on purpose. The emulator validates scores against their config as the server does.
"""
import shutil
from pathlib import Path

import pytest
import yaml
from langfuse.api.core.api_error import ApiError

from tests.helpers import REPO, hand_built_runtime, one_trace
from worker.errors import ConfigError
from worker.judging.pipeline import judge_one
from worker.langfuse_io.client import build_langfuse_api, raw_request
from worker.langfuse_io.score_configs import ScoreConfigs, config_name_problem
from worker.rubrics.rubric import load_rubrics
from worker.rubrics.rubric import SHARED_PROMPTS

NUMERIC = {"type": "numeric", "min": 1, "max": 5, "integer": True}
WIDER = {"type": "numeric", "min": 0, "max": 10, "integer": True}
CATEGORICAL = {"type": "categorical", "labels": {"pass": 1, "partial": 0.5, "fail": 0}}
BOOLEAN = {"type": "boolean"}
USER_J2 = "Grade the answer.\n<answer>\n{{ answer }}\n</answer>\nScore: {{ scale.describe }}.\n"


def write_rubric(root: Path, name: str, version: int, score: dict, description: str = "Is the answer good?"):
    folder = root / name / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user.j2").write_text(USER_J2)
    (folder / "rubric.yaml").write_text(yaml.safe_dump({
        "name": name, "version": version, "description": description,
        "owner": {"team": "qa", "alert_route": "#qa"}, "score": score, "applies_to": {},
        "sampling": {"rate": 1.0},
        "variables": {"answer": {"from": "output", "path": ["$.content", "$"]}},
        "judge": {"provider": "anthropic", "model": "claude-sonnet-4-6", "max_tokens": 512},
        "template": "user.j2"}, sort_keys=False))
    for shared in SHARED_PROMPTS:  # prompt files every version is hashed with
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    return root


def score_one(rt, emu, rubric_key: str, n: int = 0, quality: float = 0.8) -> dict:
    trace_id = f"{n:032x}"
    emu.load_observations(one_trace(trace_id, f"Open Settings > Security. [[quality:{quality}]]"))
    outcome = judge_one(rt, trace_id, rubric_key)
    assert outcome.status == "scored", outcome
    [score] = [s for s in emu.scores() if s["traceId"] == trace_id and s["metadata"]["rubric_version"] ==
               int(rubric_key.rsplit("@v", 1)[1])]
    return score


@pytest.mark.parametrize("score,expected", [
    (NUMERIC, {"dataType": "NUMERIC", "minValue": 1, "maxValue": 5, "categories": None}),
    ({"type": "numeric", "min": 0, "max": 1}, {"dataType": "NUMERIC", "minValue": 0, "maxValue": 1, "categories": None}),
    (CATEGORICAL, {"dataType": "CATEGORICAL", "minValue": None, "maxValue": None,
                   "categories": [{"label": "pass", "value": 1}, {"label": "partial", "value": 0.5},
                                  {"label": "fail", "value": 0}]}),
    (BOOLEAN, {"dataType": "BOOLEAN", "minValue": None, "maxValue": None,
               "categories": [{"label": "True", "value": 1}, {"label": "False", "value": 0}]}),
])
def test_each_score_carries_the_config_of_its_rubric_scale(settings, redis_client, langfuse_emu, tmp_path,
                                                           score, expected):
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=write_rubric(tmp_path, "quality_check", 1, score,
                                                          "Does the answer resolve the request?"))
    written = score_one(rt, langfuse_emu, "quality_check@v1")
    config = langfuse_emu.store.configs[written["configId"]]
    assert config["name"] == written["name"] == "quality_check"
    assert config["dataType"] == written["dataType"] == expected["dataType"]
    assert (config["minValue"], config["maxValue"]) == (expected["minValue"], expected["maxValue"])
    have = sorted((c["label"], float(c["value"])) for c in config["categories"] or [])
    assert have == sorted((c["label"], float(c["value"])) for c in expected["categories"] or [])
    assert "Does the answer resolve the request?" in config["description"] and config["isArchived"] is False
    assert langfuse_emu.violations() == []


def test_versions_with_the_same_scale_share_one_config(settings, redis_client, langfuse_emu, tmp_path):
    root = write_rubric(tmp_path, "tone", 1, NUMERIC)
    write_rubric(root, "tone", 2, NUMERIC, "Is the tone right? (reworded prompt)")
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=root)
    first, second = score_one(rt, langfuse_emu, "tone@v1", 1), score_one(rt, langfuse_emu, "tone@v2", 2)
    assert first["configId"] == second["configId"]
    assert len(langfuse_emu.store.configs) == 1


def test_a_changed_scale_gets_a_new_config_and_both_versions_keep_scoring(settings, redis_client, langfuse_emu,
                                                                          tmp_path):
    root = write_rubric(tmp_path, "tone", 1, NUMERIC)
    write_rubric(root, "tone", 2, WIDER)
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=root)
    v1 = score_one(rt, langfuse_emu, "tone@v1", 1, quality=1.0)
    v2 = score_one(rt, langfuse_emu, "tone@v2", 2, quality=1.0)
    assert (v1["value"], v2["value"]) == (5, 10)  # 10 is valid only under the v2 config
    assert v1["configId"] != v2["configId"]
    configs = langfuse_emu.store.configs
    assert (configs[v1["configId"]]["maxValue"], configs[v2["configId"]]["maxValue"]) == (5, 10)
    assert {c["name"] for c in configs.values()} == {"tone"} and not any(c["isArchived"] for c in configs.values())
    # v1 keeps running beside v2 (shadowing) and keeps its own config
    assert score_one(rt, langfuse_emu, "tone@v1", 3)["configId"] == v1["configId"]


def test_a_server_refusing_a_second_config_per_name_is_a_clear_config_error(settings, redis_client,
                                                                            langfuse_emu, tmp_path):
    langfuse_emu.store.unique_config_names = True  # plays the older server release
    root = write_rubric(tmp_path, "tone", 1, NUMERIC)
    write_rubric(root, "tone", 2, WIDER)
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=root)
    score_one(rt, langfuse_emu, "tone@v1", 1)
    with pytest.raises(ConfigError) as err:
        rt.score_configs.config_id(rt.rubrics["tone@v2"])
    assert "tone@v2" in str(err.value) and "0..10" in str(err.value)


def test_an_existing_matching_config_is_found_and_an_archived_one_is_not_reused(settings, redis_client,
                                                                                 langfuse_emu, tmp_path):
    archived = langfuse_emu.store.create_config({"name": "tone", "dataType": "NUMERIC", "minValue": 1, "maxValue": 5})
    archived["isArchived"] = True
    other_scale = langfuse_emu.store.create_config({"name": "tone", "dataType": "NUMERIC", "minValue": 0, "maxValue": 100})
    made_in_ui = langfuse_emu.store.create_config({"name": "tone", "dataType": "NUMERIC", "minValue": 1, "maxValue": 5})
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=write_rubric(tmp_path, "tone", 1, NUMERIC))
    assert score_one(rt, langfuse_emu, "tone@v1")["configId"] == made_in_ui["id"]
    assert len(langfuse_emu.store.configs) == 3 and other_scale["id"] != made_in_ui["id"]


def test_ensure_creates_every_active_version_config_once_and_the_cache_spares_the_api(
        settings, redis_client, langfuse_emu, tmp_path):
    root = write_rubric(tmp_path, "tone", 1, NUMERIC)
    write_rubric(root, "tone", 2, WIDER)
    write_rubric(root, "safe", 1, BOOLEAN)
    rubrics = load_rubrics(root)
    ids = ScoreConfigs(build_langfuse_api(settings), redis_client).ensure(rubrics.values())
    assert set(ids) == {"tone@v1", "tone@v2", "safe@v1"} and len(set(ids.values())) == 3
    calls = len(langfuse_emu.requests())
    again = ScoreConfigs(build_langfuse_api(settings), redis_client).ensure(rubrics.values())  # another process
    assert again == ids and len(langfuse_emu.requests()) == calls


def test_config_names_follow_the_api_rule():
    assert config_name_problem("helpfulness") is None and config_name_problem("tone (v2) 1.0") is None
    assert config_name_problem("x" * 36) and config_name_problem("ünïcode") and config_name_problem("a/b")


# -- the emulator validates as the server does (through the real SDK) -------------------------------

def post_score(api, body: dict):
    """POST /api/public/scores, one object (the spec's shape), through the SDK's HTTP client."""
    return raw_request(api, "POST", "api/public/scores", json=body)


@pytest.fixture
def api(settings):
    return build_langfuse_api(settings)


@pytest.mark.parametrize("request_kwargs", [
    {"name": "b", "data_type": "BOOLEAN", "categories": [{"label": "yes", "value": 1}, {"label": "no", "value": 0}]},
    {"name": "c", "data_type": "CATEGORICAL", "categories": [{"label": "a", "value": 1}, {"label": "a", "value": 0}]},
    {"name": "c", "data_type": "CATEGORICAL"},
    {"name": "c", "data_type": "CATEGORICAL", "min_value": 0, "categories": [{"label": "a", "value": 1}]},
    {"name": "n", "data_type": "NUMERIC", "min_value": 5, "max_value": 5},
    {"name": "bad/name", "data_type": "NUMERIC"},
])
def test_invalid_score_configs_are_refused(api, request_kwargs):
    with pytest.raises(ApiError) as err:
        api.score_configs.create(**request_kwargs)
    assert err.value.status_code == 400


@pytest.mark.parametrize("body,problem", [
    ({"name": "tone", "value": 6}, "range"),
    ({"name": "tone", "value": 0.5, "dataType": "CATEGORICAL"}, "Data type"),
    ({"name": "other", "value": 3}, "Name mismatch"),
])
def test_scores_that_break_their_config_are_refused(api, langfuse_emu, body, problem):
    config = api.score_configs.create(name="tone", data_type="NUMERIC", min_value=1, max_value=5)
    with pytest.raises(ApiError) as err:
        post_score(api, {"traceId": "t" * 32, "configId": config.id, **body})
    assert err.value.status_code == 400 and problem in str(err.value.body)
    assert langfuse_emu.scores() == []


def test_an_archived_config_refuses_new_scores_and_categories_are_checked(api, langfuse_emu):
    labels = api.score_configs.create(name="verdict", data_type="CATEGORICAL",
                                      categories=[{"label": "pass", "value": 1}, {"label": "fail", "value": 0}])
    score = {"traceId": "t" * 32, "name": "verdict", "configId": labels.id}
    with pytest.raises(ApiError):
        post_score(api, {**score, "value": "maybe"})
    post_score(api, {**score, "value": "pass"})
    api.score_configs.update(labels.id, is_archived=True)
    with pytest.raises(ApiError) as err:
        post_score(api, {**score, "traceId": "u" * 32, "value": "pass"})
    assert "archived" in str(err.value.body)
    assert [s["value"] for s in langfuse_emu.scores()] == ["pass"]


def test_a_forgotten_config_is_looked_up_again_and_an_archived_one_replaced(settings, redis_client, langfuse_emu,
                                                                            tmp_path):
    rt = hand_built_runtime(settings, redis_client, rubrics_dir=write_rubric(tmp_path, "tone", 1, NUMERIC))
    first = score_one(rt, langfuse_emu, "tone@v1", 1)["configId"]
    langfuse_emu.store.configs[first]["isArchived"] = True  # someone archived it in the UI
    rt.score_configs.forget(rt.rubrics["tone@v1"])
    second = rt.score_configs.config_id(rt.rubrics["tone@v1"])
    assert second != first and langfuse_emu.store.configs[second]["isArchived"] is False
