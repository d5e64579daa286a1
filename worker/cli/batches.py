"""``tracejudge batches status | poll``: batch-mode requests waiting, submitted and finished."""
from __future__ import annotations

import json
import time

import click

from worker.cli.common import reports_errors


@click.group("batches")
def batches():
    """Batch-mode judging (rubrics with judge.mode: batch)."""


def get_runtime():
    from worker.judging.runtime import get_runtime as build  # the SDKs load only when a command runs

    return build()


@batches.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@reports_errors
def status(as_json):
    """Requests pending submission and provider batches still running."""
    from worker.batching.store import BatchStore

    store = BatchStore(get_runtime().redis)
    counts, submitted = store.counts(), store.submitted()
    if as_json:
        click.echo(json.dumps({**counts, "batches": {k: {**v, "requests": len(v.pop("ids"))}
                                                     for k, v in submitted.items()}}))
        return
    click.echo(f"requests kept: {counts['items']}  pending: anthropic {counts['pending_anthropic']}, "
               f"openai {counts['pending_openai']}  batches running: {counts['batches_submitted']}")
    for batch_id, info in sorted(submitted.items(), key=lambda kv: kv[1]["submitted_at"]):
        age = (time.time() - info["submitted_at"]) / 60
        click.echo(f"  {info['provider']:9}  {batch_id}  {len(info['ids'])} requests  submitted {age:.0f} min ago")


@batches.command("poll")
@reports_errors
def poll():
    """Run one batch cycle now: collect ended batches, submit pending requests."""
    from worker.batching.cycle import run_batch_cycle

    click.echo(run_batch_cycle(get_runtime()).line())
