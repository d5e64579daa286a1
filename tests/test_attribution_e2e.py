"""Name the cause, end to end on the emulators (issue 27): prompt ``summarize`` v13 rolls out to
every tenant on a Wednesday at 14:02 and hurts only acme's long inputs (≥ 3,000 tokens). The
detector alerts acme's summarize cell once, its start pinned; the alert names the long inputs as
the slice and prompt v13 (replacing v12) as the change, with traces before and after; nothing
else alerts (globex's summaries got v13 too, and kept their quality)."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from click.testing import CliRunner

from emulators import langfuse_review
from emulators.seed import _answer, _trace
from tests.helpers import make_env
from tests.test_detection import history_start, one_rubric, quality_drops  # noqa: F401  (a fixture)
from worker.cli.main import main
from worker.drift import detection
from worker.drift.cause import EVENT_SLACK_S

CELL = "helpfulness|v1|claude-sonnet-4-6|feature=summarize|tenant=acme"
DROP_POINTS = 35  # on acme's long inputs only: ~14 points of the cell


def change_time(now: dt.datetime) -> dt.datetime:
    """Wednesday 14:02, the last one at least three days ago (so ≥ 300 of acme's summaries follow it)."""
    day = now.date() - dt.timedelta(days=3)
    day -= dt.timedelta(days=(day.weekday() - 2) % 7)
    return dt.datetime.combine(day, dt.time(14, 2), dt.timezone.utc)


def traffic(since: dt.datetime, until: dt.datetime, change_at: dt.datetime, seed: int = 5) -> list[dict]:
    """acme's summaries (30 a day, 100 a day in the last 11 days), globex's summaries (20 a day)
    and support chat (10 a day). Every summary's generation names its prompt (v12, v13 from
    ``change_at``) and its input tokens."""
    rng, observations, t = random.Random(seed), [], since
    step = dt.timedelta(days=1 / 160)
    busy = until - dt.timedelta(days=11)
    while t < until:
        acme = 100 if t >= busy else 30
        for feature, tenant, per_day in (("summarize", "acme", acme), ("summarize", "globex", 20),
                                         ("support-chat", "globex", 10)):
            if rng.random() >= per_day / 160:
                continue
            tokens = rng.choice([400, 1500, 2500, 4200, 6800])
            q = rng.gauss(0.8, 0.15)
            if tenant == "acme" and feature == "summarize" and t >= change_at and tokens >= 3000:
                q -= DROP_POINTS / 100
            trace = _trace(rng, "%032x" % rng.getrandbits(128), t, feature, tenant, "production",
                           _answer(rng, feature, min(1.0, max(0.0, q))))
            generation = trace[1]
            # v13 writes terser summaries (85 output tokens, not 200), for every tenant
            generation["usageDetails"] = {"input": tokens, "output": 85 if feature == "summarize" and t >= change_at
                                          else 200}
            if feature == "summarize":
                generation.update(promptName="summarize", promptVersion=13 if t >= change_at else 12)
            observations += trace
        t += step
    return observations


@pytest.mark.slow
def test_a_prompt_change_hurting_one_tenants_long_inputs_is_named(
        one_rubric, langfuse_emu, judge_emu, redis_url, redis_client, broker, webhook, monkeypatch):  # noqa: F811
    from tests.helpers import drain

    s, sampler = one_rubric
    now = dt.datetime.now(dt.timezone.utc)
    change_at = change_time(now)
    assert change_at.strftime("%a %H:%M") == "Wed 14:02"
    monkeypatch.setattr(detection, "LOOKBACK_DAYS", 10)  # the Wednesday may be 9 days ago
    since = history_start(now)
    langfuse_emu.load_observations(traffic(since, now - dt.timedelta(minutes=30), change_at))
    sampler.run_pass(since, now)
    drain(broker, redis_client, threads=32, timeout=600)

    env = make_env(langfuse_emu, judge_emu, redis_url, s.rubrics_dir,
                   TRACEJUDGE_ALERT_WEBHOOK_URL=webhook.base_url + "/hook")
    result = CliRunner().invoke(main, ["drift", "--once", "--json"], env=env)
    assert result.exit_code == 0, result.output
    drops = quality_drops(webhook)
    assert [a["cell"] for a in drops] == [CELL], [(a["kind"], a["cell"]) for a in webhook.received]
    alert = drops[0]
    started = dt.datetime.fromisoformat(alert["started_at"].replace("Z", "+00:00"))
    low, high = (dt.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in alert["started_between"])
    # The start is pinned within 6 h, and the change lies where attribution looks for change
    # events: the start interval ± EVENT_SLACK_S. The 95% interval alone holds the true start in
    # 89-96% of alarms (benchmarks/detection.py); with this stream at 20:20 UTC on 2026-12-07 it
    # was [15:00, 23:00] around a start pinned at 18:00, an hour after the change at 14:02.
    slack = dt.timedelta(seconds=EVENT_SLACK_S)
    assert abs(started - change_at) < dt.timedelta(hours=6), alert["started_at"]
    assert low - slack <= change_at <= high + slack, alert["started_between"]

    cause = alert["cause"]
    assert cause["status"] == "slice", cause["reason"]
    named = cause["slices"][0]
    assert "input_tokens=3k-10k" in named["slice"] and "tenant" not in named["slice"], named
    assert named["after_mean"] < named["before_mean"] - 20, named
    event = cause["events"][0]
    assert (event["dimension"], event["value"], event["previous"]) == ("prompt", "summarize@13", "summarize@12"), event
    assert event["new_mean"] < event["old_mean"]
    first_seen = dt.datetime.fromisoformat(event["first_seen"].replace("Z", "+00:00"))
    assert change_at <= first_seen < change_at + dt.timedelta(hours=3)
    # Evidence: the slice's lowest traces since the change, and comparable ones before it, linked.
    assert alert["examples_after"] and alert["examples_before"]
    assert max(t["points"] for t in alert["examples_after"]) < min(t["points"] for t in alert["examples_before"])
    assert all(t["url"].endswith(t["trace_id"]) for t in alert["examples_after"] + alert["examples_before"])
    assert any(line.startswith("CHANGED prompt summarize@12") for line in cause["lines"])
    # Every trace's signals, not only the judged ones': v13's output tokens, against v12's before it.
    signal = next(line for line in cause["lines"] if line.startswith("SIGNALS prompt summarize@13"))
    assert "against summarize@12 (old: before the start), every trace" in signal and "output tokens 200 → 85 (−57%)" in signal, signal

    # Nothing else alerts: globex's summaries on v13 kept their quality; acme's and summarize's
    # parents are explained by the cell; the cause went with the alert, so no update follows.
    out = json.loads(result.stdout)
    for det in out["detection"]:
        inc = det["incident"]
        if inc and det["cell"] != CELL:
            assert inc.get("explained_by") or inc.get("held_for"), det["cell"]
            assert "globex" not in det["cell"], det["cell"]
    again = CliRunner().invoke(main, ["drift", "--once"], env=env)
    assert again.exit_code == 0 and [a["kind"] for a in webhook.received].count("quality_drop") == 1
    assert "quality_drop_cause" not in [a["kind"] for a in webhook.received]
    assert "WHERE input_tokens=3k-10k" in again.stdout
    status = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert "explains" in json.loads(status.stdout)["detection"][CELL]["line"]

    # The examples go to the rubric's regression dataset, each once.
    added = CliRunner().invoke(main, ["cause", CELL, "--to-dataset"], env=env)
    assert added.exit_code == 0 and f"{len(alert['examples_after'])} example(s) added" in added.output, added.output
    items = langfuse_review.state(langfuse_emu.store).dataset_items.values()
    assert sorted(i["sourceTraceId"] for i in items) == sorted(t["trace_id"] for t in alert["examples_after"])
    assert all(i["metadata"]["reason"] == "drift_regression" and i["input"] for i in items)
    again = CliRunner().invoke(main, ["cause", CELL, "--to-dataset"], env=env)
    assert again.exit_code == 0 and "0 example(s) added" in again.output
    assert len(langfuse_review.state(langfuse_emu.store).dataset_items) == len(alert["examples_after"])
