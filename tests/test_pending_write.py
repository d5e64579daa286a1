"""A score write that fails after the judge answered is retried from the kept verdict: the
trace is not judged (nor paid for) twice, and the score written is the first verdict."""
from __future__ import annotations

import pytest

from tests.helpers import one_trace
from worker.errors import TransientError
from worker.judging.pipeline import judge_one


def test_a_failed_write_is_retried_without_judging_again(runtime, langfuse_emu, judge_emu, monkeypatch):
    langfuse_emu.load_observations(one_trace("pw-1", "Open Settings, then Security, then Reset password."))
    real_write, attempts = runtime.scores.write, []

    def write_failing_once(body):
        attempts.append(body)
        if len(attempts) == 1:
            raise TransientError("Langfuse 503 after retries")
        return real_write(body)

    monkeypatch.setattr(runtime.scores, "write", write_failing_once)
    with pytest.raises(TransientError):
        judge_one(runtime, "pw-1", "helpfulness@v1")
    judged = judge_emu.stats()["total_requests"]
    assert judged == 1 and langfuse_emu.scores() == []

    outcome = judge_one(runtime, "pw-1", "helpfulness@v1")  # what dramatiq's retry runs
    assert outcome.status == "scored"
    assert judge_emu.stats()["total_requests"] == judged  # no second judge call
    [score] = langfuse_emu.scores()
    assert score["value"] == attempts[0]["value"] and attempts[0] == attempts[1]
    stats = runtime.outcomes.stats()
    assert stats["scored"] == 1 and stats["judge_calls"] == 1  # counted once, with the first call's cost
    assert judge_one(runtime, "pw-1", "helpfulness@v1").status == "skipped"
