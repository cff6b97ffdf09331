"""Known answers for the experiment statistics."""

import numpy as np
import pytest
from scipy import stats

from echoasr.experiments.stats import mean_interval, paired_bootstrap


def test_mean_interval_matches_scipy_t_on_a_tiny_input():
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2
    assert interval.mean == 2.5 and interval.n == 4
    assert interval.low == pytest.approx(2.5 - half) and interval.high == pytest.approx(2.5 + half)
    assert half == pytest.approx(2.0543, abs=1e-4)  # the textbook value t(3) = 3.182


def test_single_value_has_no_interval():
    interval = mean_interval([0.3])
    assert interval.mean == 0.3 and np.isnan(interval.low) and np.isnan(interval.high)


def test_interval_coverage_on_simulated_seeds():
    rng = np.random.default_rng(1)
    true_mean = 0.25
    covered = 0
    for _ in range(400):
        interval = mean_interval(rng.normal(true_mean, 0.02, size=3))
        covered += interval.low <= true_mean <= interval.high
    assert 0.92 <= covered / 400 <= 0.98  # 95% +- ~2.7 binomial standard deviations


def _simulated_errors(rng, rate, lengths):
    return rng.binomial(lengths, rate)


def test_paired_bootstrap_detects_a_planted_difference():
    rng = np.random.default_rng(2)
    lengths = rng.integers(20, 60, size=(3, 300))
    baseline = _simulated_errors(rng, 0.30, lengths)
    system = _simulated_errors(rng, 0.25, lengths)
    effect = paired_bootstrap(baseline, lengths, system, lengths, resamples=2000)
    assert effect.p_value < 0.01 and effect.significant
    assert effect.high < 0 and effect.low < effect.effect < effect.high
    assert effect.effect == pytest.approx(system.sum() / lengths.sum() - baseline.sum() / lengths.sum())
    assert effect.effect == pytest.approx(-0.05, abs=0.01)


def test_paired_bootstrap_finds_no_difference_between_equal_systems():
    rng = np.random.default_rng(3)
    lengths = rng.integers(20, 60, size=(3, 300))
    difficulty = rng.uniform(0.1, 0.5, size=300)  # shared per-utterance difficulty: the pairing matters
    baseline = rng.binomial(lengths, difficulty)
    system = rng.binomial(lengths, difficulty)
    effect = paired_bootstrap(baseline, lengths, system, lengths, resamples=2000)
    assert effect.p_value > 0.05 and not effect.significant
    assert effect.low < 0 < effect.high


def test_paired_bootstrap_rejects_different_utterance_sets():
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [5, 5], [1, 2, 3], [5, 5, 5])


def test_welch_difference_matches_scipy():
    from echoasr.experiments.stats import welch_difference

    baseline, system = [0.30, 0.32, 0.31], [0.27, 0.26, 0.29]
    result = welch_difference(baseline, system)
    assert result.effect == pytest.approx(np.mean(system) - np.mean(baseline))
    assert result.p_value == pytest.approx(stats.ttest_ind(system, baseline, equal_var=False).pvalue)
    interval = stats.ttest_ind(system, baseline, equal_var=False).confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))
    assert welch_difference([0.3], system) is None
