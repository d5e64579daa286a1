"""The sandboxed Jinja2 environment every rubric template compiles in: the judge request's
render (worker/judging/prompt.py), the start-up check of every loaded version
(worker/runtime.py ``validate_rubrics``) and the author's lint (worker/authoring/lint.py).

Kept below both judging and the runtime, so the composition root can check templates without
importing a step package.
"""
from __future__ import annotations

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from worker.errors import ConfigError

TEMPLATE_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                    keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def compile_template(source: str, where: str) -> jinja2.Template:
    """``source`` compiled; a syntax error is a ConfigError naming ``where`` and the line."""
    try:
        return TEMPLATE_ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
