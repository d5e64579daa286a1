"""A judge of the same model family as the model that produced the trace is flagged on the score
(self-preference: judges favour their own family's answers) and warned about once per process
(every test starts as a fresh process: tests/conftest.py resets worker/process_state.py)."""
from __future__ import annotations

import logging

from tests.helpers import one_trace
from worker.judging.pipeline import judge_one


def _with_generation(observations: list[dict], model: str) -> list[dict]:
    root = observations[0]
    generation = {"id": root["id"][:8] + "gen", "traceId": root["traceId"], "type": "GENERATION", "name": "llm",
                  "startTime": root["startTime"], "endTime": root["endTime"], "parentObservationId": root["id"],
                  "isRootObservation": False, "environment": root["environment"], "level": "DEFAULT",
                  "providedModelName": model, "output": root["output"]}
    return observations + [generation]


def test_same_family_producer_is_flagged_on_the_score_and_logged_once(runtime, langfuse_emu, caplog):
    langfuse_emu.load_observations(_with_generation(one_trace("sp-claude-1", "Use Settings > Reset."),
                                                    "claude-haiku-4-5-20251001"))
    langfuse_emu.load_observations(_with_generation(one_trace("sp-claude-2", "Click Forgot password."),
                                                    "claude-haiku-4-5-20251001"))
    langfuse_emu.load_observations(_with_generation(one_trace("sp-gpt-1", "Use Settings > Reset."), "gpt-4o-mini"))
    with caplog.at_level(logging.WARNING, logger="tracejudge.pipeline"):
        for trace_id in ("sp-claude-1", "sp-claude-2", "sp-gpt-1"):
            assert judge_one(runtime, trace_id, "helpfulness@v1").status == "scored"
    flags = {s["traceId"]: s["metadata"]["self_preference_risk"] for s in langfuse_emu.scores()}
    assert flags == {"sp-claude-1": True, "sp-claude-2": True, "sp-gpt-1": False}  # judge: claude-sonnet-4-6
    warnings = [r for r in caplog.records if "self-preference" in r.getMessage()]
    assert len(warnings) == 1 and "claude-haiku-4-5-20251001" in warnings[0].getMessage()
