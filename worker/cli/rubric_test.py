"""``tracejudge rubrics test RUBRIC``: a rubric version's agreement with human labels
(the run and the report are worker/authoring/labelled_run.py; this prints them)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worker.authoring import agreement
from worker.cli.common import author_settings, pick_rubric, utc_today
from worker.errors import TraceJudgeError

if TYPE_CHECKING:
    from worker.authoring.labelled_run import AgreementReport
    from worker.rubrics.scales import Level


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
def test(rubric: str, examples_file: str | None, min_kappa: float | None, weights: str, as_json: bool,
         concurrency: int, directory: str | None) -> None:
    """Judge RUBRIC's labelled examples and report agreement with the human labels.

    RUBRIC is name@vN, or a name for its newest version. Needs only the judge provider's key
    (ANTHROPIC_* or OPENAI_*); no score is written to Langfuse.
    """
    from worker.accounting.pricing import PriceTable, use_prices
    from worker.authoring.examples import examples_path, load_examples
    from worker.authoring.labelled_run import gate_failure, run_examples, summarize
    from worker.judges import build_judge
    from worker.judges.identity import verify_served_model
    from worker.rubrics.rubric import load_rubrics
    from worker.runtime import validate_rubrics
    from worker.settings import rubrics_dir_for

    try:
        loaded = load_rubrics(rubrics_dir_for(directory))
        chosen = pick_rubric(loaded, rubric)
        path = Path(examples_file) if examples_file else examples_path(chosen)
        examples = load_examples(path, chosen.scale)
        settings = author_settings(rubrics_dir_for(directory))
        prices = PriceTable(settings.user_prices_file())
        use_prices(prices)  # the labelled run's cost (worker/judging/finish.py judge_cost) reads the process's table
        for warning in validate_rubrics({chosen.key: chosen}, settings, prices, today=utc_today()):
            click.echo(f"warning: {warning}", err=True)
        judge = build_judge(chosen.judge, settings)
        verify_served_model(judge, chosen.judge)
        with click.progressbar(length=len(examples), label=f"judging {chosen.key}", show_pos=True,
                               file=sys.stderr) as bar:
            results = run_examples(judge, chosen, examples, settings, concurrency, on_done=lambda: bar.update(1))
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


W = 26  # width of the metric names in the text report


def print_report(report: AgreementReport) -> None:
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


def _level(v: Level) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)
