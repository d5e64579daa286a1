"""The read side against every server generation the emulator plays (API-NOTES section 11):
sampling, the trace fetch and judging end to end, and one test per fact the read side handles —
v3 metadata filters select, detection heals after an upgrade or a stray 404, a legacy 404 is
transient, a repeated observation name picks the same step on every path, and an agent trace
is read as its root and the steps the rubric names."""
from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks import large_trace
from emulators.agent_trace import load_agent_trace
from emulators.langfuse_api import LangfuseEmulator
from emulators.langfuse_modes import GENERATIONS
from emulators.seed import generate
from samplers.quota import SegmentQuota
from samplers.selection import applies, select
from samplers.source import LangfuseTraceSource, reads_metadata
from samplers.traffic import TrafficCounter
from tests.helpers import (PK, SK, drain, expected_pairs, halves, one_trace, sampled_roots, sampler_for, score_pairs,
                           utc, whole_window)
from worker.errors import OutputNotYetArrived, TransientError, Unscored
from worker.judging.pipeline import judge_one
from worker.judging.variables import observation_names
from worker.langfuse_io.client import build_langfuse_api
from worker.langfuse_io.observations import ServerGeneration
from worker.langfuse_io import traces
from worker.langfuse_io.traces import TraceReader
from worker.rubrics.power_spec import PowerSpec
from worker.rubrics.rubric import AppliesTo

RATE = 0.1


@pytest.fixture
def langfuse_emu(request):
    """The conftest emulator, in the generation a test asks for (indirect parametrization)."""
    emu = LangfuseEmulator(public_key=PK, secret_key=SK, generation=getattr(request, "param", "spec"))
    emu.start()
    yield emu
    emu.stop()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reader(settings, **kwargs) -> TraceReader:
    return TraceReader(build_langfuse_api(settings, limited=False), **kwargs)


def _paths(emu, since: int = 0) -> list[str]:
    return [r["path"] for r in emu.requests()[since:]]


# -- the pipeline in each generation ---------------------------------------------------------------
@pytest.mark.parametrize("langfuse_emu", GENERATIONS, indirect=True)
def test_every_generation_scores_exactly_the_traces_the_contract_selects(settings, runtime, broker, redis_client,
                                                                         langfuse_emu):
    observations = generate(300, include_malformed=False, seed=3)
    langfuse_emu.load_observations(observations)
    rated = dataclasses.replace(settings, sample_rate=RATE)
    report = sampler_for(rated, runtime, broker).run_pass(*whole_window())
    assert report.enqueued == 2 * sampled_roots(observations, RATE)
    drain(broker, redis_client)
    pairs = score_pairs(langfuse_emu.scores())
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected_pairs(observations, RATE)
    assert runtime.outcomes.stats().get("unscored", 0) == 0
    assert langfuse_emu.violations() == []
    listing = "/api/public/traces" if langfuse_emu.modes.generation == "v3" else "/api/public/v2/observations"
    assert listing in _paths(langfuse_emu)


@pytest.mark.parametrize("langfuse_emu", ["v3"], indirect=True)
def test_upgrading_a_v3_server_to_events_only_while_the_fleet_runs_loses_no_trace(settings, runtime, broker,
                                                                                  redis_client, langfuse_emu):
    observations = generate(300, include_malformed=False, seed=5)
    first, second = halves(observations)
    rated = dataclasses.replace(settings, sample_rate=RATE)
    sampler = sampler_for(rated, runtime, broker)  # one sampler and one worker runtime throughout
    langfuse_emu.load_observations(first)
    sampler.run_pass(*whole_window())
    drain(broker, redis_client)
    assert runtime.traces.generation.uses_legacy and sampler.source.generation.uses_legacy
    langfuse_emu.set_generation("v4-events")  # legacy reads answer 404 from now on
    langfuse_emu.load_observations(second)
    sampler.run_pass(*whole_window())
    drain(broker, redis_client)
    assert set(score_pairs(langfuse_emu.scores())) == expected_pairs(observations, RATE)
    stats = runtime.outcomes.stats()
    assert stats.get("unscored", 0) == 0 and stats.get("retries_exhausted", 0) == 0
    assert not runtime.traces.generation.uses_legacy and not sampler.source.generation.uses_legacy


# -- v3: the legacy list carries metadata only with `io` -------------------------------------------
@pytest.mark.parametrize("langfuse_emu", ["v3"], indirect=True)
def test_v3_legacy_listing_carries_the_metadata_filters_quotas_and_targets_select_on(
        settings, runtime, redis_client, langfuse_emu):
    langfuse_emu.load_observations(one_trace("a" * 32, "Fine.") + one_trace("b" * 32, "Fine.", name="summarize"))
    helpfulness = runtime.rubrics["helpfulness@v1"]
    filtered = dataclasses.replace(helpfulness, applies_to=AppliesTo(metadata=(("feature", "summarize"),)))
    quota = dataclasses.replace(helpfulness, segment_key="tenant", min_per_segment_day=20)
    powered = dataclasses.replace(helpfulness, power=PowerSpec(drop_points=5, within_hours=72))  # cells are segments
    assert reads_metadata([filtered]) and reads_metadata([quota]) and reads_metadata([powered])
    assert not reads_metadata([helpfulness])

    api = build_langfuse_api(settings, limited=False)
    refs = list(LangfuseTraceSource.for_rubrics(api, [filtered, quota]).iter_roots(*whole_window()))
    assert {r.metadata["feature"] for r in refs} == {"support-chat", "summarize"}
    assert [r.trace_id for r in refs if applies(filtered, r)] == ["b" * 32]
    assert [r.trace_id for r in refs if select([filtered], r, 1.0)] == ["b" * 32]
    segments = SegmentQuota(redis_client)
    for ref in refs:  # the quota counts each trace in its segment (tenant=acme)
        segments.rate(quota, ref, 0.01)
    assert redis_client.keys(f"*{quota.key}:tenant=acme:*")
    fields = [r["query"]["fields"] for r in langfuse_emu.requests() if r["path"] == "/api/public/traces"]
    assert fields == [["core,io"]]
    # what the source read before: `core` alone, and the filters selected nothing
    lean = list(LangfuseTraceSource(api, metadata=False).iter_roots(*whole_window()))
    assert [r.metadata for r in lean] == [{}, {}] and not any(applies(filtered, r) for r in lean)
    # a detection target alone asks for metadata too: the plan counts each trace in its own cells
    before = len(langfuse_emu.requests())
    counter = TrafficCounter(redis_client)
    strata = {counter.observe(powered.key, ref.trace_id, ref.metadata, ref.timestamp)
              for ref in LangfuseTraceSource.for_rubrics(api, [powered]).iter_roots(*whole_window())}
    assert strata == {("all", "feature=support-chat", "tenant=acme", "feature=support-chat|tenant=acme"),
                      ("all", "feature=summarize", "tenant=acme", "feature=summarize|tenant=acme")}
    assert [r["query"]["fields"] for r in langfuse_emu.requests()[before:]
            if r["path"] == "/api/public/traces"] == [["core,io"]]


# -- detection that heals ------------------------------------------------------------------------------
@pytest.mark.parametrize("langfuse_emu", ["v3"], indirect=True)
def test_reader_heals_at_once_when_a_v3_server_is_upgraded_to_events_only(settings, langfuse_emu):
    langfuse_emu.load_observations(one_trace("a" * 32, "Fine."))
    reader = _reader(settings, generation=ServerGeneration(clock=FakeClock()))
    assert reader.fetch("a" * 32, ()).output["content"] == "Fine."
    assert reader.generation.uses_legacy
    langfuse_emu.set_generation("v4-events")  # legacy reads now answer 404
    before = len(langfuse_emu.requests())
    assert reader.fetch("a" * 32, ()).output["content"] == "Fine."
    assert _paths(langfuse_emu, before)[0] == "/api/public/traces/" + "a" * 32
    assert set(_paths(langfuse_emu, before)[1:]) == {"/api/public/v2/observations"}
    assert not reader.generation.uses_legacy


@pytest.mark.parametrize("langfuse_emu", ["v3"], indirect=True)
def test_sampler_source_reprobes_v2_every_few_minutes_after_a_v2_404(settings, langfuse_emu):
    langfuse_emu.load_observations(one_trace("a" * 32, "Fine."))
    clock = FakeClock()
    source = LangfuseTraceSource(build_langfuse_api(settings, limited=False),
                                 generation=ServerGeneration(clock=clock))
    assert [r.trace_id for r in source.iter_roots(*whole_window())] == ["a" * 32]
    langfuse_emu.set_generation("v4-dual")  # both families answer: nothing forces a switch
    before = len(langfuse_emu.requests())
    assert len(list(source.iter_roots(*whole_window()))) == 1
    assert _paths(langfuse_emu, before) == ["/api/public/traces"]  # v2 not asked before the re-probe is due
    clock.now += source.generation.reprobe_seconds + 1
    before = len(langfuse_emu.requests())
    assert len(list(source.iter_roots(*whole_window()))) == 1
    assert _paths(langfuse_emu, before) == ["/api/public/v2/observations"]
    assert not source.generation.uses_legacy


def test_one_stray_404_on_v2_sends_the_reader_to_legacy_only_until_the_reprobe(settings, langfuse_emu):
    langfuse_emu.load_observations(one_trace("a" * 32, "Fine."))
    clock = FakeClock()
    reader = _reader(settings, generation=ServerGeneration(clock=clock))
    langfuse_emu.configure(fail_next=[404])  # a proxy, once
    assert reader.fetch("a" * 32, ()).output["content"] == "Fine."
    assert reader.generation.uses_legacy
    clock.now += reader.generation.reprobe_seconds + 1
    before = len(langfuse_emu.requests())
    reader.fetch("a" * 32, ())
    assert set(_paths(langfuse_emu, before)) == {"/api/public/v2/observations"} and not reader.generation.uses_legacy


# -- not found ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("langfuse_emu", ["v3"], indirect=True)
def test_a_legacy_404_is_transient_not_a_permanent_trace_not_found(settings, runtime, langfuse_emu):
    reader = _reader(settings)
    with pytest.raises(TransientError):
        reader.fetch("f" * 32, ())
    with pytest.raises(TransientError):  # again, now that v2 is known missing: it is re-probed at once
        reader.fetch("f" * 32, ())
    with pytest.raises(TransientError):  # the job retries; no done marker is written
        judge_one(runtime, "f" * 32, "helpfulness@v1")
    assert runtime.outcomes.stats().get("unscored", 0) == 0


@pytest.mark.parametrize("langfuse_emu", ["v4-events", "v4-dual"], indirect=True)
def test_a_trace_v2_has_no_observation_of_stays_unscored_trace_not_found(settings, langfuse_emu):
    with pytest.raises(Unscored) as caught:
        _reader(settings).fetch("f" * 32, ())
    assert caught.value.reason == "trace_not_found"


@pytest.mark.parametrize("langfuse_emu", ["v4-events"], indirect=True)
def test_a_young_trace_whose_root_has_not_arrived_waits_for_it(settings, langfuse_emu):
    steps = [o for o in one_trace("a" * 32, "Fine.", retrieval=["doc"], minutes_ago=5) if o["parentObservationId"]]
    langfuse_emu.load_observations(steps)
    with pytest.raises(OutputNotYetArrived):
        _reader(settings).fetch("a" * 32, ("retrieval",))


# -- a repeated observation name: one choice on every path ------------------------------------------
@pytest.mark.parametrize("langfuse_emu", GENERATIONS, indirect=True)
def test_a_repeated_name_resolves_to_the_earliest_step_on_every_path(settings, langfuse_emu):
    info = load_agent_trace(langfuse_emu, n_observations=40, payload_bytes=2_000, retrievals=4)
    first = info["retrieval_ids"][0]
    assert info["ingestion_order"].index(first) > info["ingestion_order"].index(info["retrieval_ids"][1])
    readers = {"detected": _reader(settings)}
    if langfuse_emu.modes.generation != "v4-events":  # a server with legacy reads: also the legacy path
        readers["legacy"] = _reader(settings, generation=ServerGeneration(clock=FakeClock()))
        readers["legacy"].generation.mark_v2_missing()
    chosen = {(path, kind): reader.fetch(info["trace_id"], names).observation("retrieval")["id"]
              for path, reader in readers.items() for kind, names in (("named", ("retrieval",)), ("whole", None))}
    assert set(chosen.values()) == {first}, chosen
    if "legacy" in readers:
        assert "/api/public/traces/" + info["trace_id"] in _paths(langfuse_emu)


# -- agent-sized traces ------------------------------------------------------------------------------
@pytest.mark.parametrize("langfuse_emu", ["v4-events"], indirect=True)
def test_agent_trace_fetch_reads_only_the_root_and_the_named_steps(settings, runtime, langfuse_emu):
    info = load_agent_trace(langfuse_emu, n_observations=200, payload_bytes=20_000)
    groundedness = runtime.rubrics["groundedness@v1"]
    assert observation_names(groundedness) == ("retrieval",)
    before = len(langfuse_emu.requests())
    trace = runtime.traces.fetch(info["trace_id"], observation_names(groundedness))
    assert [o["id"] for o in trace.observations] == [info["root_id"], info["retrieval_ids"][0]]
    with_io = [r["query"] for r in langfuse_emu.requests()[before:] if "io" in r["query"]["fields"][0]]
    # the first page (a small trace would be whole in it), the root, the chosen step
    assert len(with_io) == 3
    assert {json.dumps(sorted(q)) for q in with_io} == {
        json.dumps(sorted(["traceId", "fields", "limit"])),
        json.dumps(sorted(["traceId", "isRootObservation", "fields", "limit"])),
        json.dumps(sorted(["traceId", "name", "fromStartTime", "toStartTime", "fields", "limit"]))}
    assert with_io[0]["limit"] == [str(traces.SMALL_TRACE)]
    assert all(q["traceId"] == [info["trace_id"]] for q in with_io)
    assert len(langfuse_emu.requests()) - before == 4  # and the outline (no I/O)
    assert trace.producer_models == [] and trace.metadata == {"feature": "agent", "tenant": "acme"}
    assert langfuse_emu.violations() == []

    outcome = judge_one(runtime, info["trace_id"], groundedness.key)  # and it judges, end to end
    assert outcome.status == "scored", outcome
    assert [s["traceId"] for s in langfuse_emu.scores()] == [info["trace_id"]]


@pytest.mark.parametrize("langfuse_emu", ["v4-dual"], indirect=True)
def test_a_kept_field_is_bounded_whatever_the_step_carries(settings, langfuse_emu):
    big = "x" * (traces.MAX_FIELD_CHARS * 3)
    langfuse_emu.load_observations(one_trace("a" * 32, big, retrieval=[big], minutes_ago=120))
    trace = _reader(settings).fetch("a" * 32, ("retrieval",))
    assert len(trace.observation("retrieval")["output"]) < traces.MAX_FIELD_CHARS + 200
    assert "not kept by tracejudge" in trace.observation("retrieval")["output"]
    assert len(json.dumps(trace.output)) < traces.MAX_FIELD_CHARS + 200
    assert utc(minutes=0) > trace.timestamp


def test_large_trace_benchmark_runs_and_the_sized_fetch_reads_less_for_the_same_score():
    rows = large_trace.run(n_observations=60, payload_bytes=4_000, repeat=1)
    whole, named, legacy = rows
    assert whole["score"] == named["score"] == legacy["score"]
    # the named fetch reads a first page (SMALL_TRACE of the 60 steps with I/O, a small trace's
    # whole read), the root, the outline and the named step: under a third of the whole trace
    assert named["bytes"] * 3 < whole["bytes"]
    assert named["kept"] == 2 and whole["kept"] == 60
