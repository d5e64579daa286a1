"""Rebuilding the drift aggregates from the scores in Langfuse after a Redis loss: judged by the
real pipeline, read back through GET /api/public/v3/scores with the langfuse SDK."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from click.testing import CliRunner

from emulators.seed import generate
from tests.helpers import drain, make_env, sampler_for, whole_window
from worker.accounting.outcomes import OutcomeLog
from worker.cli.main import main
from worker.drift import aggregates as agg
from worker.drift.rebuild import RebuildError, check_since, default_since, rebuild
from worker.langfuse_io.client import build_langfuse_api, raw_request


def aggregates_snapshot(client) -> dict:
    """Every aggregate key with its content, floats as floats (their sums may differ in the
    last bit with the order of addition)."""
    out = {}
    for key in sorted(k.decode() for k in client.scan_iter(match=agg.PREFIX + "*", count=1000)):
        kind = client.type(key).decode()
        if kind == "hash":
            out[key] = {f.decode(): float(v) for f, v in client.hgetall(key).items()}
        elif kind == "set":
            out[key] = sorted(m.decode() for m in client.smembers(key))
        else:
            out[key] = [(m.decode(), s) for m, s in client.zrange(key, 0, -1, withscores=True)]
    return out


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert got[key].keys() == value.keys(), key
            assert got[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert got[key] == value, key


@pytest.fixture
def judged(settings, runtime, broker, redis_client, langfuse_emu):
    """Two weeks of seeded traces judged by the real pipeline on both pipeline rubrics."""
    langfuse_emu.load_observations(generate(260, include_malformed=False, seed=5,
                                            end=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)))
    s = dataclasses.replace(settings, sample_rate=1.0)
    sampler_for(s, runtime, broker).run_pass(*whole_window())
    drain(broker, redis_client, threads=16, timeout=180)
    stats = OutcomeLog(redis_client).stats()
    assert stats.get("unscored", 0) == 0  # unscored counts are not scores: Langfuse cannot give them back
    assert stats["scored"] == len(langfuse_emu.scores()) > 2 * 100  # more than two pages of 100
    return s


@pytest.mark.slow  # judges two weeks of traces, then rebuilds, about 20 s
def test_rebuild_after_a_redis_loss_restores_the_aggregates_exactly_and_only_once(
        judged, runtime, redis_client, langfuse_emu, judge_emu, redis_url, test_rubrics):
    api, outcomes, since = build_langfuse_api(judged), OutcomeLog(redis_client), default_since()
    ours = len(langfuse_emu.scores())
    snapshot = aggregates_snapshot(redis_client)
    assert any(k.startswith(agg.PREFIX + "bottom:") for k in snapshot) and len(snapshot[agg.CELLS]) > 10

    # Right after live scoring, a rebuild adds nothing: the live path's markers are there.
    after_live = rebuild(api, outcomes, runtime.rubrics, since)
    assert (after_live.read, after_live.added, after_live.already_counted) == (ours, 0, ours)
    assert_same(aggregates_snapshot(redis_client), snapshot)

    # Scores that are not ours: another name, our name without our metadata, our name and
    # metadata with an id we would never write.
    some_trace = langfuse_emu.scores()[0]["traceId"]
    foreign = [{"id": "fb-1", "traceId": some_trace, "name": "user-feedback", "value": 1, "dataType": "NUMERIC"},
               {"id": "manual-1", "traceId": some_trace, "name": "helpfulness", "value": 1, "dataType": "NUMERIC"},
               {"id": "manual-2", "traceId": some_trace, "name": "helpfulness", "value": 1, "dataType": "NUMERIC",
                "metadata": {"rubric_version": 1, "rubric_sha256": runtime.rubrics["helpfulness@v1"].sha256}}]
    for body in foreign:
        raw_request(api, "POST", "api/public/scores", json=body)

    redis_client.flushdb()  # the Redis loss
    pages = []

    def fail_after_first_page(result):
        pages.append(result.added)
        langfuse_emu.configure(fault_rate_500=1.0)

    with pytest.raises(RebuildError, match=r"HTTP 500 .* run it again to finish") as failed:
        rebuild(api, outcomes, runtime.rubrics, since, fail_after_first_page)
    [first_page] = pages  # the rest failed: nothing more was added
    assert 0 < first_page <= 100 and f"{first_page} score(s) added so far stay added" in str(failed.value)
    assert aggregates_snapshot(redis_client) != snapshot

    # The rerun, through the command: it finishes what the failed run started.
    langfuse_emu.configure(fault_rate_500=0.0)
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics)
    rerun = CliRunner().invoke(main, ["drift", "--rebuild"], env=env)
    assert rerun.exit_code == 0, rerun.output
    assert "rebuild" in rerun.stderr  # the progress bar
    assert (f"rebuilt from {ours + 2} score(s)" in rerun.stdout  # user-feedback was never asked for
            and f"{ours - first_page} added, {first_page} already counted; "
                "skipped: 1 no rubric_version/rubric_sha256 in metadata, "
                "1 not written by tracejudge (id)" in rerun.stdout), rerun.stdout
    assert_same(aggregates_snapshot(redis_client), snapshot)

    again = rebuild(api, outcomes, runtime.rubrics, since)
    assert (again.added, again.already_counted) == (0, ours)
    assert_same(aggregates_snapshot(redis_client), snapshot)

    # The rebuild's pages (the write-back's read-backs ask for ids instead).
    requests = [r for r in langfuse_emu.requests() if r["path"] == "/api/public/v3/scores" and "id" not in r["query"]]
    assert requests and all(r["query"]["limit"] == ["100"] and r["query"]["source"] == ["API"] for r in requests)
    assert langfuse_emu.violations() == []


def test_rebuild_with_wrong_keys_fails_in_one_line_without_the_secret(
        langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics):
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, LANGFUSE_SECRET_KEY="sk-lf-wrong-secret")
    result = CliRunner().invoke(main, ["drift", "--rebuild"], env=env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: Langfuse refused GET /api/public/v3/scores (HTTP 401)")
    assert "Traceback" not in result.output and "sk-lf-wrong-secret" not in result.output


def test_rebuild_refuses_a_since_older_than_the_exactly_once_markers_last():
    now = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)
    assert check_since(dt.datetime(2026, 10, 1), now) == dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(RebuildError, match="counted twice"):
        check_since(now - dt.timedelta(days=95), now)

