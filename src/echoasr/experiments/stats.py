"""Statistics for the experiment report.

The unit of an experiment is the training run: two configurations trained with the same seed share
their initial weights and batch order (seed-paired design), and every run is scored on the same
test utterances (seeds and utterances are crossed). The verdict on a comparison therefore comes
from the variation between training runs, not from the utterances alone:

* :func:`seed_paired_difference`: paired t over seeds of the per-seed corpus-level differences
  (needs only each run's error rate);
* :func:`crossed_effect`: the same estimate with both variance components (seeds and utterances,
  and their interaction) from the per-utterance errors of every run, a method-of-moments
  crossed random-effects model with a Satterthwaite t reference;
* :func:`holm_adjust` (within a pre-registered family), :func:`equivalence_test` (TOST against
  the plan's margin) and :func:`minimum_detectable_effect` (80% power), which :func:`verdict`
  combines into the wording of the report;
* :func:`paired_bootstrap`: the paired bootstrap over utterances pooled over seeds. It treats the
  trained models as fixed, so it is descriptive only (how the effect depends on the test
  sentences), never a verdict;
* :func:`mean_interval` and :func:`welch_difference`: t-intervals over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass
class Interval:
    mean: float
    low: float  # nan with fewer than two values
    high: float
    n: int


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and its Student-t confidence interval (values: one per seed)."""
    data = np.asarray(values, dtype=float)
    mean = float(data.mean()) if data.size else float("nan")
    if data.size < 2:
        return Interval(mean, float("nan"), float("nan"), int(data.size))
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size))
    return Interval(mean, mean - half, mean + half, int(data.size))


# ------------------------------------------------------------------ descriptive: utterances only


@dataclass
class PairedEffect:
    effect: float  # error rate of `system` minus that of `baseline` (fraction; negative = fewer errors)
    low: float
    high: float
    p_value: float
    utterances: int
    resamples: int


def pool_seeds(errors: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, utterances) errors and reference lengths -> per-utterance totals over seeds."""
    return np.asarray(errors, dtype=float).reshape(-1, np.shape(errors)[-1]).sum(0), \
        np.asarray(lengths, dtype=float).reshape(-1, np.shape(lengths)[-1]).sum(0)


def paired_bootstrap(baseline_errors, baseline_lengths, system_errors, system_lengths, *, resamples: int = 10000,
                     seed: int = 0, confidence: float = 0.95) -> PairedEffect:
    """Paired bootstrap of the corpus-level error-rate difference (system - baseline), descriptive.

    Arguments are per-utterance error counts and reference lengths, (utterances,) or (seeds,
    utterances) (pooled: summed over seeds); both systems must score the same utterances in the same
    order. Each resample draws utterance indices with replacement and uses the same indices for
    both systems. The interval is the percentile interval; the two-sided p-value tests a zero
    difference by the shifted bootstrap. The trained models are held fixed: seed-to-seed variation
    is invisible to it, so two identical configurations trained with other seeds are often
    "different" by this test (tests/test_experiment_stats.py shows it).
    """
    base_errors, base_lengths = pool_seeds(baseline_errors, baseline_lengths)
    sys_errors, sys_lengths = pool_seeds(system_errors, system_lengths)
    if base_errors.shape != sys_errors.shape:
        raise ValueError("the two systems were scored on different utterances")
    count = base_errors.size
    observed = sys_errors.sum() / sys_lengths.sum() - base_errors.sum() / base_lengths.sum()
    rng = np.random.default_rng(seed)
    differences = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: 1000 x utterances indices at a time
        indices = rng.integers(0, count, size=(min(1000, resamples - start), count))
        differences[start:start + len(indices)] = (
            sys_errors[indices].sum(1) / np.maximum(sys_lengths[indices].sum(1), 1e-12)
            - base_errors[indices].sum(1) / np.maximum(base_lengths[indices].sum(1), 1e-12))
    alpha = 1.0 - confidence
    low, high = np.quantile(differences, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(differences - observed) >= abs(observed))
    p_value = (extreme + 1) / (resamples + 1)
    return PairedEffect(float(observed), float(low), float(high), float(p_value), int(count), resamples)


@dataclass
class SeedDifference:
    effect: float  # mean over system seeds minus mean over baseline seeds
    low: float
    high: float
    p_value: float


def welch_difference(baseline: Sequence[float], system: Sequence[float], confidence: float = 0.95) -> SeedDifference | None:
    """Difference of seed means with Welch's t-interval and two-sided p-value (None with fewer than
    two seeds on a side): for runs that do not share seeds (unpaired)."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(system, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    variance_a, variance_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    standard_error = np.sqrt(variance_a + variance_b)
    effect = float(b.mean() - a.mean())
    if standard_error == 0:
        return SeedDifference(effect, effect, effect, 1.0 if effect == 0 else 0.0)
    freedom = (variance_a + variance_b) ** 2 / (variance_a ** 2 / (a.size - 1) + variance_b ** 2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, freedom) * standard_error)
    p_value = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    return SeedDifference(effect, effect - half, effect + half, p_value)


# ------------------------------------------------------------------ inference over training runs


@dataclass
class TEstimate:
    """An effect (system - baseline, error-rate fraction) with a t reference distribution."""

    effect: float
    low: float
    high: float
    p_value: float  # two-sided, against no effect
    standard_error: float
    freedom: float
    seeds: int

    def interval(self, confidence: float) -> tuple[float, float]:
        half = float(stats.t.ppf(0.5 + confidence / 2, self.freedom) * self.standard_error)
        return self.effect - half, self.effect + half


def _t_estimate(effect: float, standard_error: float, freedom: float, seeds: int, confidence: float) -> TEstimate:
    if standard_error == 0:  # identical runs: no spread to test against
        return TEstimate(effect, effect, effect, 1.0 if effect == 0 else 0.0, 0.0, freedom, seeds)
    half = float(stats.t.ppf(0.5 + confidence / 2, freedom) * standard_error)
    p_value = float(2 * stats.t.sf(abs(effect) / standard_error, freedom))
    return TEstimate(effect, effect - half, effect + half, p_value, standard_error, freedom, seeds)


def paired_seeds(baseline: Mapping[int, float], system: Mapping[int, float]) -> list[int]:
    """The seeds both configurations ran, in order: the pairs of the seed-paired design."""
    return sorted(set(baseline) & set(system))


def seed_paired_difference(baseline: Mapping[int, float], system: Mapping[int, float],
                           confidence: float = 0.95) -> TEstimate | None:
    """Paired t over seeds: the mean of the per-seed differences ``system[s] - baseline[s]`` (each a
    run's corpus-level error rate, keyed by seed) and its t-interval with seeds - 1 degrees of
    freedom; None with fewer than two common seeds."""
    seeds = paired_seeds(baseline, system)
    if len(seeds) < 2:
        return None
    differences = np.array([system[s] - baseline[s] for s in seeds], dtype=float)
    standard_error = float(differences.std(ddof=1) / np.sqrt(len(seeds)))
    return _t_estimate(float(differences.mean()), standard_error, len(seeds) - 1, len(seeds), confidence)


@dataclass
class VarianceComponents:
    """The variance of the effect estimate, split by source (squared error-rate fractions): training
    randomness (seed), the choice of test utterances (utterance) and their interaction with the
    runs' binomial error noise (residual). Seed + residual is the paired t's variance (where the
    seed part is not estimated at zero); the estimate's variance adds the utterance part."""

    seed: float
    utterance: float
    residual: float


@dataclass
class CrossedEffect(TEstimate):
    components: VarianceComponents | None = None
    utterances: int = 0


def crossed_effect(baseline_errors, system_errors, lengths, confidence: float = 0.95) -> CrossedEffect | None:
    """The corpus-level error-rate difference (system - baseline, mean over seeds) with both
    variance components, for a seed-paired design scored on the same utterances.

    ``baseline_errors`` and ``system_errors``: (seeds, utterances) error counts, row k of both from
    the same seed; ``lengths``: (utterances,) reference lengths (the same references for both).
    Each run's difference is linearised per utterance (the influence of utterance i on the ratio of
    sums), giving a seeds x utterances table whose row means are the per-seed differences. Seeds
    and utterances are crossed random factors: the balanced two-way ANOVA mean squares give the
    variance of the grand mean as ``(MS_seed + MS_utterance - MS_residual) / (seeds x utterances)``
    with a component estimated below zero set to zero (the estimator a crossed linear mixed model
    gives for balanced data), and Satterthwaite's degrees of freedom. None with fewer than two
    seeds (the seed component cannot be estimated) or two utterances.
    """
    base = np.asarray(baseline_errors, dtype=float)
    system = np.asarray(system_errors, dtype=float)
    lengths = np.asarray(lengths, dtype=float)
    if base.shape != system.shape or base.ndim != 2 or lengths.shape != base.shape[1:]:
        raise ValueError("errors must be (seeds, utterances) for both systems, lengths (utterances,)")
    seeds, utterances = base.shape
    if seeds < 2 or utterances < 2:
        return None
    total_length = lengths.sum()
    differences = system - base
    effect = float(differences.sum() / (seeds * total_length))
    # pseudo-values: row means are the per-seed differences, the grand mean is the effect
    values = utterances * (differences - effect * lengths) / total_length + effect
    seed_means, utterance_means = values.mean(1), values.mean(0)
    square_seed = utterances * np.sum((seed_means - effect) ** 2) / (seeds - 1)
    square_utterance = seeds * np.sum((utterance_means - effect) ** 2) / (utterances - 1)
    residuals = values - seed_means[:, None] - utterance_means[None, :] + effect
    square_residual = np.sum(residuals ** 2) / ((seeds - 1) * (utterances - 1))
    cells = seeds * utterances
    seed_part = max(0.0, square_seed - square_residual) / cells
    utterance_part = max(0.0, square_utterance - square_residual) / cells
    components = VarianceComponents(seed_part, utterance_part, square_residual / cells)
    # The seed mean square always enters whole (it is the paired t's variance, seed and residual
    # parts together, with seeds - 1 degrees of freedom), the utterance component where it is
    # positive: never more liberal than the paired t over seeds, and no jump to the utterances'
    # degrees of freedom where the seed component happens to be estimated at zero.
    variance = square_seed / cells + utterance_part
    pieces = [(square_seed, seeds - 1)]
    if utterance_part > 0:
        pieces += [(square_utterance, utterances - 1), (square_residual, (seeds - 1) * (utterances - 1))]
    denominator = sum((square / cells) ** 2 / freedom for square, freedom in pieces)
    freedom = float(variance ** 2 / denominator) if denominator > 0 else float(seeds - 1)
    estimate = _t_estimate(effect, float(np.sqrt(variance)), freedom, seeds, confidence)
    return CrossedEffect(**vars(estimate), components=components, utterances=utterances)


# ------------------------------------------------------------------ families, equivalence, power


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order: the
    k-th smallest p times (m - k + 1), made monotone, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


@dataclass
class Equivalence:
    margin: float  # the plan's equivalence margin (error-rate fraction)
    p_value: float  # TOST: the larger of the two one-sided p-values
    low: float  # the 1 - 2 alpha interval (equivalent when inside +- margin)
    high: float


def equivalence_test(estimate: TEstimate, margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t tests (TOST) of ``|effect| < margin`` on the estimate's t distribution: the
    effect is shown smaller than the margin when both H0: effect <= -margin and H0: effect >= margin
    are rejected, i.e. when the (1 - 2 alpha) interval lies inside (-margin, margin)."""
    if margin <= 0:
        raise ValueError("the equivalence margin must be positive")
    low, high = estimate.interval(1 - 2 * alpha) if estimate.standard_error else (estimate.effect, estimate.effect)
    if estimate.standard_error == 0:
        return Equivalence(margin, 0.0 if abs(estimate.effect) < margin else 1.0, low, high)
    above_lower = stats.t.sf((estimate.effect + margin) / estimate.standard_error, estimate.freedom)
    below_upper = stats.t.cdf((estimate.effect - margin) / estimate.standard_error, estimate.freedom)
    return Equivalence(margin, float(max(above_lower, below_upper)), float(low), float(high))


def power(effect: float, standard_error: float, freedom: float, alpha: float = 0.05) -> float:
    """Power of the two-sided t test at level ``alpha`` against a true ``effect`` (noncentral t)."""
    critical = stats.t.ppf(1 - alpha / 2, freedom)
    shift = abs(effect) / standard_error
    # the far tail (a significant result of the wrong sign) is negligible here, and scipy's
    # noncentral t returns nan for some such values: count it as 0 then
    wrong_sign = float(np.nan_to_num(stats.nct.cdf(-critical, freedom, shift), nan=0.0))
    return float(stats.nct.sf(critical, freedom, shift)) + wrong_sign


def minimum_detectable_effect(standard_error: float, freedom: float, alpha: float = 0.05,
                              target_power: float = 0.8) -> float:
    """The smallest true effect (same unit as ``standard_error``) the two-sided t test at ``alpha``
    detects with probability ``target_power``, from the observed spread."""
    if standard_error == 0:
        return 0.0
    # In standard errors the answer depends on the degrees of freedom only; the normal
    # approximation brackets it from below (t tails only widen it).
    guess = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target_power)
    upper = guess * 2
    while power(upper, 1.0, freedom, alpha) < target_power:
        upper *= 2
    multiple = optimize.brentq(lambda shift: power(shift, 1.0, freedom, alpha) - target_power, guess * 0.5, upper,
                               xtol=1e-10)
    return float(multiple * standard_error)


def seeds_needed(difference_sd: float, target_effect: float, alpha: float = 0.05, target_power: float = 0.8,
                 minimum: int = 2, maximum: int = 100) -> int | None:
    """The fewest seeds whose seed-paired t test (standard error ``difference_sd / sqrt(n)``, n - 1
    degrees of freedom) has a minimum detectable effect <= ``target_effect``: the size of a plan
    from a pilot's spread of per-seed differences. None when even ``maximum`` seeds do not reach it."""
    for seeds in range(max(minimum, 2), maximum + 1):
        if minimum_detectable_effect(difference_sd / np.sqrt(seeds), seeds - 1, alpha, target_power) <= target_effect:
            return seeds
    return None


@dataclass
class Verdict:
    label: str  # "fewer errors", "more errors", "equivalent" or "inconclusive"
    text: str  # as printed in the report


def verdict(effect: float, p_holm: float, equivalence_p_holm: float, margin: float, mde: float,
            alpha: float = 0.05, unit: float = 100.0, unit_name: str = "points") -> Verdict:
    """The report's wording for one pre-registered contrast: a difference only when the
    Holm-adjusted p is below ``alpha``; "no effect larger than the margin" only when the
    (Holm-adjusted) TOST shows equivalence; otherwise inconclusive, with the minimum detectable
    effect at 80% power. ``unit`` scales fractions for printing (100: percentage points)."""
    if p_holm < alpha:
        label = "fewer errors" if effect < 0 else "more errors"
        return Verdict(label, f"**{label}** ({unit * effect:+.2f} {unit_name}, Holm p {p_holm:.3g})")
    if equivalence_p_holm < alpha:
        return Verdict("equivalent", f"no effect larger than {unit * margin:.2g} {unit_name}")
    return Verdict("inconclusive", f"inconclusive (MDE {unit * mde:.2g} {unit_name})")
