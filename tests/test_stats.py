"""Paired statistics on constructed inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import wilcoxon

from autosam.evaluation.metrics import case_metrics
from autosam.evaluation.stats import bootstrap_ci, describe, paired_comparison

CASES = [f"c{i}" for i in range(12)]


def test_identical_inputs_give_zero_difference_and_p_1() -> None:
    values = list(np.linspace(0.5, 0.9, 12))
    result = paired_comparison(CASES, values, values)
    assert result["mean_difference"] == 0 and result["p_value"] == 1.0 and result["ci95"] == [0.0, 0.0]


def test_a_consistent_improvement_is_positive_and_significant() -> None:
    rng = np.random.default_rng(0)
    a = list(rng.uniform(0.5, 0.8, 12))
    b = [x + 0.05 + 0.01 * i for i, x in enumerate(a)]  # always better
    result = paired_comparison(CASES, a, b)
    assert result["mean_difference"] > 0 and result["ci95"][0] > 0
    assert math.isclose(result["p_value"], wilcoxon(b, a).pvalue) and result["p_value"] < 0.001
    worse = paired_comparison(CASES, b, a)
    assert worse["mean_difference"] < 0 and worse["ci95"][1] < 0


def test_groups_are_averaged_before_testing() -> None:
    groups = {c: f"p{i // 3}" for i, c in enumerate(CASES)}  # 4 patients, 3 slices each
    a, b = [0.5] * 12, [0.6] * 6 + [0.4] * 6
    result = paired_comparison(CASES, a, b, groups)
    assert result["n"] == 4 and result["unit"] == "patient" and math.isclose(result["mean_difference"], 0.0,
                                                                             abs_tol=1e-12)


def test_nan_pairs_are_left_out_and_ci_contains_mean() -> None:
    result = paired_comparison(CASES[:3], [0.5, math.nan, 0.7], [0.6, 0.8, math.nan])
    assert result["n"] == 1
    stats = describe([0.2, 0.4, 0.6, math.nan])
    assert stats["n"] == 3 and math.isclose(stats["mean"], 0.4)
    low, high = bootstrap_ci(np.array([0.2, 0.4, 0.6]))
    assert low <= 0.4 <= high


def test_metrics_on_known_masks() -> None:
    reference = np.zeros((1, 20, 20), int)
    reference[0, 5:15, 5:15] = 1
    shifted = np.roll(reference, 2, axis=2)
    perfect = case_metrics(reference, reference, {"background": 0, "lesion": 1}, (999, 1.0, 1.0))["lesion"]
    assert perfect["dice"] == 1.0 and perfect["hd95"] == 0.0 and perfect["nsd"] == 1.0
    moved = case_metrics(reference, shifted, {"background": 0, "lesion": 1}, (999, 1.0, 1.0))["lesion"]
    assert math.isclose(moved["dice"], 80 / 100, abs_tol=1e-6) and math.isclose(moved["hd95"], 2.0)
    assert moved["nsd"] == 1.0  # a 2-pixel shift is within the 2-pixel tolerance
    coarse = case_metrics(reference, shifted, {"background": 0, "lesion": 1}, (999, 2.0, 2.0))["lesion"]
    assert math.isclose(coarse["hd95"], 4.0) and coarse["nsd"] < 1  # distances follow the spacing
    empty = case_metrics(reference * 0, reference * 0, {"background": 0, "lesion": 1}, (1, 1, 1))["lesion"]
    assert math.isnan(empty["dice"])
