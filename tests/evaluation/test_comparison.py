"""Seed summaries and the paired bootstrap, on synthetic per-pair outcomes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from stn_face.evaluation.comparison import bootstrap_p_value, holm, paired_difference, seed_summary
from stn_face.evaluation.verification import kfold_accuracy, kfold_correct


def test_seed_summary_is_mean_and_sample_std() -> None:
    summary = seed_summary({44: 0.84, 42: 0.80, 43: 0.82, 45: None})
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.82)
    assert summary["std"] == pytest.approx(0.02)  # ddof=1: sqrt((0.02^2 + 0 + 0.02^2) / 2)
    assert list(summary["values"]) == [42, 43, 44]
    one = seed_summary({42: 0.5})
    assert one["mean"] == 0.5 and one["std"] is None


def test_identical_models_differ_by_exactly_zero() -> None:
    correct = np.random.default_rng(0).random((3, 6000)) < 0.8
    result = paired_difference(correct, correct.copy(), n_boot=2000)
    assert result["difference"] == 0.0
    assert result["ci_pairs"] == (0.0, 0.0) and result["ci_seeds_pairs"] == (0.0, 0.0)
    assert not result["distinguishable"]
    assert result["p_seeds_pairs"] == 1.0


def test_a_known_gain_is_recovered_with_an_interval_of_the_right_width() -> None:
    rng = np.random.default_rng(1)
    seeds, pairs, gain = 3, 6000, 300  # model A also gets 300 of B's wrong pairs right, in every seed
    b = rng.random((seeds, pairs)) < 0.8
    a = b.copy()
    for s in range(seeds):
        a[s, rng.choice(np.flatnonzero(~b[s]), gain, replace=False)] = True
    result = paired_difference(a, b, n_boot=4000, rng_seed=3)
    assert result["difference"] == pytest.approx(gain / pairs)  # exactly 0.05
    assert result["per_seed"] == pytest.approx([0.05] * 3)
    low, high = result["ci_pairs"]
    assert low < 0.05 < high and low > 0
    # per pair, the seed-averaged difference has variance 0.05 * 0.95 / 3 (independent positions per seed)
    half_width = 1.96 * np.sqrt(0.05 * 0.95 / seeds / pairs)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.2)
    # the seeds do not disagree, so resampling them adds nothing
    assert result["ci_seeds_pairs"][0] > 0 and result["distinguishable"]
    assert result["p_seeds_pairs"] == pytest.approx(2 / 4001)  # no resample at or below 0: the smallest p
    one_seed = paired_difference(a[:1], b[:1], n_boot=500)
    assert one_seed["ci_seeds_pairs"] == one_seed["ci_pairs"] and one_seed["distinguishable"] is None
    assert one_seed["p_seeds_pairs"] is None


def test_disagreeing_seeds_widen_the_seed_interval_only() -> None:
    rng = np.random.default_rng(2)
    b = rng.random((3, 6000)) < 0.8
    a = b.copy()
    for s, gain in enumerate((0, 300, 600)):  # +0, +5, +10 points: the seeds disagree
        a[s, rng.choice(np.flatnonzero(~b[s]), gain, replace=False)] = True
    result = paired_difference(a, b, n_boot=4000)
    assert result["difference"] == pytest.approx(0.05)
    pairs_width = result["ci_pairs"][1] - result["ci_pairs"][0]
    seeds_width = result["ci_seeds_pairs"][1] - result["ci_seeds_pairs"][0]
    assert seeds_width > 3 * pairs_width
    assert result["ci_seeds_pairs"][0] <= 0.0 + 1e-12  # one seed of three gained nothing
    # about (1/3)^3 of the seed resamples draw only the seed that gained nothing: p near 2/27
    assert 0.04 < result["p_seeds_pairs"] < 0.12


def test_pairs_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(4)
    covered, trials = 0, 200
    for trial in range(trials):
        b = rng.random((1, 500)) < 0.80
        a = rng.random((1, 500)) < 0.84  # true expected difference 0.04, independent outcomes
        low, high = paired_difference(a, b, n_boot=500, rng_seed=trial)["ci_pairs"]
        covered += low <= 0.04 <= high
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_p_value_is_twice_the_smaller_tail() -> None:
    assert bootstrap_p_value(np.zeros(999)) == 1.0
    assert bootstrap_p_value(np.full(999, 0.01)) == pytest.approx(2 / 1000)
    samples = np.concatenate([np.full(100, -0.01), np.full(899, 0.02)])  # 100 of 999 at or below 0
    assert bootstrap_p_value(samples) == pytest.approx(2 * 101 / 1000)
    assert bootstrap_p_value(-samples) == pytest.approx(2 * 101 / 1000)


def test_holm_adjusts_a_worked_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running maximum 0.06 for the last
    adjusted = holm([0.01, 0.04, 0.03, 0.005, None])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and adjusted[4] is None
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]


def test_holm_keeps_the_family_wise_error_near_five_percent() -> None:
    # 2,000 tables of 12 comparisons with no true difference (uniform p-values)
    p = np.random.default_rng(6).random((2000, 12))
    raw = np.mean((p < 0.05).any(axis=1))
    corrected = np.mean([min(holm(list(row))) < 0.05 for row in p])
    assert raw == pytest.approx(1 - 0.95 ** 12, abs=0.04)  # about 46 % of tables hold a false "yes"
    assert corrected == pytest.approx(1 - (1 - 0.05 / 12) ** 12, abs=0.015)  # about 4.9 %


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(np.ones((3, 10), bool), np.ones((2, 10), bool))
    with pytest.raises(ValueError, match="level"):
        paired_difference(np.ones((1, 10), bool), np.ones((1, 10), bool), level=95)


def test_kfold_correct_gives_the_fold_accuracies() -> None:
    rng = np.random.default_rng(5)
    labels = np.tile(np.repeat([True, False], 300), 10)
    scores = rng.normal(labels * 1.5, 1.0)
    folds = np.repeat(np.arange(10), 600)
    correct, fold_ids, thresholds = kfold_correct(scores, labels, folds)
    expected = kfold_accuracy(scores, labels, folds)
    assert [correct[folds == f].mean() for f in fold_ids] == pytest.approx(expected["fold_accuracies"])
    assert thresholds == expected["thresholds"]
