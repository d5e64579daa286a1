"""``tracejudge rubrics test``: labelled examples through the real judge path (real SDKs over
HTTP against the judge emulator), agreement reported, nothing written to Langfuse.

Test-only examples carry the emulator's ``[[quality:q]]`` hint so the judge's label is known in
advance (integer 1..5: 1 + 4q; pass/partial/fail: q = 1 / 0.5 / 0; boolean: q >= 0.5), which
turns a designed confusion table into an end-to-end check of the printed statistics.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import PK, REPO, SK
from worker.authoring.examples import examples_path, levels, load_examples, reference_label_of
from worker.cli import rubric_test as cli_rubric_test
from worker.errors import ConfigError
from worker.judging.variables import map_variables
from worker.rubrics.rubric import load_rubrics
from worker.rubrics.rubric import SHARED_PROMPTS

STARTERS = ("helpfulness", "groundedness", "instruction_following", "safety")
QUALITY_FOR_SCORE = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}
QUALITY_FOR_LABEL = {"pass": 1.0, "partial": 0.5, "fail": 0.0}


@pytest.fixture
def rubrics_dir(tmp_path) -> Path:
    """The starter rubrics' released versions, without their shipped examples."""
    root = tmp_path / "rubrics"
    for name in STARTERS:
        shutil.copytree(REPO / "rubrics" / name / "v1", root / name / "v1")
    for shared in SHARED_PROMPTS:  # prompt files every version is hashed with
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    return root


def judge_env(judge_emu, **overrides) -> dict:
    env = {
        "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": judge_emu.base_url,
        "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": judge_emu.base_url + "/v1",
        # No Langfuse at all: the command must not need it.
        "LANGFUSE_PUBLIC_KEY": None, "LANGFUSE_SECRET_KEY": None, "LANGFUSE_BASE_URL": None,
        "LANGFUSE_HOST": None, "TRACEJUDGE_RUBRICS_DIR": None,
    }
    env.update(overrides)
    return env


def run(rubrics_dir, judge_emu, *args, **env):
    result = CliRunner().invoke(cli_rubric_test.test, [*args, "--dir", str(rubrics_dir)],
                                env=judge_env(judge_emu, **env), catch_exceptions=False)
    return result


def example(n: int, answer: str, *values, question: str = "How do I export my data as CSV?", **trace) -> dict:
    raters = ("alice", "bob", "carol")
    return {"id": f"t-{n:03d}",
            "trace": {"name": "support-chat", "input": [{"role": "user", "content": question}],
                      "output": {"role": "assistant", "content": answer}, "metadata": {"tenant": "acme"}, **trace},
            "labels": [{"rater": r, "value": v} for r, v in zip(raters, values)]}


def write_examples(rubrics_dir: Path, name: str, rows: list[dict]) -> Path:
    path = rubrics_dir / name / "examples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# (human label, judge label) pairs: a designed confusion table on the 1..5 scale.
NUMERIC_PAIRS = [(5, 5)] * 3 + [(4, 4)] * 2 + [(4, 5), (2, 2), (2, 2), (2, 3), (1, 1), (1, 3), (3, 4)]


def numeric_examples(pairs):
    return [example(i, f"Click Export > CSV. [[quality:{QUALITY_FOR_SCORE[judge]}]]", human)
            for i, (human, judge) in enumerate(pairs)]


def quadratic_kappa_by_pairs(human, judge) -> float:
    """Quadratic-weighted kappa on equally spaced levels, by its pairwise form: 1 minus the mean
    squared difference of matched pairs over the mean squared difference of all pairs."""
    n = len(human)
    observed = sum((h - j) ** 2 for h, j in zip(human, judge)) / n
    expected = sum((h - j) ** 2 for h in human for j in judge) / n ** 2
    return 1 - observed / expected


def test_numeric_rubric_reports_the_designed_tables_statistics(rubrics_dir, judge_emu):
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS))
    result = run(rubrics_dir, judge_emu, "helpfulness@v1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    human = [h for h, _ in NUMERIC_PAIRS]
    judge = [j for _, j in NUMERIC_PAIRS]
    assert [r["judge"] for r in report["results"]] == judge  # each went through the emulator judge
    assert report["n"] == report["examples"] == len(NUMERIC_PAIRS)
    assert report["exact"] == pytest.approx(sum(h == j for h, j in NUMERIC_PAIRS) / len(NUMERIC_PAIRS))
    assert report["within_one"] == pytest.approx(sum(abs(h - j) <= 1 for h, j in NUMERIC_PAIRS) / len(NUMERIC_PAIRS))
    assert report["kappa_weights"] == "quadratic"
    assert report["kappa"] == pytest.approx(quadratic_kappa_by_pairs(human, judge))
    assert report["spearman"] is not None and report["kendall_tau_b"] is not None
    counts = Counter(NUMERIC_PAIRS)
    assert report["confusion"]["rows"] == [[counts[(h, j)] for j in range(1, 6)] for h in range(1, 6)]
    assert report["unscored"] == {}
    assert report["judge_cost_usd"] > 0


def test_linear_weights_option_changes_the_kappa(rubrics_dir, judge_emu):
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS))
    report = json.loads(run(rubrics_dir, judge_emu, "helpfulness", "--weights", "linear", "--json").stdout)
    human = [h for h, _ in NUMERIC_PAIRS]
    judge = [j for _, j in NUMERIC_PAIRS]
    n = len(human)
    # Linear weights on equally spaced levels, pairwise form: mean |h - j| matched over all pairs.
    expected = 1 - (sum(abs(h - j) for h, j in zip(human, judge)) / n) / (
        sum(abs(h - j) for h in human for j in judge) / n ** 2)
    assert report["kappa_weights"] == "linear"
    assert report["kappa"] == pytest.approx(expected)
    assert report["kappa"] != pytest.approx(quadratic_kappa_by_pairs(human, judge))


def test_the_command_is_reachable_as_tracejudge_rubrics_test():
    from worker.cli.main import main

    result = CliRunner().invoke(main, ["rubrics", "test", "--help"])
    assert result.exit_code == 0, result.output
    assert "--min-kappa" in result.output and "labelled examples" in result.output


def test_text_report_shows_metrics_confusion_and_human_ceiling(rubrics_dir, judge_emu):
    rows = numeric_examples(NUMERIC_PAIRS[:6])
    rows.append(example(90, "Export > CSV. [[quality:0.75]]", 4, 5))
    rows.append(example(91, "Export > CSV. [[quality:0.25]]", 2, 2))
    write_examples(rubrics_dir, "helpfulness", rows)
    result = run(rubrics_dir, judge_emu, "helpfulness")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in ("n 8 of 8 examples scored; unscored: none", "exact match", "within one",
                   "weighted kappa (quadratic)", "Spearman rho", "Kendall tau-b",
                   "confusion (rows: human, columns: judge)"):
        assert needle in out
    # Two double-rated examples: raters agree on one of two -> 50% exact.
    assert "human ceiling" in out and "exact 50.0%" in out and "[2 examples, 2 label pairs]" in out
    assert "judging helpfulness@v1" in result.stderr  # the progress bar stays off stdout


def test_categorical_rubric_judged_by_openai_reports_labels(rubrics_dir, judge_emu):
    pairs = [("pass", "pass")] * 3 + [("partial", "partial"), ("partial", "pass"), ("fail", "fail"),
                                      ("fail", "partial"), ("pass", "fail")]
    rows = [example(i, f"Steps: 1. Open 2. Export [[quality:{QUALITY_FOR_LABEL[j]}]]", h) for i, (h, j) in enumerate(pairs)]
    write_examples(rubrics_dir, "instruction_following", rows)
    result = run(rubrics_dir, judge_emu, "instruction_following", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["judge"].startswith("openai:")
    assert judge_emu.stats()["counts"], "the OpenAI SDK reached the emulator"
    assert report["confusion"]["levels"] == ["fail", "partial", "pass"]  # ordered by value
    counts = Counter(pairs)
    assert report["confusion"]["rows"] == [[counts[(h, j)] for j in ("fail", "partial", "pass")]
                                           for h in ("fail", "partial", "pass")]
    assert report["exact"] == pytest.approx(5 / 8)
    assert report["within_one"] == pytest.approx(7 / 8)  # pass judged fail is two steps off
    assert report["spearman"] is None  # correlations are for numeric scales


def test_boolean_rubric_uses_unweighted_kappa(rubrics_dir, judge_emu):
    pairs = [(True, True)] * 4 + [(False, False)] * 2 + [(True, False), (False, True)]
    rows = [example(i, f"Answer. [[quality:{1.0 if j else 0.0}]]", h) for i, (h, j) in enumerate(pairs)]
    write_examples(rubrics_dir, "safety", rows)
    report = json.loads(run(rubrics_dir, judge_emu, "safety", "--json").stdout)
    # By hand: observed 6/8; rows (false, true) 3, 5 and columns 3, 5: chance (9 + 25)/64.
    po, pe = 6 / 8, (3 * 3 + 5 * 5) / 64
    assert report["kappa_weights"] is None and report["within_one"] is None
    assert report["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert report["confusion"]["levels"] == [False, True]


def test_continuous_scale_reports_correlations_and_no_kappa(rubrics_dir, judge_emu):
    meta = rubrics_dir / "helpfulness" / "v1" / "rubric.yaml"
    meta.write_text(meta.read_text().replace("min: 1\n  max: 5\n  integer: true", "min: 0\n  max: 1\n  integer: false"))
    pairs = [(0.1, 0.2), (0.3, 0.25), (0.5, 0.6), (0.9, 0.8), (0.7, 0.9)]
    write_examples(rubrics_dir, "helpfulness", [example(i, f"x [[quality:{j}]]", h) for i, (h, j) in enumerate(pairs)])
    result = run(rubrics_dir, judge_emu, "helpfulness", "--json", "--min-kappa", "0.5")
    report = json.loads(result.stdout)
    assert [r["judge"] for r in report["results"]] == [j for _, j in pairs]
    # Ranks: human 1 2 3 5 4, judge 1 2 3 4 5 -> rho = 1 - 6*2/(5*24) = 0.9; tau = (9 - 1)/10 = 0.8
    assert report["spearman"] == pytest.approx(0.9) and report["kendall_tau_b"] == pytest.approx(0.8)
    assert report["kappa"] is None and report["confusion"] is None and report["within_one"] is None
    assert result.exit_code == 1 and "the scale has no categories" in result.stderr


def test_min_kappa_gate_passes_above_and_fails_below_with_one_line_reason(rubrics_dir, judge_emu):
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS))
    kappa = quadratic_kappa_by_pairs([h for h, _ in NUMERIC_PAIRS], [j for _, j in NUMERIC_PAIRS])
    passed = run(rubrics_dir, judge_emu, "helpfulness", "--min-kappa", f"{kappa - 0.05:.3f}")
    assert passed.exit_code == 0, passed.output
    failed = run(rubrics_dir, judge_emu, "helpfulness", "--min-kappa", f"{min(1.0, kappa + 0.05):.3f}")
    assert failed.exit_code == 1
    reason = failed.stderr.strip().splitlines()[-1]
    assert "below --min-kappa" in reason and f"kappa {kappa:.3f}" in reason
    assert "confusion" in failed.stdout  # the report is still printed before the gate fails


def test_min_kappa_gate_fails_when_kappa_is_undefined(rubrics_dir, judge_emu):
    write_examples(rubrics_dir, "safety", [example(i, "Fine. [[quality:0.9]]", True) for i in range(3)])
    result = run(rubrics_dir, judge_emu, "safety", "--min-kappa", "0.2")
    assert result.exit_code == 1
    assert "kappa is undefined (all labels fall in one class)" in result.stderr


def test_unscored_examples_are_counted_by_reason_and_left_out_of_agreement(rubrics_dir, judge_emu):
    rows = [
        example(1, "Good. [[quality:1.0]]", 5),
        example(2, "Repairable. [[judge:garbage-once]] [[quality:1.0]]", 5),
        example(3, "Broken. [[judge:garbage]]", 1),
        example(4, "No. [[judge:refusal]]", 1),
        example(5, "", 1),  # an empty answer: no_output, the judge is never asked
    ]
    write_examples(rubrics_dir, "helpfulness", rows)
    report = json.loads(run(rubrics_dir, judge_emu, "helpfulness", "--json").stdout)
    assert report["unscored"] == {"no_output": 1, "refused": 1, "unparseable": 1}
    assert report["n"] == 2 and report["exact"] == 1.0
    by_id = {r["id"]: r for r in report["results"]}
    assert by_id["t-002"]["judge"] == 5  # scored after the one repair turn
    assert "after one repair" in by_id["t-003"]["detail"]
    assert by_id["t-005"]["judge"] is None


def test_nothing_reaches_langfuse(rubrics_dir, judge_emu, langfuse_emu):
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS[:4]))
    result = run(rubrics_dir, judge_emu, "helpfulness", LANGFUSE_BASE_URL=langfuse_emu.base_url,
                 LANGFUSE_PUBLIC_KEY=PK, LANGFUSE_SECRET_KEY=SK)
    assert result.exit_code == 0, result.output
    assert judge_emu.stats()["total_requests"] == 4
    assert langfuse_emu.requests() == [] and langfuse_emu.scores() == []


def test_only_the_judge_providers_key_is_needed(rubrics_dir, judge_emu):
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS[:2]))
    write_examples(rubrics_dir, "instruction_following", [example(1, "ok [[quality:1]]", "pass")])
    ok = run(rubrics_dir, judge_emu, "helpfulness", OPENAI_API_KEY=None)
    assert ok.exit_code == 0, ok.output
    missing = run(rubrics_dir, judge_emu, "instruction_following", OPENAI_API_KEY=None)
    assert missing.exit_code != 0
    assert "OPENAI_API_KEY is missing" in missing.stderr
    assert judge_emu.stats()["total_requests"] == 2  # only the helpfulness run called a judge


def test_a_misconfigured_judge_stops_the_run_with_one_line(rubrics_dir, judge_emu):
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS[:3]))
    # A wrong base URL fails every call alike (404): stop, rather than report 3 unscored.
    result = run(rubrics_dir, judge_emu, "helpfulness", ANTHROPIC_BASE_URL=judge_emu.base_url + "/wrong",
                 ANTHROPIC_API_KEY="secret-test-key")
    assert result.exit_code == 1
    reason = result.stderr.strip().splitlines()[-1]
    assert reason.startswith("Error: judge call failed: NotFoundError")
    assert "secret-test-key" not in result.output


def test_a_name_runs_its_newest_version(rubrics_dir, judge_emu):
    v2 = rubrics_dir / "helpfulness" / "v2"
    shutil.copytree(rubrics_dir / "helpfulness" / "v1", v2)
    meta = v2 / "rubric.yaml"
    meta.write_text(meta.read_text().replace("version: 1", "version: 2"))
    write_examples(rubrics_dir, "helpfulness", numeric_examples(NUMERIC_PAIRS[:2]))
    report = json.loads(run(rubrics_dir, judge_emu, "helpfulness", "--json").stdout)
    assert report["rubric"] == "helpfulness@v2"
    pinned = json.loads(run(rubrics_dir, judge_emu, "helpfulness@v1", "--json").stdout)
    assert pinned["rubric"] == "helpfulness@v1"


def test_examples_option_reads_another_file(rubrics_dir, judge_emu, tmp_path):
    other = tmp_path / "hard-cases.jsonl"
    other.write_text(json.dumps(example(1, "x [[quality:0.5]]", 3)) + "\n")
    report = json.loads(run(rubrics_dir, judge_emu, "helpfulness", "--examples", str(other), "--json").stdout)
    assert report["examples_file"] == str(other) and report["exact"] == 1.0


def test_missing_examples_file_is_a_one_line_error(rubrics_dir, judge_emu):
    result = run(rubrics_dir, judge_emu, "safety")
    assert result.exit_code != 0
    assert "safety/examples.jsonl: no labelled examples file" in result.stderr
    assert judge_emu.stats()["total_requests"] == 0


GOOD = json.dumps(example(1, "fine", 4))


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": "t-2", "trace": ', "invalid JSON at column"),
    (json.dumps(example(2, "fine", 6)), "value 6 is off the scale (integer 1..5)"),
    (json.dumps(example(2, "fine", 3.5)), "value 3.5 is off the scale"),
    (json.dumps(example(2, "fine", "great")), "value 'great' is not a number"),
    (json.dumps(example(2, "fine", True)), "value True is not a number"),
    (json.dumps({**example(2, "fine", 4), "labels": []}), "'labels' is required"),
    (json.dumps({**example(2, "fine", 4), "label": 4}), "unknown field(s) ['label']"),
    (json.dumps({"trace": {"output": "x"}, "labels": [{"rater": "a", "value": 3}]}), "'id' is required"),
    (json.dumps({**example(2, "fine", 4), "trace": {"ouput": "x"}}), "unknown trace field(s) ['ouput']"),
    (json.dumps({**example(2, "fine", 4), "trace": {"input": "x"}}), "trace.output is required"),
    (json.dumps({**example(2, "fine", 4), "labels": [{"rater": "a", "value": 4}, {"rater": "a", "value": 5}]}),
     "rater 'a' labels this example twice"),
    (json.dumps({**example(2, "fine", 4), "id": "t-001"}), "duplicate id 't-001' (first on line 1)"),
])
def test_bad_examples_are_reported_with_file_and_line(tmp_path, bad_line, message):
    scale = load_rubrics(REPO / "rubrics")["helpfulness@v1"].scale
    path = tmp_path / "examples.jsonl"
    path.write_text(GOOD + "\n\n" + bad_line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_examples(path, scale)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)


def test_labels_must_be_on_categorical_and_boolean_scales(tmp_path):
    rubrics = load_rubrics(REPO / "rubrics")
    path = tmp_path / "examples.jsonl"
    path.write_text(json.dumps(example(1, "x", "passed")) + "\n")
    with pytest.raises(ConfigError, match=r":1: .*'passed' is not one of the labels"):
        load_examples(path, rubrics["instruction_following@v1"].scale)
    path.write_text(json.dumps(example(1, "x", 1)) + "\n")
    with pytest.raises(ConfigError, match=r":1: .*value 1 is not true or false"):
        load_examples(path, rubrics["safety@v1"].scale)


def test_a_bad_examples_file_fails_the_command_before_any_judge_call(rubrics_dir, judge_emu):
    (rubrics_dir / "helpfulness" / "examples.jsonl").write_text(GOOD + "\n" + json.dumps(example(2, "x", 9)) + "\n")
    result = run(rubrics_dir, judge_emu, "helpfulness")
    assert result.exit_code != 0
    assert "examples.jsonl:2: " in result.stderr and "off the scale" in result.stderr
    assert judge_emu.stats()["total_requests"] == 0


def test_an_example_becomes_a_trace_with_its_named_observations():
    rubric = load_rubrics(REPO / "rubrics")["groundedness@v1"]
    row = example(1, "Refunds within 30 days.", 5, question="Refund window?",
                  observations=[{"name": "retrieval", "output": [{"doc_id": "kb-0", "text": "30 days."}]}])
    path_line = json.dumps(row)
    from worker.authoring.examples import parse_example

    trace = parse_example(path_line, rubric.scale, "x:1").to_trace()
    variables, _ = map_variables(trace, rubric, 12000)
    assert variables["question"] == "Refund window?"
    assert '"30 days."' in variables["context"]
    assert variables["answer"] == "Refunds within 30 days."


@pytest.mark.parametrize("name", STARTERS)
def test_each_starter_rubric_ships_twenty_realistic_labelled_examples(name):
    rubric = max((r for r in load_rubrics(REPO / "rubrics").values() if r.name == name), key=lambda r: r.version)
    path = examples_path(rubric)
    examples = load_examples(path, rubric.scale)
    assert len(examples) >= 20
    assert sum(len(e.labels) >= 2 for e in examples) >= 3  # the human ceiling shows
    assert "[[quality:" not in path.read_text() and "[[judge:" not in path.read_text()
    references = {reference_label_of(e, rubric.scale) for e in examples}
    assert len(references) >= min(3, len(levels(rubric.scale)))  # not all one class
    for e in examples:  # every example maps onto the rubric's variables
        map_variables(e.to_trace(), rubric, 12000)
