"""Human labels back from Langfuse, paired with the judge's score of the same trace.

A human label is a score with source ANNOTATION under the rubric's name (what a reviewer leaves
in an annotation queue, or on the trace itself). Several reviewers may label one trace: each
reviewer's newest label counts, and the trace's reference label is theirs combined as
``rubrics test`` combines raters (median, or majority with ties to the lower value). The
judge's score is found by its deterministic id, one per loaded version of the rubric, so each
version is paired with the labels of the traces it judged. Human labels are only read here:
nothing of them reaches the drift aggregates (which take our own API scores alone).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping

import redis
from langfuse.api import LangfuseAPI

from worker.authoring.agreement import reference_label
from worker.authoring.examples import levels
from worker.langfuse_io.scores import score_id_for
from worker.review.reads import ScoreValue, scores_by_id, scores_since, trace_id_of
from worker.rubrics.rubric import Rubric
from worker.rubrics.scales import Level, is_real

# The judge's value per score id: a score id names one trace x version and its value never changes
# (the verdict is kept until written), so each is read from Langfuse once, not on every tick.
JUDGED = "tracejudge:review:judged:"
JUDGED_TTL_S = 100 * 86400  # past the longest window (90 days)
# rater -> (value as Langfuse returned it, when it was given)
Ratings = dict[str, tuple[ScoreValue, dt.datetime]]
# rubric name -> trace id -> the trace's ratings
HumanLabels = dict[str, dict[str, Ratings]]


@dataclasses.dataclass(frozen=True)
class Pair:
    trace_id: str
    human: Level  # the reference label, a level of the version's scale
    judge: Level
    raters: int


def human_labels(api: LangfuseAPI, names: set[str], since: dt.datetime,
                 until: dt.datetime | None = None) -> HumanLabels:
    out: HumanLabels = {}
    for score in scores_since(api, names=names, since=since, until=until, source="ANNOTATION"):
        trace_id = trace_id_of(score)
        if trace_id is None:
            continue
        rater = score.author_user_id or f"annotation:{score.id}"
        ratings = out.setdefault(score.name, {}).setdefault(trace_id, {})
        if rater not in ratings or ratings[rater][1] < score.timestamp:
            ratings[rater] = (score.value, score.timestamp)
    return out


def level_of(rubric: Rubric, raw: object) -> Level | None:
    """A value from Langfuse as a level of the rubric's scale (as labelled examples hold them),
    or None when it is not on the scale (a label given under an older scale)."""
    scale = rubric.scale
    if scale.kind == "boolean":
        if isinstance(raw, bool):
            return raw
        as_bool: dict[object, bool] = {1: True, 0: False, "True": True, "False": False}
        return as_bool.get(raw)
    if scale.kind == "categorical":
        return raw if isinstance(raw, str) and raw in {label for label, _ in scale.labels} else None
    if not is_real(raw) or not scale.bounds[0] <= raw <= scale.bounds[1]:
        return None
    if scale.integer:
        return int(raw) if float(raw).is_integer() else None
    return float(raw)


def reference(rubric: Rubric, ratings: Mapping[str, tuple[ScoreValue, dt.datetime]]) -> Level | None:
    values = [v for v in (level_of(rubric, raw) for raw, _ in ratings.values()) if v is not None]
    if not values:
        return None
    return reference_label(values, levels(rubric.scale), numeric=rubric.scale.kind == "numeric")


def judge_values(api: LangfuseAPI, client: redis.Redis, ids: Iterable[str]) -> dict[str, ScoreValue]:
    """The value of each of our scores among ``ids`` that Langfuse has (cached in Redis)."""
    wanted = sorted(set(ids))
    cached = client.mget([JUDGED + i for i in wanted]) if wanted else []
    values: dict[str, ScoreValue] = {i: json.loads(raw)["value"] for i, raw in zip(wanted, cached) if raw is not None}
    found = scores_by_id(api, [i for i in wanted if i not in values])
    if found:
        pipe = client.pipeline()
        for score_id, score in found.items():
            values[score_id] = score.value
            pipe.set(JUDGED + score_id, json.dumps({"value": score.value}), ex=JUDGED_TTL_S)
        pipe.execute()
    return values


def pair_up(api: LangfuseAPI, client: redis.Redis, versions: list[Rubric],
            labelled: dict[str, Ratings]) -> tuple[dict[str, list[Pair]], int]:
    """Per version key, the (human, judge) pairs of the traces both labelled; and how many
    labelled traces no loaded version judged."""
    wanted = {score_id_for(trace_id, r.name, r.version): (r, trace_id) for r in versions for trace_id in labelled}
    judged = judge_values(api, client, wanted)
    pairs: dict[str, list[Pair]] = {r.key: [] for r in versions}
    paired_traces: set[str] = set()
    for score_id in sorted(judged):
        rubric, trace_id = wanted[score_id]
        human = reference(rubric, labelled[trace_id])
        judge = level_of(rubric, judged[score_id])
        if human is None or judge is None:
            continue
        pairs[rubric.key].append(Pair(trace_id, human, judge, len(labelled[trace_id])))
        paired_traces.add(trace_id)
    for key in pairs:
        pairs[key].sort(key=lambda p: p.trace_id)
    return pairs, len(set(labelled) - paired_traces)
