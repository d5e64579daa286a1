"""The ``tracejudge`` command line. Every command exits non-zero with a one-line reason on
bad input or bad configuration. Command modules import their work lazily, so ``--help`` is fast."""
from __future__ import annotations

import click

from worker.cli.agreement import agreement
from worker.cli.batches import batches
from worker.cli.budget import budget
from worker.cli.cause import cause
from worker.cli.dead_letters import dead_letters
from worker.cli.demo import demo, stack
from worker.cli.drift import drift
from worker.cli.fleet import backfill, sample, scheduler, worker
from worker.cli.report import report
from worker.cli.rubrics import rubrics
from worker.cli.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """tracejudge: LLM-as-judge scores for a deterministic sample of your Langfuse traces.

    Configuration comes from the environment (LANGFUSE_*, REDIS_URL, ANTHROPIC_*/OPENAI_*,
    TRACEJUDGE_*); see the README. Start with `tracejudge demo`.
    """


for command in (demo, stack, sample, backfill, scheduler, worker, status, rubrics, dead_letters, drift, cause, report,
                batches, budget, agreement):
    main.add_command(command)

if __name__ == "__main__":
    main()
