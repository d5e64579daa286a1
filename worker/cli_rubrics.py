"""``tracejudge rubrics ...``: author tools."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from worker.errors import TraceJudgeError


@click.group()
def rubrics():
    """Author tools: lint rubric versions, render the exact judge prompt for a trace."""


def _rubrics_dir(path):
    from worker.settings import _default_rubrics_dir

    return Path(path or os.environ.get("TRACEJUDGE_RUBRICS_DIR") or _default_rubrics_dir())


@rubrics.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Rubrics folder (default: TRACEJUDGE_RUBRICS_DIR or rubrics/).")
@click.option("--allow-floating-models", is_flag=True)
def lint(directory, allow_floating_models):
    """Check every rubric version: YAML schema, templates, scale, pinned and priced judge."""
    from worker.rubrics import load_rubrics
    from worker.runtime import validate_rubrics
    from worker.settings import Settings

    root = _rubrics_dir(directory)
    try:
        loaded = load_rubrics(root)
        settings = Settings(langfuse_base_url="", langfuse_public_key="", langfuse_secret_key="",
                            rubrics_dir=root, allow_floating_models=allow_floating_models)
        warnings = validate_rubrics(loaded, settings, require_keys=False)
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for key, rubric in sorted(loaded.items()):
        click.echo(f"ok  {key:<28} {rubric.scale.describe():<28} judge {rubric.judge.provider}:{rubric.judge.model}  sha256 {rubric.sha256[:12]}")


@rubrics.command()
@click.argument("rubric")
@click.option("--trace", "trace_id", help="A trace id, read from Langfuse (LANGFUSE_* settings).")
@click.option("--file", "trace_file", type=click.Path(exists=True, dir_okay=False),
              help="A trace as JSON: {id, name, input, output, metadata, observations: [...]}.")
@click.option("--dir", "directory", type=click.Path(file_okay=False))
def render(rubric, trace_id, trace_file, directory):
    """Show the exact prompt and output schema the judge would get for a trace.

    RUBRIC is name@vN, or a name for its newest version.
    """
    from worker.prompt import render as render_prompt
    from worker.rubrics import load_rubrics
    from worker.traces import Trace, _observation_dict
    from worker.variables import map_variables

    if bool(trace_id) == bool(trace_file):
        raise click.UsageError("give exactly one of --trace ID or --file trace.json")
    try:
        loaded = load_rubrics(_rubrics_dir(directory))
        chosen = _pick(loaded, rubric)
        if trace_file:
            raw = json.loads(Path(trace_file).read_text())
            trace = Trace(raw.get("id", "local"), raw.get("name"), raw.get("environment"), None,
                          raw.get("input"), raw.get("output"), raw.get("metadata") or {}, raw.get("tags") or [],
                          [_observation_dict(o) for o in raw.get("observations") or []])
        else:
            from worker.langfuse_client import build_langfuse_api
            from worker.settings import Settings
            from worker.traces import TraceReader

            trace = TraceReader(build_langfuse_api(Settings.from_env())).fetch(trace_id)
        variables, hygiene = map_variables(trace, chosen, 12000)
        request = render_prompt(chosen, variables)
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# {chosen.key}  judge {chosen.judge.provider}:{chosen.judge.model}  max_tokens {chosen.judge.max_tokens}")
    click.echo(f"# variables (truncated {hygiene.truncated_chars} chars, neutralised {hygiene.neutralised} markers)")
    for name, value in variables.items():
        click.echo(f"## {name} ({len(value)} chars)\n{value[:400]}{'…' if len(value) > 400 else ''}")
    if request.system:
        click.echo(f"\n# system\n{request.system}")
    click.echo(f"\n# user\n{request.user}")
    click.echo(f"\n# output schema (tool {request.tool_name})\n{json.dumps(request.schema, indent=2)}")


def _pick(loaded: dict, wanted: str):
    if wanted in loaded:
        return loaded[wanted]
    versions = [r for r in loaded.values() if r.name == wanted]
    if not versions:
        raise click.UsageError(f"no rubric {wanted!r}; known: {', '.join(sorted(loaded))}")
    return max(versions, key=lambda r: r.version)
