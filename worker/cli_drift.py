"""``tracejudge drift``: the week-over-week check, its table, and alert delivery."""
from __future__ import annotations

import json

import click

from worker.errors import TraceJudgeError


def trace_linker(settings):
    """Links into the Langfuse trace UI: {ui}/project/{project id}/traces/{trace id}."""
    from worker.langfuse_client import NO_SDK_RETRIES, build_langfuse_api
    from worker.retrying import call_with_retries

    base = settings.langfuse_ui_url or settings.langfuse_base_url
    try:
        projects = call_with_retries(lambda: build_langfuse_api(settings).projects.get(request_options=NO_SDK_RETRIES))
        project = projects.data[0].id
    except Exception:  # boundary: a link without the project still opens in Langfuse's search
        return lambda trace_id: f"{base}/trace/{trace_id}"
    return lambda trace_id: f"{base}/project/{project}/traces/{trace_id}"


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


@click.command()
@click.option("--once", is_flag=True, required=True, help="Run the check now (the scheduler runs it daily).")
@click.option("--json", "as_json", is_flag=True, help="Print every cell as JSON instead of a table.")
def drift(once, as_json):
    """Compare the last 7 days with the 7 before for every rubric x segment cell; alert on drops."""
    import redis

    from worker.drift.run import run_drift
    from worker.rubrics import load_rubrics
    from worker.settings import Settings

    try:
        settings = Settings.from_env()
        rubrics = load_rubrics(settings.rubrics_dir)
        client = redis.Redis.from_url(settings.redis_url)
        reports, alerts, (sent, pending) = run_drift(settings, rubrics, client, trace_linker(settings))
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"cells": [r.as_dict() for r in reports], "alerts": alerts,
                               "delivered": sent, "pending": pending}, default=str, indent=1))
        return
    click.echo(f"{'rubric':<24}{'segment':<36}{'last wk':>9}{'n':>6}{'this wk':>9}{'n':>6}{'drop':>7}{'q':>9}  status")
    for r in reports:
        d = r.decision
        status = d.status
        if d.status == "insufficient_data":
            status += f" (needs n={d.n_needed})" if d.n_needed else " (needs 2+ a week)"
        if r.explained_by:
            status += " by " + ", ".join(r.explained_by)
        if r.unscored_alert:
            status += f"; unscored rate {100 * r.unscored_rate_prev:.1f}% -> {100 * r.unscored_rate_curr:.1f}%"
        if r.new_alert:
            status += "  [ALERT SENT]"
        click.echo(f"{r.rubric + ' v' + str(r.version):<24}{r.segment[:35]:<36}{_fmt(d.prev_mean):>9}{d.n_prev:>6}"
                   f"{_fmt(d.curr_mean):>9}{d.n_curr:>6}{_fmt(d.drop):>7}{_fmt(d.q, '.2g'):>9}  {status}")
    click.echo(f"{len(alerts)} new alert(s); delivered {sent}, {pending} waiting in the outbox")
