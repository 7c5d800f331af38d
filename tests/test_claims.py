"""The lab's verdicts: paired one-sided t test, exact sign test, Holm's correction, and the rule
"supported / contradicted / inconclusive", never below 5 seeds."""
import math

import pytest

from hpvit_lab.claims import ALPHA, MIN_SEEDS, holm, judge, paired_test, verdict


def test_three_seeds_all_positive_is_no_verdict():
    # The old rule said "shown" here: with no effect at all, three seeds agree one time in eight.
    assert judge({"claim": [0.01, 0.01, 0.01]})["claim"]["verdict"] is None
    assert judge({"claim": [1.3, 5.3, 0.4]})["claim"]["verdict"] is None
    assert "at least 5" in judge({"claim": [1.3, 5.3, 0.4]})["claim"]["no_verdict_because"]
    assert MIN_SEEDS == 5 and ALPHA == 0.05


def test_one_disagreeing_seed_does_not_hide_a_clear_effect():
    # Seven seeds at +2.0 and one at -0.1: the old rule said "not separable from noise".
    outcome = judge({"claim": [2.0] * 7 + [-0.1]})["claim"]
    assert outcome["verdict"] == "supported"
    assert outcome["p_t"] < 0.001 and outcome["lower_95"] > 1.0
    assert outcome["p_sign"] == pytest.approx(9 / 256)  # 7 of 8 positive: P(X >= 7), X ~ B(8, 1/2)


def test_the_published_three_seed_claim_is_weak_evidence():
    # The review's numbers: +1.3, +5.3, +0.4 has a one-sided p of 0.13.
    test = paired_test([1.3, 5.3, 0.4])
    assert test.p_t == pytest.approx(0.13, abs=0.01)
    assert test.p_sign == pytest.approx(0.125)  # three of three positive: the sign test's floor


def test_t_bound_and_p_match_the_formula():
    diffs = [1.0, 2.0, 3.0, 4.0, 5.0]
    test = paired_test(diffs)
    mean, sd = 3.0, math.sqrt(2.5)
    t95 = 2.131846786  # one-sided 95% quantile of t with 4 degrees of freedom
    assert test.mean == mean and test.sd == pytest.approx(sd)
    assert test.lower == pytest.approx(mean - t95 * sd / math.sqrt(5), rel=1e-6)
    assert test.upper == pytest.approx(mean + t95 * sd / math.sqrt(5), rel=1e-6)
    assert test.p_sign == pytest.approx(1 / 32)


def test_contradicted_inconclusive_and_supported():
    assert verdict(paired_test([-3.0, -2.5, -4.0, -3.5, -2.0]), 1.0) == "contradicted"
    assert verdict(paired_test([1.0, -1.0, 2.0, -2.0, 0.5]), 0.5) == "inconclusive"
    assert verdict(paired_test([3.0, 2.5, 4.0, 3.5, 2.0]), 0.001) == "supported"
    # A significant raw p that Holm's correction lifts above alpha is not "supported".
    assert verdict(paired_test([3.0, 2.5, 4.0, 3.5, 2.0]), 0.06) == "inconclusive"
    assert verdict(paired_test([3.0, 2.5, 4.0, 3.5]), 0.001) is None  # four seeds


def test_holm_adjusts_step_down_and_stays_monotone():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"only": 0.2}) == {"only": 0.2}
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}


def test_judge_corrects_across_the_claims_it_is_given():
    strong = [3.0, 2.5, 4.0, 3.5, 2.0]
    borderline = [0.9, -0.2, 1.1, 0.3, 0.6]  # alone: p ~ 0.03
    alone = judge({"borderline": borderline})["borderline"]
    null = [0.5, -0.4, 0.2, -0.6, 0.1]
    together = judge({"null": null, "borderline": borderline})
    assert alone["p_t"] < 0.05 and alone["verdict"] == "supported"
    # Two claims: the smaller p is doubled, and the borderline claim is no longer supported.
    assert together["borderline"]["p_holm"] == pytest.approx(2 * alone["p_t"])
    assert together["borderline"]["verdict"] == "inconclusive"
    assert judge({"strong": strong, "borderline": borderline})["strong"]["verdict"] == "supported"
    # A smoke run prints the numbers, never a verdict.
    smoke = judge({"strong": strong}, smoke=True)["strong"]
    assert smoke["verdict"] is None and smoke["no_verdict_because"] == "smoke run"
    assert smoke["mean"] == pytest.approx(3.0)
