"""``tracejudge rubrics test RUBRIC``: a rubric version's agreement with human labels.

Every labelled example goes through the real judging path (map variables → render → the
pinned judge → strict parse with one repair turn), exactly as a worker judges a trace, but
nothing is written to Langfuse. The report: exact match, within-one, Cohen's kappa (weighted
for ordinal scales), Spearman/Kendall for numeric scales, the confusion table and the
human-vs-human ceiling. ``--min-kappa`` makes it a CI gate before a version is promoted.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from worker.cli_common import author_settings

from worker import agreement
from worker.errors import TraceJudgeError, TransientError, Unscored
from worker.examples import Example, examples_path, judge_label, levels, load_examples, reference_label_of

# Examples never touch Langfuse; the settings still want its fields, so absent ones get a stand-in.
@dataclasses.dataclass
class ExampleResult:
    example: Example
    judge: Any = None  # the judge's label, a level of the scale; None when unscored
    reason: str | None = None  # why unscored
    detail: str = ""
    cost: Decimal = Decimal(0)


@click.command("test")
@click.argument("rubric")
@click.option("--examples", "examples_file", type=click.Path(exists=True, dir_okay=False),
              help="Labelled examples (default: rubrics/<name>/examples.jsonl).")
@click.option("--min-kappa", type=click.FloatRange(-1, 1),
              help="Exit 1 when the judge's kappa against the human labels is below this (a CI gate).")
@click.option("--weights", type=click.Choice(agreement.WEIGHTS), default="quadratic", show_default=True,
              help="Kappa weights for ordinal scales (boolean scales use unweighted kappa).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Judge calls in flight at once.")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Rubrics folder (default: TRACEJUDGE_RUBRICS_DIR or rubrics/).")
def test(rubric, examples_file, min_kappa, weights, as_json, concurrency, directory):
    """Judge RUBRIC's labelled examples and report agreement with the human labels.

    RUBRIC is name@vN, or a name for its newest version. Needs only the judge provider's key
    (ANTHROPIC_* or OPENAI_*); no score is written to Langfuse.
    """
    from worker.cli_rubrics import _pick, _rubrics_dir
    from worker.judges import build_judge
    from worker.rubrics import load_rubrics
    from worker.runtime import validate_rubrics

    try:
        loaded = load_rubrics(_rubrics_dir(directory))
        chosen = _pick(loaded, rubric)
        path = Path(examples_file) if examples_file else examples_path(chosen)
        examples = load_examples(path, chosen.scale)
        settings = author_settings(_rubrics_dir(directory))
        for warning in validate_rubrics({chosen.key: chosen}, settings):
            click.echo(f"warning: {warning}", err=True)
        judge = build_judge(chosen.judge.provider, settings)
        results = run_examples(judge, chosen, examples, settings, concurrency)
    except TraceJudgeError as exc:
        raise click.ClickException(str(exc)) from None
    report = summarize(chosen, str(path), results, weights)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
    failure = gate_failure(report, min_kappa)
    if failure:
        raise click.ClickException(failure)


def run_examples(judge, rubric, examples: list[Example], settings, concurrency: int) -> list[ExampleResult]:
    """Judge every example (``concurrency`` at a time), in file order, with a progress bar on stderr."""
    results: list[ExampleResult | None] = [None] * len(examples)
    with ThreadPoolExecutor(max_workers=concurrency) as pool, \
            click.progressbar(length=len(examples), label=f"judging {rubric.key}", show_pos=True,
                              file=sys.stderr) as bar:
        futures = {pool.submit(judge_example, judge, rubric, ex, settings): i for i, ex in enumerate(examples)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [r for r in results if r is not None]


def judge_example(judge, rubric, example: Example, settings) -> ExampleResult:
    """The worker's judging path for one example; a permanent failure is unscored with a reason.

    The steps of worker.pipeline.judge_one from mapping to parsing (redaction as configured,
    one repair turn after an unparseable or off-scale answer), without a trace fetch or a write.
    """
    from worker.judges.base import Usage
    from worker.pipeline import verdict_or_repair
    from worker.pricing import cost_usd
    from worker.prompt import render
    from worker.variables import map_variables

    usage = Usage()
    try:
        variables, _ = map_variables(example.to_trace(), rubric, settings.max_variable_chars,
                                     redact=settings.redact_pii)
        request = render(rubric, variables)
        reply = _ask(judge, request)
        usage = reply.usage
        verdict = verdict_or_repair(rubric, reply, repaired=False)
        if isinstance(verdict, str):  # the repair text: ask once more
            second = _ask(judge, request, (reply, verdict))
            usage = usage + second.usage
            verdict = verdict_or_repair(rubric, second, repaired=True)
    except Unscored as exc:
        return ExampleResult(example, None, exc.reason, exc.detail, cost_usd(rubric.judge.model, usage))
    except TransientError as exc:
        return ExampleResult(example, None, "retries_exhausted", str(exc), cost_usd(rubric.judge.model, usage))
    return ExampleResult(example, judge_label(verdict.raw_score, rubric.scale), cost=cost_usd(rubric.judge.model, usage))


def _ask(judge, request, repair=None):
    from worker.retrying import REJECTED_STATUS, call_with_retries, status_of

    try:
        return call_with_retries(lambda: judge.ask(request, repair))
    except TraceJudgeError:
        raise
    except Exception as exc:
        status = status_of(exc)
        if status in REJECTED_STATUS:
            raise Unscored("judge_rejected", f"HTTP {status}: {str(exc)[:300]}") from None
        # Anything else (a bad key, a missing model) fails every example alike: stop the run.
        raise TraceJudgeError(f"judge call failed: {type(exc).__name__}: {str(exc)[:300]}") from None


def summarize(rubric, examples_file: str, results: list[ExampleResult], weights: str) -> dict:
    """The agreement report as plain data (what ``--json`` prints)."""
    scale = rubric.scale
    steps = levels(scale)
    numeric = scale.kind == "numeric"
    scored = [r for r in results if r.reason is None]
    human = [reference_label_of(r.example, scale) for r in scored]
    judged = [r.judge for r in scored]
    kappa_weights = weights if steps is not None and len(steps) > 2 else None
    report: dict[str, Any] = {
        "rubric": rubric.key,
        "rubric_sha256": rubric.sha256,
        "judge": f"{rubric.judge.provider}:{rubric.judge.model}",
        "examples_file": examples_file,
        "examples": len(results),
        "n": len(scored),
        "unscored": dict(sorted(Counter(r.reason for r in results if r.reason).items())),
        "exact": agreement.exact_match(human, judged),
        "within_one": agreement.within_one(human, judged, steps) if kappa_weights else None,
        "kappa": agreement.cohen_kappa(human, judged, steps, kappa_weights) if steps else None,
        "kappa_weights": kappa_weights if steps else None,
        "spearman": agreement.spearman(human, judged) if numeric else None,
        "kendall_tau_b": agreement.kendall_tau_b(human, judged) if numeric else None,
        "confusion": {"levels": steps, "rows": agreement.confusion(human, judged, steps)} if steps else None,
        "ceiling": None,
        "judge_cost_usd": float(round(sum((r.cost for r in results), Decimal(0)), 6)),
        "results": [{"id": r.example.id, "human": reference_label_of(r.example, scale), "judge": r.judge,
                     **({"unscored": r.reason, "detail": r.detail[:300]} if r.reason else {})} for r in results],
    }
    ceiling = agreement.human_ceiling([r.example.ratings for r in results], steps, kappa_weights)
    if ceiling is not None:
        report["ceiling"] = dataclasses.asdict(ceiling)
    return report


def gate_failure(report: dict, min_kappa: float | None) -> str | None:
    """The one-line reason ``--min-kappa`` fails, or None when it passes (or is not asked)."""
    if min_kappa is None:
        return None
    kappa = report["kappa"]
    if kappa is None:
        why = "no example was scored" if report["n"] == 0 else (
            "the scale has no categories" if report["confusion"] is None else "all labels fall in one class")
        return f"{report['rubric']}: kappa is undefined ({why}); --min-kappa {min_kappa:g} cannot pass"
    if kappa < min_kappa:
        return (f"{report['rubric']}: kappa {kappa:.3f} is below --min-kappa {min_kappa:g} "
                f"(n={report['n']}, exact {_pct(report['exact'])})")
    return None


W = 26  # width of the metric names in the text report


def print_report(report: dict) -> None:
    echo = click.echo
    echo(f"# {report['rubric']}  judge {report['judge']}  examples {report['examples_file']}")
    unscored = ", ".join(f"{k} {v}" for k, v in report["unscored"].items()) or "none"
    echo(f"n {report['n']} of {report['examples']} examples scored; unscored: {unscored}")
    echo(f"{'exact match':<{W}} {_pct(report['exact'])}")
    if report["within_one"] is not None:
        echo(f"{'within one':<{W}} {_pct(report['within_one'])}")
    if report["confusion"] is not None:
        label = f"weighted kappa ({report['kappa_weights']})" if report["kappa_weights"] else "Cohen's kappa"
        echo(f"{label:<{W}} {_num(report['kappa'])}")
    if report["spearman"] is not None or report["kendall_tau_b"] is not None or report["confusion"] is None:
        echo(f"{'Spearman rho':<{W}} {_num(report['spearman'])}")
        echo(f"{'Kendall tau-b':<{W}} {_num(report['kendall_tau_b'])}")
    ceiling = report["ceiling"]
    if ceiling:
        parts = [f"exact {_pct(ceiling['exact'])}"]
        if ceiling["within_one"] is not None:
            parts.append(f"within one {_pct(ceiling['within_one'])}")
        parts.append(f"kappa {_num(ceiling['kappa'])} (mean over {ceiling['rater_pairs']} rater pair{'' if ceiling['rater_pairs'] == 1 else 's'})")
        echo(f"{'human ceiling':<{W}} {', '.join(parts)}  [{ceiling['examples']} examples, {ceiling['pairs']} label pairs]")
    else:
        echo(f"{'human ceiling':<{W}} n/a (no example has two raters)")
    if report["confusion"] is not None:
        echo("")
        echo("confusion (rows: human, columns: judge)")
        names = [_level(v) for v in report["confusion"]["levels"]]
        width = max(7, *(len(n) for n in names)) + 1
        echo(" " * width + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, report["confusion"]["rows"]):
            echo(f"{name:>{width}}" + "".join(f"{c:>{width}}" for c in row))
    misses = [r for r in report["results"] if r.get("unscored")]
    for r in misses[:10]:
        echo(f"unscored {r['id']}: {r['unscored']}: {r['detail'][:120]}", err=True)
    echo(f"\njudge cost ${report['judge_cost_usd']:.4f}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def _level(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)
