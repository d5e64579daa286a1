"""What every ``tracejudge`` command shares: settings from the environment, and our errors as
one line with exit status 2 (kept apart from cli.py so command modules can import it)."""
from __future__ import annotations

import functools

import click

from worker.errors import TraceJudgeError


def reports_errors(fn):
    """Turn our own errors into a one-line message and exit status 1 (click's ClickException)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TraceJudgeError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _settings():
    from worker.settings import Settings

    return Settings.from_env()
