"""Langfuse's side of the run, read directly from the real server (not through the counting
proxy): our scores (v3, ``fields=details,subject``), the review loop's annotation queue and
failures dataset, the score configs; and the checks: nothing missing, nothing doubled."""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib

import httpx

from tests.realfuse.common import PUBLIC_KEY, SECRET_KEY
from tests.realfuse.fleet import CALIBRATION_SHARE, REVIEWED
from tests.realfuse.progress import Expected
from tests.realfuse.traffic import Plan
from worker.review.datasets import dataset_name
from worker.review.queue import queue_name


class Langfuse:
    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, auth=(PUBLIC_KEY, SECRET_KEY), timeout=60)

    def get(self, path: str, **params) -> dict:
        answer = self.http.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def scores(self, name: str, since: dt.datetime) -> list[dict]:
        out, cursor = [], None
        while True:
            params = {"name": name, "source": "API", "fields": "details,subject", "limit": 100,
                      "fromTimestamp": since.isoformat().replace("+00:00", "Z")}
            if cursor:
                params["cursor"] = cursor
            page = self.get("/api/public/v3/scores", **params)
            out += page.get("data") or []
            cursor = (page.get("meta") or {}).get("cursor")
            if not cursor or not page.get("data"):
                return out

    def paged(self, path: str, **params) -> list[dict]:
        out, page = [], 1
        while True:
            body = self.get(path, page=page, limit=100, **params)
            out += body.get("data") or []
            if page >= ((body.get("meta") or {}).get("totalPages") or 0):
                return out
            page += 1

    def queue_items(self, name: str) -> list[dict] | None:
        queue = next((q for q in self.paged("/api/public/annotation-queues") if q.get("name") == name), None)
        return None if queue is None else self.paged(f"/api/public/annotation-queues/{queue['id']}/items")

    def dataset_items(self, name: str) -> list[dict] | None:
        try:
            return self.paged("/api/public/dataset-items", datasetName=name)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def score_configs(self) -> list[dict]:
        return self.paged("/api/public/score-configs")


def contract_point(subject_id: str) -> float:
    """u of the public sampling contract (README, "Sampling"), computed here, not by the product."""
    return int.from_bytes(hashlib.sha256(("tracejudge:v1:" + subject_id).encode()).digest()[:8], "big") / 2**64


def subject_of(score: dict) -> tuple[str | None, str | None]:
    subject = score.get("subject") or {}
    if subject.get("kind") and subject.get("id"):
        return subject["kind"], subject["id"]
    for kind, field in (("observation", "observationId"), ("session", "sessionId"), ("trace", "traceId")):
        if score.get(field):
            return kind, score[field]
    return None, None


def config_shape(config: dict) -> tuple:
    categories = tuple(sorted((c.get("label"), float(c.get("value"))) for c in config.get("categories") or []))
    return (config.get("name"), config.get("dataType"), config.get("minValue"), config.get("maxValue"),
            categories if config.get("dataType") == "CATEGORICAL" else ())


@dataclasses.dataclass
class Findings:
    written: set  # score ids tracejudge counted as written (done = scored)
    confirmed: set  # ... and as confirmed by its read-back
    missing: set  # ... and as missing after it
    present: set  # expected score ids found in Langfuse
    unexpected: set  # scores on our subjects under ids tracejudge does not use
    duplicates: dict  # (kind, subject, name) -> scores, where more than one
    on_excluded: list  # scores on traces that must never be judged
    values: dict  # score id -> value, as Langfuse returns it
    queue_exists: bool
    queued: collections.Counter  # our trace -> items on the review queue
    others_doubled: dict  # another run's trace -> items, where this run added a second one
    should_queue: set  # calibration share or boundary verdicts of ours
    dataset_exists: bool
    in_dataset: collections.Counter  # our trace -> items in the failures dataset
    should_dataset: set
    others_dataset_doubled: set
    new_configs: list  # score configs with a rubric's name created during the run
    doubled_configs: list  # ... of them while an active one of that name and scale existed

    def problems(self) -> list[str]:
        out = []
        if not self.written == self.confirmed == self.present:
            out.append(f"written / confirmed / present differ: written not confirmed {len(self.written - self.confirmed)}, "
                       f"written not in Langfuse {len(self.written - self.present)}, in Langfuse not counted as "
                       f"written {len(self.present - self.written)}, counted missing {len(self.missing)}")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} subjects hold a score twice: {sorted(self.duplicates)[:3]}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} scores on our subjects under ids tracejudge does not use")
        if self.on_excluded:
            out.append(f"{len(self.on_excluded)} scores on a trace that must never be judged")
        if not self.queue_exists:
            out.append(f"the annotation queue of {REVIEWED} was never created")
        doubled = {t: n for t, n in self.queued.items() if n > 1}
        if doubled:
            out.append(f"{len(doubled)} of our traces are on the annotation queue more than once")
        if self.others_doubled:
            out.append(f"{len(self.others_doubled)} traces of earlier runs were posted to the annotation queue again "
                       f"by this run (up to {max(self.others_doubled.values())} items): its new Redis re-posted them")
        if self.should_queue - set(self.queued):
            out.append(f"{len(self.should_queue - set(self.queued))} calibration/boundary traces not on the queue")
        if set(self.queued) - self.judged(REVIEWED):
            out.append(f"{len(set(self.queued) - self.judged(REVIEWED))} queued traces have no {REVIEWED} score")
        ds = set(self.in_dataset)
        if ds != self.should_dataset or any(n > 1 for n in self.in_dataset.values()):
            out.append(f"failures dataset: {len(ds - self.should_dataset)} unexpected, "
                       f"{len(self.should_dataset - ds)} missing, {sum(n > 1 for n in self.in_dataset.values())} doubled")
        if self.others_dataset_doubled:
            out.append(f"{len(self.others_dataset_doubled)} traces of earlier runs are in the failures dataset twice")
        if self.doubled_configs:
            out.append(f"{len(self.doubled_configs)} score configs created although an active one of the same name and "
                       f"scale existed: {sorted(c['name'] for c in self.doubled_configs)}")
        return out

    def judged(self, rubric: str) -> set:
        return self._judged.get(rubric, set())

    _judged: dict = dataclasses.field(default_factory=dict)  # rubric name -> our traces with its score


def queue_counts(lf: Langfuse) -> collections.Counter:
    """How many items each trace has on the reviewed rubric's queue (before the run)."""
    return collections.Counter(i.get("objectId") for i in lf.queue_items(f"tracejudge-{REVIEWED}") or [])


def read_back(lf: Langfuse, plan: Plan, expected: Expected, outcomes: dict, rubrics: dict,
              since: dt.datetime, configs_before: list[dict], queue_before: collections.Counter) -> Findings:
    ours = ({("trace", t) for t in plan.traces} | {("observation", o["id"]) for o in plan.observations}
            | {("session", s) for s in plan.sessions})
    present: dict[tuple, list[dict]] = collections.defaultdict(list)
    by_id: dict[str, dict] = {}
    for name in sorted({r.name for r in rubrics.values()}):
        for score in lf.scores(name, since):
            kind, subject = subject_of(score)
            if (kind, subject) in ours:
                present[(kind, subject, score["name"])].append(score)
                by_id[score["id"]] = score
    judged: dict[str, set] = collections.defaultdict(set)
    for sid in set(by_id) & set(expected.by_score_id):
        item = expected.by_score_id[sid]
        if item["target"] == "trace":
            judged[item["rubric"]].add(item["trace_id"])
    values = {sid: s.get("value") for sid, s in by_id.items()}
    reviewed = {expected.by_score_id[sid]["trace_id"]: values[sid] for sid in set(by_id) & set(expected.by_score_id)
                if expected.by_score_id[sid]["rubric"] == REVIEWED}
    rubric = next(r for r in rubrics.values() if r.name == REVIEWED)
    items = lf.queue_items(queue_name(rubric))
    every = collections.Counter(i.get("objectId") for i in items or [])
    ds_items = lf.dataset_items(dataset_name(rubric))
    ds_every = collections.Counter(i.get("sourceTraceId") for i in ds_items or [])
    configs_after = lf.score_configs()
    before = {c["id"] for c in configs_before}
    active_before = collections.Counter(config_shape(c) for c in configs_before if not c.get("isArchived"))
    new = [c for c in configs_after if c["id"] not in before and c.get("name") in {r.name for r in rubrics.values()}]
    return Findings(
        written={s for s, o in outcomes.items() if o["done"] == "scored"},
        confirmed={s for s, o in outcomes.items() if o["confirmed"] == "confirmed"},
        missing={s for s, o in outcomes.items() if o["confirmed"] == "missing"},
        present=set(by_id) & set(expected.by_score_id),
        unexpected=set(by_id) - set(expected.by_score_id),
        duplicates={k: v for k, v in present.items() if len(v) > 1},
        on_excluded=[s for s in by_id.values()
                     if plan.traces.get(plan.trace_of(subject_of(s)[1] or "") or "", {}).get("excluded")],
        values=values,
        queue_exists=items is not None,
        queued=collections.Counter({t: n for t, n in every.items() if t in plan.traces}),
        # earlier runs' traces this run posted again (the count grew: a new Redis must not re-post)
        others_doubled={t: n for t, n in every.items() if n > max(1, queue_before[t]) and t not in plan.traces},
        # the routing contract (README, "Keeping the judge honest"), computed here independently:
        # the calibration share by the sampling hash (rate 1), boundary verdicts at the scale's ends
        should_queue={t for t, v in reviewed.items() if contract_point(t) < CALIBRATION_SHARE or v in (1, 5)},
        dataset_exists=ds_items is not None,
        in_dataset=collections.Counter({t: n for t, n in ds_every.items() if t in plan.traces}),
        should_dataset={t for t, v in reviewed.items() if v < 3},
        others_dataset_doubled={t for t, n in ds_every.items() if n > 1 and t not in plan.traces},
        new_configs=new,
        doubled_configs=[c for c in new if active_before[config_shape(c)]],
        _judged=dict(judged),
    )
