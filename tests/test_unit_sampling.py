import hashlib

from samplers.hashing import is_sampled, sample_point
from samplers.selection import applies, select
from samplers.source import TraceRef, is_own_or_internal
from tests.helpers import REPO
from worker.rubrics.rubric import AppliesTo, load_rubrics


def contract_u(trace_id: str) -> float:
    # Written out from DESIGN.md's public contract, independently of the implementation.
    return int.from_bytes(hashlib.sha256(("tracejudge:v1:" + trace_id).encode()).digest()[:8], "big") / 2**64


def test_sample_point_is_the_contract_formula():
    for trace_id in ("a", "0" * 32, "4bf92f3577b34da6a3ce929d0e0e4736", "ünïcode-id"):
        assert sample_point(trace_id) == contract_u(trace_id)


def test_sampling_rate_selects_about_that_share_and_is_monotonic_in_rate():
    ids = [f"{i:032x}" for i in range(20000)]
    at_1 = {t for t in ids if is_sampled(t, 0.01)}
    at_5 = {t for t in ids if is_sampled(t, 0.05)}
    assert 150 < len(at_1) < 250
    assert at_1 <= at_5  # raising the rate only adds traces
    assert not any(is_sampled(t, 0.0) for t in ids[:100])
    assert all(is_sampled(t, 1.0) for t in ids[:100])


def ref(**kw):
    base = dict(trace_id="t1", name="support-chat", environment="production", tags=("prod",),
                metadata={"feature": "support-chat", "tenant": "acme"}, timestamp=None)
    base.update(kw)
    return TraceRef(**base)


def test_langfuse_environments_and_our_own_traces_are_excluded():
    assert is_own_or_internal(ref(environment="langfuse-evaluation"))
    assert is_own_or_internal(ref(environment="langfuse"))
    assert is_own_or_internal(ref(name="tracejudge-judge"))
    assert not is_own_or_internal(ref())


def test_applicability_filters():
    rubric = load_rubrics(REPO / "rubrics")["helpfulness@v1"]
    import dataclasses

    only_prod_tenant = dataclasses.replace(rubric, applies_to=AppliesTo(
        environments=("production",), trace_names=("support-chat",), tags=("prod",),
        metadata=(("tenant", "acme"),)))
    assert applies(only_prod_tenant, ref())
    assert not applies(only_prod_tenant, ref(environment="staging"))
    assert not applies(only_prod_tenant, ref(name="summarize"))
    assert not applies(only_prod_tenant, ref(tags=()))
    assert not applies(only_prod_tenant, ref(metadata={"tenant": "globex"}))
    everything = dataclasses.replace(rubric, applies_to=AppliesTo())
    chosen = [t for t in (f"{i:032x}" for i in range(5000)) if select([everything], ref(trace_id=t), None)]
    assert chosen == [t for t in (f"{i:032x}" for i in range(5000)) if contract_u(t) < rubric.sampling_rate]
    assert select([everything], ref(trace_id="x"), 1.0) == [everything]  # TRACEJUDGE_SAMPLE_RATE overrides


class FixedQuota:
    """A stand-in for samplers.quota.SegmentQuota: same method, a fixed raised rate."""

    def __init__(self, rate):
        self.raised, self.asked = rate, []

    def rate(self, rubric, trace_ref, base_rate):
        self.asked.append(trace_ref.trace_id)
        return max(base_rate, self.raised)


def test_select_samples_at_the_rate_the_quota_gives_and_asks_only_for_applicable_rubrics():
    import dataclasses

    rubric = load_rubrics(REPO / "rubrics")["helpfulness@v1"]
    everything = dataclasses.replace(rubric, applies_to=AppliesTo())
    nothing = dataclasses.replace(rubric, applies_to=AppliesTo(trace_names=("no-such-trace",)))
    quota = FixedQuota(0.2)
    ids = [f"{i:032x}" for i in range(3000)]
    chosen = [t for t in ids if select([everything, nothing], ref(trace_id=t), None, quota)]
    assert chosen == [t for t in ids if contract_u(t) < 0.2]  # still the contract's hash, at the raised rate
    assert quota.asked == ids  # asked once per trace, never for the rubric that does not apply
    assert select([everything], ref(trace_id="x"), None, None) == select([everything], ref(trace_id="x"), None)
