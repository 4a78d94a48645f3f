"""Statistics of a paired comparison, from libraries: BCa bootstrap CIs and the Wilcoxon signed-rank test
(scipy), Holm's correction for multiple tests (statsmodels). The conventions are in ``conventions``."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
from scipy.stats import PermutationMethod, bootstrap, t, wilcoxon
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


def bootstrap_ci(values) -> tuple[float, float, str]:
    """(low, high, method): the CI of the mean. Student's t below ``T_INTERVAL_MAX_N`` values, where bootstrap
    intervals are too narrow; else BCa bootstrap, percentile where BCa is degenerate or above ``BCA_MAX_N``
    values (its jackknife costs n² and its correction vanishes); a point interval when every value is equal;
    NaN below two values."""
    values = np.asarray(values, dtype=float)
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


def describe(values) -> dict:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan, "ci95": [math.nan, math.nan],
                "ci_method": "none"}
    low, high, method = bootstrap_ci(values)
    return {"n": len(values), "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "median": float(np.median(values)),
            "ci95": [low, high], "ci_method": method}


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences, zeros split between the signs (so the test and
    the median difference treat ties alike); exact or permutation for small n, where the normal
    approximation is too optimistic with tied scores."""
    if np.count_nonzero(differences) < 2:
        return 1.0 if np.allclose(differences, 0) else math.nan  # nothing to rank: not tested
    method = (PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(STATS_SEED))
              if len(differences) <= PERMUTATION_MAX_N else "asymptotic")
    return float(wilcoxon(differences, zero_method="zsplit", method=method).pvalue)


def smallest_p(n: int) -> float:
    """The smallest two-sided p the signed-rank test can give for n pairs (all of one sign)."""
    return min(1.0, 2.0 / 2**n) if n > 0 else math.nan


def paired_comparison(baseline: dict[str, float], challenger: dict[str, float]) -> dict:
    """challenger - baseline over the units both have: mean difference with its bootstrap CI, median
    difference with the Wilcoxon signed-rank p-value."""
    units = sorted(set(baseline) & set(challenger))
    differences = np.asarray([challenger[u] - baseline[u] for u in units], dtype=float)
    if len(differences) == 0:
        return {"n": 0, "mean_difference": math.nan, "ci95": [math.nan, math.nan], "ci_method": "none",
                "median_difference": math.nan, "p_value": math.nan}
    low, high, method = bootstrap_ci(differences)
    return {"n": len(differences), "mean_difference": float(differences.mean()), "ci95": [low, high],
            "ci_method": method, "median_difference": float(np.median(differences)),
            "p_value": signed_rank_p(differences)}


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values over one family; NaN entries (nothing tested) stay NaN and do not count."""
    tested = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    if tested:
        for i, p in zip(tested, multipletests([p_values[i] for i in tested], method="holm")[1]):
            adjusted[i] = float(p)
    return adjusted
