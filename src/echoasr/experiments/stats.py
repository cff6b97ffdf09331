"""Statistics for the experiment report: a t-interval over seeds, and a paired bootstrap over
utterances (pooled over seeds) for the difference of two systems' corpus-level error rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    mean: float
    low: float  # nan with fewer than two values
    high: float
    n: int


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and its Student-t confidence interval (values: one per seed)."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    mean = float(data.mean()) if data.size else float("nan")
    if data.size < 2:
        return Interval(mean, float("nan"), float("nan"), int(data.size))
    half = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size))
    return Interval(mean, mean - half, mean + half, int(data.size))


@dataclass
class PairedEffect:
    effect: float  # error rate of `system` minus that of `baseline` (fraction; negative = fewer errors)
    low: float
    high: float
    p_value: float
    utterances: int
    resamples: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def pool_seeds(errors: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, utterances) errors and reference lengths -> per-utterance totals over seeds."""
    return np.asarray(errors, dtype=float).reshape(-1, np.shape(errors)[-1]).sum(0), \
        np.asarray(lengths, dtype=float).reshape(-1, np.shape(lengths)[-1]).sum(0)


def paired_bootstrap(baseline_errors, baseline_lengths, system_errors, system_lengths, *, resamples: int = 10000,
                     seed: int = 0, confidence: float = 0.95) -> PairedEffect:
    """Paired bootstrap of the corpus-level error-rate difference (system - baseline).

    Arguments are per-utterance error counts and reference lengths, (utterances,) or (seeds,
    utterances) (pooled: summed over seeds); both systems must score the same utterances in the same
    order. Each resample draws utterance indices with replacement and uses the same indices for
    both systems. The interval is the percentile interval; the two-sided p-value tests a zero
    difference by the shifted bootstrap: the fraction of resampled differences that lie at least
    as far from the observed one as the observed one lies from zero.
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
    two seeds on a side): the seed-to-seed spread the utterance bootstrap does not see."""
    from scipy import stats

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
