"""Metadata compares the same whichever way it travelled: the real Langfuse 4.16 returns metadata
strings that look like JSON as JSON ("true" as true, "1" as 1), and a judge may escape a lone
surrogate in its reasoning."""
from __future__ import annotations

import datetime as dt

from samplers.selection import applies
from samplers.source import TraceRef
from worker.drift.aggregates import segments
from worker.judges.base import JudgeReply
from worker.judging.verdict import parse_verdict
from worker.rubrics.fields import metadata_text


def test_metadata_text_is_the_json_form_of_a_plain_value():
    assert [metadata_text(v) for v in ("true", True, False, 1, 1.0, 1.5, "1", {"b": 2, "a": 1})] == [
        "true", "true", "false", "1", "1", "1.5", "1", '{"a": 1, "b": 2}']


def test_a_tenant_that_came_back_as_a_number_keeps_its_drift_cells():
    as_sent, as_returned = {"tenant": "42", "feature": "true"}, {"tenant": 42, "feature": True}
    assert segments(as_returned) == segments(as_sent) == ["all", "feature=true", "tenant=42", "feature=true|tenant=42"]


def test_a_rubric_scoped_to_a_metadata_value_still_applies_when_it_comes_back_typed(tmp_path):
    import yaml

    from tests.helpers import copy_rubrics
    from worker.rubrics.rubric import load_rubrics

    root = copy_rubrics(tmp_path, "helpfulness")
    meta_path = root / "helpfulness" / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta.setdefault("applies_to", {})["metadata"] = {"beta": "true", "tier": 2}
    meta_path.write_text(yaml.safe_dump(meta))
    rubric = load_rubrics(root)["helpfulness@v1"]
    ref = TraceRef(trace_id="t" * 32, timestamp=dt.datetime.now(dt.timezone.utc), name="support-chat",
                   environment="production", tags=(), metadata={"beta": True, "tier": 2})
    assert applies(rubric, ref)
    assert not applies(rubric, TraceRef(trace_id="t" * 32, timestamp=ref.timestamp, name="support-chat",
                                        environment="production", tags=(), metadata={"beta": False, "tier": 2}))


def test_a_lone_surrogate_in_the_judges_reasoning_is_replaced_not_a_crash():
    from tests.helpers import REPO
    from worker.judges.base import Usage
    from worker.rubrics.rubric import load_rubrics

    scale = load_rubrics(REPO / "rubrics")["helpfulness@v1"].scale
    reply = JudgeReply(verdict={"reasoning": "caf\udce9 is fine", "score": 4}, usage=Usage())
    verdict = parse_verdict(reply, scale)
    assert verdict.reasoning == "caf\ufffd is fine"
    verdict.reasoning.encode("utf-8")
