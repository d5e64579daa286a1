"""``tracejudge rubrics lint``: every problem of every rubric version at once, as ``path:line: message``.

What the loader (worker/rubrics/rubric.py, the one parser of rubric.yaml) finds, plus what only a
linter looks for: template variables the render context will not have, filters and tests the
sandbox does not know, constructs a rubric template must not use, a trial render, judges that
are floating, unpriced or retired, released versions whose files changed, and labelled
examples that are missing, too few, malformed or off the scale.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
from collections.abc import Mapping
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from worker.accounting.pricing import check_priced, use_price_file
from worker.authoring.examples import FILENAME as EXAMPLES_FILENAME
from worker.authoring.examples import parse_example
from worker.authoring.released import lint_released
from worker.errors import ConfigError, Unscored
from worker.judges import judge_key
from worker.judges.models import check_judge_model
from worker.judging.prompt import TEMPLATE_ENV, render, render_repair, scale_context
from worker.judging.variables import map_variables, select
from worker.rubrics.doc import Problem, Problems, RubricDoc, Severity
from worker.rubrics.rubric import Rubric, read_version, version_dirs
from worker.settings import Settings

MIN_EXAMPLES = 20
SYSTEM_CONTEXT = frozenset({"rubric", "scale"})  # system.j2 is the static prefix: no trace data
REPAIR_CONTEXT = frozenset({"problem", "scale", "tool_name"})
JSON_ANSWER_CONTEXT = frozenset({"schema", "scale", "tool_name"})
# What a template may call besides its own macros: read-only helpers and string/dict methods.
SAFE_GLOBALS = frozenset({"range", "dict", "namespace", "joiner", "cycler", "caller", "lipsum"})
SAFE_METHODS = frozenset({
    "upper", "lower", "strip", "lstrip", "rstrip", "title", "capitalize", "replace", "split", "rsplit",
    "splitlines", "join", "startswith", "endswith", "count", "find", "format", "items", "keys", "values",
    "get", "cycle", "changed",
})
_UNSAFE_TAGS = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
                nodes.Extends: "extends"}


@dataclasses.dataclass
class LintReport:
    problems: Problems
    rubrics: dict[str, Rubric]  # the versions that loaded
    released: dict[str, str]  # the lock: name@vN -> sha256

    @property
    def errors(self) -> list[Problem]:
        return sorted(self.problems.errors, key=_order)

    def of(self, severity: Severity) -> list[Problem]:
        return sorted((p for p in self.problems if p.severity == severity), key=_order)


def _order(problem: Problem) -> tuple[str, int]:
    return problem.path, problem.line or 0


def lint(root: Path, *, today: dt.date, allow_floating_models: bool = False,
         end_of_life: Mapping[str, dt.date] | None = None, prices_file: Path | None = None) -> LintReport:
    """Every problem of every version under ``root``; judges are checked for end of life as of
    ``today`` and priced from the shipped table with ``prices_file`` (default
    ``<root>/prices.json``) merged over it."""
    root = Path(root)
    problems = Problems()
    use_price_file(prices_file or root / "prices.json")
    repair = root / "repair.j2"
    repair_text = repair.read_text() if repair.is_file() else None
    if repair_text is not None:
        lint_template(repair, repair_text, REPAIR_CONTEXT, problems)
    json_answer = root / "json_answer.j2"
    if json_answer.is_file():
        lint_template(json_answer, json_answer.read_text(), JSON_ANSWER_CONTEXT, problems)
    rubrics: dict[str, Rubric] = {}
    dirs = version_dirs(root, problems)
    for version_dir in dirs:
        rubric, doc = read_version(version_dir, repair_text, problems)
        _lint_templates(version_dir, rubric, doc, problems)
        if rubric is None:
            continue
        rubrics[rubric.key] = rubric
        _lint_judge(rubric, doc, problems, allow_floating_models, today, end_of_life)
        _lint_paths(rubric, doc, problems)
    released = lint_released(root, dirs, problems)
    newest: dict[str, Rubric] = {}
    for rubric in rubrics.values():
        if rubric.name not in newest or rubric.version > newest[rubric.name].version:
            newest[rubric.name] = rubric
    for rubric in newest.values():
        lint_examples(rubric.path.parent / EXAMPLES_FILENAME, rubric, problems)
    return LintReport(problems, rubrics, released)



# -- templates --------------------------------------------------------------------------------

def lint_template(path: Path, source: str, allowed: frozenset[str] | None, problems: Problems,
                  variables: frozenset[str] = frozenset(), scale_keys: frozenset[str] | None = None) -> set[str]:
    """Static checks of one template; returns the context names it reads.

    ``allowed``: the names its render context has (None: unknown, skip that check);
    ``variables``: the rubric's trace variables, for a clearer message when system.j2 reads one.
    """
    try:
        ast = TEMPLATE_ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        problems.add(path, exc.lineno, f"template syntax error: {exc.message}")
        return set()
    unknown_filters = {n.name for n in ast.find_all(nodes.Filter) if n.name not in TEMPLATE_ENV.filters}
    unknown_tests = {n.name for n in ast.find_all(nodes.Test) if n.name not in TEMPLATE_ENV.tests}
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        kind, known = ("filter", TEMPLATE_ENV.filters) if isinstance(node, nodes.Filter) else ("test", TEMPLATE_ENV.tests)
        if node.name not in known:
            near = difflib.get_close_matches(node.name, known, n=3)
            hint = f"; did you mean {' or '.join(near)}?" if near else " (see the Jinja2 built-in filters and tests)"
            problems.add(path, node.lineno, f"unknown {kind} '{node.name}'{hint}")
    _lint_unsafe(path, ast, problems)
    if unknown_filters or unknown_tests:
        # find_undeclared_variables compiles the template, which stops at an unknown filter:
        # stand them in (already reported) so the variable check still runs.
        env = TEMPLATE_ENV.overlay()
        env.filters = {**TEMPLATE_ENV.filters, **{n: _identity for n in unknown_filters}}
        env.tests = {**TEMPLATE_ENV.tests, **{n: _identity for n in unknown_tests}}
        ast = env.parse(source)
    try:
        used = meta.find_undeclared_variables(ast) - set(TEMPLATE_ENV.globals)
    except jinja2.TemplateError as exc:
        problems.add(path, getattr(exc, "lineno", None), f"template error: {exc}")
        return set()
    if allowed is not None:
        for name in sorted(used - allowed):
            line = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name), None)
            if name in variables:
                message = (f"'{name}' is a trace variable, but {path.name} is the static, cached prefix and "
                           f"sees only {', '.join(sorted(allowed))}: use it in the user template")
            else:
                message = f"undefined variable '{name}' (defined here: {', '.join(sorted(allowed))})"
            problems.add(path, line, message)
    if scale_keys is not None:
        for attr in ast.find_all(nodes.Getattr):
            if isinstance(attr.node, nodes.Name) and attr.node.name == "scale" and attr.attr not in scale_keys:
                problems.add(path, attr.lineno, f"scale has no '{attr.attr}' (it has: {', '.join(sorted(scale_keys))})")
    return used


def _identity(value: object, *args: object, **kwargs: object) -> object:
    return value


def _lint_unsafe(path: Path, ast: nodes.Template, problems: Problems) -> None:
    macros = {m.name for m in ast.find_all(nodes.Macro)}
    for node in ast.find_all(tuple(_UNSAFE_TAGS)):
        problems.add(path, node.lineno, f"{{% {_UNSAFE_TAGS[type(node)]} %}} is not allowed: a rubric version "
                     "is one self-contained folder (its sha256 covers only that folder)")
    for access in ast.find_all((nodes.Getattr, nodes.Getitem)):
        name = ""
        if isinstance(access, nodes.Getattr):
            name = access.attr
        elif isinstance(access, nodes.Getitem) and isinstance(access.arg, nodes.Const) \
                and isinstance(access.arg.value, str):
            name = access.arg.value
        if name.startswith("_"):
            problems.add(path, access.lineno, f"access to '{name}' is not allowed (private and dunder attributes "
                         "reach outside the template's data)")
    for call in ast.find_all(nodes.Call):
        func = call.node
        if isinstance(func, nodes.Name) and (func.name in macros or func.name in SAFE_GLOBALS):
            continue
        if isinstance(func, nodes.Getattr) and func.attr in SAFE_METHODS:
            continue
        what = func.name if isinstance(func, nodes.Name) else getattr(func, "attr", type(func).__name__)
        problems.add(path, call.lineno, f"calling '{what}' is not allowed: templates may call their own macros, "
                     f"{', '.join(sorted(SAFE_GLOBALS - {'caller', 'lipsum'}))} and string/dict methods "
                     f"({', '.join(sorted(SAFE_METHODS)[:6])}, ...)")


def _lint_templates(version_dir: Path, rubric: Rubric | None, doc: RubricDoc, problems: Problems) -> None:
    errors_before = len(problems.errors)
    variables = frozenset(v.name for v in rubric.variables) if rubric else frozenset()
    scale_keys = frozenset(scale_context(rubric)) if rubric else None
    system_file = version_dir / "system.j2"
    if system_file.is_file():
        lint_template(system_file, system_file.read_text(), SYSTEM_CONTEXT if rubric else None, problems,
                      variables, scale_keys)
    template = (doc.data or {}).get("template", "user.j2") if isinstance(doc.data, dict) else "user.j2"
    user_file = version_dir / str(template)
    used = set()
    if user_file.is_file():
        used = lint_template(user_file, user_file.read_text(), SYSTEM_CONTEXT | variables if rubric else None,
                             problems, variables, scale_keys)
    local_repair = version_dir / "repair.j2"
    if local_repair.is_file():
        lint_template(local_repair, local_repair.read_text(), REPAIR_CONTEXT if rubric else None, problems)
    if rubric is None:
        return
    for var in rubric.variables:
        if var.name not in used:
            doc.warn(("variables", var.name), f"variable '{var.name}' is mapped but {user_file.name} never uses it"
                     + (" (as required, a trace without it is still unscored)" if var.required else ""))
    if len(problems.errors) == errors_before:
        _trial_render(rubric, system_file, user_file, local_repair, problems)


def _trial_render(rubric: Rubric, system_file: Path, user_file: Path, repair_file: Path, problems: Problems) -> None:
    """Render once with stand-in values: catches what only shows at render time (StrictUndefined)."""
    sample = {v.name: f"(example {v.name})" for v in rubric.variables}
    checks = ((system_file, lambda: render(dataclasses.replace(rubric, user_template=""), sample)),
              (user_file, lambda: render(dataclasses.replace(rubric, system_template=None), sample)),
              (repair_file if repair_file.is_file() else rubric.path.parent.parent / "repair.j2",
               lambda: render_repair(rubric, "the score was missing")))
    for path, attempt in checks:
        try:
            attempt()
        except Unscored as exc:
            problems.add(path, _template_line(exc), f"fails to render: {exc.detail.split(': ', 1)[-1]}")


def _template_line(exc: BaseException) -> int | None:
    cause = exc.__cause__ or exc.__context__ or exc
    tb, line = cause.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# -- judge, paths -----------------------------------------------------------------------------

def _lint_judge(rubric: Rubric, doc: RubricDoc, problems: Problems, allow_floating: bool,
                today: dt.date, end_of_life: Mapping[str, dt.date] | None) -> None:
    judge = rubric.judge
    try:
        for warning in check_judge_model(judge.provider, judge.model, allow_floating=allow_floating,
                                         today=today, end_of_life=end_of_life, identity=judge.identity):
            doc.warn(("judge", "model"), warning)
    except ConfigError as exc:
        doc.error(("judge", "identity" if judge.self_hosted else "model"), str(exc))
    try:
        check_priced(judge.model, judge_key(rubric))
    except ConfigError as exc:
        doc.error(("judge", "model"), str(exc))


def _lint_paths(rubric: Rubric, doc: RubricDoc, problems: Problems) -> None:
    for var in rubric.variables:
        for i, path in enumerate(var.paths):
            try:
                select({}, path)
            except ValueError as exc:
                doc.error(("variables", var.name, "path", i), f"variables.{var.name}.path: {exc}")


# -- labelled examples ------------------------------------------------------------------------

def lint_examples(path: Path, rubric: Rubric, problems: Problems) -> None:
    """``rubrics/<name>/examples.jsonl`` against the rubric's newest version (its scale, its variables)."""
    if not path.is_file():
        problems.add(path, None, f"no labelled examples: `tracejudge rubrics test {rubric.name}` has nothing to "
                     f"measure agreement on (add {MIN_EXAMPLES}+, see rubrics/README.md)", "warning")
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.add(path, None, f"not UTF-8 ({exc.reason})")
        return
    seen: dict[str, int] = {}
    values: set[str] = set()  # the labels' values as JSON
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{path}:{number}"
        try:
            example = parse_example(line, rubric.scale, where, number)
        except ConfigError as exc:
            problems.add(path, number, str(exc).removeprefix(f"{where}: "))
            continue
        count += 1
        if example.id in seen:
            problems.add(path, number, f"duplicate id {example.id!r} (first on line {seen[example.id]})")
        seen.setdefault(example.id, number)
        values.update(json.dumps(v) for _, v in example.labels)
        try:
            map_variables(example.to_trace(), rubric, Settings.max_variable_chars)
        except Unscored as exc:
            problems.add(path, number, f"example {example.id!r} would not be judged by {rubric.key}: {exc}", "warning")
    if count < MIN_EXAMPLES:
        problems.add(path, None, f"only {count} labelled example(s) for {rubric.key}: agreement needs "
                     f"{MIN_EXAMPLES}+ to mean anything", "warning")
    elif len(values) == 1:
        problems.add(path, None, "every label has the same value: agreement (kappa) is undefined; add examples "
                     "across the scale", "warning")
