"""``tracejudge batches status | poll``: batch-mode requests waiting, submitted and finished."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import click

from worker.cli.common import load_settings, reports_errors

if TYPE_CHECKING:
    from worker.runtime import Runtime


@click.group("batches")
def batches() -> None:
    """Batch-mode judging (rubrics with judge.mode: batch)."""


def _runtime() -> Runtime:
    """The command's runtime, built once from the settings (the SDKs load only when a command runs)."""
    from worker.runtime import Runtime

    return Runtime(load_settings())


@batches.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@reports_errors
def status(as_json: bool) -> None:
    """Requests pending submission and provider batches still running."""
    store = _runtime().batches
    counts, submitted = store.counts(), store.submitted()
    if as_json:
        click.echo(json.dumps({**counts, "batches": {k: {**v, "requests": len(v["ids"])}
                                                     for k, v in submitted.items()}}))
        return
    click.echo(f"requests kept: {counts['items']}  pending: anthropic {counts['pending_anthropic']}, "
               f"openai {counts['pending_openai']}  batches running: {counts['batches_submitted']}")
    for batch_id, info in sorted(submitted.items(), key=lambda kv: kv[1]["submitted_at"]):
        age = (time.time() - info["submitted_at"]) / 60
        click.echo(f"  {info['provider']:9}  {batch_id}  {len(info['ids'])} requests  submitted {age:.0f} min ago")


@batches.command("poll")
@reports_errors
def poll() -> None:
    """Run one batch cycle now: collect ended batches, submit pending requests."""
    from worker.judging.batch_cycle import run_batch_cycle

    click.echo(run_batch_cycle(_runtime()).line())
