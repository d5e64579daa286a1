"""``tracejudge sample | backfill | scheduler | worker``: the commands that run the fleet."""
from __future__ import annotations

import datetime as dt
import errno
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import click

from worker.cli.common import load_settings, reports_errors

if TYPE_CHECKING:
    from samplers.sampler import Sampler
    from worker.settings import Settings


def _iso(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-11-20T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _sampler(settings: Settings) -> Sampler:
    from worker.fleet.scheduler import build_sampler

    return build_sampler(settings)


@click.command()
@click.option("--once", is_flag=True, help="One pass over the window, then exit (else: run continuously).")
@click.option("--since", callback=_iso, help="Window start, ISO 8601 (default: one sample interval before --until).")
@click.option("--until", callback=_iso, help="Window end, exclusive (default: now minus TRACEJUDGE_SETTLE_SECONDS).")
@reports_errors
def sample(once: bool, since: dt.datetime | None, until: dt.datetime | None) -> None:
    """Pick traces by the deterministic hash and enqueue them for judging."""
    settings = load_settings()
    if not once:
        if since or until:
            raise click.UsageError("--since/--until need --once (continuous mode follows its cursor)")
        _run_scheduler(settings)
        return
    sampler = _sampler(settings)
    now = dt.datetime.now(dt.timezone.utc)
    until = until or now - dt.timedelta(seconds=settings.settle_seconds)
    since = since or until - dt.timedelta(seconds=settings.sample_interval_seconds)
    if since >= until:
        raise click.UsageError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    sampler.refresh_plans()  # power-aware rubrics: the rate plan, when it is missing or due (samplers/planner.py)
    report = sampler.run_pass(since, until)
    _summary(f"scanned {report.scanned} traces, selected {report.selected}, enqueued {report.enqueued} "
             f"({report.already_enqueued} already enqueued, {report.excluded} excluded) "
             f"in {report.requests} Langfuse requests")


class _Stopped(BaseException):
    """SIGTERM while the summary of a finished pass is being written."""


def _raise_stopped(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Stopped()


def _summary(line: str) -> None:
    """Print a finished pass's summary; nothing that happens to this one line fails the command.

    The pass's work is done by now (its jobs enqueued, its summary in Redis, where ``tracejudge
    status`` shows it); only the line is left, and a reader under load takes it late: the write
    blocks on a full pipe. A stop meanwhile (Ctrl-C, a harness's timeout) used to end the command
    with click's "Aborted!" and exit status 1 (SIGTERM: killed), the line itself still flushed at
    exit, once the reader caught up: issue 24's "exited 1 right after printing its summary line,
    under load". Now a stop signal, or a reader that went away (EPIPE, which click also turns
    into 1), drops the line and the command exits 0 at once."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # (signal handlers live there only)
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        click.echo(line)
    except (KeyboardInterrupt, _Stopped):
        _drop_stdout()
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _drop_stdout()
    finally:
        if previous is not None:  # None: not ours to restore (no handler set, or one set from C)
            signal.signal(signal.SIGTERM, previous)


def _drop_stdout() -> None:
    """What is still buffered for stdout goes nowhere, so the interpreter's exit neither blocks on
    a reader that stopped reading nor fails on a closed pipe (Python's own recipe for EPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (click's test runner)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@click.command()
@click.option("--since", callback=_iso, required=True, help="Window start, ISO 8601.")
@click.option("--until", callback=_iso, required=True, help="Window end, ISO 8601, exclusive.")
@click.option("--rubric", "rubric_names", multiple=True, metavar="NAME[@vN]",
              help="Only these rubrics (repeatable; default: every loaded rubric version).")
@reports_errors
def backfill(since: dt.datetime, until: dt.datetime, rubric_names: tuple[str, ...]) -> None:
    """Judge a past window (same sampling, dedup and budget as the sampler), with a progress bar.

    Resumable: after Ctrl-C or a crash, run the same command again; finished time slices are
    skipped."""
    from samplers.backfill import run_backfill, slices

    if since >= until:
        raise click.UsageError("--since must be before --until")
    sampler = _sampler(load_settings())
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


def _run_scheduler(settings: Settings) -> None:
    """The scheduler with the one runtime its phases (and its sampler) share, built here at
    start-up: a bad configuration stops it with one line, before its first tick."""
    from worker.fleet.scheduler import build_sampler, run_fleet_scheduler
    from worker.logs import configure_logging
    from worker.runtime import Runtime

    configure_logging()
    rt = Runtime(settings)
    sampler = build_sampler(settings, rt)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_fleet_scheduler(sampler, rt, stop)


@click.command()
@reports_errors
def scheduler() -> None:
    """Periodic sampler ticks and the daily drift check (the Procfile's `scheduler`).

    A Redis lease keeps one scheduler active fleet-wide; run it on several hosts for failover."""
    _run_scheduler(load_settings())


@click.command()
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", "-t", default=32, show_default=True, type=click.IntRange(1, 512),
              help="Threads per process; processes x threads judge calls can be in flight.")
@reports_errors
def worker(processes: int, threads: int) -> None:
    """The dramatiq worker fleet (the Procfile's `worker`).

    Prometheus metrics of all its processes are served on TRACEJUDGE_METRICS_PORT (0: off)."""
    from worker.fleet.supervisor import supervise
    from worker.jobs import JUDGE_QUEUE
    from worker.logs import configure_logging
    from worker.runtime import Runtime
    from worker.settings import process_environment

    settings = load_settings()
    rt = Runtime(settings)  # fail here, with one line, rather than in every forked process
    rt.score_configs.ensure(rt.rubrics.values())  # every active version has its config before a score
    env = process_environment()  # what the fleet processes get, with the metrics directory set up
    if settings.metrics_port:
        from worker.fleet.metrics import prepare_metrics_dir

        if not prepare_metrics_dir(settings.metrics_port, env):
            # Another fleet on this host serves that port: run without metrics rather than not at all.
            click.echo(f"warning: metrics port {settings.metrics_port} is in use; this fleet serves no metrics "
                       f"(set TRACEJUDGE_METRICS_PORT to a free port, or 0)", err=True)
            env["TRACEJUDGE_METRICS_PORT"] = "0"
    args = [sys.executable, "-m", "dramatiq", "worker.fleet.boot", "--processes", str(processes),
            "--threads", str(threads), "--queues", JUDGE_QUEUE, "--skip-logging",
            "--worker-shutdown-timeout", "60000"]
    configure_logging()
    sys.exit(supervise(args, env))  # dramatiq again when one of its processes dies
