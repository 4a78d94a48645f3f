"""Paired statistics for SAM vs nnU-Net on the same cases: bootstrap CIs and the Wilcoxon signed-rank test."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy.stats import wilcoxon

BOOTSTRAP_SAMPLES = 10_000
SEED = 12345


def bootstrap_ci(values: np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(SEED)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def describe(values) -> dict:
    values = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(values) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci95": [math.nan, math.nan]}
    return {"n": len(values), "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "ci95": list(bootstrap_ci(values))}


def group_means(cases: list[str], values: list[float], groups: dict[str, str] | None) -> tuple[list[str], np.ndarray]:
    """Average per group (patient) so that slices of one patient count once; identity without groups."""
    if not groups:
        return cases, np.asarray(values, dtype=float)
    collected: dict[str, list[float]] = defaultdict(list)
    for case, value in zip(cases, values):
        collected[groups.get(case, case)].append(value)
    names = sorted(collected)
    return names, np.asarray([np.mean(collected[n]) for n in names])


def paired_comparison(cases: list[str], a: list[float], b: list[float], groups: dict[str, str] | None = None) -> dict:
    """b - a per case (or per group): mean difference, bootstrap CI and Wilcoxon signed-rank p-value.
    Pairs where either value is NaN are left out."""
    keep = [i for i in range(len(cases)) if not (math.isnan(a[i]) or math.isnan(b[i]))]
    kept = [cases[i] for i in keep]
    _, a_values = group_means(kept, [a[i] for i in keep], groups)
    units, b_values = group_means(kept, [b[i] for i in keep], groups)
    differences = b_values - a_values
    if len(differences) == 0:
        return {"n": 0, "unit": "patient" if groups else "case", "mean_difference": math.nan,
                "ci95": [math.nan, math.nan], "p_value": math.nan}
    if np.allclose(differences, 0):
        p_value = 1.0  # no difference at all; the test statistic is undefined
    else:
        p_value = float(wilcoxon(b_values, a_values, zero_method="wilcox").pvalue)
    return {"n": len(differences), "unit": "patient" if groups else "case",
            "mean_difference": float(differences.mean()), "ci95": list(bootstrap_ci(differences)), "p_value": p_value}
