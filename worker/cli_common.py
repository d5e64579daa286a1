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


def author_settings(rubrics_dir):
    """Settings for the author tools (render --file, test): they never call Langfuse, so its
    keys may be missing; everything else (judge keys, redaction, variable budget) as configured."""
    import os

    from worker.settings import Settings

    env = {**os.environ, "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir)}
    for name in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        if not env.get(name, "").strip():
            env[name] = "unused-by-author-tools"
    return Settings.from_env(env)
