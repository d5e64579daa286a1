"""A power-aware rubric against the real server (issue 27, item 4): the copy gives ``groundedness``
a detection target (tests/realfuse/fleet.py). Each of its scores must come back from Langfuse
with the inclusion it was picked with (``inclusion_probability``, ``sampled_in``: the run's
TRACEJUDGE_SAMPLE_RATE=1 makes p 1 in every cell), each confirmed score must count once in the
all-traffic cell's weighted sums, and ``status --json`` must carry the rubric's plan."""
from __future__ import annotations

import redis

from tests.realfuse.common import log
from tests.realfuse.fleet import TARGETED
from tests.realfuse.progress import Expected
from tests.realfuse.readback import Langfuse
from worker.drift.contribution import PREFIX
from worker.drift.weighting import FIELD_PREFIX, METADATA_OWN, METADATA_P


def check(lf: Langfuse, client: redis.Redis, expected: Expected, outcomes: dict, status: dict,
          since) -> list[str]:
    problems = []
    ours = {sid for sid, item in expected.by_score_id.items() if item["rubric"] == TARGETED}
    scores = [s for s in lf.scores(TARGETED, since) if s["id"] in ours]
    wrong = [s for s in scores if (s.get("metadata") or {}).get(METADATA_P) != 1
             or "all" not in ((s.get("metadata") or {}).get(METADATA_OWN) or [])]
    confirmed = sum(1 for sid in ours if outcomes.get(sid, {}).get("confirmed") == "confirmed")
    weighted = sum(float(client.hget(key, FIELD_PREFIX + "n") or 0)
                   for key in client.scan_iter(match=f"{PREFIX}{TARGETED}|v1|*|all:*"))
    plans = status.get("sampling_plans") or {}
    log(f"detection target on {TARGETED}: {len(scores)} scores read back, {len(scores) - len(wrong)} with their "
        f"inclusion (p 1, sampled in 'all'); {confirmed} confirmed, {weighted:g} in the all-traffic cell's "
        f"weighted sums; status plans: {sorted(plans)}")
    if not scores:
        problems.append(f"no {TARGETED} score of the run came back: the target rubric judged nothing")
    if wrong:
        problems.append(f"{len(wrong)} {TARGETED} scores came back without their inclusion, e.g. "
                        f"{wrong[0]['id']}: {wrong[0].get('metadata')}")
    if weighted != confirmed:
        problems.append(f"{TARGETED}: {confirmed} confirmed scores but {weighted:g} in the weighted sums")
    if not any(key.startswith(f"{TARGETED}@") for key in plans):
        problems.append(f"status --json has no sampling plan for {TARGETED}: {sorted(plans)}")
    return problems
