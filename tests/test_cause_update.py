"""One incident, updated (issue 27): a drop is alerted as soon as it is detected, saying "cause not
yet known, n = …" while too few scores follow its start; once they do, the cause goes out as an
update of the same incident (PagerDuty's dedup key, the incident id), once. ``tracejudge cause``
then shows it and adds its examples to the rubric's regression dataset, each once.

Scores enter Redis as confirmed scores do (``DriftContribution.apply`` in one transaction), so
the detector, the slice log and the alerts are the real ones; no judge is involved."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random

import pytest
from click.testing import CliRunner

from tests.helpers import copy_rubrics, make_env
from worker.alerts import outbox
from worker.alerts.sinks import sinks_for
from worker.cli.main import main
from worker.drift.contribution import SLICES_KEY, DriftContribution
from worker.drift.detection import open_incident
from worker.drift.run import run_detection
from worker.rubrics.rubric import load_rubrics

SEGMENT = "feature=summarize|tenant=acme"


def scores(since: float, until: float, change_at: float, seed: int = 11) -> list[tuple[float, float, dict]]:
    """(trace epoch, value 0–1, metadata) for acme's summaries, 80 a day; from ``change_at``
    prompt v13, 45 points worse on long inputs."""
    rng, out, t = random.Random(seed), [], since
    while t < until:
        t += rng.expovariate(80 / 86400)
        long = rng.random() < 0.4
        q = rng.gauss(0.8, 0.12) - (0.45 if t >= change_at and long else 0)
        dims = {"prompt": "summarize@13" if t >= change_at else "summarize@12",
                "input_tokens": "3k-10k" if long else "<1k", "release": "r1", "tool": "none"}
        out.append((t, min(1.0, max(0.0, q)), {"feature": "summarize", "tenant": "acme", SLICES_KEY: dims}))
    return out


def confirm(client, rubric, batch) -> None:
    """As confirmations apply them: each score's contribution in its own transaction."""
    for i, (t, q, metadata) in enumerate(batch):
        value = 1 + round(q * 4)  # the 1–5 scale
        c = DriftContribution.of_score(rubric, f"tr-{t:.3f}-{i}", metadata,
                                       dt.datetime.fromtimestamp(t, dt.timezone.utc), value, 1000)
        pipe = client.pipeline(transaction=True)
        c.apply(pipe)
        pipe.execute()


@pytest.mark.slow
def test_alerted_with_cause_not_yet_known_then_updated_once_when_it_is(
        tmp_path, settings, redis_client, webhook, langfuse_emu, judge_emu, redis_url):
    rubrics = load_rubrics(copy_rubrics(tmp_path, "helpfulness"))
    rubric = rubrics["helpfulness@v1"]
    s = dataclasses.replace(settings, alert_webhook_url=webhook.base_url + "/hook", rubrics_dir=rubric.path.parents[1])
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    change_at = now - 5 * 86400
    stream = scores(now - 40 * 86400, now - 3600, change_at)
    cell = f"helpfulness|v1|{rubric.judge.model}|{SEGMENT}"
    link = lambda t: f"http://ui/trace/{t}"  # noqa: E731
    done, alerts, alerted_at = 0, [], None
    # Tick by tick, as the scheduler runs the detector: every 2 hours of trace time.
    tick = now - 9 * 86400
    while tick < now:
        batch = [x for x in stream[done:] if x[0] < tick]
        confirm(redis_client, rubric, batch)
        done += len(batch)
        _, sent = run_detection(s, rubrics, redis_client, link, now=tick + s.settle_seconds + 301)
        alerts += sent
        if sent and alerted_at is None:
            alerted_at = tick
        tick += 2 * 3600
    kinds = [a.kind for a in alerts]
    assert kinds == ["quality_drop", "quality_drop_cause"], [(a.kind, a.cell) for a in alerts]
    first, update = alerts
    assert first.cell == update.cell == cell and first.incident_id == update.incident_id
    assert first.dedup_key() == update.dedup_key()
    assert first.cause is not None and str(first.cause["reason"]).startswith("cause not yet known, n = ")
    assert update.cause is not None and update.cause["status"] == "slice", update.cause["reason"]
    assert "input_tokens=3k-10k" in json.dumps(update.cause["slices"])
    events = update.cause["events"]
    assert isinstance(events, list) and events[0]["value"] == "summarize@13" and events[0]["previous"] == "summarize@12"
    assert update.examples_after and update.examples_before
    outbox.deliver(redis_client, sinks_for(s))
    received = [a["kind"] for a in webhook.received]
    assert received.count("quality_drop") == 1 and received.count("quality_drop_cause") == 1

    env = make_env(langfuse_emu, judge_emu, redis_url, s.rubrics_dir)
    listed = CliRunner().invoke(main, ["cause"], env=env)
    assert listed.exit_code == 0 and cell in listed.output and "explains" in listed.output, listed.output
    shown = CliRunner().invoke(main, ["cause", "tenant=acme"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "WHERE input_tokens=3k-10k" in shown.output and "CHANGED prompt summarize@12" in shown.output
    assert "lowest since the start" in shown.output and "comparable before it" in shown.output
    missing = CliRunner().invoke(main, ["cause", "tenant=nobody"], env=env)
    assert missing.exit_code == 1 and "matches 0 open incidents" in missing.output
    # The examples' traces are ours (tr-…): not in Langfuse, so they wait in the dataset's pending list.
    added = CliRunner().invoke(main, ["cause", first.incident_id or "", "--to-dataset"], env=env)
    assert added.exit_code == 0 and "0 example(s) added" in added.output, added.output
    assert open_incident(redis_client, cell) is not None
