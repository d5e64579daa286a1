"""``tracejudge report``: the quality report as one self-contained HTML file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from worker.cli.common import load_settings, read_back_first
from worker.errors import TraceJudgeError

if TYPE_CHECKING:
    from worker.settings import Settings


def _writable_target(out: str) -> Path:
    """Refuse a bad --out before any work, with one line saying why."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise click.ClickException(f"--out {out} is a directory: give a file name, e.g. {path / 'report.html'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise click.ClickException(f"--out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise click.ClickException(f"--out {out}: directory {parent} is not writable")
    return path


def _write_atomically(path: Path, text: str) -> None:
    """A reader (or a browser reloading the page) never sees half a report."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise click.ClickException(f"cannot write --out {path}: {exc.strerror or exc}") from None


def _redis_location(url: str) -> str:
    """Where Redis is, without the password that REDIS_URL may carry."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _lazy_linker(settings: Settings) -> Callable[[str], str]:
    """Trace links need one Langfuse call (the project id): made only when a trace is listed."""
    from worker.langfuse_io.links import trace_linker

    built: list[Callable[[str], str]] = []

    def link(trace_id: str) -> str:
        if not built:
            built.append(trace_linker(settings))
        return built[0](trace_id)

    return link


@click.command()
@click.option("--out", required=True, metavar="PATH", help="The HTML file to write (replaced if it exists).")
@click.option("--days", default=28, show_default=True, type=click.IntRange(7, 120),
              help="How many days the charts cover (the tables always compare the last 7 days with the 7 before).")
@click.option("--rubric", "rubric_filter", metavar="NAME", help="Only this rubric: NAME or NAME@vN.")
def report(out: str, days: int, rubric_filter: str | None) -> None:
    """Write the quality report: per rubric version, quality per feature and top tenants over time,
    this week vs last week per cell with its alert state, the lowest-scoring traces with links into
    Langfuse, judge cost and the unscored rate per day. One HTML file, no external assets."""
    import redis

    from worker.report.data import gather, known_rubric_names
    from worker.redis_client import connect
    from worker.report.page import render
    from worker.rubrics.rubric import load_rubrics

    path = _writable_target(out)
    try:
        settings = load_settings()
        rubrics = load_rubrics(settings.rubrics_dir)
        client = connect(settings.redis_url)
        if rubric_filter and rubric_filter not in (known := known_rubric_names(client, rubrics)):
            names = ", ".join(sorted(n for n in known if "@" not in n)) or "none yet"
            raise click.ClickException(f"--rubric {rubric_filter}: no such rubric (known: {names})")
        read_back_first(settings, client)
        data = gather(client, rubrics, days=days, rubric_filter=rubric_filter, trace_url=_lazy_linker(settings))
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot read Redis at {_redis_location(settings.redis_url)}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    _write_atomically(path, render(data))
    cells = [c for s in data.sections for c in s.cells]
    alerts = sum(c.decision.status == "alert" or c.unscored_alert for c in cells)
    click.echo(f"wrote {path}: {len(data.sections)} rubric version(s), {len(cells)} cells, {alerts} alerting"
               if data.sections else f"wrote {path}: no data yet (no scores in Redis)")
