"""The statistics behind comparisons and ablation tables: Holm-Bonferroni, and a paired t-test that refuses
to report a p-value it cannot support (too few seeds, or differences without spread)."""

from __future__ import annotations

import warnings

import pytest
from scipy import stats

from xmlbench.results.compare import holm_adjust, paired_ttest, ttest_text


def test_holm_matches_a_hand_computation() -> None:
    # Sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06 to keep the order.
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # An arm without a test is not part of the family (m = 3, not 4) and stays without a p.
    adjusted = holm_adjust([0.01, None, 0.04, 0.03])
    assert adjusted[1] is None and [adjusted[i] for i in (0, 2, 3)] == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1, still monotone
    assert holm_adjust([0.02]) == pytest.approx([0.02])  # a family of one is not adjusted
    assert holm_adjust([]) == []


def test_ttest_needs_three_paired_seeds() -> None:
    base = {0: 86.1, 1: 86.2, 2: 86.3}
    arm = {0: 86.9, 1: 86.8}  # two seeds in common, deltas 0.8 and 0.6: scipy would give p = 0.2
    test = paired_ttest(base, arm)
    assert test["n"] == 2 and test["p"] is None and test["reason"] == "n<3"
    assert ttest_text(test) == "n<3"
    arm[2] = 87.4
    test = paired_ttest(base, arm)
    assert test["n"] == 3 and test["p"] == pytest.approx(stats.ttest_rel([86.9, 86.8, 87.4],
                                                                          [86.1, 86.2, 86.3]).pvalue)
    assert test["reason"] is None and ttest_text(test) == f"{test['p']:.3f}"


def test_differences_without_spread_give_no_p() -> None:
    base = {0: 49.9, 1: 50.3, 2: 49.5}
    # +1.48 on every seed: the float differences spread by ~4e-15, and scipy's p is about 1e-30.
    arm = {s: v + 1.48 for s, v in base.items()}
    with warnings.catch_warnings():  # scipy warns of the precision loss, and still answers
        warnings.simplefilter("ignore", RuntimeWarning)
        assert stats.ttest_rel(list(arm.values()), list(base.values())).pvalue < 1e-20
    test = paired_ttest(base, arm)
    assert test["p"] is None and test["reason"] == "no variance" and ttest_text(test) == "n/a"
    exact = paired_ttest({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.5, 2: 3.5})  # exactly 0.5 each
    assert exact["p"] is None and exact["reason"] == "no variance"
    # A real, if small, spread is tested: the bound is relative to the deltas (1e-9 x max(1, |mean|)).
    small = paired_ttest(base, {0: 51.38, 1: 51.781, 2: 50.979})
    assert small["p"] is not None and small["p"] < 1e-3
