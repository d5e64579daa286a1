"""Prometheus metrics of a real two-process worker fleet, summed over its processes, and the
Grafana dashboard's queries against what it exports."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emulators.stack import child_env, stop_group
from tests.helpers import REPO, free_port, make_env, one_trace, sampler_for, wait_until, whole_window
from worker.accounting.budget import ALL, Budget
from worker.fleet.metrics import RATELIMIT_WAIT_SECONDS, RATELIMIT_WAITS
from worker.fleet.queues import queue_depth
from worker.jobs import judge_message


def scrape(port: int) -> dict[str, list]:
    """Samples by name: [(labels, value), ...]."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples, name, **match) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


@pytest.fixture
def fleet(settings, runtime, broker, redis_client, langfuse_emu, judge_emu, redis_url, tmp_path, test_rubrics):
    """Seeded traces enqueued by the sampler, and a `tracejudge worker -p 2 -t 4` with metrics on."""
    observations = []
    for i in range(24):
        observations += one_trace(f"metrics-trace-{i:03d}", f"Answer number {i}: open Settings, then Security.",
                                  retrieval=["Settings > Security > Reset"] if i % 3 == 0 else None)
    observations += one_trace("metrics-no-output", None, minutes_ago=180)  # unscored: no_output
    langfuse_emu.load_observations(observations)
    judge_emu.configure(latency_ms=150)
    sampler = sampler_for(dataclasses.replace(settings, sample_rate=1.0), runtime, broker)
    report = sampler.run_pass(*whole_window())
    sampler.set_cursor(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=90))
    redis_client.hset(RATELIMIT_WAITS, "judge:anthropic:requests", 3)  # as worker/rate_limits records them
    redis_client.hset(RATELIMIT_WAIT_SECONDS, "judge:anthropic:requests", 4.5)

    port = free_port()
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_METRICS_PORT=port,
                   TRACEJUDGE_DAILY_BUDGET_USD=100, TRACEJUDGE_MAX_JOB_RETRIES=1,
                   dramatiq_prom_db=tmp_path / "prom", dramatiq_prom_host="127.0.0.1")
    log_path = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.main import main; main()", "worker", "--processes", "2", "--threads", "4"],
        env=child_env(env), stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield report.enqueued, port, proc, log_path, tmp_path / "prom"
    finally:
        stop_group(proc)


@pytest.mark.slow  # a two-process worker fleet
def test_metrics_of_both_worker_processes_are_summed_and_dramatiqs_own_are_served(
        fleet, runtime, broker, redis_client, judge_emu, langfuse_emu):
    jobs, port, proc, log_path, prom_dir = fleet
    assert jobs == 50  # 25 traces x 2 rubrics

    def judged(samples):
        return total(samples, "tracejudge_judge_jobs_total", outcome="scored") + \
            total(samples, "tracejudge_judge_jobs_total", outcome="unscored")

    wait_until(lambda: judged(scrape(port)) == jobs and queue_depth(redis_client).outstanding == 0, 90,
               "every job judged", proc, log_path, interval=0.3, ignoring=(httpx.HTTPError,))
    samples = scrape(port)
    stats = runtime.outcomes.stats()
    assert judged(samples) == stats["scored"] + stats.get("unscored", 0) + stats.get("not_applicable", 0) == jobs
    assert total(samples, "tracejudge_judge_jobs_total", outcome="scored") == stats["scored"]
    assert total(samples, "tracejudge_unscored_total", reason="no_output") == 1  # groundedness: not applicable
    assert total(samples, "tracejudge_unscored_total", reason="not_applicable") == stats["not_applicable"]
    assert total(samples, "tracejudge_judge_duration_seconds_count") == jobs
    assert total(samples, "tracejudge_judge_tokens_total", kind="input") == stats["input_tokens"]
    assert total(samples, "tracejudge_judge_tokens_total", kind="output") == stats["output_tokens"]
    cost = total(samples, "tracejudge_judge_cost_usd_total")
    assert cost > 0 and cost == pytest.approx(Budget(redis_client, None).spent()[ALL], rel=1e-3)
    assert total(samples, "tracejudge_budget_left_usd", rubric="*") == pytest.approx(100 - cost, rel=1e-3)
    # both worker processes wrote their own metric files, and the scrape summed them
    writers = {re.search(r"_(\d+)\.db$", p.name).group(1) for p in prom_dir.glob("counter_*.db")}
    assert len(writers) == 2, writers
    assert total(samples, "dramatiq_messages_total", actor_name="judge_trace") == jobs
    assert "dramatiq_message_duration_milliseconds_bucket" in samples
    assert total(samples, "tracejudge_queue_messages") == 0
    assert total(samples, "tracejudge_sampler_traces_total", stage="scanned") == 25
    assert total(samples, "tracejudge_sampler_traces_total", stage="enqueued") == jobs
    assert 90 <= total(samples, "tracejudge_sampler_lag_seconds") < 300
    assert total(samples, "tracejudge_ratelimit_waits_total", limiter="judge:anthropic:requests") == 3
    assert total(samples, "tracejudge_ratelimit_wait_seconds_total", limiter="judge:anthropic:requests") == 4.5
    assert total(samples, "tracejudge_redis_up") == 1

    # A job that keeps failing: retried once, then dead-lettered; dramatiq's error metrics appear.
    judge_emu.configure(fault_rate_500=1.0, retry_after=0)
    langfuse_emu.load_observations(one_trace("metrics-failing", "An answer the judge never sees."))
    broker.enqueue(judge_message("metrics-failing", "helpfulness@v1"))
    wait_until(lambda: total(scrape(port), "dramatiq_message_rejects_total") == 1, 90, "the dead letter", proc, log_path,
               interval=0.3, ignoring=(httpx.HTTPError,))
    samples = scrape(port)
    assert total(samples, "tracejudge_dead_letters") == 1
    assert total(samples, "tracejudge_judge_jobs_total", outcome="retried") == 2
    assert total(samples, "dramatiq_message_retries_total") >= 1  # dramatiq counts the delay-queue hop too
    assert total(samples, "dramatiq_message_errors_total") == 2

    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    names = dashboard_metric_names(dashboard)
    assert len(names) >= 15
    missing = sorted(n for n in names if n not in samples)
    assert not missing, f"dashboard queries metrics the fleet does not export: {missing}"


_PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "min", "max", "avg", "le"}


def dashboard_metric_names(dashboard: dict) -> set[str]:
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\bby \([^)]*\)", "", target["expr"])
            names |= {w for w in re.findall(r"[a-z_][a-z0-9_]*", expr) if w not in _PROMQL_WORDS}
    return names


def test_dashboard_names_only_metrics_and_every_panel_has_a_query():
    dashboard = json.loads((Path(REPO) / "deploy" / "grafana-dashboard.json").read_text())
    names = dashboard_metric_names(dashboard)
    assert all(n.startswith(("tracejudge_", "dramatiq_")) for n in names), names
    assert all(panel["targets"] for panel in dashboard["panels"])


def test_status_prints_queues_budget_sampler_rate_limit_waits_and_outcomes(
        settings, runtime, broker, redis_client, langfuse_emu, judge_emu, redis_url, test_rubrics):
    from click.testing import CliRunner

    from worker.cli.main import main

    for i in range(3):
        broker.enqueue(judge_message(f"status-trace-{i}", "helpfulness@v1"))
    budget = Budget(redis_client, None)
    budget.record("status-score", "helpfulness", 0.125)
    budget.park("parked-score", "status-trace-9", "helpfulness@v1")
    sampler_for(settings, runtime, broker).set_cursor(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=120))
    redis_client.hset(RATELIMIT_WAITS, "langfuse:requests", 7)
    redis_client.hset("tracejudge:stats", mapping={"scored": 5, "unscored": 1, "unscored:unparseable": 1,
                                                   "input_tokens": 900, "cost_microusd": 125000})
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics, TRACEJUDGE_DAILY_BUDGET_USD="0.5")

    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["queue"] == {"ready": 3, "in_flight": 0, "delayed": 0, "dead_letters": 0}
    assert report["budget"]["global"] == {"spent_usd": 0.125, "cap_usd": 0.5, "left_usd": 0.375}
    assert report["budget"]["rubrics"]["helpfulness@v1"]["parked"] == 1
    assert 120 <= report["sampler"]["lag_seconds"] < 200
    assert report["rate_limit_waits"]["langfuse:requests"]["waits"] == 7
    assert report["outcomes"]["scored"] == 5 and report["unscored_by_reason"] == {"unparseable": 1}
    assert report["judge"]["tokens"]["input"] == 900 and report["judge"]["cost_usd"] == 0.125

    text = CliRunner().invoke(main, ["status"], env=env)
    assert text.exit_code == 0, text.output
    assert "queue: 3 ready, 0 in flight, 0 delayed, 0 dead letters" in text.output
    assert "langfuse:requests 7" in text.output and "1 parked" in text.output


def test_status_without_redis_exits_with_one_line(langfuse_emu, judge_emu, test_rubrics):
    from click.testing import CliRunner

    from worker.cli.main import main

    env = make_env(langfuse_emu, judge_emu, f"redis://127.0.0.1:{free_port()}/0", test_rubrics)
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code != 0 and "cannot read the fleet's state from Redis" in result.output
    assert "Traceback" not in result.output


def test_a_fleet_starts_with_an_empty_metrics_dir_and_leaves_a_busy_ports_files_alone(tmp_path):
    from worker.fleet.metrics import prepare_metrics_dir

    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_123.db").write_bytes(b"stale")
    (prom / "notes.txt").write_text("the operator's")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        environ = {"dramatiq_prom_db": str(prom), "dramatiq_prom_host": "127.0.0.1"}
        assert not prepare_metrics_dir(busy.getsockname()[1], environ)
        assert (prom / "counter_123.db").exists()
    environ = {"dramatiq_prom_db": str(prom), "dramatiq_prom_host": "127.0.0.1"}
    assert prepare_metrics_dir(free_port(), environ)
    assert not (prom / "counter_123.db").exists() and (prom / "notes.txt").exists()
    assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(prom)
