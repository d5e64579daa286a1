"""What every ``tracejudge`` command shares: settings from the environment, our errors as one
line with exit status 1, the date judges are checked against, and picking a rubric version."""
from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from worker.errors import TraceJudgeError

if TYPE_CHECKING:  # (imported lazily at run time, so ``--help`` stays fast)
    import redis

    from worker.rubrics.rubric import Rubric
    from worker.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into a one-line message and exit status 1 (click's ClickException)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TraceJudgeError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def load_settings() -> Settings:
    """The settings of a command, with their secrets registered for masking in every log line."""
    from worker.logs import register_settings_secrets
    from worker.settings import Settings

    settings = Settings.from_env()
    register_settings_secrets(settings)
    return settings


def read_back_first(settings: Settings, client: redis.Redis) -> None:
    """Before a command reads the figures: count the fleet's written scores that Langfuse now
    returns (worker/fleet/confirmer.py); what still waits is said on stderr."""
    from worker.fleet.confirmer import read_back_before_reading

    note = read_back_before_reading(settings, client)
    if note:
        click.echo(f"note: {note}", err=True)


def author_settings(rubrics_dir: Path) -> Settings:
    """The author tools' settings (no Langfuse keys needed), their secrets registered too."""
    from worker.logs import register_settings_secrets
    from worker.settings import Settings

    settings = Settings.for_author_tools(rubrics_dir)
    register_settings_secrets(settings)
    return settings


def utc_today() -> dt.date:
    """The date a command checks judges' end of life against."""
    return dt.datetime.now(dt.timezone.utc).date()


def pick_rubric(loaded: dict[str, Rubric], wanted: str) -> Rubric:
    """``name@vN`` exactly, or a name for its newest loaded version; a usage error otherwise."""
    if wanted in loaded:
        return loaded[wanted]
    versions = [r for r in loaded.values() if r.name == wanted]
    if not versions:
        raise click.UsageError(f"no rubric {wanted!r}; known: {', '.join(sorted(loaded))}")
    return max(versions, key=lambda r: r.version)
