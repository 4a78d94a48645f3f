"""The verdict's statistics and conventions on constructed inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from autosam.evaluation.comparison import analyse
from autosam.evaluation.conventions import FOREGROUND_MEAN, worst_distance
from autosam.evaluation.metrics import case_metrics
from autosam.evaluation.report import headline, secondary, verdict
from autosam.evaluation.stats import (
    _signed_rank_lower_critical,
    bootstrap_ci,
    describe,
    hodges_lehmann,
    holm,
    paired_comparison,
    smallest_p,
    unit_values,
)

LABELS = {"background": 0, "lesion": 1}


def _square(size: int = 20, start: int = 5, stop: int = 15, shift: int = 0) -> np.ndarray:
    mask = np.zeros((1, size, size), int)
    mask[0, start:stop, start + shift:stop + shift] = 1
    return mask


def _case(name: str, reference: np.ndarray, predictions: dict[str, np.ndarray], group: str | None = None,
          labels: dict[str, int] = LABELS) -> dict:
    return {"case": name, "group": group, "metrics": {m: case_metrics(reference, p, labels, (999, 1.0, 1.0))
                                                      for m, p in predictions.items()}}


def test_identical_inputs_give_zero_difference_and_are_not_tested() -> None:
    values = {f"c{i}": v for i, v in enumerate(np.linspace(0.5, 0.9, 12))}
    result = paired_comparison(values, values)
    assert result["mean_difference"] == 0 and result["ci95"] == [0.0, 0.0]
    assert not result["tested"] and math.isnan(result["p_value"]) and math.isnan(result["secondary"]["p_value"])


def test_a_consistent_improvement_is_positive_and_significant() -> None:
    rng = np.random.default_rng(0)
    a = {f"c{i}": x for i, x in enumerate(rng.uniform(0.5, 0.8, 12))}
    b = {k: x + 0.05 + 0.01 * i for i, (k, x) in enumerate(a.items())}  # always better
    result = paired_comparison(a, b)
    assert result["mean_difference"] > 0 and result["ci95"][0] > 0 and result["median_difference"] > 0
    assert math.isclose(result["secondary"]["p_value"], wilcoxon(list(b.values()), list(a.values())).pvalue)
    assert result["p_value"] == 2 / 2**12  # every sign flip has a smaller mean: the exact test's floor
    worse = paired_comparison(b, a)
    assert worse["mean_difference"] < 0 and worse["ci95"][1] < 0


def test_bootstrap_interval_is_bca_around_the_mean_and_reproducible() -> None:
    values = np.random.default_rng(1).exponential(size=40)  # skewed: BCa and percentile intervals differ
    low, high, method = bootstrap_ci(values)
    assert low < values.mean() < high and method == "BCa" and bootstrap_ci(values) == (low, high, method)
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7, "constant") and math.isnan(bootstrap_ci([0.5])[0])
    assert describe([0.2, 0.4, 0.6])["median"] == 0.4


def test_holm_adjusts_across_the_family_and_skips_untested() -> None:
    adjusted = holm([0.01, 0.04, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[1] == pytest.approx(0.06)
    assert adjusted[3] == pytest.approx(0.06) and math.isnan(adjusted[2])


def test_units_average_a_patients_cases_first() -> None:
    groups = {f"c{i}": f"p{i // 3}" for i in range(12)}  # 4 patients, 3 slices each
    a = unit_values(list(groups), [0.5] * 12, groups)
    b = unit_values(list(groups), [0.6] * 6 + [0.4] * 6, groups)
    result = paired_comparison(a, b)
    assert result["n"] == 4 and math.isclose(result["mean_difference"], 0.0, abs_tol=1e-12)


def test_metrics_on_known_masks() -> None:
    reference, shifted = _square(), _square(shift=2)
    perfect = case_metrics(reference, reference, LABELS, (999, 1.0, 1.0))["lesion"]
    assert perfect["dice"] == 1.0 and perfect["hd95"] == 0.0 and perfect["nsd"] == 1.0 and perfect["empty"] is None
    moved = case_metrics(reference, shifted, LABELS, (999, 1.0, 1.0))["lesion"]
    assert math.isclose(moved["dice"], 80 / 100, abs_tol=1e-6) and math.isclose(moved["hd95"], 2.0)
    assert moved["nsd"] == 1.0  # a 2-pixel shift is within the 2-pixel tolerance
    coarse = case_metrics(reference, shifted, LABELS, (999, 2.0, 2.0))["lesion"]
    assert math.isclose(coarse["hd95"], 4.0) and coarse["nsd"] < 1  # distances follow the spacing


def test_misses_and_false_positives_score_the_worst_distance() -> None:
    reference, nothing = _square(), _square() * 0
    diagonal = worst_distance((20, 20), (2.0, 0.5))
    assert math.isclose(diagonal, math.hypot(40, 10))
    missed = case_metrics(reference, nothing, LABELS, (999, 2.0, 0.5))["lesion"]
    assert missed == {"dice": 0.0, "nsd": 0.0, "hd95": diagonal, "empty": "prediction", "tp": 0, "fp": 0, "fn": 100}
    false_positive = case_metrics(nothing, reference, LABELS, (999, 2.0, 0.5))["lesion"]
    assert false_positive == {"dice": 0.0, "nsd": 0.0, "hd95": diagonal, "empty": "reference", "tp": 0, "fp": 100,
                              "fn": 0}
    both = case_metrics(nothing, nothing, LABELS, (999, 2.0, 0.5))["lesion"]
    assert both["empty"] == "both" and both["dice"] == 1.0 and both["hd95"] == 0.0


def _empty_reference_study(b_false_positives: bool) -> dict:
    """10 cases with a lesion both methods find equally well, 6 without: B paints a lesion there or not."""
    cases = [_case(f"t{i}", _square(), {"A": _square(shift=1), "B": _square(shift=1)}) for i in range(10)]
    for i in range(6):
        b = _square(start=2, stop=6) if b_false_positives else _square() * 0
        cases.append(_case(f"e{i}", _square() * 0, {"A": _square() * 0, "B": b}))
    return analyse(cases, ["lesion"], ["A"], "B")


def test_false_positives_on_empty_references_reach_the_difference_and_the_test() -> None:
    clean, noisy = _empty_reference_study(False), _empty_reference_study(True)
    assert clean["paired"]["A"]["lesion"]["dice"]["n"] == 16  # the case set follows the references alone
    assert not clean["paired"]["A"]["lesion"]["dice"]["tested"]  # identical: nothing to test
    test = noisy["paired"]["A"]["lesion"]["dice"]
    assert test["n"] == 16 and math.isclose(test["mean_difference"], -6 / 16)
    assert test["ci95"][1] < 0
    # 6 non-zero differences of one sign: the exact test cannot go below 2 / 2**6, tied scores or not
    assert smallest_p(6) == 2 / 64 <= test["p_value"] < 0.05
    assert noisy["summary"]["A"]["lesion"]["dice"]["n"] == noisy["summary"]["B"]["lesion"]["dice"]["n"] == 16
    assert noisy["paired"]["A"]["lesion"]["hd95"]["mean_difference"] > 0  # B's distances grow as well
    counts = noisy["counts"]["lesion"]
    assert counts["false_positive_on_empty_reference"] == {"A": 0, "B": 6} and counts["empty_reference"] == 6


def test_a_method_is_scored_the_same_whichever_other_methods_were_trained() -> None:
    cases = [_case(f"e{i}", _square() * 0, {"A": _square() * 0, "C": _square(start=2, stop=6), "B": _square() * 0})
             for i in range(4)] + [_case(f"t{i}", _square(), {"A": _square(shift=i % 3), "C": _square(),
                                                              "B": _square(shift=1)}) for i in range(6)]
    alone, beside = analyse(cases, ["lesion"], ["A"], "B"), analyse(cases, ["lesion"], ["A", "C"], "B")
    assert alone["summary"]["B"] == beside["summary"]["B"] and alone["summary"]["A"] == beside["summary"]["A"]
    assert alone["paired"]["A"]["lesion"]["dice"]["mean_difference"] == \
        beside["paired"]["A"]["lesion"]["dice"]["mean_difference"]


def test_tied_scores_never_give_a_p_below_what_the_exact_test_allows() -> None:
    a = {f"u{i}": 0.5 for i in range(16)}
    b = {**a, **{f"u{i}": 0.0 for i in range(6)}}  # 10 ties, 6 losses
    result = paired_comparison(a, b)
    assert result["median_difference"] == 0.0
    assert result["secondary"]["p_value"] >= smallest_p(6)  # the normal approximation with ties gave 0.014


def test_one_unit_is_described_but_not_tested() -> None:
    cases = [_case(f"p0_z{i}", _square(), {"A": _square(shift=1), "B": _square()}, group="p0") for i in range(3)]
    result = analyse(cases, ["lesion"], ["A"], "B", {c["case"]: "p0" for c in cases})
    test = result["paired"]["A"]["lesion"]["dice"]
    assert test["n"] == 1 and math.isnan(test["p_value"]) and math.isnan(test["p_holm"])
    assert math.isnan(result["summary"]["B"]["lesion"]["dice"]["std"])


def test_small_samples_get_t_intervals_and_an_ignore_label_is_not_scored() -> None:
    values = [0.2, 0.5, 0.9, 0.4, 0.6]
    low, high, method = bootstrap_ci(values)
    assert method == "t" and low < min(values[1:3]) and high > 0.7
    reference = _square()
    reference[0, 0:3, 0:3] = 9  # an ignore region the prediction paints as lesion
    painted = _square()
    painted[0, 0:3, 0:3] = 1
    scored = case_metrics(reference, painted, {"lesion": 1}, (999, 1.0, 1.0), ignore=9)["lesion"]
    assert scored["dice"] == 1.0  # without the mask the painted ignore pixels would count as false positives


def test_a_missed_object_counts_against_the_method_in_every_metric() -> None:
    cases = [_case(f"c{i}", _square(), {"A": _square(), "B": _square() if i % 2 else _square() * 0})
             for i in range(8)]
    result = analyse(cases, ["lesion"], ["A"], "B")
    assert result["counts"]["lesion"]["missed_object"] == {"A": 0, "B": 4}
    assert result["summary"]["B"]["lesion"]["dice"]["mean"] == 0.5
    assert result["summary"]["B"]["lesion"]["hd95"]["mean"] == pytest.approx(worst_distance((20, 20), (1, 1)) / 2)


def test_patient_groups_make_the_unit_and_n_and_the_strongest_baseline_is_named() -> None:
    cases = [_case(f"p{i // 4}_z{i}", _square(), {"A": _square(shift=1), "C": _square(shift=3), "B": _square()},
                   group=f"p{i // 4}") for i in range(12)]
    groups = {c["case"]: c["group"] for c in cases}
    result = analyse(cases, ["lesion"], ["C", "A"], "B", groups)
    assert result["unit"] == "patient" and result["n_units"] == 3 and result["n_cases"] == 12
    assert result["paired"]["A"]["lesion"]["dice"]["n"] == 3 and result["strongest_baseline"] == "A"
    assert "per patient (n = 3 patients from 12 cases" in result["conventions"][0]
    per_case = analyse(cases, ["lesion"], ["C", "A"], "B")
    assert per_case["unit"] == "case" and per_case["paired"]["A"]["lesion"]["dice"]["n"] == 12
    family = [t for b in result["paired"].values() for row in b.values() for t in row.values()]
    assert len(family) == 6 and all(t["p_holm"] >= t["p_value"] for t in family if math.isfinite(t["p_value"]))


def test_several_labels_add_a_foreground_mean_over_the_labels_each_case_counts() -> None:
    labels = {"background": 0, "a": 1, "b": 2}
    reference = _square() + 2 * _square(start=16, stop=19)  # label 1 in the middle, label 2 in a corner
    only_a = np.where(reference == 2, 0, reference)
    cases = [_case(f"c{i}", reference, {"X": reference, "Y": only_a}, labels=labels) for i in range(5)]
    result = analyse(cases, ["a", "b"], ["X"], "Y")
    assert result["rows"] == ["a", "b", FOREGROUND_MEAN] and result["primary_row"] == FOREGROUND_MEAN
    assert result["summary"]["Y"][FOREGROUND_MEAN]["dice"]["mean"] == pytest.approx(
        (result["summary"]["Y"]["a"]["dice"]["mean"] + result["summary"]["Y"]["b"]["dice"]["mean"]) / 2)
    assert result["summary"]["Y"]["b"]["dice"]["mean"] == 0.0 and result["counts"]["b"]["missed_object"]["Y"] == 5
    assert analyse(cases, ["a"], ["X"], "Y")["rows"] == ["a"]


def _headline(cases: list[dict], groups: dict[str, str] | None = None) -> tuple[dict, list[str]]:
    comparison = {**analyse(cases, ["lesion"], ["A"], "B", groups), "training": {}}
    return comparison, headline(comparison)


def test_the_headline_words_follow_the_mean_and_its_own_test() -> None:
    """18 patients a little worse, 2 much better: the mean is positive but not significant, the typical patient
    is worse. The verdict may not put the signed-rank p beside the mean."""
    a = {f"p{i}": 0.8 for i in range(20)}
    b = {**{f"p{i}": 0.78 for i in range(18)}, "p18": 1.0, "p19": 1.0}
    b["p18"], a["p18"], a["p19"] = 0.9, 0.3, 0.3  # +0.6 and +0.7
    test = paired_comparison(a, b, (-1, 1))
    assert test["mean_difference"] == pytest.approx((18 * -0.02 + 0.6 + 0.7) / 20)
    assert test["p_value"] > 0.05 and test["secondary"]["p_value"] < 0.05 and test["secondary"]["hodges_lehmann"] < 0
    test["p_holm"] = test["p_value"]
    line = verdict(test, "SAM", "nnU-Net 2d", "verdict")
    assert line.startswith("verdict: no detectable difference between SAM and nnU-Net 2d") and "permutation" in line
    assert "Wilcoxon" not in line
    second = secondary(test, "patient")
    assert "Wilcoxon signed-rank p = " in second and "points the other way than the mean" in second
    worse = paired_comparison({u: v + 0.05 for u, v in b.items()}, b, (-1, 1))
    worse["p_holm"] = worse["p_value"]
    assert verdict(worse, "SAM", "nnU-Net 2d", "verdict").startswith("verdict: SAM lower than nnU-Net 2d by 0.050")


def test_a_patient_is_its_pooled_voxels_not_the_mean_of_its_slices() -> None:
    """Each patient: 10 slices, 8 empty in both masks; A finds the lesion exactly, B half of it. Slice means
    (0.93 vs 1.0) hide what pooling shows (B's pooled Dice is 2/3)."""
    half = _square(start=5, stop=15)
    half[0, 5:15, 10:15] = 0
    cases = []
    for patient in range(6):
        for z in range(10):
            reference = _square() if z < 2 else _square() * 0
            cases.append(_case(f"p{patient}_z{z}", reference, {"A": reference, "B": half if z < 2 else reference},
                               group=f"p{patient}"))
    groups = {c["case"]: c["group"] for c in cases}
    result = analyse(cases, ["lesion"], ["A"], "B", groups)
    pooled = result["paired"]["A"]["lesion"]["dice"]
    assert pooled["mean_difference"] == pytest.approx(2 / 3 - 1)
    slice_mean = unit_values([c["case"] for c in cases], [c["metrics"]["B"]["lesion"]["dice"] for c in cases], groups)
    assert np.mean(list(slice_mean.values())) == pytest.approx((8 + 2 * 2 / 3) / 10)  # what the old unit was
    assert pooled["tested"] and pooled["p_value"] == 2 / 2**6  # the test runs on the pooled values
    assert result["counts"]["lesion"]["sensitivity"]["B"] == 1.0  # detection apart: B found every object
    assert result["counts"]["lesion"]["false_positive_rate"]["B"] == 0.0


def test_p_floors_count_non_zero_differences_and_the_permutation_limit() -> None:
    assert smallest_p(6) == 2 / 64 and math.isnan(smallest_p(1))
    assert smallest_p(20) == pytest.approx(2 / (2**16 + 1))  # beyond exact enumeration: random flips' floor
    a = {f"u{i}": 0.5 for i in range(30)}
    b = {**a, **{f"u{i}": 0.9 for i in range(4)}}  # 26 zeros, 4 gains: n = 30 but only 4 can flip
    result = paired_comparison(a, b)
    assert result["nonzero"] == 4 and result["smallest_p"] == 2 / 16 and result["p_value"] >= 2 / 16


def test_an_all_zero_row_is_not_tested_and_leaves_the_holm_family() -> None:
    cases = [_case(f"c{i}", _square(), {"A": _square(shift=i % 3), "B": _square(shift=(i + 1) % 3),
                                        "C": _square(shift=i % 3)}) for i in range(9)]
    result = analyse(cases, ["lesion"], ["A", "C"], "B")
    tests = [result["paired"][b]["lesion"]["dice"] for b in ("A", "C")]
    assert all(t["family"] == "primary" and t["tested"] for t in tests)
    # C is A: identical scores against B, so each is adjusted over a family of 2
    assert tests[0]["p_holm"] == pytest.approx(min(1, 2 * tests[0]["p_value"]))
    same = analyse(cases, ["lesion"], ["A", "C"], "A")  # A against itself and its twin C: nothing to test
    assert all(not same["paired"][b]["lesion"]["dice"]["tested"] and math.isnan(same["paired"][b]["lesion"]["dice"]
                                                                                 ["p_holm"]) for b in ("A", "C"))


def test_signed_rank_critical_values_and_bounded_intervals() -> None:
    # two-sided 5% critical values of the signed-rank statistic from the published tables
    assert [_signed_rank_lower_critical(n) for n in (5, 6, 8, 10, 20, 30)] == [-1, 0, 3, 8, 52, 137]
    estimate, low, high = hodges_lehmann(np.arange(1, 11, dtype=float))
    assert estimate == 5.5 and low < estimate < high
    near_one = [1.0, 1.0, 0.99, 0.2, 1.0, 0.98]
    low, high, method = bootstrap_ci(near_one, (0.0, 1.0))
    assert high == 1.0 and method == "t, clipped" and bootstrap_ci(near_one)[1] > 1.0
