"""Known answers for the experiment statistics, and their error rates on simulated seed-paired grids."""

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
    assert effect.p_value < 0.01
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
    assert effect.p_value > 0.05
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


# ------------------------------------------------------------------ inference over training runs


def simulated_grid(rng, effect=0.0, seeds=3, utterances=200, seed_sd=0.02, run_sd=0.02):
    """Per-utterance errors of two configurations trained with the same seeds: a shared
    per-utterance difficulty, a per-seed shift both configurations share (same initial weights
    and batch order), a per-run shift of its own (training randomness), binomial errors. The
    system's expected error rate is the baseline's plus ``effect``."""
    lengths = rng.integers(20, 60, size=utterances)
    difficulty = rng.uniform(0.2, 0.6, size=utterances)
    shared = rng.normal(0, seed_sd, size=(seeds, 1))
    rates = [np.clip(difficulty + shared + rng.normal(0, run_sd, size=(seeds, 1)) + shift, 0, 1)
             for shift in (0.0, effect)]
    baseline, system = (rng.binomial(lengths, rate) for rate in rates)
    return baseline, system, lengths


def per_seed_rates(errors, lengths):
    return {seed: row.sum() / lengths.sum() for seed, row in enumerate(errors)}


def test_seed_paired_difference_matches_scipy_paired_t():
    from echoasr.experiments.stats import seed_paired_difference

    baseline, system = {0: 0.30, 1: 0.34, 2: 0.31, 5: 0.5}, {0: 0.28, 1: 0.33, 2: 0.27}
    result = seed_paired_difference(baseline, system)
    reference = stats.ttest_rel([0.28, 0.33, 0.27], [0.30, 0.34, 0.31])  # seed 5 has no pair
    assert result.seeds == 3 and result.freedom == 2
    assert result.effect == pytest.approx(np.mean([-0.02, -0.01, -0.04]))
    assert result.p_value == pytest.approx(reference.pvalue)
    interval = reference.confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))
    assert seed_paired_difference({0: 0.3}, {0: 0.2}) is None


def test_crossed_effect_reduces_to_the_paired_t_when_utterances_agree():
    from echoasr.experiments.stats import crossed_effect, seed_paired_difference

    # every utterance shows the same per-seed difference: no utterance component, so the crossed
    # estimate's variance is the paired t's
    lengths = np.full(50, 10)
    baseline = np.tile(np.array([[3], [4], [5]]), (1, 50))
    system = baseline + np.array([[1], [-1], [2]])
    crossed = crossed_effect(baseline, system, lengths)
    paired = seed_paired_difference(per_seed_rates(baseline, lengths), per_seed_rates(system, lengths))
    assert crossed.effect == pytest.approx(paired.effect) == pytest.approx(2 / 30)
    assert crossed.standard_error == pytest.approx(paired.standard_error)
    assert crossed.freedom == pytest.approx(2) and crossed.p_value == pytest.approx(paired.p_value)
    assert crossed.components.utterance == pytest.approx(0) and crossed.components.residual == pytest.approx(0)
    assert crossed_effect(baseline[:1], system[:1], lengths) is None


def test_crossed_effect_utterance_component_matches_the_utterance_bootstrap():
    from echoasr.experiments.stats import crossed_effect

    # identical seeds: all the variance is the choice of utterances, which the bootstrap measures
    rng = np.random.default_rng(4)
    lengths = rng.integers(20, 60, size=300)
    baseline = np.tile(rng.binomial(lengths, 0.3), (3, 1))
    system = np.tile(rng.binomial(lengths, 0.28), (3, 1))
    crossed = crossed_effect(baseline, system, lengths)
    bootstrap = paired_bootstrap(baseline, np.tile(lengths, (3, 1)), system, np.tile(lengths, (3, 1)),
                                 resamples=4000)
    assert crossed.components.seed == pytest.approx(0, abs=1e-12)
    assert crossed.components.residual == pytest.approx(0, abs=1e-12)
    assert crossed.standard_error == pytest.approx((bootstrap.high - bootstrap.low) / (2 * 1.96), rel=0.1)


def test_verdict_false_positive_rate_with_seed_effects_and_no_configuration_effect():
    """Two identical configurations, trained runs that differ: the seed-level tests keep their
    level, the pooled utterance bootstrap (the old verdict) does not."""
    from echoasr.experiments.stats import crossed_effect, seed_paired_difference

    rng = np.random.default_rng(5)
    crossed_hits = paired_hits = bootstrap_hits = 0
    experiments, bootstrapped = 400, 60
    for index in range(experiments):
        baseline, system, lengths = simulated_grid(rng)
        crossed_hits += crossed_effect(baseline, system, lengths).p_value < 0.05
        paired_hits += seed_paired_difference(per_seed_rates(baseline, lengths),
                                              per_seed_rates(system, lengths)).p_value < 0.05
        if index < bootstrapped:
            stacked = np.tile(lengths, (3, 1))
            bootstrap_hits += paired_bootstrap(baseline, stacked, system, stacked, resamples=300,
                                               seed=index).p_value < 0.05
    assert crossed_hits / experiments <= 0.08
    assert paired_hits / experiments <= 0.08
    assert bootstrap_hits / bootstrapped >= 0.25  # the contrast: identical configurations "differ"


def test_crossed_interval_covers_a_known_effect():
    from echoasr.experiments.stats import crossed_effect

    rng = np.random.default_rng(6)
    true_effect, covered, detected, experiments = -0.05, 0, 0, 300
    for _ in range(experiments):
        estimate = crossed_effect(*simulated_grid(rng, effect=true_effect, run_sd=0.01))
        covered += estimate.low <= true_effect <= estimate.high
        detected += estimate.p_value < 0.05 and estimate.effect < 0
    assert 0.92 <= covered / experiments <= 0.99
    assert detected / experiments > 0.5  # and it is not vacuously wide


def test_holm_adjusted_p_values_by_hand():
    from echoasr.experiments.stats import holm_adjust

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([0.02]) == pytest.approx([0.02])
    assert holm_adjust([]).size == 0


def test_equivalence_test_matches_two_one_sided_scipy_t_tests():
    from echoasr.experiments.stats import equivalence_test, seed_paired_difference

    baseline = {0: 0.400, 1: 0.410, 2: 0.395, 3: 0.405}
    system = {0: 0.401, 1: 0.408, 2: 0.397, 3: 0.404}
    differences = [system[s] - baseline[s] for s in range(4)]
    estimate = seed_paired_difference(baseline, system)
    margin = 0.01
    result = equivalence_test(estimate, margin)
    lower = stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(differences, margin, alternative="less").pvalue
    assert result.p_value == pytest.approx(max(lower, upper))
    assert result.p_value < 0.05 and -margin < result.low < result.high < margin
    interval = stats.ttest_1samp(differences, 0).confidence_interval(0.90)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))
    assert equivalence_test(estimate, 0.0005).p_value > 0.05  # a tighter margin than the spread


def test_minimum_detectable_effect_has_the_stated_power():
    from echoasr.experiments.stats import minimum_detectable_effect

    # large df: the normal value (z_0.975 + z_0.8) x SE = 2.8016 x SE
    assert minimum_detectable_effect(0.01, 1e7) == pytest.approx(0.028016, abs=2e-5)
    # 2 degrees of freedom (3 seeds): check the power by simulating the t statistic
    mde = minimum_detectable_effect(0.01, 2)
    assert mde > 0.05  # t(2) tails: far above the normal value
    rng = np.random.default_rng(7)
    statistic = (rng.standard_normal(200000) + mde / 0.01) / np.sqrt(rng.chisquare(2, 200000) / 2)
    assert np.mean(np.abs(statistic) > stats.t.ppf(0.975, 2)) == pytest.approx(0.8, abs=0.01)


def test_verdict_wording():
    from echoasr.experiments.stats import verdict

    assert verdict(-0.03, 0.01, 0.9, 0.01, 0.02).label == "fewer errors"
    assert verdict(0.03, 0.01, 0.9, 0.01, 0.02).text.startswith("**more errors**")
    assert verdict(0.001, 0.6, 0.01, 0.01, 0.004).text == "no effect larger than 1 points"
    assert verdict(0.001, 0.6, 0.2, 0.01, 0.034).text == "inconclusive (MDE 3.4 points)"


def test_seeds_needed_is_the_first_size_whose_mde_reaches_the_target():
    from echoasr.experiments.stats import minimum_detectable_effect, seeds_needed

    sd, target = 0.004, 0.005
    n = seeds_needed(sd, target)
    assert minimum_detectable_effect(sd / n ** 0.5, n - 1) <= target < minimum_detectable_effect(sd / (n - 1) ** 0.5, n - 2)
    assert n == 8  # the normal approximation ((1.96 + 0.84) x 0.8)^2 = 5.0 seeds; the t tails add three
    assert seeds_needed(0.001, 0.005) == 3  # a small spread: 3 seeds already (2 seeds, one df, never)
    assert seeds_needed(0.05, 0.005, maximum=20) is None
