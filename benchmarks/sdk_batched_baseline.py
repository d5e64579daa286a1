"""Baseline (b) of the scale benchmark: the langfuse SDK's own ``run_batched_evaluation`` at its
default concurrency (5), judging root observations with the same judge call the fleet makes.

The evaluator is async (``AsyncAnthropic``): a sync evaluator would run on the SDK's event loop
and judge one item at a time, which would understate what the SDK can do.
"""
from __future__ import annotations

import json
import time

import anthropic
from langfuse import Langfuse
from langfuse.batch_evaluation import EvaluatorInputs
from langfuse.experiment import Evaluation

from worker.settings import Settings

ROOTS_ONLY = json.dumps([{"type": "boolean", "column": "isRootObservation", "operator": "=", "value": True}])
TOOL = {"name": "record_verdict", "description": "verdict", "input_schema": {
    "type": "object", "properties": {"reasoning": {"type": "string"},
                                     "score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["reasoning", "score"]}}


def langfuse_batched(settings: Settings, model: str, items: int) -> tuple[float, int]:
    """(judged items per second, scores the SDK reported created) over ``items`` root observations."""
    client = Langfuse(public_key=settings.langfuse_public_key, secret_key=settings.langfuse_secret_key,
                      base_url=settings.langfuse_base_url, tracing_enabled=False)
    judge = anthropic.AsyncAnthropic(api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url,
                                     max_retries=0)

    def mapper(*, item):
        return EvaluatorInputs(input=item.input, output=item.output, expected_output=None,
                               metadata={"trace_id": item.trace_id})

    async def helpfulness(*, input, output, expected_output, metadata, **_):
        reply = await judge.messages.create(
            model=model, max_tokens=512, tools=[TOOL], tool_choice={"type": "tool", "name": "record_verdict"},
            messages=[{"role": "user", "content": f"Grade:\n{input}\n{output}"}])
        verdict = next(b.input for b in reply.content if b.type == "tool_use")
        return Evaluation(name="sdk-batched-baseline", value=verdict["score"], comment=verdict["reasoning"])

    started = time.perf_counter()
    result = client.run_batched_evaluation(mapper=mapper, evaluators=[helpfulness], filter=ROOTS_ONLY,
                                           max_items=items)
    elapsed = time.perf_counter() - started
    client.flush()
    client.shutdown()
    return result.total_items_processed / elapsed, result.total_scores_created
