"""Render a rubric version into the exact request the judge gets (sandboxed Jinja2)."""
from __future__ import annotations

import functools
import json

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from worker.errors import ConfigError, Unscored
from worker.judges.base import JudgeRequest
from worker.rubrics.rubric import Rubric

VERDICT_TOOL = "record_verdict"

TEMPLATE_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def verdict_schema(rubric: Rubric) -> dict:
    """Reasoning comes before the score, so the judge reasons before it decides."""
    return {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, "score": rubric.scale.json_schema()},
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


def compile_template(source: str, where: str) -> jinja2.Template:
    try:
        return TEMPLATE_ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None


def scale_context(rubric: Rubric) -> dict:
    s = rubric.scale
    return {"type": s.kind, "min": s.minimum, "max": s.maximum, "integer": s.integer,
            "labels": [label for label, _ in s.labels], "describe": s.describe()}


def render(rubric: Rubric, variables: dict[str, str]) -> JudgeRequest:
    context = {"rubric": {"name": rubric.name, "version": rubric.version,
                          "description": rubric.description}, "scale": scale_context(rubric)}
    try:
        system = _render(rubric.system_template, context) if rubric.system_template else None
        user = _render(rubric.user_template, {**context, **variables})
    except jinja2.TemplateError as exc:
        raise Unscored("template_error", f"{rubric.key}: {type(exc).__name__}: {exc}") from None
    schema = verdict_schema(rubric)
    return JudgeRequest(rubric.judge.model, rubric.judge.max_tokens, system, user,
                        schema, VERDICT_TOOL, rubric.description, render_json_answer(rubric, schema))


def render_json_answer(rubric: Rubric, schema: dict | None = None) -> str | None:
    """The answer format a judge on a JSON-text fallback gets (json_answer.j2; static per version)."""
    if not rubric.json_template:
        return None
    context = {"schema": json.dumps(schema or verdict_schema(rubric), indent=2), "scale": scale_context(rubric),
               "tool_name": VERDICT_TOOL}
    try:
        return _render(rubric.json_template, context)
    except jinja2.TemplateError as exc:
        raise Unscored("template_error", f"json answer template: {exc}") from None


def render_repair(rubric: Rubric, problem: str) -> str | None:
    if not rubric.repair_template:
        return None
    context = {"problem": problem, "scale": scale_context(rubric), "tool_name": VERDICT_TOOL}
    try:
        return _render(rubric.repair_template, context)
    except jinja2.TemplateError as exc:
        raise Unscored("template_error", f"repair template: {exc}") from None


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    return compile_template(source, "template")


def _render(source: str, context: dict) -> str:
    return _compiled(source).render(**context)
