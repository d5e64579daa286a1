"""`tracejudge rubrics lint` and `release`: every problem reported with file and line, exit codes."""
import json
import shutil

import pytest
from click.testing import CliRunner

from tests.helpers import REPO
from worker.authoring.lock import read_lock
from worker.cli.main import main
from worker.errors import ConfigError
from worker.rubrics.rubric import load_rubrics, version_sha256
from worker.rubrics.rubric import SHARED_PROMPTS

PIPELINE = ("helpfulness", "groundedness")


@pytest.fixture
def rubrics(tmp_path):
    """A private copy of the two released pipeline rubrics, their lock and the repair template."""
    root = tmp_path / "rubrics"
    root.mkdir()
    for name in PIPELINE:
        shutil.copytree(REPO / "rubrics" / name / "v1", root / name / "v1")
        (root / name / "examples.jsonl").write_text(examples(name, 20))
    for shared in SHARED_PROMPTS:  # prompt files every version is hashed with
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    lock = json.loads((REPO / "rubrics" / "rubrics.lock").read_text())
    (root / "rubrics.lock").write_text(json.dumps({k: v for k, v in lock.items() if k.split("@")[0] in PIPELINE},
                                                  indent=2) + "\n")
    return root


def examples(name, n, value=4):
    trace = {"name": "support-chat", "input": [{"role": "user", "content": "How do I reset my password?"}],
             "output": {"content": "Settings > Security > Reset."},
             "observations": [{"name": "retrieval", "output": "Reset it under Settings > Security."}]}
    return "".join(json.dumps({"id": f"{name}-{i}", "trace": trace,
                               "labels": [{"rater": "ann", "value": value}, {"rater": "bo", "value": 5}]}) + "\n"
                   for i in range(n))


def edit(path, old, new):
    """Replaces ``old`` by ``new`` in the file; returns the 1-based line where ``new`` starts."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    text = text.replace(old, new, 1)
    path.write_text(text)
    return text[:text.index(new)].count("\n") + 1


def lint(root, *args):
    result = CliRunner().invoke(main, ["rubrics", "lint", "--dir", str(root), *args])
    return result.exit_code, result.output


def test_the_shipped_rubrics_pass_lint():
    code, out = lint(REPO / "rubrics")
    assert code == 0, out
    assert "0 error(s)" in out
    assert "ok  helpfulness@v1" in out and "released" in out


def test_the_shipped_lock_records_the_pipeline_rubrics_as_they_are():
    lock = json.loads((REPO / "rubrics" / "rubrics.lock").read_text())
    for name in PIPELINE:
        assert read_lock(REPO / "rubrics")[0][f"{name}@v1"] == version_sha256(REPO / "rubrics" / name / "v1")
    assert list(lock) == sorted(lock)


def test_the_private_copy_is_clean(rubrics):
    code, out = lint(rubrics)
    assert code == 0 and "0 error(s), 0 warning(s)" in out, out


def test_bad_yaml_fails_with_file_and_line(rubrics):
    yaml_file = rubrics / "groundedness" / "v1" / "rubric.yaml"
    line = edit(yaml_file, "  max: 5", "  max: [5")
    code, out = lint(rubrics)
    assert code == 1
    # The parser notices on the next line; the message names where the broken list starts.
    assert f"{yaml_file}:{line + 1}: invalid YAML: expected ',' or ']'" in out, out
    assert f"flow sequence that starts on line {line})" in out


def test_an_unknown_template_variable_fails_with_file_and_line(rubrics):
    user = rubrics / "helpfulness" / "v1" / "user.j2"
    line = edit(user, "{{ answer }}", "{{ answr }}")
    code, out = lint(rubrics)
    assert code == 1
    assert f"{user}:{line}: undefined variable 'answr'" in out, out


def test_a_trace_variable_in_the_static_system_prompt_is_an_error(rubrics):
    system = rubrics / "helpfulness" / "v1" / "system.j2"
    line = edit(system, "Rules:", "Rules for {{ answer }}:")
    code, out = lint(rubrics)
    assert code == 1 and f"{system}:{line}: 'answer' is a trace variable" in out, out


def test_an_unknown_filter_fails_with_file_and_line(rubrics):
    user = rubrics / "helpfulness" / "v1" / "user.j2"
    line = edit(user, "{{ answer }}", "{{ answer | shout }}")
    code, out = lint(rubrics)
    assert code == 1
    assert f"{user}:{line}: unknown filter 'shout'" in out, out


@pytest.mark.parametrize("construct, message", [
    ('{% include "other.j2" %}', "{% include %} is not allowed"),
    ('{% import "macros.j2" as m %}', "{% import %} is not allowed"),
    ("{{ answer.__class__ }}", "access to '__class__' is not allowed"),
    ("{{ answer['__len__'] }}", "access to '__len__' is not allowed"),
    ("{{ conversation.encode('utf-8') }}", "calling 'encode' is not allowed"),
])
def test_unsafe_constructs_fail_with_file_and_line(rubrics, construct, message):
    user = rubrics / "helpfulness" / "v1" / "user.j2"
    line = edit(user, "Grade the assistant's answer below.", f"Grade the answer. {construct}")
    code, out = lint(rubrics)
    assert code == 1
    assert f"{user}:{line}: {message}" in out, out


def test_safe_calls_and_macros_are_allowed(rubrics):
    user = rubrics / "helpfulness" / "v1" / "user.j2"
    edit(user, "{{ answer }}", "{% macro q(x) %}{{ x | trim }}{% endmacro %}{{ q(answer.strip()) }}"
                               "{% for i in range(1) %}{{ loop.index }}{% endfor %}")
    code, out = lint(rubrics)
    assert "not allowed" not in out and "undefined" not in out, out


def test_numeric_min_not_below_max_fails_at_the_key(rubrics):
    yaml_file = rubrics / "helpfulness" / "v1" / "rubric.yaml"
    line = edit(yaml_file, "  min: 1", "  min: 5")
    code, out = lint(rubrics)
    assert code == 1
    assert f"{yaml_file}:{line}: score.min (5) must be below score.max (5)" in out, out


def test_categorical_labels_with_duplicate_values_or_colliding_names_fail(rubrics):
    yaml_file = rubrics / "helpfulness" / "v1" / "rubric.yaml"
    text = yaml_file.read_text()
    start, end = text.index("score:"), text.index("applies_to:")
    yaml_file.write_text(text[:start] + "score:\n  type: categorical\n  labels:\n    pass: 1\n    partial: 1\n"
                         "    Pass: 0\n  direction: higher_is_better\n" + text[end:])
    first = text[:start].count("\n") + 1
    code, out = lint(rubrics)
    assert code == 1
    assert f"{yaml_file}:{first + 4}: labels 'pass' and 'partial' have the same value 1" in out, out
    assert f"{yaml_file}:{first + 5}: labels 'pass' and 'Pass' differ only in case" in out, out


def test_a_duplicate_yaml_key_is_an_error_not_a_silent_overwrite(rubrics):
    yaml_file = rubrics / "helpfulness" / "v1" / "rubric.yaml"
    line = edit(yaml_file, "  max: 5\n", "  max: 5\n  max: 7\n") + 1
    code, out = lint(rubrics)
    assert code == 1 and f"{yaml_file}:{line}: duplicate key 'score.max'" in out, out


def test_schema_errors_point_at_the_key_and_are_all_reported(rubrics):
    yaml_file = rubrics / "helpfulness" / "v1" / "rubric.yaml"
    rate = edit(yaml_file, "  rate: 0.01", "  rate: 1.5")
    provider = edit(yaml_file, "  provider: anthropic", "  provider: mistral")
    source = edit(yaml_file, "    from: output", "    from: answer")
    typo = edit(yaml_file, "template: user.j2", "template: user.j2\ntempalte: x")
    code, out = lint(rubrics)
    assert code == 1
    assert f"{yaml_file}:{rate}: sampling.rate must be a number within 0..1" in out
    assert f"{yaml_file}:{provider}: judge.provider must be one of anthropic, openai, openai-compatible, anthropic-compatible" in out
    assert f"{yaml_file}:{source}: variables.answer.from must be one of" in out
    assert f"{yaml_file}:{typo + 1}: warning: unknown key 'tempalte'" in out, out
    # The strict loader the worker uses stops on the same problems, naming file and line.
    with pytest.raises(ConfigError, match=rf"{yaml_file}:\d+: .*and 2 more"):
        load_rubrics(rubrics)


@pytest.mark.parametrize("model, message", [
    ("claude-sonnet-4-5", "is not pinned to a snapshot"),
    ("gpt-4o-2024-08-06", "has no price"),
])
def test_a_floating_or_unpriced_judge_fails_at_the_model_line(rubrics, model, message):
    yaml_file = rubrics / "groundedness" / "v1" / "rubric.yaml"
    line = edit(yaml_file, "  model: claude-sonnet-4-6", f"  model: {model}")
    code, out = lint(rubrics)
    assert code == 1 and f"{yaml_file}:{line}: " in out and message in out, out


def test_an_edited_released_version_fails_naming_the_folder_and_both_hashes(rubrics):
    folder = rubrics / "helpfulness" / "v1"
    before = version_sha256(folder)
    edit(folder / "system.j2", "Judge substance, not length", "Judge substance and style, not length")
    after = version_sha256(folder)
    code, out = lint(rubrics)
    assert code == 1
    lock_line = next(i for i, l in enumerate((rubrics / "rubrics.lock").read_text().splitlines(), 1) if "helpfulness" in l)
    assert f"{rubrics / 'rubrics.lock'}:{lock_line}: helpfulness@v1 was released with sha256 {before}" in out, out
    assert f"{folder}/ now hashes to {after}" in out and "add v2 instead" in out


def test_an_unreleased_version_runs_with_a_note_and_release_freezes_it(rubrics):
    shutil.copytree(rubrics / "helpfulness" / "v1", rubrics / "helpfulness" / "v2")
    edit(rubrics / "helpfulness" / "v2" / "rubric.yaml", "version: 1", "version: 2")
    code, out = lint(rubrics)
    assert code == 0 and "note: helpfulness@v2 is not released" in out, out

    runner = CliRunner()
    released = runner.invoke(main, ["rubrics", "release", "helpfulness@v2", "--dir", str(rubrics)])
    assert released.exit_code == 0 and "released helpfulness@v2" in released.output
    lock = json.loads((rubrics / "rubrics.lock").read_text())
    assert lock["helpfulness@v2"]["sha256"] == version_sha256(rubrics / "helpfulness" / "v2") and list(lock) == sorted(lock)
    again = runner.invoke(main, ["rubrics", "release", "helpfulness@v2", "--dir", str(rubrics)])
    assert again.exit_code == 0 and "already released" in again.output

    edit(rubrics / "helpfulness" / "v2" / "user.j2", "Grade", "Please grade")
    refused = runner.invoke(main, ["rubrics", "release", "helpfulness@v2", "--dir", str(rubrics)])
    assert refused.exit_code == 1 and "immutable" in refused.output and "add v3 instead" in refused.output
    assert json.loads((rubrics / "rubrics.lock").read_text()) == lock  # the lock is untouched
    assert lint(rubrics)[0] == 1


def test_release_refuses_a_version_with_lint_errors(rubrics):
    shutil.copytree(rubrics / "helpfulness" / "v1", rubrics / "helpfulness" / "v2")
    edit(rubrics / "helpfulness" / "v2" / "rubric.yaml", "version: 1", "version: 2")
    edit(rubrics / "helpfulness" / "v2" / "user.j2", "{{ answer }}", "{{ answr }}")
    result = CliRunner().invoke(main, ["rubrics", "release", "helpfulness@v2", "--dir", str(rubrics)])
    assert result.exit_code == 1 and "lint error" in result.output
    assert "helpfulness@v2" not in json.loads((rubrics / "rubrics.lock").read_text())


def test_malformed_or_off_scale_examples_fail_with_their_line(rubrics):
    path = rubrics / "helpfulness" / "examples.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = "{not json"
    lines[6] = lines[6].replace('"value": 4', '"value": 9')
    path.write_text("\n".join(lines) + "\n")
    code, out = lint(rubrics)
    assert code == 1
    assert f"{path}:3: invalid JSON" in out, out
    assert f"{path}:7: " in out and "value 9 is off the scale" in out


def test_missing_or_too_few_examples_are_warnings(rubrics):
    (rubrics / "groundedness" / "examples.jsonl").unlink()
    (rubrics / "helpfulness" / "examples.jsonl").write_text(examples("helpfulness", 5))
    code, out = lint(rubrics)
    assert code == 0, out
    assert f"{rubrics / 'groundedness' / 'examples.jsonl'}: warning: no labelled examples" in out
    assert "warning: only 5 labelled example(s) for helpfulness@v1" in out
    assert lint(rubrics, "--strict")[0] == 1


def test_an_example_the_rubric_cannot_map_is_a_warning_with_its_line(rubrics):
    path = rubrics / "groundedness" / "examples.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"name": "retrieval"', '"name": "search"')
    path.write_text("\n".join(lines) + "\n")
    code, out = lint(rubrics)
    assert code == 0 and f"{path}:5: warning: example 'groundedness-4' would not be judged" in out, out


def test_the_worked_example_in_the_rubrics_readme_passes_lint(rubrics):
    import re

    readme = (REPO / "rubrics" / "README.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", readme, re.S)
    rubric_yaml = next(body for lang, body in blocks if lang == "yaml")
    system, user = [body for lang, body in blocks if lang == "jinja"][:2]
    example = json.loads(next(body for lang, body in blocks if lang == "json" and '"labels"' in body))
    folder = rubrics / "resolution" / "v1"
    folder.mkdir(parents=True)
    (folder / "rubric.yaml").write_text(rubric_yaml)
    (folder / "system.j2").write_text(system)
    (folder / "user.j2").write_text(user)
    (rubrics / "resolution" / "examples.jsonl").write_text(
        "".join(json.dumps({**example, "id": f"ex-{i}"}) + "\n" for i in range(20)))
    code, out = lint(rubrics)
    assert code == 0 and "0 error(s), 0 warning(s)" in out, out
    assert "ok  resolution@v1" in out and "note: resolution@v1 is not released" in out


def test_a_judge_near_its_end_of_life_warns_and_past_it_fails(rubrics):
    import datetime as dt

    from worker.authoring.lint import lint as run_lint

    yaml_file = rubrics / "groundedness" / "v1" / "rubric.yaml"
    line = edit(yaml_file, "  model: claude-sonnet-4-6", "  model: claude-sonnet-4-5-20250929")
    eol = {"claude-sonnet-4-5-20250929": dt.date(2026, 11, 30)}
    near = run_lint(rubrics, today=dt.date(2026, 11, 10), end_of_life=eol)
    assert any(str(p).startswith(f"{yaml_file}:{line}: ") and "end of life on 2026-11-30" in p.message
               for p in near.of("warning")), near.problems
    assert not [p for p in near.errors if p.path == str(yaml_file)]
    past = run_lint(rubrics, today=dt.date(2026, 11, 30), end_of_life=eol)
    assert any(str(p).startswith(f"{yaml_file}:{line}: ") and "reached end of life" in p.message
               for p in past.errors), past.problems
