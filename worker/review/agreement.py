"""Judge–human agreement of one rubric version over a rolling window, kept in Redis for
``status``, the metrics, the report and ``tracejudge agreement``; and the alert when it falls.

The figures are those ``rubrics test`` reports (worker/authoring/agreement.py computes them):
exact match, within one step, Cohen's kappa (quadratic weights on scales of three or more
ordered levels, unweighted on two) with a 95% percentile bootstrap interval over the pairs
(2,000 resamples, seeded by the rubric version, so a rerun on the same pairs gives the same
interval), Spearman's rho over the levels' order, and n. An alert goes to the rubric's owner
when ``calibration.min_kappa`` is set, n reaches ``calibration.min_pairs`` and kappa is below
the minimum; deduplicated as drift alerts are: again only after kappa recovered, or when it fell
a further WORSE_STEP since the last alert.

    tracejudge:review:agreement           hash  rubric key -> the figures (JSON)
    tracejudge:review:agreement:alerted   hash  rubric key -> {"kappa", "at"} while an alert stands
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Literal, TypeAlias, TypedDict

import numpy as np
import redis

from worker.alerts.kinds import AgreementLow
from worker.authoring import agreement as stats
from worker.authoring.examples import levels
from worker.redis_client import as_text
from worker.review.labels import Pair
from worker.rubrics.review_spec import CalibrationSpec
from worker.rubrics.rubric import Rubric
from worker.rubrics.scales import Level

FIGURES = "tracejudge:review:agreement"
ALERTED = FIGURES + ":alerted"
RESAMPLES = 2000
WORSE_STEP = 0.1
MAX_DISAGREEMENTS = 10
# ok; low: kappa below calibration.min_kappa; insufficient_data: fewer pairs than
# calibration.min_pairs; undefined: no kappa (every label in one class)
Status: TypeAlias = Literal["ok", "low", "insufficient_data", "undefined"]


class Disagreement(TypedDict):
    trace_id: str
    human: Level
    judge: Level


class AgreementFigures(TypedDict):
    """One rubric version's judge–human agreement, as stored in Redis (``FIGURES``) as JSON."""

    rubric: str
    version: int
    n: int  # human-labelled traces paired with the judge's score
    unpaired_labels: int  # labelled traces no loaded version judged
    exact: float | None
    within_one: float | None
    kappa: float | None
    kappa_weights: str | None
    kappa_low: float | None  # kappa's 95% bootstrap interval
    kappa_high: float | None
    spearman: float | None
    window_days: int
    min_kappa: float | None
    min_pairs: int
    status: Status
    computed_at: str  # ISO 8601
    disagreements: list[Disagreement]  # the widest first, at most MAX_DISAGREEMENTS


def kappa_weights(rubric: Rubric) -> str | None:
    steps = levels(rubric.scale)
    return "quadratic" if steps is not None and len(steps) > 2 else None


def bootstrap_kappa(human: Sequence[Level], judge: Sequence[Level], steps: Sequence[Level], weights: str | None, *,
                    seed: int, resamples: int = RESAMPLES) -> tuple[float | None, float | None]:
    """The 2.5th and 97.5th percentiles of kappa over resamples of the pairs (with replacement);
    resamples where kappa is undefined (one class only) are left out."""
    n, k = len(human), len(steps)
    if n < 2:
        return None, None
    index = {level: i for i, level in enumerate(steps)}
    codes = np.array([index[h] * k + index[j] for h, j in zip(human, judge)])
    w = np.array(stats.disagreement_weights(k, weights))
    rng = np.random.default_rng(seed)
    kappas = []
    for start in range(0, resamples, 200):
        b = min(200, resamples - start)
        drawn = codes[rng.integers(0, n, size=(b, n))] + (np.arange(b) * k * k)[:, None]
        tables = np.bincount(drawn.ravel(), minlength=b * k * k).reshape(b, k, k).astype(float)
        rows, cols = tables.sum(axis=2), tables.sum(axis=1)
        observed = (tables * w).sum(axis=(1, 2)) / n
        expected = np.einsum("bi,ij,bj->b", rows, w, cols) / (n * n)
        ok = expected > 0
        kappas.append(1 - observed[ok] / expected[ok])
    values = np.concatenate(kappas)
    if values.size == 0:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def figures(rubric: Rubric, pairs: list[Pair], *, window_days: int, unpaired: int = 0,
            now: dt.datetime | None = None) -> AgreementFigures:
    now = now or dt.datetime.now(dt.timezone.utc)
    calibration = rubric.calibration or CalibrationSpec()
    steps = levels(rubric.scale)
    weights = kappa_weights(rubric)
    human, judge = [p.human for p in pairs], [p.judge for p in pairs]
    kappa = stats.cohen_kappa(human, judge, steps, weights) if steps and pairs else None
    seed = int.from_bytes(hashlib.sha256(rubric.key.encode()).digest()[:8], "big")
    low, high = bootstrap_kappa(human, judge, steps, weights, seed=seed) if steps and kappa is not None else (None, None)
    rank = {level: i for i, level in enumerate(steps)} if steps else None

    def order(level: Level) -> float:
        """Where a label sits on the scale: its step, or the number itself on a continuous scale."""
        return rank[level] if rank else float(level)

    far = sorted(pairs, key=lambda p: (-abs(order(p.human) - order(p.judge)), p.trace_id))
    n = len(pairs)
    status: Status
    if n < calibration.min_pairs:
        status = "insufficient_data"
    elif kappa is None:
        status = "undefined"
    elif calibration.min_kappa is not None and kappa < calibration.min_kappa:
        status = "low"
    else:
        status = "ok"
    return {
        "rubric": rubric.name, "version": rubric.version, "n": n, "unpaired_labels": unpaired,
        "exact": stats.exact_match(human, judge),
        "within_one": stats.within_one(human, judge, steps) if weights and steps is not None else None,
        "kappa": kappa, "kappa_weights": weights if steps else None, "kappa_low": low, "kappa_high": high,
        "spearman": stats.spearman([order(h) for h in human], [order(j) for j in judge]) if n else None,
        "window_days": window_days, "min_kappa": calibration.min_kappa, "min_pairs": calibration.min_pairs,
        "status": status, "computed_at": now.isoformat(),
        "disagreements": [{"trace_id": p.trace_id, "human": p.human, "judge": p.judge}
                          for p in far[:MAX_DISAGREEMENTS] if p.human != p.judge],
    }


def store(client: redis.Redis, rubric: Rubric, result: AgreementFigures) -> None:
    client.hset(FIGURES, rubric.key, json.dumps(result, default=str))


def read_all(client: redis.Redis) -> dict[str, AgreementFigures]:
    """Every rubric version's latest figures, by key ``name@vN`` (as ``store`` wrote them)."""
    out: dict[str, AgreementFigures] = {}
    for key, raw in sorted(client.hgetall(FIGURES).items()):
        try:
            out[as_text(key)] = json.loads(raw)
        except ValueError:
            continue  # an unreadable entry is recomputed by the next tick
    return out


def alert_for(rubric: Rubric, result: AgreementFigures, today: dt.date) -> AgreementLow:
    """The alert of a result whose status is ``low`` (it has a kappa below its minimum)."""
    owner = rubric.owner or {}
    kappa, minimum = result["kappa"], result["min_kappa"]
    if kappa is None or minimum is None:
        raise ValueError(f"{rubric.key}: agreement {result['status']} has no kappa below a minimum to alert on")
    return AgreementLow(
        id=hashlib.sha256(f"{rubric.key}|agreement_low|{kappa:.4f}|{today}".encode()).hexdigest()[:20],
        title=(f"{rubric.name} v{rubric.version}: judge–human agreement fell to kappa {kappa:.2f} "
               f"(minimum {minimum:g}, n={result['n']} human-labelled traces, "
               f"{result['window_days']} days)"),
        cell=f"{rubric.name}|v{rubric.version}|agreement", rubric=rubric.name, owner=owner.get("team", "unowned"),
        route=owner.get("alert_route"), version=rubric.version, kappa=kappa, kappa_low=result["kappa_low"],
        kappa_high=result["kappa_high"], min_kappa=minimum, pairs=result["n"],
        exact=result["exact"], window_days=result["window_days"],
        disagreements=[dict(d) for d in result["disagreements"]])


def new_alert(client: redis.Redis, rubric: Rubric, result: AgreementFigures, today: dt.date) -> AgreementLow | None:
    """The alert this result raises, or None (fine, too few pairs, or already alerted)."""
    previous = client.hget(ALERTED, rubric.key)
    if result["status"] == "ok":
        if previous is not None:
            client.hdel(ALERTED, rubric.key)  # recovered: the next fall alerts again
        return None
    if result["status"] != "low":
        return None
    kappa = result["kappa"]
    if previous is not None and kappa is not None and kappa > json.loads(previous)["kappa"] - WORSE_STEP:
        return None
    return alert_for(rubric, result, today)


def remember_alert(client: redis.Redis, rubric: Rubric, result: AgreementFigures) -> None:
    client.hset(ALERTED, rubric.key, json.dumps({"kappa": result["kappa"],
                                                 "at": dt.datetime.now(dt.timezone.utc).isoformat()}))
