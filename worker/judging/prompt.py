"""Render a rubric version into the exact request the judge gets (sandboxed Jinja2: worker/templates.py)."""
from __future__ import annotations

import functools
import json

import jinja2

from worker.errors import Unscored
from worker.json_types import JSONDict
from worker.judges.base import JudgeRequest
from worker.rubrics.rubric import Rubric
from worker.templates import TEMPLATE_ENV, compile_template

__all__ = ["TEMPLATE_ENV", "VERDICT_TOOL", "compile_template", "render", "render_json_answer", "render_repair",
           "scale_context", "verdict_schema"]
VERDICT_TOOL = "record_verdict"


def verdict_schema(rubric: Rubric) -> JSONDict:
    """Reasoning comes before the score, so the judge reasons before it decides."""
    return {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, "score": rubric.scale.json_schema()},
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


def scale_context(rubric: Rubric) -> dict[str, object]:
    s = rubric.scale
    return {"type": s.kind, "min": s.minimum, "max": s.maximum, "integer": s.integer,
            "labels": [label for label, _ in s.labels], "describe": s.describe()}


def render(rubric: Rubric, variables: dict[str, str]) -> JudgeRequest:
    context: dict[str, object] = {"rubric": {"name": rubric.name, "version": rubric.version,
                          "description": rubric.description}, "scale": scale_context(rubric)}
    try:
        system = _render(rubric.system_template, context) if rubric.system_template else None
        user = _render(rubric.user_template, {**context, **variables})
    except jinja2.TemplateError as exc:
        raise Unscored("template_error", f"{rubric.key}: {type(exc).__name__}: {exc}") from None
    schema = verdict_schema(rubric)
    return JudgeRequest(rubric.judge.model, rubric.judge.max_tokens, system, user,
                        schema, VERDICT_TOOL, rubric.description, render_json_answer(rubric, schema))


def render_json_answer(rubric: Rubric, schema: JSONDict | None = None) -> str | None:
    """The answer format a judge on a JSON-text fallback gets (json_answer.j2; static per version)."""
    if not rubric.json_template:
        return None
    context: dict[str, object] = {"schema": json.dumps(schema or verdict_schema(rubric), indent=2),
                                  "scale": scale_context(rubric), "tool_name": VERDICT_TOOL}
    try:
        return _render(rubric.json_template, context)
    except jinja2.TemplateError as exc:
        raise Unscored("template_error", f"json answer template: {exc}") from None


def render_repair(rubric: Rubric, problem: str) -> str | None:
    if not rubric.repair_template:
        return None
    context: dict[str, object] = {"problem": problem, "scale": scale_context(rubric), "tool_name": VERDICT_TOOL}
    try:
        return _render(rubric.repair_template, context)
    except jinja2.TemplateError as exc:
        raise Unscored("template_error", f"repair template: {exc}") from None


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    return compile_template(source, "template")


def _render(source: str, context: dict[str, object]) -> str:
    return _compiled(source).render(**context)
