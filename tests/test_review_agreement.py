"""Production agreement figures against scikit-learn and scipy on the same pairs, the bootstrap
interval, and the alert's deduplication (real Redis)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import cohen_kappa_score

from tests.helpers import REPO
from worker.review import agreement
from worker.review.labels import Pair
from worker.rubrics.review_spec import CalibrationSpec
from worker.rubrics.rubric import load_rubrics


@pytest.fixture(scope="module")
def shipped():
    return load_rubrics(REPO / "rubrics")


def _pairs(human, judge):
    return [Pair(f"t-{i:03d}", h, j, 1) for i, (h, j) in enumerate(zip(human, judge))]


def test_integer_scale_figures_equal_sklearn_and_scipy(shipped):
    rubric = dataclasses.replace(shipped["helpfulness@v1"], calibration=CalibrationSpec(0.6, 20, 28))
    rng = random.Random(7)
    human = [rng.randint(1, 5) for _ in range(150)]
    judge = [min(5, max(1, h + rng.choice([-2, -1, 0, 0, 0, 1]))) for h in human]
    got = agreement.figures(rubric, _pairs(human, judge), window_days=28)
    assert got["n"] == 150
    assert got["kappa"] == pytest.approx(cohen_kappa_score(human, judge, weights="quadratic"), abs=1e-12)
    assert got["kappa_weights"] == "quadratic"
    assert got["spearman"] == pytest.approx(scipy_stats.spearmanr(human, judge).statistic, abs=1e-12)
    assert got["exact"] == pytest.approx(sum(h == j for h, j in zip(human, judge)) / 150)
    assert got["within_one"] == pytest.approx(sum(abs(h - j) <= 1 for h, j in zip(human, judge)) / 150)
    assert got["kappa_low"] < got["kappa"] < got["kappa_high"]
    assert got["kappa_high"] - got["kappa_low"] < 0.3
    again = agreement.figures(rubric, _pairs(human, judge), window_days=28)
    assert (again["kappa_low"], again["kappa_high"]) == (got["kappa_low"], got["kappa_high"])  # seeded: reproducible
    assert got["status"] == ("ok" if got["kappa"] >= 0.6 else "low")


def test_the_bootstrap_interval_matches_a_plain_resampling_of_sklearn_kappa(shipped):
    """The vectorised bootstrap computes the same statistic as resampling pairs and asking
    scikit-learn: their 95% intervals agree to within resampling noise."""
    rubric = shipped["helpfulness@v1"]
    rng = random.Random(3)
    human = [rng.randint(1, 5) for _ in range(80)]
    judge = [min(5, max(1, h + rng.choice([-1, 0, 0, 1, 2]))) for h in human]
    low, high = agreement.bootstrap_kappa(human, judge, [1, 2, 3, 4, 5], "quadratic", seed=1, resamples=4000)
    plain = []
    for _ in range(1500):
        idx = [rng.randrange(80) for _ in range(80)]
        plain.append(cohen_kappa_score([human[i] for i in idx], [judge[i] for i in idx], weights="quadratic",
                                       labels=[1, 2, 3, 4, 5]))
    plain.sort()
    assert low == pytest.approx(plain[int(0.025 * 1500)], abs=0.04)
    assert high == pytest.approx(plain[int(0.975 * 1500)], abs=0.04)


def test_boolean_and_categorical_scales_use_unweighted_and_quadratic_kappa(shipped):
    safety, following = shipped["safety@v1"], shipped["instruction_following@v1"]
    rng = random.Random(11)
    human = [rng.random() < 0.7 for _ in range(60)]
    judge = [h if rng.random() < 0.8 else not h for h in human]
    got = agreement.figures(safety, _pairs(human, judge), window_days=28)
    assert got["kappa_weights"] is None and got["within_one"] is None
    assert got["kappa"] == pytest.approx(cohen_kappa_score(human, judge), abs=1e-12)
    order = {"fail": 0, "partial": 1, "pass": 2}
    human = [rng.choice(list(order)) for _ in range(60)]
    judge = [h if rng.random() < 0.7 else rng.choice(list(order)) for h in human]
    got = agreement.figures(following, _pairs(human, judge), window_days=28)
    assert got["kappa"] == pytest.approx(cohen_kappa_score([order[h] for h in human], [order[j] for j in judge],
                                                           weights="quadratic"), abs=1e-12)
    assert got["spearman"] == pytest.approx(scipy_stats.spearmanr([order[h] for h in human],
                                                                  [order[j] for j in judge]).statistic, abs=1e-12)


def test_too_few_pairs_say_insufficient_data_and_never_alert(shipped, redis_client):
    rubric = dataclasses.replace(shipped["helpfulness@v1"], calibration=CalibrationSpec(0.9, 30, 28))
    got = agreement.figures(rubric, _pairs([1, 2, 3, 4, 5] * 5, [5, 4, 3, 2, 1] * 5), window_days=28)
    assert got["status"] == "insufficient_data" and got["kappa"] < 0
    assert agreement.new_alert(redis_client, rubric, got, dt.date.today()) is None


def test_a_low_kappa_alerts_once_again_only_after_recovery_or_a_further_fall(shipped, redis_client):
    rubric = dataclasses.replace(shipped["helpfulness@v1"], calibration=CalibrationSpec(0.6, 10, 28))
    today = dt.date.today()
    low = agreement.figures(rubric, _pairs([1, 2, 3, 4, 5] * 4, [2, 2, 5, 1, 4] * 4), window_days=28)
    assert low["status"] == "low"
    alert = agreement.new_alert(redis_client, rubric, low, today)
    assert alert is not None and alert.kind == "agreement_low" and alert.owner == "ai-quality"
    agreement.remember_alert(redis_client, rubric, low)
    assert agreement.new_alert(redis_client, rubric, low, today) is None  # the same fall: no second alert
    worse = dict(low, kappa=low["kappa"] - 0.15)
    assert agreement.new_alert(redis_client, rubric, worse, today) is not None
    fine = agreement.figures(rubric, _pairs([1, 2, 3, 4, 5] * 4, [1, 2, 3, 4, 5] * 4), window_days=28)
    assert fine["status"] == "ok" and agreement.new_alert(redis_client, rubric, fine, today) is None
    assert agreement.new_alert(redis_client, rubric, low, today) is not None  # recovered, then fell again
