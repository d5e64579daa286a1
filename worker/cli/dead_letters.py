"""``tracejudge dead-letters list | retry | purge``: jobs that used up their retries."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from worker.cli.common import load_settings, reports_errors

if TYPE_CHECKING:
    import redis


def _client() -> redis.Redis:
    from worker.redis_client import connect
    return connect(load_settings().redis_url)


@click.group("dead-letters")
def dead_letters() -> None:
    """Jobs that exhausted their retries, with the reason of each."""


@dead_letters.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@reports_errors
def list_(as_json: bool) -> None:
    """List dead-lettered judge jobs and why they failed."""
    from worker.fleet.queues import dead_letters as read

    entries = read(_client())
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry))
        else:
            trace_id, rubric = (entry["args"] or [None, None])[:2]
            click.echo(f"{entry['message_id']}  trace {trace_id}  {rubric}  {entry['reason']}")
    if not as_json:
        click.echo(f"{len(entries)} dead letter(s)")


@dead_letters.command()
@click.option("--all", "everything", is_flag=True, help="Retry every dead letter.")
@click.argument("message_ids", nargs=-1)
@reports_errors
def retry(everything: bool, message_ids: tuple[str, ...]) -> None:
    """Put dead letters back on the judge queue (after fixing their cause)."""
    from worker.fleet.queues import requeue_dead

    if not everything and not message_ids:
        raise click.UsageError("give message ids (from `dead-letters list`) or --all")
    moved = requeue_dead(_client(), None if everything else list(message_ids))
    click.echo(f"requeued {moved} job(s)")


@dead_letters.command()
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
@reports_errors
def purge(yes: bool) -> None:
    """Delete every dead letter (their traces stay unjudged)."""
    from worker.fleet.queues import purge_dead

    if not yes:
        click.confirm("Delete every dead letter?", abort=True)
    click.echo(f"purged {purge_dead(_client())} dead letter(s)")
