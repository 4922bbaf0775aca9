"""arml.stats: means, Welch intervals, resolvable differences and the sentences built from them."""

import math

import pytest
from scipy import stats as sps

import arml.experiments
from arml.stats import (
    describe_difference,
    difference_ci,
    format_score,
    mean_std,
    resolvable_difference,
    ttest,
)


def test_mean_std_and_ttest_moved_and_still_importable_from_experiments():
    assert arml.experiments.mean_std is mean_std and arml.experiments.ttest is ttest
    assert mean_std([0.5, None, float("nan"), 0.7])["n"] == 2


def test_difference_ci_of_identical_groups_is_zero_and_symmetric():
    r = difference_ci([1, 2, 3], [1, 2, 3])
    assert r["diff"] == 0.0 and r["low"] == pytest.approx(-r["high"]) and r["high"] > 0
    assert r["p"] == pytest.approx(1.0) and r["resolved"] is False
    assert (r["n_a"], r["n_b"], r["level"]) == (3, 3, 0.95)


def test_difference_ci_by_hand():
    # b has no spread: se = std(a)/sqrt(3) = 1/sqrt(3), df = n_a − 1 = 2, t_{0.975, 2} = 4.303
    r = difference_ci([1, 2, 3], [0, 0, 0])
    half = 4.302653 / math.sqrt(3)
    assert r["diff"] == 2.0 and r["df"] == pytest.approx(2.0)
    assert (r["low"], r["high"]) == (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    assert r["resolved"] is False  # [−0.48, 4.48] contains 0


def test_difference_ci_matches_scipy():
    a, b = [0.72, 0.70, 0.71, 0.74], [0.70, 0.69, 0.69]
    ref = sps.ttest_ind(a, b, equal_var=False)
    for level in (0.8, 0.95, 0.99):
        r = difference_ci(a, b, level)
        ci = ref.confidence_interval(level)
        assert (r["low"], r["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert r["df"] == pytest.approx(ref.df) and r["p"] == pytest.approx(ref.pvalue)
        assert r["resolved"] is (r["p"] < 1 - level)
    assert difference_ci(a, b, 0.8)["resolved"] and not difference_ci(a, b, 0.99)["resolved"]


def test_difference_ci_resolves_a_clear_difference_of_either_sign():
    up, down = difference_ci([5, 6, 7], [1, 2, 3]), difference_ci([1, 2, 3], [5, 6, 7])
    assert up["resolved"] and up["low"] > 0 and down["resolved"] and down["high"] < 0


def test_difference_ci_undefined_cases_give_nan_not_errors():
    one = difference_ci([0.7], [0.6, 0.65])
    assert one["diff"] == pytest.approx(0.075) and one["n_a"] == 1
    assert math.isnan(one["low"]) and math.isnan(one["high"]) and math.isnan(one["p"])
    assert one["resolved"] is False
    flat = difference_ci([2, 2], [1, 1])  # a difference, but no noise to measure it against
    assert flat["diff"] == 1.0 and math.isnan(flat["low"]) and flat["resolved"] is False
    empty = difference_ci([], [0.1, 0.2])
    assert math.isnan(empty["diff"]) and empty["n_a"] == 0 and empty["resolved"] is False
    # non-finite values are skipped, as mean_std skips them
    skipped = difference_ci([1, None, 2, float("nan"), 3, math.inf], [1, 2, 3])
    assert skipped["n_a"] == 3 and skipped["diff"] == 0.0
    with pytest.raises(ValueError, match="level"):
        difference_ci([1, 2], [1, 2], level=95)
    with pytest.raises(TypeError, match="sequence of numbers"):
        difference_ci(["a", "b"], [1, 2])


def test_resolvable_difference():
    # n = 3: df = 4, (t_0.975 + t_0.8) · sqrt(2/3) = (2.776 + 0.941) · 0.816 = 3.035
    assert resolvable_difference(1.0, 3) == pytest.approx(3.035, abs=1e-3)
    assert resolvable_difference(2.0, 3) == pytest.approx(2 * resolvable_difference(1.0, 3))
    sizes = [resolvable_difference(1.0, n) for n in (2, 3, 5, 10, 50)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 0.6
    assert resolvable_difference(1.0, 1) == math.inf and resolvable_difference(1.0, 0) == math.inf
    assert resolvable_difference(1.0, 3, level=0.99) > resolvable_difference(1.0, 3)
    assert resolvable_difference(1.0, 3, power=0.9) > resolvable_difference(1.0, 3)
    assert resolvable_difference(0.0, 3) == 0.0 and math.isnan(resolvable_difference(float("nan"), 3))
    with pytest.raises(ValueError, match="non-negative"):
        resolvable_difference(-1.0, 3)
    with pytest.raises(ValueError, match="power"):
        resolvable_difference(1.0, 3, power=80)


def test_describe_difference_sentences():
    # the hand case above, in points: +2.0, CI 2 ∓ 2.48
    assert (
        describe_difference("A − B", [1, 2, 3], [0, 0, 0], unit=1)
        == "A − B = +2.0, 95 % CI [−0.5, 4.5]: not resolved with 3 seeds"
    )
    assert (
        describe_difference("ARML − baseline", [0.05, 0.06, 0.07], [0.01, 0.02, 0.03], paper=1.9)
        == "ARML − baseline = +4.0 points, 95 % CI [1.7, 6.3]: resolved with 3 seeds (paper: +1.9)"
    )
    assert (
        describe_difference("ARML − baseline", [0.723], [0.70])
        == "ARML − baseline = +2.3 points (single runs: no interval)"
    )
    assert describe_difference("x", [0.5], [0.4, 0.5]) == "x = +5.0 points (1 and 2 seeds: no interval)"
    assert describe_difference("x", [0.4, 0.4], [0.5, 0.5]) == (
        "x = −10.0 points (no spread across 2 seeds: no interval)"
    )
    assert describe_difference("x", [0.5, 0.6, 0.7], [0.5, 0.6]).endswith("with 3 and 2 seeds")
    assert describe_difference("x", [], [0.5]) == "x: no finite score for a, nothing to compare"


def test_format_score():
    assert format_score(0.453, 0.012, 3) == "45.3 ± 1.2"
    assert format_score(0.453, 0.0, 1) == "45.3 (single run)"
    assert format_score(45.34, 1.25, 3, unit=1, digits=2) == "45.34 ± 1.25"
    assert format_score(0.453, 0.0001, 3) == "45.3 ± <0.1"  # never "± 0.0"
    assert format_score(0.453, 0.0, 3) == "45.3 (3 runs, no spread)"
    assert format_score(float("nan"), float("nan"), 0) == "n/a"
    assert format_score(-0.0001, 0.0, 1) == "0.0 (single run)"  # no "-0.0"
