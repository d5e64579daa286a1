"""Every flow confirms and heals: with no scheduler anywhere, the fleet reads its own writes back,
and ``drift --once``, ``status`` and ``report`` count every score that reached Langfuse.

Against a server that, like the real one, answers 200 and checks the score config later
(dropping the scores of an archived config without a word)."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from emulators.seed import generate
from tests.helpers import Webhook, copy_rubrics, expected_pairs, make_env, one_trace, start_worker_command, wait_until
from worker.accounting.outcomes import UNCONFIRMED, OutcomeLog
from worker.cli.main import main
from worker.fleet import confirmer
from worker.fleet.confirmer import CONFIRM_LOCK, FleetConfirmer, confirm_due
from worker.fleet.lease import Lease
from worker.fleet.queues import queue_depth
from worker.judging import confirm
from worker.judging.pipeline import judge_one

KEY = "helpfulness@v1"


@pytest.fixture
def short_grace(monkeypatch):
    """A read-back due 0.2 s after its write instead of 10 s, for the in-process tests."""
    monkeypatch.setattr(confirm, "GRACE_SECONDS", 0.2)
    monkeypatch.setattr(confirmer, "GRACE_SECONDS", 0.2)


def judged(rt, emu, trace_id: str) -> None:
    emu.load_observations(one_trace(trace_id, "Open Settings > Security > Reset password."))
    assert judge_one(rt, trace_id, KEY).status == "scored"


def test_a_worker_process_reads_back_its_writes_without_a_scheduler(runtime, langfuse_emu, redis_client, short_grace):
    langfuse_emu.set_modes(score_checks="async")
    for i in range(3):
        judged(runtime, langfuse_emu, f"{i:032x}")
    assert OutcomeLog(redis_client).stats().get("confirmed", 0) == 0
    middleware = FleetConfirmer(lambda: runtime, every=0.1)
    middleware.after_worker_boot(None, None)
    try:
        wait_until(lambda: OutcomeLog(redis_client).stats().get("confirmed", 0) == 3, 10, "the fleet's read-back")
    finally:
        middleware.before_worker_shutdown(None, None)
    assert redis_client.zcard(UNCONFIRMED) == 0
    assert not middleware._thread.is_alive()


def test_one_reader_at_a_time_and_nothing_counted_twice(runtime, langfuse_emu, redis_client, short_grace):
    judged(runtime, langfuse_emu, "a" * 32)
    time.sleep(0.3)
    other = Lease(redis_client, 60, key=CONFIRM_LOCK)
    assert other.hold()
    assert confirm_due(runtime) is None  # another process is reading back: this one skips its turn
    assert OutcomeLog(redis_client).stats().get("confirmed", 0) == 0
    other.release()
    assert confirm_due(runtime).counts["confirmed"] == 1
    # The scheduler's pass, a worker's and a command's, all at once: counted once.
    results = []
    threads = [threading.Thread(target=lambda: results.append(confirm.confirm_writes(runtime))) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert OutcomeLog(redis_client).stats()["confirmed"] == 1


def test_status_counts_the_scores_a_stopped_fleet_wrote_without_judge_keys(settings, runtime, langfuse_emu,
                                                                              redis_client, test_rubrics, judge_emu,
                                                                              redis_url, short_grace):
    judged(runtime, langfuse_emu, "b" * 32)
    time.sleep(0.3)
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics)
    env.pop("ANTHROPIC_API_KEY"), env.pop("OPENAI_API_KEY")  # an operator's box: Langfuse and Redis only
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    write_back = json.loads(result.stdout)["write_back"]
    assert write_back["confirmed"] == 1 and write_back["awaiting_read_back"] == 0


def test_status_says_what_still_waits_when_langfuse_is_down(settings, runtime, langfuse_emu, redis_client,
                                                              test_rubrics, judge_emu, redis_url, short_grace):
    judged(runtime, langfuse_emu, "c" * 32)
    time.sleep(0.3)
    langfuse_emu.configure(down=True)
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics)
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output
    assert "read-back of written scores failed" in result.output and "1 written score(s) are not counted yet" in result.output
    assert "sk-lf" not in result.output


@pytest.mark.slow
def test_batch_flow_without_a_scheduler_heals_dropped_scores_and_drift_alerts(
        settings, runtime, broker, redis_client, langfuse_emu, judge_emu, redis_url, tmp_path):
    """``sample --once``, then ``tracejudge worker`` draining the queue, no scheduler: a config
    archived mid-run (the server drops that config's scores after its 200) is healed, every
    selected trace ends up with exactly one score in Langfuse, and ``drift --once`` alerts the
    planted drop."""
    rubrics = copy_rubrics(tmp_path, "helpfulness")
    langfuse_emu.set_modes(generation="v4-events", score_checks="async")
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    # 35 days: the sequential detector holds the last week to the 28 days before it.
    observations = generate(1200, days=35, include_malformed=False, seed=5, end=end,
                            drift={"feature": "summarize", "points": 30})
    langfuse_emu.load_observations(observations)
    judge_emu.configure(latency_ms=50)
    webhook = Webhook()
    webhook.start()
    env = make_env(langfuse_emu, judge_emu, redis_url, rubrics, TRACEJUDGE_SAMPLE_RATE=1.0, TRACEJUDGE_METRICS_PORT=0,
                   TRACEJUDGE_ALERT_WEBHOOK_URL=webhook.base_url + "/hook")
    since = (end - dt.timedelta(days=36)).isoformat()
    result = CliRunner().invoke(main, ["sample", "--once", "--since", since, "--until", end.isoformat()], env=env)
    assert result.exit_code == 0, result.output
    selected = {t for t, rubric in expected_pairs(observations, 1.0) if rubric == "helpfulness"}
    assert queue_depth(redis_client).outstanding >= len(selected) > 800

    log_path = tmp_path / "worker.log"
    stats = OutcomeLog(redis_client).stats
    proc = start_worker_command(env, log_path, processes=1, threads=8)
    try:
        wait_until(lambda: stats().get("scored", 0) >= 100, 120, "a first part judged", proc, log_path)
        archived = langfuse_emu.scores()[0]["configId"]
        langfuse_emu.archive_config(archived)  # someone archives it in the UI, mid-run
        wait_until(lambda: queue_depth(redis_client).outstanding == 0, 240, "the queue drained", proc, log_path)
        wait_until(lambda: redis_client.zcard(UNCONFIRMED) == 0, 120, "every write read back", proc, log_path)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)

    dropped = langfuse_emu.dropped_score_counts()
    assert dropped.get("config_archived", 0) > 0, "the archive came too late to test anything"
    langfuse_emu.drain_scores()
    scores = [s for s in langfuse_emu.scores() if s["name"] == "helpfulness"]
    by_trace = {s["traceId"] for s in scores}
    assert len(scores) == len(by_trace), "a trace scored twice"
    s = stats()
    assert by_trace == selected - _unscored(redis_client), "a selected trace has no score in Langfuse"
    assert s["confirmed"] == len(scores) and s.get("missing", 0) == 0
    assert s["rewritten"] >= dropped["config_archived"]
    healed = {d["id"] for d in langfuse_emu.dropped_scores() if d["reason"] == "config_archived"}
    assert all(x["configId"] != archived for x in scores if x["id"] in healed)
    assert healed <= {x["id"] for x in scores}, "a dropped score never landed"

    print(f"batch flow: {len(scores)} scores in Langfuse, {dropped['config_archived']} dropped after their 200 "
          f"and healed ({s['rewritten']} re-writes), {s['confirm_requests']} read-back requests")
    status = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert json.loads(status.stdout)["write_back"]["confirmed"] == len(scores)
    drift = CliRunner().invoke(main, ["drift", "--once", "--json"], env=env)
    assert drift.exit_code == 0, drift.output
    cells = json.loads(drift.stdout)["cells"]
    alerting = {c["segment"] for c in cells if c["decision"]["status"] == "alert"}
    assert "feature=summarize" in alerting and all(a.startswith("feature=summarize") for a in alerting), alerting
    paged = {a["segment"] for a in webhook.received if a["kind"] == "quality_drop"}  # by the sequential detector
    webhook.stop()
    assert "feature=summarize" in paged and all(p.startswith("feature=summarize") for p in paged), paged
    first_day = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=13)).isoformat()
    started = {r["traceId"]: r["startTime"][:10] for r in observations if r.get("isRootObservation")}
    in_weeks = sum(started[x["traceId"]] >= first_day for x in scores)
    assert sum(c["decision"]["n_curr"] + c["decision"]["n_prev"] for c in cells if c["segment"] == "all") == in_weeks
    report = CliRunner().invoke(main, ["report", "--out", str(tmp_path / "report.html")], env=env)
    assert report.exit_code == 0, report.output
    assert int(re.search(r"(\d+) alerting", report.output).group(1)) >= 1, report.output


def _unscored(client) -> set[str]:
    return {json.loads(e)["trace_id"] for e in client.lrange("tracejudge:unscored", 0, -1)}
