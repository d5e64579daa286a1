"""``tracejudge rubrics ...``: author tools."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worker.cli.common import author_settings, load_settings, pick_rubric, utc_today
from worker.cli.rubric_test import test
from worker.errors import TraceJudgeError

if TYPE_CHECKING:
    from worker.rubrics.doc import Problem


@click.group()
def rubrics() -> None:
    """Author tools: lint and release rubric versions, render the exact judge prompt for a trace."""


def _rubrics_dir(path: str | None) -> Path:
    from worker.settings import rubrics_dir_for

    return rubrics_dir_for(path)


@rubrics.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Rubrics folder (default: TRACEJUDGE_RUBRICS_DIR or rubrics/).")
@click.option("--allow-floating-models", is_flag=True, help="Accept judge aliases such as *-latest (a warning instead of an error).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def lint(directory: str | None, allow_floating_models: bool, strict: bool) -> None:
    """Check every rubric version and report ALL problems as path:line: message.

    YAML and schema, template variables, filters and unsafe constructs, the scale, a pinned,
    priced and current judge, released versions unchanged (rubrics.lock), labelled examples.
    Exits 1 when there is an error.
    """
    from worker.authoring.lint import lint as run_lint
    from worker.settings import prices_file_for

    root = _rubrics_dir(directory)
    report = run_lint(root, today=utc_today(), allow_floating_models=allow_floating_models,
                      prices_file=prices_file_for(root))
    errors, warnings, notes = report.errors, report.of("warning"), report.of("note")
    for problem in errors:
        click.echo(_shown(problem))
    for problem in warnings:
        click.echo(_shown(problem, "warning"))
    for problem in notes:
        click.echo(_shown(problem, "note"))
    failed = {p.path for p in errors}
    for key, rubric in sorted(report.rubrics.items()):
        bad = any(path.startswith(str(rubric.path.parent)) for path in failed)
        state = "released" if report.released.get(key) == rubric.sha256 else "unreleased"
        click.echo(f"{'ERR' if bad else 'ok '} {key:<28} {rubric.scale.describe():<28} "
                   f"judge {rubric.judge.provider}:{rubric.judge.model}  {state}  sha256 {rubric.sha256[:12]}")
    click.echo(f"{len(errors)} error(s), {len(warnings)} warning(s)")
    if errors or (strict and warnings):
        sys.exit(1)


def _shown(problem: Problem, label: str | None = None) -> str:
    """path:line: message, with the path relative to the working folder when it is inside it."""
    path = problem.path
    try:
        path = os.path.relpath(path)
        path = problem.path if path.startswith("..") else path
    except ValueError:
        pass
    where = path if problem.line is None else f"{path}:{problem.line}"
    return f"{where}: {label + ': ' if label else ''}{problem.message}"


@rubrics.command()
@click.argument("version")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Rubrics folder (default: TRACEJUDGE_RUBRICS_DIR or rubrics/).")
def release(version: str, directory: str | None) -> None:
    """Freeze VERSION (name@vN): record its sha256 in rubrics.lock.

    From then on `lint` fails if any file of that folder changes: change a released rubric by
    adding the next version. Refuses a version with lint errors, and never overwrites a
    different sha256 already in the lock.
    """
    from worker.authoring.lint import lint as run_lint
    from worker.authoring.lock import release as record

    root = _rubrics_dir(directory)
    report = run_lint(root, today=utc_today())
    name, _, number = version.partition("@")
    folder = str(root / name / number)
    blocking = [p for p in report.errors if p.path.startswith(folder) and not p.path.endswith("rubrics.lock")]
    if blocking:
        for problem in blocking:
            click.echo(_shown(problem), err=True)
        raise click.ClickException(f"{version} has {len(blocking)} lint error(s): fix them before releasing")
    try:
        sha, new = record(root, version)
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'released' if new else 'already released'} {version}  sha256 {sha}")


@rubrics.command()
@click.argument("rubric")
@click.option("--trace", "trace_id", help="A trace id, read from Langfuse (LANGFUSE_* settings).")
@click.option("--file", "trace_file", type=click.Path(exists=True, dir_okay=False),
              help="A trace as JSON: {id, name, input, output, metadata, observations: [...]}.")
@click.option("--dir", "directory", type=click.Path(file_okay=False))
def render(rubric: str, trace_id: str | None, trace_file: str | None, directory: str | None) -> None:
    """Show the exact prompt and output schema the judge would get for a trace.

    RUBRIC is name@vN, or a name for its newest version.
    """
    from worker.judging.prompt import render as render_prompt
    from worker.judging.variables import map_variables, observation_names
    from worker.langfuse_io.traces import Trace
    from worker.rubrics.rubric import load_rubrics

    if bool(trace_id) == bool(trace_file):
        raise click.UsageError("give exactly one of --trace ID or --file trace.json")
    try:
        loaded = load_rubrics(_rubrics_dir(directory))
        chosen = pick_rubric(loaded, rubric)
        # --trace reads Langfuse, so it needs the full settings; --file needs no Langfuse keys.
        settings = load_settings() if trace_id else author_settings(_rubrics_dir(directory))
        if trace_file:
            try:
                raw = json.loads(Path(trace_file).read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise click.ClickException(f"{trace_file}: not a JSON trace ({exc})") from None
            trace = Trace.from_dict(raw)
        else:
            from worker.langfuse_io.client import build_langfuse_api
            from worker.langfuse_io.traces import TraceReader

            assert trace_id  # exactly one of --trace and --file (checked above)
            # read as the worker reads it: the root and the steps the rubric names
            trace = TraceReader(build_langfuse_api(settings, limited=False)).fetch(trace_id, observation_names(chosen))
        variables, hygiene = map_variables(trace, chosen, settings.max_variable_chars, redact=settings.redact_pii)
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


rubrics.add_command(test)


@rubrics.group()
def examples() -> None:
    """Labelled examples (rubrics/<name>/examples.jsonl)."""


@examples.command("pull")
@click.argument("rubric")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 365),
              help="Human labels given in the last DAYS days.")
@click.option("--file", "examples_file", type=click.Path(dir_okay=False),
              help="The examples file to append to (default: the rubric's examples.jsonl).")
@click.option("--dir", "directory", type=click.Path(file_okay=False))
def pull(rubric: str, days: int, examples_file: str | None, directory: str | None) -> None:
    """Append human-labelled production traces to RUBRIC's examples.jsonl.

    The labels are Langfuse scores with source ANNOTATION under the rubric's name (what reviewers
    leave in its annotation queue); each trace is stored redacted as the judge sees it, once
    (a trace already in the file is skipped). RUBRIC is name@vN, or a name for its newest version.
    """
    import datetime as dt

    from worker.langfuse_io.client import build_langfuse_api
    from worker.langfuse_io.traces import TraceReader
    from worker.review.examples import pull_examples
    from worker.rubrics.rubric import load_rubrics

    try:
        root = _rubrics_dir(directory)
        chosen = pick_rubric(load_rubrics(root), rubric)
        settings = load_settings()
        api = build_langfuse_api(settings, limited=False)
        result = pull_examples(api, TraceReader(api), chosen, redact=settings.redact_pii,
                               since=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days),
                               path=Path(examples_file) if examples_file else None)
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{result.path}: {result.added} example(s) added from {result.labelled_traces} human-labelled "
               f"trace(s); {result.already_present} already there, {result.off_scale} with labels off the "
               f"{chosen.key} scale")
