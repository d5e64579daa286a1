"""The review loop end to end on the local stack: the real pipeline judges seeded traces, the
review tick routes them to a Langfuse annotation queue and the failures to a dataset (each
once, however often it runs), reviewers' labels come back as agreement figures equal to
scikit-learn's and scipy's on the same pairs, a planted disagreement alerts the owner once, and
``status``, the metrics, the report, ``tracejudge agreement`` and ``rubrics examples pull`` show
the same figures."""
from __future__ import annotations

import dataclasses
import json
import shutil
import threading

import dramatiq
import httpx
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats
from sklearn.metrics import cohen_kappa_score

from emulators.http_base import Emulator
from tests.helpers import (REPO, contract_sampled, drain, hand_built_runtime, installed, make_env, one_trace,
                           sampler_for, whole_window)
from worker.cli.main import main
from worker.cli.status import render_text, status_report
from worker.drift import aggregates as agg
from worker.fleet.broker import build_broker
from worker.fleet.metrics import FleetCollector
from worker.langfuse_io.client import build_langfuse_api, raw_request
from worker.report.data import gather
from worker.report.page import render
from worker.review import datasets, routing
from worker.review.tick import review_tick
from worker.rubrics.rubric import SHARED_PROMPTS

REVIEW = """review:
  bottom_per_week: 3
  calibration_share: 0.5
  boundary: [1]
  dataset:
    below: 3
    user_feedback: {name: user_feedback, below: 0}
calibration:
  min_kappa: 0.6
  min_pairs: 20
"""
QUALITY = (0, 0.25, 0.5, 0.75, 1)  # the judge emulator's hint: scores 1, 2, 3, 4, 5


class Webhook(Emulator):
    def __init__(self):
        super().__init__("127.0.0.1", 0)
        self.received, self._lock = [], threading.Lock()

    def handle(self, method, path, query, headers, body):
        with self._lock:
            self.received.append(body)
        return 200, {"ok": True}, {}


@pytest.fixture
def stack(settings, redis_client, langfuse_emu, tmp_path):
    rubrics_dir = tmp_path / "rubrics"
    shutil.copytree(REPO / "rubrics" / "helpfulness", rubrics_dir / "helpfulness")
    for shared in SHARED_PROMPTS:
        shutil.copy(REPO / "rubrics" / shared, rubrics_dir / shared)
    meta = rubrics_dir / "helpfulness" / "v1" / "rubric.yaml"
    meta.write_text(meta.read_text() + REVIEW)  # a test copy: the shipped version is untouched
    webhook = Webhook()
    webhook.start()
    s = dataclasses.replace(settings, rubrics_dir=rubrics_dir, sample_rate=1.0,
                            alert_webhook_url=webhook.base_url + "/hook")
    with installed(hand_built_runtime(s, redis_client)) as rt:
        broker = build_broker(s)
        dramatiq.set_broker(broker)
        try:
            yield rt, broker, webhook
        finally:
            broker.close()
            webhook.stop()


def judge(rt, broker, langfuse_emu, traces: dict[str, str]) -> dict[str, int]:
    """Seed ``traces`` (id -> answer) and judge them with the real fleet; the judge's scores."""
    langfuse_emu.load_observations([o for tid, answer in traces.items() for o in one_trace(tid, answer)])
    sampler_for(rt.settings, rt, broker).run_pass(*whole_window())
    drain(broker, rt.redis, threads=8, timeout=120)
    return {s["traceId"]: int(s["value"]) for s in langfuse_emu.scores()
            if s["source"] == "API" and s["name"] == "helpfulness"}


def label(langfuse_emu, queue_id, labels: dict[str, int]) -> None:
    for i, (trace_id, value) in enumerate(sorted(labels.items())):
        reply = httpx.post(langfuse_emu.base_url + "/_emulator/annotations", json={
            "queueId": queue_id, "traceId": trace_id, "name": "helpfulness", "value": value,
            "authorUserId": ("alice", "bob")[i % 2]})
        assert reply.status_code == 200, reply.text


def aggregates(client) -> dict:
    return {k.decode(): client.dump(k) for k in sorted(client.scan_iter(match=agg.PREFIX + "*", count=1000))}


def expected_figures(judged: dict[str, int], human: dict[str, int]) -> dict:
    ids = sorted(human)
    h, j = [human[t] for t in ids], [judged[t] for t in ids]
    return {"n": len(ids), "kappa": cohen_kappa_score(h, j, weights="quadratic"),
            "spearman": scipy_stats.spearmanr(h, j).statistic,
            "exact": sum(a == b for a, b in zip(h, j)) / len(ids),
            "within_one": sum(abs(a - b) <= 1 for a, b in zip(h, j)) / len(ids)}


def assert_figures(got: dict, expected: dict) -> None:
    assert got["n"] == expected["n"]
    for key in ("kappa", "spearman", "exact", "within_one"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    assert got["kappa_low"] <= got["kappa"] <= got["kappa_high"]


@pytest.mark.slow  # the whole review loop end to end, about 25 s
def test_routing_labels_agreement_and_alert_end_to_end(stack, langfuse_emu, judge_emu, redis_url):
    rt, broker, webhook = stack
    answers = {f"t-{i:02d}": f"Go to Settings > Security. [[quality:{QUALITY[i % 5]}]]" for i in range(40)}
    answers["t-07"] = "Write to jane.doe@example.com and we reset it. [[quality:0.5]]"
    judged = judge(rt, broker, langfuse_emu, answers)
    assert sorted(judged) == sorted(answers) and set(judged.values()) == {1, 2, 3, 4, 5}
    api = build_langfuse_api(rt.settings, limited=False)
    feedback = {"t-03": -1, "t-04": -1, "t-09": -2, "t-01": 1}  # three traces users flagged
    feedback_on_a_trace_not_in_langfuse = {"ghost-1": -1}
    for trace_id, value in {**feedback, **feedback_on_a_trace_not_in_langfuse}.items():
        raw_request(api, "POST", "api/public/scores", json={"name": "user_feedback", "value": value,
                                                           "traceId": trace_id, "dataType": "NUMERIC"})

    first = review_tick(rt)
    assert first.errors == []
    review = httpx.get(langfuse_emu.base_url + "/_emulator/review").json()
    [queue] = review["queues"]
    assert queue["name"] == "tracejudge-helpfulness"
    assert queue["scoreConfigIds"] == [rt.score_configs.config_id(rt.rubrics["helpfulness@v1"])]
    lowest = sorted(t for t, v in judged.items() if v == 1)
    expected_queue = ({t for t in judged if contract_sampled(t, 0.5)} | set(lowest))
    queued = [i["objectId"] for i in queue["items"]]
    assert len(queued) == len(set(queued)) and set(queued) == expected_queue
    # the bottom 3 per segment cell and week: exactly the three lowest (ties by trace id), in every cell
    cells = sorted(k.decode() for k in rt.redis.scan_iter(match=routing.BOTTOM_ROUTED + "*"))
    assert len(cells) == 4  # all, feature=, tenant=, feature|tenant
    assert all(sorted(m.decode() for m in rt.redis.smembers(c)) == lowest[:3] for c in cells)
    [dataset] = review["datasets"]
    expected_dataset = {t for t, v in judged.items() if v < 3} | {t for t, v in feedback.items() if v < 0}
    assert {i["sourceTraceId"] for i in dataset["items"]} == expected_dataset
    failing = next(i for i in dataset["items"] if i["sourceTraceId"] == lowest[0])
    assert failing["input"] == [{"role": "user", "content": "How do I reset my password?"}]
    assert failing["metadata"]["reason"] == "below_threshold" and failing["metadata"]["judge_value"] == 1

    assert rt.redis.hexists(datasets.PENDING + dataset["name"], "ghost-1")  # waits, holds nothing back

    again = review_tick(rt)  # a rerun: nothing new anywhere
    assert again.errors == [] and dict(again.queued) == {} and dict(again.dataset_items) == {}
    after = httpx.get(langfuse_emu.base_url + "/_emulator/review").json()
    assert [i["id"] for i in after["queues"][0]["items"]] == [i["id"] for i in queue["items"]]
    assert all(i["writes"] == 1 for i in after["datasets"][0]["items"])
    assert len(after["datasets"][0]["items"]) == len(expected_dataset)

    # Reviewers mostly agree with the judge: no alert.
    agreeing = {t: judged[t] for t in sorted(judged)[:30]}
    for trace_id in ("t-02", "t-11", "t-18", "t-25"):
        agreeing[trace_id] = max(1, judged[trace_id] - 1)
    label(langfuse_emu, queue["id"], agreeing)
    before = aggregates(rt.redis)
    ok = review_tick(rt)
    assert ok.errors == [] and ok.agreement["helpfulness@v1"]["status"] == "ok"
    stored = status_report(rt.settings, rt.redis, rt.rubrics)["agreement"]["helpfulness@v1"]
    assert_figures(stored, expected_figures(judged, agreeing))
    assert [a for a in webhook.received if a.get("kind") == "agreement_low"] == []

    # The judge drifts: new traffic it scores 5 that the reviewers find poor.
    drifted = {f"d-{i:02d}": "Passwords can be reset. [[quality:1]]" for i in range(30)}
    judged = judge(rt, broker, langfuse_emu, {**answers, **drifted})
    assert all(judged[t] == 5 for t in drifted)
    disagreeing = {t: (1, 2)[i % 2] for i, t in enumerate(sorted(drifted))}
    label(langfuse_emu, queue["id"], disagreeing)
    before = aggregates(rt.redis)
    low = review_tick(rt)
    assert low.errors == [] and len(low.alerts) == 1
    seen = len(langfuse_emu.requests())
    review_tick(rt)
    review_tick(rt)
    by_id = [r for r in langfuse_emu.requests()[seen:] if r["path"] == "/api/public/v3/scores" and "id" in r["query"]]
    assert by_id == []  # the judge's scores of labelled traces are read once, not every tick
    alerts = [a for a in webhook.received if a.get("kind") == "agreement_low"]
    assert len(alerts) == 1, alerts
    everyone = {**agreeing, **disagreeing}
    expected = expected_figures(judged, everyone)
    assert expected["kappa"] < 0.6
    assert alerts[0]["kappa"] == pytest.approx(expected["kappa"], abs=1e-12)
    assert alerts[0]["owner"] == "ai-quality" and alerts[0]["pairs"] == 60 and alerts[0]["min_kappa"] == 0.6
    assert aggregates(rt.redis) == before  # human labels never enter the drift statistics

    report = status_report(rt.settings, rt.redis, rt.rubrics)
    assert_figures(report["agreement"]["helpfulness@v1"], expected)
    assert report["agreement"]["helpfulness@v1"]["status"] == "low"
    text = render_text(report)
    assert "agreement: helpfulness@v1" in text and f"kappa {expected['kappa']:.2f}" in text and "n=60" in text
    gauges = {(s.labels.get("measure"), s.name): s.value for family in FleetCollector(rt.settings, rt.rubrics,
                                                                                      rt.redis).collect()
              for s in family.samples if s.name.startswith("tracejudge_agreement")}
    assert gauges[("kappa", "tracejudge_agreement")] == pytest.approx(expected["kappa"], abs=1e-12)
    assert gauges[(None, "tracejudge_agreement_pairs")] == 60 and gauges[(None, "tracejudge_agreement_low")] == 1
    page = render(gather(rt.redis, rt.rubrics))
    assert f"judge–human agreement: κ <b>{expected['kappa']:.2f}</b>" in page
    assert "score this week <b>" in page

    env = make_env(langfuse_emu, judge_emu, redis_url, rt.settings.rubrics_dir, TRACEJUDGE_SAMPLE_RATE=1)
    cli = CliRunner().invoke(main, ["agreement", "--stored", "--json"], env=env)
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["helpfulness@v1"]["kappa"] == pytest.approx(expected["kappa"], abs=1e-12)
    fresh = CliRunner().invoke(main, ["agreement"], env=env)
    assert fresh.exit_code == 0 and "helpfulness@v1" in fresh.output and "low" in fresh.output, fresh.output

    # Human-labelled production traces become labelled examples, once each, redacted.
    examples = rt.settings.rubrics_dir / "helpfulness" / "examples.jsonl"
    shipped = examples.read_text().splitlines()
    pulled = CliRunner().invoke(main, ["rubrics", "examples", "pull", "helpfulness", "--dir",
                                       str(rt.settings.rubrics_dir)], env=env)
    assert pulled.exit_code == 0, pulled.output
    lines = examples.read_text().splitlines()
    new = [json.loads(line) for line in lines[len(shipped):]]
    assert sorted(e["trace"]["id"] for e in new) == sorted(everyone)
    assert {e["id"]: e["labels"][0]["value"] for e in new} == {f"lf-{t}": v for t, v in everyone.items()}
    masked = next(e for e in new if e["trace"]["id"] == "t-07")
    assert "jane.doe@example.com" not in json.dumps(masked) and "[EMAIL]" in json.dumps(masked)
    rerun = CliRunner().invoke(main, ["rubrics", "examples", "pull", "helpfulness", "--dir",
                                      str(rt.settings.rubrics_dir)], env=env)
    assert rerun.exit_code == 0 and "0 example(s) added" in rerun.output and len(
        examples.read_text().splitlines()) == len(lines)
    lint = CliRunner().invoke(main, ["rubrics", "lint", "--dir", str(rt.settings.rubrics_dir)], env=env)
    assert lint.exit_code == 0, lint.output
    assert langfuse_emu.violations() == []

    # The unreadable trace goes in after its last attempt, without an input, linked by its id.
    for _ in range(datasets.MAX_ATTEMPTS):
        review_tick(rt)
    items = httpx.get(langfuse_emu.base_url + "/_emulator/review").json()["datasets"][0]["items"]
    ghost = [i for i in items if i["sourceTraceId"] == "ghost-1"]
    assert len(ghost) == 1 and ghost[0]["input"] is None and "trace_unreadable" in ghost[0]["metadata"]
    assert not rt.redis.hexists(datasets.PENDING + dataset["name"], "ghost-1")

    # Langfuse down: the tick reports it and gives up nothing (its cursors stay where they were).
    cursor = rt.redis.get(routing.SCAN + "judged:helpfulness")
    langfuse_emu.configure(down=True)
    failed = review_tick(rt)
    assert failed.errors and any("judged scores of helpfulness" in e for e in failed.errors)
    assert rt.redis.get(routing.SCAN + "judged:helpfulness") == cursor
