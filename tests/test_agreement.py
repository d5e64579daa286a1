"""Agreement statistics, checked against values derived by hand in each test."""
from __future__ import annotations

from fractions import Fraction

import pytest

from worker.authoring import agreement


def lists_from_table(table, levels):
    """Expand a confusion table (rows human, columns judge) into two parallel label lists."""
    human, judge = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            human += [levels[i]] * count
            judge += [levels[j]] * count
    return human, judge


def test_textbook_two_by_two_kappa_is_point_four():
    table = [[20, 5], [10, 15]]
    # By hand: n = 50; observed agreement (20 + 15) / 50 = 0.7; rows 25, 25 and columns 30, 20
    # give chance agreement (25*30 + 25*20) / 50² = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    po = Fraction(35, 50)
    pe = Fraction(25 * 30 + 25 * 20, 50 * 50)
    expected = (po - pe) / (1 - pe)
    assert expected == Fraction(2, 5)
    assert agreement.kappa_from_table(table) == pytest.approx(float(expected))
    human, judge = lists_from_table(table, ["yes", "no"])
    assert agreement.cohen_kappa(human, judge, ["yes", "no"]) == pytest.approx(0.4)
    assert agreement.confusion(human, judge, ["yes", "no"]) == table


THREE = [[6, 2, 0],
         [1, 4, 1],
         [1, 0, 5]]


def test_three_by_three_quadratic_weighted_kappa_matches_hand_computation():
    # n = 20, row totals 8, 6, 6, column totals 8, 6, 6. Quadratic disagreement weights for
    # k = 3: one step apart (1/2)² = 1/4, two steps apart 1.
    # Observed: one-step cells 2 + 1 + 1 + 0 = 4 (× 1/4 = 1), two-step cells 0 + 1 = 1 (× 1 = 1);
    #   weighted observed disagreement = 2 / 20.
    # Expected (row × column / n²): one-step pairs 8*6 + 6*8 + 6*6 + 6*6 = 168 (× 1/4 = 42),
    #   two-step pairs 8*6 + 6*8 = 96 (× 1 = 96); weighted expected = 138 / 400.
    # kappa = 1 - (2/20) / (138/400) = 1 - 40/138 = 49/69.
    expected = 1 - Fraction(2, 20) / Fraction(138, 400)
    assert expected == Fraction(49, 69)
    assert agreement.kappa_from_table(THREE, "quadratic") == pytest.approx(float(expected))
    human, judge = lists_from_table(THREE, [1, 2, 3])
    assert agreement.cohen_kappa(human, judge, [1, 2, 3], "quadratic") == pytest.approx(49 / 69)


def test_three_by_three_linear_and_unweighted_kappa_match_hand_computation():
    # Linear weights: one step 1/2, two steps 1. Observed (4 × 1/2 + 1) / 20 = 3/20;
    # expected (168 × 1/2 + 96) / 400 = 180/400; kappa = 1 - (3/20)/(180/400) = 2/3.
    assert agreement.kappa_from_table(THREE, "linear") == pytest.approx(2 / 3)
    # Unweighted: observed agreement 15/20; chance (8*8 + 6*6 + 6*6)/400 = 136/400;
    # kappa = (15/20 - 136/400) / (1 - 136/400) = 41/66.
    assert agreement.kappa_from_table(THREE) == pytest.approx(41 / 66)


def test_perfect_agreement_is_kappa_one_for_every_weighting():
    human = [1, 2, 3, 3, 2, 1, 5]
    levels = [1, 2, 3, 4, 5]
    for weights in (None, "linear", "quadratic"):
        assert agreement.cohen_kappa(human, list(human), levels, weights) == pytest.approx(1.0)
    assert agreement.exact_match(human, human) == 1.0


def test_one_class_only_leaves_kappa_undefined_instead_of_crashing():
    labels = ["pass"] * 6
    assert agreement.cohen_kappa(labels, labels, ["fail", "partial", "pass"], "quadratic") is None
    assert agreement.kappa_from_table([[0, 0], [0, 0]]) is None  # no pairs at all


def test_a_judge_that_always_says_the_same_earns_kappa_zero():
    # Human splits 50/50, judge always "true": observed 1/2, chance 1/2, kappa 0.
    assert agreement.cohen_kappa([True, False, True, False], [True] * 4, [False, True]) == pytest.approx(0.0)


def test_systematic_disagreement_gives_negative_kappa():
    assert agreement.kappa_from_table([[0, 5], [5, 0]]) == pytest.approx(-1.0)


def test_within_one_counts_adjacent_categories_on_the_ordered_levels():
    levels = ["fail", "partial", "pass"]
    human = ["pass", "pass", "fail", "partial"]
    judge = ["partial", "fail", "fail", "pass"]
    assert agreement.within_one(human, judge, levels) == pytest.approx(3 / 4)  # pass→fail is two steps
    assert agreement.within_one([1, 5], [2, 3], [1, 2, 3, 4, 5]) == pytest.approx(1 / 2)


def test_spearman_and_kendall_match_their_closed_forms():
    human = [1, 2, 3, 4, 5]
    judge = [2, 1, 4, 3, 5]
    # rank differences -1, 1, -1, 1, 0: rho = 1 - 6·4 / (5·24) = 0.8
    assert agreement.spearman(human, judge) == pytest.approx(0.8)
    # 10 pairs, 2 discordant ((1,2) and (3,4)): tau = (8 - 2) / 10 = 0.6
    assert agreement.kendall_tau_b(human, judge) == pytest.approx(0.6)


def test_correlations_are_undefined_for_a_constant_side():
    assert agreement.spearman([1, 2, 3], [4, 4, 4]) is None
    assert agreement.kendall_tau_b([3, 3, 3], [1, 2, 3]) is None
    assert agreement.spearman([2], [3]) is None


def test_confusion_rejects_a_label_that_is_not_on_the_scale():
    with pytest.raises(ValueError, match="not among the levels"):
        agreement.confusion([1, 7], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="differ in length"):
        agreement.exact_match([1, 2], [1])


def test_empty_lists_have_no_agreement_figures():
    assert agreement.exact_match([], []) is None
    assert agreement.within_one([], [], [1, 2]) is None
    assert agreement.cohen_kappa([], [], [1, 2]) is None


def test_reference_label_is_the_median_or_the_majority_with_ties_to_the_lower_value():
    steps = [1, 2, 3, 4, 5]
    assert agreement.reference_label([3, 5, 4], steps, numeric=True) == 4
    assert agreement.reference_label([4, 5], steps, numeric=True) == 4  # stays on the integer scale
    assert agreement.reference_label([0.2, 0.5], None, numeric=True) == pytest.approx(0.35)
    levels = ["fail", "partial", "pass"]
    assert agreement.reference_label(["pass", "partial", "pass"], levels, numeric=False) == "pass"
    assert agreement.reference_label(["pass", "fail"], levels, numeric=False) == "fail"
    assert agreement.reference_label([True, False], [False, True], numeric=False) is False


def test_human_ceiling_is_mean_pairwise_agreement_over_multi_rated_examples():
    levels = [False, True]
    ratings = [
        {"alice": True, "bob": True},
        {"alice": False, "bob": False},
        {"alice": True, "bob": False},
        {"alice": False, "bob": False},
        {"alice": True},  # one rater: not part of the ceiling
    ]
    ceiling = agreement.human_ceiling(ratings, levels)
    assert (ceiling.examples, ceiling.pairs) == (4, 4)
    assert ceiling.exact == pytest.approx(3 / 4)
    # alice vs bob: table [[2, 0], [1, 1]] (rows alice False/True): po 3/4, chance (2*3 + 2*1)/16 = 1/2
    assert ceiling.kappa == pytest.approx((3 / 4 - 1 / 2) / (1 - 1 / 2))
    assert ceiling.rater_pairs == 1
    assert ceiling.within_one is None  # meaningless on a two-level scale


def test_human_ceiling_averages_kappa_over_rater_pairs():
    levels = [1, 2, 3]
    ratings = [{"a": 1, "b": 1, "c": 2}, {"a": 2, "b": 2, "c": 2}, {"a": 3, "b": 3, "c": 1}]
    ceiling = agreement.human_ceiling(ratings, levels, "linear")
    pairs = [(["a", "b"]), (["a", "c"]), (["b", "c"])]
    expected = [agreement.cohen_kappa([r[x] for r in ratings], [r[y] for r in ratings], levels, "linear")
                for x, y in pairs]
    assert ceiling.pairs == 9
    assert expected[0] == pytest.approx(1.0)
    assert ceiling.kappa == pytest.approx(sum(expected) / 3)


def test_no_multi_rated_example_means_no_ceiling():
    assert agreement.human_ceiling([{"alice": 3}, {"bob": 4}], [1, 2, 3, 4, 5]) is None


def test_unknown_weighting_is_refused():
    with pytest.raises(ValueError, match="weights"):
        agreement.kappa_from_table([[1, 0], [0, 1]], "cubic")
