"""The ``tracejudge`` command line. Every command exits non-zero with a one-line reason on
bad input or bad configuration."""
from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading

import click

from worker.cli_common import _settings, reports_errors


def _iso(ctx, param, value):
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-11-20T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """tracejudge: LLM-as-judge scores for a deterministic sample of your Langfuse traces.

    Configuration comes from the environment (LANGFUSE_*, REDIS_URL, ANTHROPIC_*/OPENAI_*,
    TRACEJUDGE_*); see the README. Start with `tracejudge demo`.
    """


def _sampler(settings):
    import redis

    from samplers.sampler import Sampler
    from samplers.source import LangfuseTraceSource
    from worker.broker import build_broker
    from worker.langfuse_client import build_langfuse_api
    from worker.rubrics import load_rubrics

    client = redis.Redis.from_url(settings.redis_url)
    rubrics = load_rubrics(settings.rubrics_dir)
    return Sampler(settings, rubrics, LangfuseTraceSource(build_langfuse_api(settings)),
                   build_broker(settings), client)


@main.command()
@click.option("--once", is_flag=True, help="One pass over the window, then exit (else: run continuously).")
@click.option("--since", callback=_iso, help="Window start, ISO 8601 (default: one sample interval before --until).")
@click.option("--until", callback=_iso, help="Window end, exclusive (default: now minus TRACEJUDGE_SETTLE_SECONDS).")
@reports_errors
def sample(once, since, until):
    """Pick traces by the deterministic hash and enqueue them for judging."""
    settings = _settings()
    sampler = _sampler(settings)
    if not once:
        if since or until:
            raise click.UsageError("--since/--until need --once (continuous mode follows its cursor)")
        _run_scheduler(sampler, settings)
        return
    now = dt.datetime.now(dt.timezone.utc)
    until = until or now - dt.timedelta(seconds=settings.settle_seconds)
    since = since or until - dt.timedelta(seconds=settings.sample_interval_seconds)
    if since >= until:
        raise click.UsageError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    report = sampler.run_pass(since, until)
    click.echo(f"scanned {report.scanned} traces, selected {report.selected}, enqueued {report.enqueued} "
               f"({report.already_enqueued} already enqueued, {report.excluded} excluded) "
               f"in {report.requests} Langfuse requests")


@main.command()
@click.option("--since", callback=_iso, required=True, help="Window start, ISO 8601.")
@click.option("--until", callback=_iso, required=True, help="Window end, ISO 8601, exclusive.")
@click.option("--rubric", "rubric_names", multiple=True, metavar="NAME[@vN]",
              help="Only these rubrics (repeatable; default: every loaded rubric version).")
@reports_errors
def backfill(since, until, rubric_names):
    """Judge a past window (same sampling, dedup and budget as the sampler), with a progress bar.

    Resumable: after Ctrl-C or a crash, run the same command again; finished time slices are
    skipped."""
    from worker.backfill import run_backfill, slices

    if since >= until:
        raise click.UsageError("--since must be before --until")
    sampler = _sampler(_settings())
    if rubric_names:
        known = {r.key: r for r in sampler.rubrics}
        chosen = [r for r in sampler.rubrics if r.key in rubric_names or r.name in rubric_names]
        unknown = [n for n in rubric_names if n not in known and n not in {r.name for r in sampler.rubrics}]
        if unknown:
            raise click.UsageError(f"unknown rubric {', '.join(unknown)}; loaded: {', '.join(sorted(known))}")
        sampler.rubrics = chosen
    with click.progressbar(length=len(slices(since, until)), label="backfill", show_eta=True, show_pos=True,
                           file=sys.stderr) as bar:
        try:
            report, skipped = run_backfill(sampler, since, until, on_slice=lambda i, r: bar.update(1))
        except KeyboardInterrupt:
            click.echo("\ninterrupted: run the same command again to resume (finished slices are kept)", err=True)
            sys.exit(130)
    click.echo(report.line() + (f"; {skipped} slices already done by an earlier run" if skipped else ""))


def _run_scheduler(sampler, settings):
    from worker.logs import configure_logging
    from worker.scheduler import run_scheduler

    from worker.cli_drift import trace_linker
    from worker.drift.run import run_drift

    configure_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def drift_tick():
        _, alerts, (sent, pending) = run_drift(settings, {r.key: r for r in sampler.rubrics}, sampler.client,
                                               trace_linker(settings))
        logging.getLogger("tracejudge.drift").info(
            "drift check", extra={"new_alerts": len(alerts), "delivered": sent, "pending": pending})

    batch_tick = None
    if any(r.judge.mode == "batch" for r in sampler.rubrics):
        from worker.batching import batch_tick as run_batch_tick
        from worker.runtime import get_runtime

        batch_tick = lambda: run_batch_tick(get_runtime())  # noqa: E731  (the runtime is built on first use)

    run_scheduler(sampler, settings.sample_interval_seconds, stop, drift_tick, settings.drift_interval_seconds,
                  batch_tick)


@main.command()
@reports_errors
def scheduler():
    """Periodic sampler ticks and the daily drift check (the Procfile's `scheduler`).

    A Redis lease keeps one scheduler active fleet-wide; run it on several hosts for failover."""
    settings = _settings()
    _run_scheduler(_sampler(settings), settings)


@main.command()
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", "-t", default=32, show_default=True, type=click.IntRange(1, 512),
              help="Threads per process; processes x threads judge calls can be in flight.")
@reports_errors
def worker(processes, threads):
    """The dramatiq worker fleet (the Procfile's `worker`).

    Prometheus metrics of all its processes are served on TRACEJUDGE_METRICS_PORT (0: off)."""
    from worker.runtime import Runtime

    settings = _settings()
    rt = Runtime(settings)  # fail here, with one line, rather than in every forked process
    rt.score_configs.ensure(rt.rubrics.values())  # every active version has its config before a score
    if settings.metrics_port:
        from worker.metrics import prepare_metrics_dir

        if not prepare_metrics_dir(settings.metrics_port, os.environ):
            # Another fleet on this host serves that port: run without metrics rather than not at all.
            click.echo(f"warning: metrics port {settings.metrics_port} is in use; this fleet serves no metrics "
                       f"(set TRACEJUDGE_METRICS_PORT to a free port, or 0)", err=True)
            os.environ["TRACEJUDGE_METRICS_PORT"] = "0"
    args = [sys.executable, "-m", "dramatiq", "worker.fleet", "--processes", str(processes),
            "--threads", str(threads), "--queues", "judge", "--skip-logging",
            "--worker-shutdown-timeout", "60000"]
    os.execv(sys.executable, args)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@reports_errors
def status(as_json):
    """Queue depths, dead letters, budget, sampler cursor and lag, rate-limit waits, outcomes."""
    from worker.cli_status import print_status

    print_status(_settings(), as_json)


from worker.cli_demo import demo, stack  # noqa: E402  (commands registered below)
from worker.cli_dead_letters import dead_letters  # noqa: E402
from worker.cli_drift import drift  # noqa: E402
from worker.cli_rubrics import rubrics  # noqa: E402
from worker.cli_report import report  # noqa: E402
from worker.cli_batches import batches  # noqa: E402
from worker.cli_budget import budget  # noqa: E402

main.add_command(demo)
main.add_command(stack)
main.add_command(rubrics)
main.add_command(dead_letters)
main.add_command(drift)
main.add_command(report)
main.add_command(batches)
main.add_command(budget)

if __name__ == "__main__":
    main()
