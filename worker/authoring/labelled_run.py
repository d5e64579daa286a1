"""A rubric version's labelled examples through the real judging path, and the agreement report.

Every labelled example goes through the worker's steps (map variables → render → the pinned
judge → strict parse with one repair turn), exactly as a worker judges a trace, but nothing is
written to Langfuse. The report: exact match, within-one, Cohen's kappa (weighted for ordinal
scales), Spearman/Kendall for numeric scales, the confusion table and the human-vs-human
ceiling; ``gate_failure`` is the ``--min-kappa`` CI gate.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from decimal import Decimal
from typing import NotRequired, TypedDict

from worker.authoring import agreement
from worker.authoring.examples import Example, judge_label, levels, reference_label_of
from worker.errors import TraceJudgeError, TransientError, Unscored
from worker.judges import judge_key
from worker.judges.base import Judge
from worker.judging.finish import judge_cost
from worker.judging.outcome import Tally
from worker.judging.pipeline import ask_and_parse
from worker.judging.prompt import render
from worker.judging.variables import map_variables
from worker.rubrics.rubric import Rubric
from worker.rubrics.scales import Level
from worker.settings import Settings


@dataclasses.dataclass(frozen=True)
class Unjudged:
    """Why an example got no label from the judge: the unscored reason, and its detail."""

    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ExampleResult:
    example: Example
    judge: Level | Unjudged  # the judge's label (a level of the scale), or why there is none
    cost: Decimal = Decimal(0)


class ConfusionTable(TypedDict):
    levels: list[Level]  # the scale's levels, lowest first: the rows' and the columns' order
    rows: list[list[int]]  # rows: the human label, columns: the judge's


class CeilingFigures(TypedDict):
    """agreement.Ceiling as plain data."""

    examples: int
    pairs: int
    exact: float | None
    within_one: float | None
    kappa: float | None
    rater_pairs: int


class ResultRow(TypedDict):
    id: str
    human: Level
    judge: Level | None
    unscored: NotRequired[str]  # why the judge gave no label (then judge is None)
    detail: NotRequired[str]


class AgreementReport(TypedDict):
    """The agreement report of one ``rubrics test`` run, as ``--json`` prints it."""

    rubric: str
    rubric_sha256: str
    judge: str
    examples_file: str
    examples: int
    n: int  # examples the judge scored
    unscored: dict[str, int]  # reason -> examples
    exact: float | None
    within_one: float | None
    kappa: float | None
    kappa_weights: str | None
    spearman: float | None
    kendall_tau_b: float | None
    confusion: ConfusionTable | None
    ceiling: CeilingFigures | None
    judge_cost_usd: float
    results: list[ResultRow]


def run_examples(judge: Judge, rubric: Rubric, examples: list[Example], settings: Settings, concurrency: int,
                 on_done: Callable[[], None] = lambda: None) -> list[ExampleResult]:
    """Judge every example (``concurrency`` at a time), in file order; ``on_done`` after each."""
    results: list[ExampleResult | None] = [None] * len(examples)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(judge_example, judge, rubric, ex, settings): i for i, ex in enumerate(examples)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                on_done()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [r for r in results if r is not None]


def judge_example(judge: Judge, rubric: Rubric, example: Example, settings: Settings) -> ExampleResult:
    """The worker's judging path for one example; a permanent failure is unscored with a reason.

    The steps of worker.judging.pipeline.judge_one from mapping to parsing (redaction as configured,
    one repair turn after an unparseable or off-scale answer), without a trace fetch or a write.
    """
    tally = Tally()
    try:
        variables, _ = map_variables(example.to_trace(), rubric, settings.max_variable_chars,
                                     redact=settings.redact_pii)
        verdict, _ = ask_and_parse(judge, rubric, render(rubric, variables), tally)
    except Unscored as exc:
        return ExampleResult(example, Unjudged(exc.reason, exc.detail), judge_cost(rubric, tally.usage))
    except TransientError as exc:
        return ExampleResult(example, Unjudged("retries_exhausted", str(exc)), judge_cost(rubric, tally.usage))
    except TraceJudgeError:
        raise
    except Exception as exc:  # a bad key, a missing model: every example would fail alike, so stop the run
        raise TraceJudgeError(f"judge call failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    return ExampleResult(example, judge_label(verdict.raw_score, rubric.scale),
                         cost=judge_cost(rubric, tally.usage))


def summarize(rubric: Rubric, examples_file: str, results: list[ExampleResult], weights: str) -> AgreementReport:
    """The agreement report as plain data (what ``--json`` prints)."""
    scale = rubric.scale
    steps = levels(scale)
    numeric = scale.kind == "numeric"
    scored = [(r.example, r.judge) for r in results if not isinstance(r.judge, Unjudged)]
    human = [reference_label_of(example, scale) for example, _ in scored]
    judged = [label for _, label in scored]
    kappa_weights = weights if steps is not None and len(steps) > 2 else None
    report: AgreementReport = {
        "rubric": rubric.key,
        "rubric_sha256": rubric.sha256,
        "judge": judge_key(rubric),
        "examples_file": examples_file,
        "examples": len(results),
        "n": len(scored),
        "unscored": dict(sorted(Counter(r.judge.reason for r in results if isinstance(r.judge, Unjudged)).items())),
        "exact": agreement.exact_match(human, judged),
        "within_one": agreement.within_one(human, judged, steps) if kappa_weights and steps is not None else None,
        "kappa": agreement.cohen_kappa(human, judged, steps, kappa_weights) if steps else None,
        "kappa_weights": kappa_weights if steps else None,
        "spearman": agreement.spearman(agreement.numbers(human), agreement.numbers(judged)) if numeric else None,
        "kendall_tau_b": agreement.kendall_tau_b(agreement.numbers(human), agreement.numbers(judged))
        if numeric else None,
        "confusion": {"levels": steps, "rows": agreement.confusion(human, judged, steps)} if steps else None,
        "ceiling": None,
        "judge_cost_usd": float(round(sum((r.cost for r in results), Decimal(0)), 6)),
        "results": [_row(r, reference_label_of(r.example, scale)) for r in results],
    }
    ceiling = agreement.human_ceiling([r.example.ratings for r in results], steps, kappa_weights)
    if ceiling is not None:
        report["ceiling"] = {"examples": ceiling.examples, "pairs": ceiling.pairs, "exact": ceiling.exact,
                             "within_one": ceiling.within_one, "kappa": ceiling.kappa,
                             "rater_pairs": ceiling.rater_pairs}
    return report


def _row(result: ExampleResult, human: Level) -> ResultRow:
    if not isinstance(result.judge, Unjudged):
        return {"id": result.example.id, "human": human, "judge": result.judge}
    return {"id": result.example.id, "human": human, "judge": None,
            "unscored": result.judge.reason, "detail": result.judge.detail[:300]}


def gate_failure(report: AgreementReport, min_kappa: float | None) -> str | None:
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
                f"(n={report['n']}, exact {100 * (report['exact'] or 0.0):.1f}%)")  # (n > 0: exact is a number)
    return None
