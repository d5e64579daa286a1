"""``tracejudge demo`` and ``tracejudge stack``: the local stack from the command line."""
from __future__ import annotations

import os
import subprocess
import sys

import click


@click.command()
@click.option("--traces", default=3000, show_default=True, type=click.IntRange(10, 200_000),
              help="How many traces to seed over two weeks.")
@click.option("--rate", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Sampling rate for the demo (production default: the rubric's, 1%).")
@click.option("--judge-latency-ms", default=300, show_default=True, type=click.IntRange(0, 60_000))
@click.option("--processes", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--timeout", default=900, show_default=True, type=float, help="Give up after this many seconds.")
@click.option("--keep", is_flag=True, help="Keep the stack running after the summary (Ctrl-C stops it).")
def demo(traces: int, rate: float, judge_latency_ms: int, processes: int, threads: int, timeout: float,
         keep: bool) -> None:
    """Run the whole pipeline on a local stack and print a summary."""
    from emulators.demo import DemoOptions, run_demo
    from worker.errors import TraceJudgeError

    try:
        code = run_demo(DemoOptions(traces, rate, judge_latency_ms, processes, threads, timeout, keep))
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@click.command()
@click.option("--traces", default=3000, show_default=True, type=click.IntRange(0, 200_000))
@click.option("--judge-latency-ms", default=300, show_default=True, type=click.IntRange(0, 60_000))
def stack(traces: int, judge_latency_ms: int) -> None:
    """Start redis-server, both emulators (seeded) and the Procfile's fleet; Ctrl-C stops all."""
    import datetime as dt
    from pathlib import Path

    from emulators.demo import REPO, seed_traces
    from emulators.stack import LocalStack, child_env

    with LocalStack(judge_latency_ms=judge_latency_ms) as local:
        if traces:
            seed_traces(local, traces, end=dt.datetime.now(dt.timezone.utc))
        env = child_env(local.env())
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        click.echo("local stack up; export these to use it from another shell:")
        for key, value in local.env().items():
            click.echo(f"  export {key}={value}")
        try:
            subprocess.run([sys.executable, "-m", "honcho", "-f", str(REPO / "Procfile"), "start"],
                           cwd=REPO, env=env, check=False)
        except KeyboardInterrupt:
            pass
