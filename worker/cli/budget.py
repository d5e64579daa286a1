"""``tracejudge budget show | unpark``: today's judge spend against the caps, and parked jobs."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, TypedDict, final

import click

from worker.cli.common import load_settings, reports_errors

if TYPE_CHECKING:
    import redis

    from worker.accounting.budget import Budget, HeldBy
    from worker.rubrics.rubric import Rubric
    from worker.settings import Settings


class FleetBudget(TypedDict):
    spent_usd: float
    cap_usd: float | None
    left_usd: float | None


@final
class RubricBudget(TypedDict):
    """A loaded rubric version's spend, cap and parked jobs."""

    spent_usd: float
    cap_usd: float | None
    left_usd: float | None
    typical_job_usd: float
    in_flight_usd: float
    held_by: HeldBy | None
    parked: int


@final
class UnloadedRubricBudget(TypedDict):
    """Jobs parked for a rubric version this process has not loaded."""

    parked: int
    note: str


# ``budget show --json`` (and ``status``'s ``budget``); the functional syntax because "global"
# is a keyword.
BudgetSummary = TypedDict("BudgetSummary", {"day": str, "global": "FleetBudget",
                                            "rubrics": "dict[str, RubricBudget | UnloadedRubricBudget]"})


def _budget_and_rubrics() -> tuple[Settings, redis.Redis, Budget, dict[str, Rubric]]:
    from worker.redis_client import connect
    from worker.accounting.budget import Budget
    from worker.rubrics.rubric import load_rubrics

    settings = load_settings()
    client = connect(settings.redis_url)
    return settings, client, Budget(client, settings.daily_budget_usd), load_rubrics(settings.rubrics_dir)


def budget_summary(budget: Budget, rubrics: dict[str, Rubric], day: str | None = None) -> BudgetSummary:
    """Spend, caps, what is left and what is parked, for the fleet and each loaded rubric version."""
    from worker.accounting.budget import ALL, utc_day

    day = day or utc_day()
    fields = budget.day_fields(day)
    spent = budget.spent(day)
    parked = budget.parked()
    fleet_spent = spent.get(ALL, 0.0)
    cap = budget.global_cap
    out: BudgetSummary = {"day": day, "global": {"spent_usd": fleet_spent, "cap_usd": cap,
                                                 "left_usd": None if cap is None else round(max(0.0, cap - fleet_spent), 6)},
                          "rubrics": {}}
    for key, rubric in sorted(rubrics.items()):
        state = budget.state(rubric, fields)
        out["rubrics"][key] = {"spent_usd": state.spent_usd, "cap_usd": state.cap_usd, "left_usd": state.left_usd,
                               "typical_job_usd": state.typical_job_usd, "in_flight_usd": state.reserved_usd,
                               "held_by": state.held_by,
                               "parked": parked.get(key, 0)}
    for key in sorted(set(parked) - set(rubrics)):
        out["rubrics"][key] = {"parked": parked[key], "note": "rubric not loaded here"}
    return out


def budget_lines(summary: BudgetSummary) -> list[str]:
    """The budget summary as text: the fleet line, then a line per rubric version."""
    g = summary["global"]
    lines = [f"budget {summary['day']} (UTC): spent {_money(g['spent_usd'])} of {_money(g['cap_usd'])}, "
             f"left {_money(g['left_usd'])}"]
    for key, r in summary["rubrics"].items():
        if "note" in r:
            lines.append(f"  {key}: {r['parked']} parked ({r['note']})")
            continue
        held = f", HELD by the {r['held_by']} cap" if r["held_by"] else ""
        lines.append(f"  {key}: spent {_money(r['spent_usd'])}{_of_cap(r['cap_usd'])}, left {_money(r['left_usd'])}, "
                     f"typical job {_money(r['typical_job_usd'])}, {r['parked']} parked{held}")
    return lines


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _of_cap(cap: float | None) -> str:
    return " (no cap of its own)" if cap is None else f" of {_money(cap)}"


@click.group()
def budget() -> None:
    """Daily judge spend caps (TRACEJUDGE_DAILY_BUDGET_USD, a rubric's budget.daily_usd)."""


@budget.command()
@click.option("--day", help="UTC day, YYYY-MM-DD (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@reports_errors
def show(day: str | None, as_json: bool) -> None:
    """Spend today against the caps, per rubric, with the jobs parked."""
    import datetime as dt

    if day:
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise click.BadParameter(f"{day!r} is not a day like 2026-11-24", param_hint="--day") from None
    _, _, b, rubrics = _budget_and_rubrics()
    summary = budget_summary(b, rubrics, day)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo("\n".join(budget_lines(summary)))


@budget.command()
@reports_errors
def unpark() -> None:
    """Put parked jobs back on the queue for every rubric the budget no longer holds.

    The scheduler does this on every tick; run it after raising a cap to not wait for it."""
    from worker.fleet.broker import build_broker
    from worker.jobs import judge_message

    settings, _, b, rubrics = _budget_and_rubrics()
    broker = build_broker(settings)

    def enqueue(trace_id: str, key: str) -> None:
        broker.enqueue(judge_message(trace_id, key))

    try:
        moved = b.unpark(rubrics, enqueue)
    finally:
        broker.close()
    left = sum(b.parked().values())
    click.echo(f"unparked {moved} jobs; {left} still parked (their rubric's budget is still held)")
