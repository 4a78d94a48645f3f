"""Statistics of a paired comparison, from libraries: the sign-flip permutation test of the mean difference,
BCa bootstrap / t CIs and the Wilcoxon signed-rank test (scipy), Holm's correction (statsmodels). The
conventions are in ``conventions``."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
from scipy.stats import bootstrap, norm, permutation_test, rankdata, t, ttest_1samp, wilcoxon
from statsmodels.stats.multitest import multipletests

from autosam.evaluation.conventions import (
    BCA_MAX_N,
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    PERMUTATION_MAX_N,
    PERMUTATIONS,
    STATS_SEED,
    T_INTERVAL_MAX_N,
)


def unit_values(cases: list[str], values: list[float], groups: dict[str, str] | None) -> dict[str, float]:
    """unit -> value: the mean of a patient's cases when groups are known, else one unit per case."""
    collected: dict[str, list[float]] = defaultdict(list)
    for case, value in zip(cases, values):
        collected[(groups or {}).get(case, case)].append(value)
    return {unit: float(np.mean(v)) for unit, v in sorted(collected.items())}


def pooled_dice(cases: list[str], counts: list[tuple[int, int, int]], groups: dict[str, str] | None
                ) -> dict[str, float]:
    """unit -> Dice of the unit's voxels pooled: 2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over a patient's cases (a case's
    own Dice when no groups are known), 1 when neither reference nor prediction has any voxel of the label.
    Unlike the mean of slice Dice, slices empty in both masks do not inflate it: it measures volumetric
    overlap, and detection is reported apart."""
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(3))
    for case, tp_fp_fn in zip(cases, counts):
        sums[(groups or {}).get(case, case)] += tp_fp_fn
    return {unit: 1.0 if (d := 2 * s[0] + s[1] + s[2]) == 0 else float(2 * s[0] / d) for unit, s in sorted(sums.items())}


def bootstrap_ci(values, bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, str]:
    """(low, high, method): the CI of the mean. Student's t below ``T_INTERVAL_MAX_N`` values, where bootstrap
    intervals are too narrow; else BCa bootstrap, percentile where BCa is degenerate or above ``BCA_MAX_N``
    values (its jackknife costs n² and its correction vanishes); a point interval when every value is equal;
    NaN below two values. An interval reaching past ``bounds`` (the metric's range) is clipped to it."""
    low, high, method = _interval(np.asarray(values, dtype=float))
    if math.isfinite(low) and (low < bounds[0] or high > bounds[1]):  # a t interval can leave [0, 1]
        return max(low, bounds[0]), min(high, bounds[1]), f"{method}, clipped"
    return low, high, method


def _interval(values: np.ndarray) -> tuple[float, float, str]:
    if len(values) < 2:
        return math.nan, math.nan, "none"
    if np.all(values == values[0]):
        return float(values[0]), float(values[0]), "constant"
    if len(values) < T_INTERVAL_MAX_N:
        low, high = t.interval(CONFIDENCE, len(values) - 1, loc=values.mean(),
                               scale=values.std(ddof=1) / math.sqrt(len(values)))
        return float(low), float(high), "t"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on near-degenerate samples; the percentile fallback handles it
        for method in ("BCa", "percentile") if len(values) <= BCA_MAX_N else ("percentile",):
            result = bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                               method=method, rng=np.random.default_rng(STATS_SEED))
            low, high = result.confidence_interval
            if math.isfinite(low) and math.isfinite(high):
                return float(low), float(high), method
    return math.nan, math.nan, "none"


def describe(values, bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan, "ci95": [math.nan, math.nan],
                "ci_method": "none"}
    low, high, method = bootstrap_ci(values, bounds)
    return {"n": len(values), "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "median": float(np.median(values)),
            "ci95": [low, high], "ci_method": method}


def _sign_flip_p(values: np.ndarray) -> float:
    """Two-sided p of the sign-flip permutation test of the sum of ``values`` (scipy.stats.permutation_test):
    exact up to log2(``PERMUTATIONS``) values, else that many random sign flips."""
    result = permutation_test((values,), lambda v, axis: np.sum(v, axis=axis), permutation_type="samples",
                              vectorized=True, n_resamples=PERMUTATIONS, alternative="two-sided",
                              rng=np.random.default_rng(STATS_SEED))
    return float(min(1.0, result.pvalue))


def mean_test_p(differences: np.ndarray) -> float:
    """Two-sided p of the primary test: the paired sign-flip permutation test of the mean difference; a
    one-sample t-test of the mean above ``PERMUTATION_MAX_N`` non-zero differences, where the two agree. Zero
    differences do not change under a flip, so they leave the test alone. NaN (not tested) below two non-zero
    differences."""
    nonzero = differences[differences != 0]
    if len(nonzero) < 2:
        return math.nan
    if len(nonzero) > PERMUTATION_MAX_N:
        return float(ttest_1samp(nonzero, 0.0).pvalue)
    return _sign_flip_p(nonzero)


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p (the secondary test, of the pseudo-median), zero differences ranked and
    split between the signs (scipy's "zsplit"): the sign-flip permutation test of the signed ranks up to
    ``PERMUTATION_MAX_N`` differences (exact with tied scores, where the normal approximation is too
    optimistic), scipy's ``wilcoxon`` (normal approximation) above. NaN (not tested) below two non-zero
    differences."""
    if np.count_nonzero(differences) < 2:
        return math.nan
    if len(differences) > PERMUTATION_MAX_N:
        return float(wilcoxon(differences, zero_method="zsplit", method="asymptotic").pvalue)
    signed_ranks = np.sign(differences) * rankdata(np.abs(differences))  # ties share their mean rank
    return _sign_flip_p(signed_ranks[differences != 0])  # a zero's split rank is the same under every flip


def smallest_p(nonzero: int) -> float:
    """The smallest two-sided p either test can give with ``nonzero`` non-zero differences: all of one sign
    and its mirror image among 2**n sign patterns, but never below what ``PERMUTATIONS`` random flips can
    resolve. NaN when nothing can be tested."""
    if nonzero < 2:
        return math.nan
    if nonzero > PERMUTATION_MAX_N:
        return 0.0  # t / normal approximations: no floor worth stating
    return min(1.0, max(2.0 / 2**nonzero, 2.0 / (PERMUTATIONS + 1)))


def _signed_rank_lower_critical(n: int) -> int:
    """The largest c with P(W+ <= c) <= (1 - CONFIDENCE) / 2 under the null, W+ the signed-rank statistic of n
    untied values (exact distribution by counting, normal approximation above ``PERMUTATION_MAX_N``); -1 when
    even W+ = 0 is too likely (n <= 5 at 95%)."""
    tail = (1 - CONFIDENCE) / 2
    if n > PERMUTATION_MAX_N:
        mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        return math.floor(mean + norm.ppf(tail) * sd)
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):  # ways to reach each rank sum with ranks 1..rank
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    cdf = np.cumsum(counts) / 2**n
    below = np.nonzero(cdf <= tail)[0]
    return int(below[-1]) if len(below) else -1


def hodges_lehmann(differences: np.ndarray) -> tuple[float, float, float]:
    """(estimate, low, high): the Hodges-Lehmann estimate of the pseudo-median (the median of the Walsh
    averages), which the signed-rank test tests, with its CI from inverting that test; NaN bounds when n is too
    small for the confidence level."""
    d = np.asarray(differences, dtype=float)
    walsh = np.sort((d[:, None] + d[None, :])[np.triu_indices(len(d))] / 2)
    critical = _signed_rank_lower_critical(len(d))
    if critical < 0:
        return float(np.median(walsh)), math.nan, math.nan
    return float(np.median(walsh)), float(walsh[critical]), float(walsh[len(walsh) - 1 - critical])


def paired_comparison(baseline: dict[str, float], challenger: dict[str, float],
                      bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """challenger - baseline over the units both have. Primary: the mean difference, its CI (``bootstrap_ci``,
    clipped to ``bounds``) and the sign-flip permutation test of that mean (``p_value``). Secondary: the
    Hodges-Lehmann estimate, its CI and the Wilcoxon signed-rank p, which test the pseudo-median. ``tested``
    is False when fewer than two differences are non-zero: such a row gets no p and stays out of Holm."""
    units = sorted(set(baseline) & set(challenger))
    differences = np.asarray([challenger[u] - baseline[u] for u in units], dtype=float)
    nonzero = int(np.count_nonzero(differences))
    if len(differences) == 0:
        return {"n": 0, "nonzero": 0, "tested": False, "mean_difference": math.nan, "ci95": [math.nan, math.nan],
                "ci_method": "none", "median_difference": math.nan, "p_value": math.nan, "smallest_p": math.nan,
                "secondary": {"hodges_lehmann": math.nan, "ci95": [math.nan, math.nan], "p_value": math.nan}}
    low, high, method = bootstrap_ci(differences, bounds)
    estimate, hl_low, hl_high = hodges_lehmann(differences)
    return {"n": len(differences), "nonzero": nonzero, "tested": nonzero >= 2,
            "mean_difference": float(differences.mean()), "ci95": [low, high], "ci_method": method,
            "median_difference": float(np.median(differences)), "p_value": mean_test_p(differences),
            "smallest_p": smallest_p(nonzero),
            "secondary": {"hodges_lehmann": estimate, "ci95": [hl_low, hl_high],
                          "p_value": signed_rank_p(differences)}}


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values over one family; NaN entries (nothing tested) stay NaN and do not count."""
    tested = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    if tested:
        for i, p in zip(tested, multipletests([p_values[i] for i in tested], method="holm")[1]):
            adjusted[i] = float(p)
    return adjusted
