"""``tracejudge drift``: the week-over-week check, its table, and alert delivery."""
from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import click

from worker.cli.common import load_settings, read_back_first
from worker.errors import TraceJudgeError

if TYPE_CHECKING:
    import redis

    from worker.drift.records import CellDetection
    from worker.drift.rebuild import RebuildResult
    from worker.rubrics.rubric import Rubric
    from worker.settings import Settings


def _rebuild(settings: Settings, rubrics: dict[str, Rubric], client: redis.Redis, since: dt.datetime | None) -> None:
    import sys

    from worker.accounting.outcomes import OutcomeLog
    from worker.drift.rebuild import check_since, default_since, rebuild
    from worker.langfuse_io.client import build_langfuse_api

    now = dt.datetime.now(dt.timezone.utc)
    since = check_since(since, now) if since is not None else default_since(now)
    span = (now - since).total_seconds()
    # Pages come newest first and the response has no totals: progress is how far back in
    # time the pages have reached.
    with click.progressbar(length=int(span), label="rebuild", file=sys.stderr, show_eta=False,
                           item_show_func=lambda r: r and f"{r.read} read, {r.added} added") as bar:
        def on_page(result: RebuildResult) -> None:
            reached = 0 if result.oldest is None else int(min(span, (now - result.oldest).total_seconds()))
            bar.update(max(0, reached - bar.pos), result)

        result = rebuild(build_langfuse_api(settings), OutcomeLog(client), rubrics, since, on_page)
        bar.update(int(span) - bar.pos, result)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items())) or "none"
    click.echo(f"rebuilt from {result.read} score(s) since {since.isoformat(timespec='seconds')}: "
               f"{result.added} added, {result.already_counted} already counted; skipped: {skipped}")


def _count_signals(settings: Settings, client: redis.Redis) -> None:
    """Every trace's signals up to now, for the causes (worker/drift/signals.py); a Langfuse that
    cannot list them leaves the causes without them, and says so."""
    import time

    from worker.drift import signals
    from worker.langfuse_io.client import build_langfuse_api

    try:
        signals.catch_up(build_langfuse_api(settings), client, time.time())
    except Exception as exc:  # boundary: the detector and the weekly summary run all the same
        click.echo(f"warning: every trace's signals not counted ({type(exc).__name__}: {str(exc)[:200]}); "
                   "causes will lack them until the next run", err=True)


def _detection_table(detections: list[CellDetection]) -> None:
    """The sequential detector per cell: what it watches against, what it can see, what it found."""
    click.echo("sequential detection (pages a drop within hours, with when it began):")
    click.echo(f"{'cell':<60}{'reference':>12}{'n':>7}  status")
    for d in sorted(detections, key=lambda d: d.cell):
        ref = d.reference
        mean = "-" if ref is None or ref.n < 2 else f"{ref.mean:.1f}"
        n = 0 if ref is None else ref.n
        if d.status == "insufficient_reference":
            status = f"insufficient reference (n={n}, needs 200 in the 28 days before)"
        elif d.incident is not None:
            inc = d.incident
            label = ("EXPLAINED by " + ", ".join(inc["explained_by"]) if inc.get("explained_by")
                     else "HELD for " + ", ".join(inc["held_for"]) if inc.get("held_for") else "ALERT")
            status = (f"{label}: "
                      f"-{inc['effect_points']:.1f} points [{-inc['effect_interval'][1]:.1f}, "
                      f"{-inc['effect_interval'][0]:.1f}], started {inc['started_at']} "
                      f"({inc['started_between'][0]} - {inc['started_between'][1]}), detected {inc['detected_at']}")
        else:
            status = f"watching; {d.note}" + ("  [under-powered]" if d.under_powered else "")
        click.echo(f"{d.cell[:59]:<60}{mean:>12}{n:>7}  {status}")
        cause = d.incident.get("cause") if d.incident is not None else None
        for line in cause["lines"] if cause is not None else []:
            click.echo(f"    {line}")


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


@click.command()
@click.option("--once", is_flag=True, help="Run the check now (the scheduler runs it daily).")
@click.option("--json", "as_json", is_flag=True, help="Print every cell as JSON instead of a table.")
@click.option("--rebuild", is_flag=True,
              help="Rebuild the aggregates from the scores in Langfuse (after a Redis loss), then stop.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
              help="With --rebuild: scores written since this UTC time (default: 89 days ago, the most allowed).")
def drift(once: bool, as_json: bool, rebuild: bool, since: dt.datetime | None) -> None:
    """Compare the last 7 days with the 7 before for every rubric x segment cell; alert on drops.

    With --rebuild, re-add the scores of ours in Langfuse to the aggregates instead; scores
    already counted (live or by an earlier rebuild) are skipped, so it is safe to rerun."""
    from worker.redis_client import connect
    from worker.drift.run import run_drift
    from worker.langfuse_io.links import trace_linker
    from worker.rubrics.rubric import load_rubrics

    if once == rebuild:
        raise click.UsageError("give exactly one of --once or --rebuild")
    if since is not None and not rebuild:
        raise click.UsageError("--since goes with --rebuild")
    try:
        settings = load_settings()
        rubrics = load_rubrics(settings.rubrics_dir)
        client = connect(settings.redis_url)
        if rebuild:
            _rebuild(settings, rubrics, client, since)
            return
        read_back_first(settings, client)
        _count_signals(settings, client)
        run = run_drift(settings, rubrics, client, trace_linker(settings))
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    reports, alerts, (sent, pending) = run.reports, run.alerts, run.delivery
    if as_json:
        click.echo(json.dumps({"cells": [r.as_dict() for r in reports],
                               "detection": [d.as_dict() for d in run.detections],
                               "alerts": [a.as_json() for a in alerts],
                               "delivered": sent, "pending": pending}, default=str, indent=1))
        return
    _detection_table(run.detections)
    click.echo("weekly summary (last 7 days vs the 7 before; pages only a rise in the unscored rate):")
    click.echo(f"{'rubric':<24}{'segment':<36}{'last wk':>9}{'n':>6}{'this wk':>9}{'n':>6}{'drop':>7}{'q':>9}  status")
    for r in reports:
        d = r.decision
        status = d.status
        if d.status == "insufficient_data":
            status += (f" (has n={d.n_have}, needs n={d.n_needed} a week)" if d.n_needed
                       else f" (has n={d.n_have}, needs 2+ a week)")
        if r.explained_by:
            status += " by " + ", ".join(r.explained_by)
        if r.unscored_alert:
            status += f"; unscored rate {100 * r.unscored_rate_prev:.1f}% -> {100 * r.unscored_rate_curr:.1f}%"
        if r.new_alert:
            status += "  [ALERT SENT]"
        click.echo(f"{r.rubric + ' v' + str(r.version):<24}{r.segment[:35]:<36}{_fmt(d.prev_mean):>9}{d.n_prev:>6}"
                   f"{_fmt(d.curr_mean):>9}{d.n_curr:>6}{_fmt(d.drop):>7}{_fmt(d.q, '.2g'):>9}  {status}")
    click.echo(f"{len(alerts)} new alert(s); delivered {sent}, {pending} waiting in the outbox")
