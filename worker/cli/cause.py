"""``tracejudge cause``: what explains an open quality incident (the slice, the change, the
traces before and after it), and ``--to-dataset`` to keep its examples for regression runs."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

from worker.cli.common import load_settings, pick_rubric, reports_errors

if TYPE_CHECKING:
    import redis

    from worker.drift.cause_records import CauseRecord
    from worker.drift.records import IncidentRecord
    from worker.settings import Settings


@click.command()
@click.argument("which", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the incident and its cause as JSON.")
@click.option("--to-dataset", is_flag=True,
              help="Add the named slice's lowest-scoring traces since the start to the rubric's regression "
                   "dataset (the review loop's: review.dataset.name, else tracejudge-<rubric>-failures).")
@reports_errors
def cause(which: str | None, as_json: bool, to_dataset: bool) -> None:
    """What explains an open quality incident: the slice, the change events, example traces.

    WHICH is a cell (rubric|v<version>|<judge model>|<segment>), an incident id, or any text
    that picks one paged incident (e.g. "tenant=acme"; a parent cell a narrower one explains is
    not paged). Without it, every open incident and its cause in one line. The cause is the one
    the last detector check found (`drift --once`, the scheduler); an incident whose cause is
    not yet known is searched again here."""
    from worker.drift.aggregates import CELLS
    from worker.drift.cause import find_cause
    from worker.drift.detection import open_incident
    from worker.redis_client import as_text, connect

    settings = load_settings()
    client = connect(settings.redis_url)
    incidents: dict[str, IncidentRecord] = {}
    for raw in sorted(client.smembers(CELLS)):
        inc = open_incident(client, as_text(raw))
        if inc is not None:
            incidents[as_text(raw)] = inc
    if which is None:
        if to_dataset:
            raise click.UsageError("--to-dataset needs WHICH: the incident whose examples to add")
        _list(incidents, as_json)
        return
    paged = [c for c, inc in incidents.items() if not inc.get("explained_by") and not inc.get("held_for")]
    picked = [c for c, inc in incidents.items() if which in (c, inc["incident_id"])] or \
             [c for c in paged if which in c]
    if len(picked) != 1:
        known = "; ".join(f"{c} ({inc['incident_id']})" for c, inc in incidents.items()) or "none"
        raise click.ClickException(f"{which!r} matches {len(picked)} open incidents (open: {known})")
    cell = picked[0]
    inc = incidents[cell]
    found = inc.get("cause")
    if found is None or found["status"] == "unknown":
        found = find_cause(client, cell, inc, time.time())
    if to_dataset:
        _to_dataset(settings, client, cell, inc["incident_id"], found)
    if as_json:
        shown = {k: v for k, v in inc.items() if k != "cause"}  # the cause printed is the one below
        click.echo(json.dumps({"cell": cell, "incident": shown, "cause": found}, indent=1, default=str))
        return
    from worker.langfuse_io.links import trace_linker
    link = trace_linker(settings)
    click.echo(f"{cell}: incident {inc['incident_id']}, −{inc['effect_points']:.1f} points since "
               f"{inc['started_at']} ({inc['started_between'][0]} – {inc['started_between'][1]})")
    for line in found["lines"]:
        click.echo(f"  {line}")
    for title, examples in (("lowest since the start", found["after"]), ("comparable before it", found["before"])):
        if examples:
            click.echo(f"  {title}:")
            for e in examples:
                click.echo(f"    {e['points']:>5.1f}  {e['at']}  {link(e['trace_id'])}")


def _list(incidents: Mapping[str, IncidentRecord], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(incidents, indent=1, default=str))
        return
    if not incidents:
        click.echo("no open quality incident")
    for cell, inc in incidents.items():
        found = inc.get("cause")
        reason = found["reason"] if found is not None else "cause not searched yet (runs with the detector)"
        if inc.get("explained_by"):
            reason = "explained by " + ", ".join(inc["explained_by"])
        elif inc.get("held_for"):
            reason = "held for " + ", ".join(inc["held_for"]) + " (a narrower cell about to cross)"
        click.echo(f"{cell} ({inc['incident_id']}): {reason}")


def _to_dataset(settings: Settings, client: redis.Redis, cell: str, incident_id: str, found: CauseRecord) -> None:
    """The named slice's lowest traces since the start into the rubric's regression dataset, each
    once (worker/review/datasets.py: a deterministic item id, a marker per trace)."""
    from worker.langfuse_io.client import build_langfuse_api
    from worker.langfuse_io.traces import TraceReader
    from worker.review.datasets import DatasetWriter
    from worker.rubrics.rubric import load_rubrics

    if not found["after"]:
        raise click.ClickException(f"no examples to add: {found['reason']}")
    name, version = cell.split("|", 3)[:2]
    rubric = pick_rubric(load_rubrics(settings.rubrics_dir), f"{name}@{version}")
    api = build_langfuse_api(settings)
    writer = DatasetWriter(api, client, TraceReader(api), rubric)
    where = "; ".join(s["slice"] for s in found["slices"]) or found["reason"]
    added = sum(writer.add(e["trace_id"], "drift_regression",
                           {"incident_id": incident_id, "cell": cell, "slice": where, "points": e["points"]})
                for e in found["after"])
    click.echo(f"{added} example(s) added to the dataset {writer.name}; "
               f"{len(found['after']) - added} already there or waiting for their trace")
