"""``tracejudge agreement``: judge–human agreement per rubric version in production."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, TypedDict

import click

from worker.cli.common import load_settings, reports_errors

if TYPE_CHECKING:
    from worker.review.agreement import AgreementFigures, Status


class AgreementSummary(TypedDict):
    """The part of a rubric version's AgreementFigures that ``status`` reports and
    ``agreement_line`` prints (AgreementFigures themselves are one too)."""

    n: int
    exact: float | None
    within_one: float | None
    kappa: float | None
    kappa_low: float | None
    kappa_high: float | None
    spearman: float | None
    status: Status
    min_kappa: float | None
    window_days: int
    computed_at: str


def agreement_summary(r: AgreementFigures) -> AgreementSummary:
    """``status``'s figures of one rubric version (read with ``get``: a key an older stored
    record lacks is None)."""
    return {"n": r.get("n"), "exact": r.get("exact"), "within_one": r.get("within_one"), "kappa": r.get("kappa"),
            "kappa_low": r.get("kappa_low"), "kappa_high": r.get("kappa_high"), "spearman": r.get("spearman"),
            "status": r.get("status"), "min_kappa": r.get("min_kappa"), "window_days": r.get("window_days"),
            "computed_at": r.get("computed_at")}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def agreement_line(key: str, r: AgreementSummary) -> str:
    """One rubric version's figures on one line (``status`` prints the same)."""
    interval = f" [{_num(r.get('kappa_low'))}, {_num(r.get('kappa_high'))}]" if r.get("kappa_low") is not None else ""
    minimum = f", minimum {r['min_kappa']:g}" if r.get("min_kappa") is not None else ""
    return (f"{key:<28} n={r['n']:<5} exact {_pct(r['exact']):>4}  within one {_pct(r.get('within_one')):>4}  "
            f"kappa {_num(r['kappa'])}{interval}  spearman {_num(r.get('spearman'))}  "
            f"{r['status'].replace('_', ' ')}{minimum} ({r['window_days']} days)")


@click.command()
@click.option("--rubric", "rubric_filter", metavar="NAME", help="Only this rubric: NAME or NAME@vN.")
@click.option("--stored", is_flag=True, help="Print the figures the scheduler stored last, without reading Langfuse.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@reports_errors
def agreement(rubric_filter: str | None, stored: bool, as_json: bool) -> None:
    """Judge–human agreement per rubric version over its rolling window (calibration.window_days,
    default 28): exact, within one, weighted kappa with a 95% bootstrap interval, Spearman, n.

    Reads the human labels (Langfuse scores with source ANNOTATION and the rubric's name) and
    pairs them with the judge's scores of the same traces; alerts the rubric's owner when kappa
    is below calibration.min_kappa with at least calibration.min_pairs pairs (once, like drift)."""
    from worker.alerts.sinks import sinks_for
    from worker.langfuse_io.client import build_langfuse_api
    from worker.redis_client import connect
    from worker.review.agreement import read_all
    from worker.review.tick import refresh_agreement
    from worker.rubrics.rubric import load_rubrics

    settings = load_settings()
    rubrics = load_rubrics(settings.rubrics_dir)
    client = connect(settings.redis_url)
    if stored:
        results = read_all(client)
    else:
        results = refresh_agreement(build_langfuse_api(settings), client, rubrics, sinks_for(settings))
    if rubric_filter:
        results = {k: v for k, v in results.items() if rubric_filter in (k, v.get("rubric"))}
        if not results:
            raise click.ClickException(f"--rubric {rubric_filter}: no agreement figures (no such rubric, or no "
                                       "human labels and no review/calibration section)")
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
        return
    if not results:
        click.echo("no agreement figures yet: no human labels (ANNOTATION scores) under any rubric's name")
    for key, result in sorted(results.items()):
        click.echo(agreement_line(key, result))
