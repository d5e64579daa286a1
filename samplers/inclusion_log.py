"""How each trace of a power-aware rubric was picked, kept from the sampler's claim to the
worker's score (issue 27, item 4)::

    tracejudge:inclusion:<rubric key>:<trace id>   JSON {"p": p, "own": [segments]}, 14 days

The sampler writes it when it claims the trace (samplers/sampler.py); the worker reads it when
the verdict is kept (worker/judging/finish.py, online and batch alike) and puts it in the
score's metadata as ``inclusion_probability`` and ``sampled_in``, where the drift contribution
(and a rebuild from Langfuse) finds it. Kept in Redis rather than in the message, so the job's
wire contract and every tool that re-enqueues a job by its arguments (budget unparking, dead
letters) stay as they are. A job whose record is gone (older than 14 days) gets p from the plan
in force when it is judged (``inclusion_now``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import redis

from samplers import plan as plans
from samplers.hashing import sample_point
from worker.drift.contribution import segments
from worker.drift.weighting import Weighting
from worker.redis_client import as_text
from worker.rubrics.rubric import Rubric

KEY = "tracejudge:inclusion:"
TTL_SECONDS = 14 * 86400


def record(client: redis.Redis, rubric_key: str, trace_id: str, inclusion: Weighting) -> None:
    client.set(f"{KEY}{rubric_key}:{trace_id}", json.dumps({"p": inclusion.probability, "own": list(inclusion.own)}),
               ex=TTL_SECONDS)


def read(client: redis.Redis, rubric_key: str, trace_id: str) -> Weighting | None:
    raw = client.get(f"{KEY}{rubric_key}:{trace_id}")
    if raw is None:
        return None
    try:
        data = json.loads(as_text(raw))
        p, own = float(data["p"]), [str(s) for s in data["own"]]
    except (ValueError, TypeError, KeyError):
        return None
    return Weighting(p, tuple(own)) if 0 < p <= 1 else None


def inclusion_now(client: redis.Redis, rubric: Rubric, trace_id: str, metadata: Mapping[str, object],
                  rate_override: float | None) -> Weighting | None:
    """The trace's inclusion as the sampler would decide it now (no quota: a worker cannot know
    the segment's history); None when neither the override nor the plan would have picked it
    (a quota, or a plan since changed): its probability is not known, so it gets no weight."""
    plan = plans.load(client, rubric.key) if rate_override is None else None
    rates = plans.trace_rates(segments(metadata), rubric.sampling_rate, plan, override=rate_override)
    found = Weighting.of(rates, sample_point(trace_id))
    return found if found.selected else None


def inclusion_of(client: redis.Redis, rubric: Rubric, trace_id: str | None, metadata: Mapping[str, object],
                 rate_override: float | None) -> Weighting | None:
    """How a power-aware rubric's trace was sampled, for its score's metadata and weight: the
    sampler's record, else ``inclusion_now``; None for other rubrics, and for a trace whose
    inclusion probability is not known (it then counts unweighted)."""
    if rubric.power is None or not trace_id:
        return None
    return read(client, rubric.key, trace_id) or inclusion_now(client, rubric, trace_id, metadata, rate_override)
