"""The verdict's conventions in one place: how cases are scored, which count, and how they are aggregated.

The report quotes ``describe()`` so that a reader of ``report.md`` alone can judge the numbers.

Every case counts for every label and every method, so the case set depends on the references alone (never
on what a method predicted, nor on which other methods were trained). Per case and label:
- reference and prediction both empty: a correct "nothing here" (Dice 1, NSD 1, HD95 0);
- reference empty, prediction not (a false positive) and reference not empty, prediction empty (a missed
  object): Dice 0, NSD 0, and HD95 = the image's diagonal in physical units, the largest distance possible;
- otherwise MONAI's Dice, NSD (tolerance ``NSD_TOLERANCE``) and HD95.
Pixels of an ``ignore`` label are left out of every label. Every method is summarised and tested on exactly
the same cases, averaged per patient first when the patients are known (the unit of analysis), so slices of
one patient count once; Dice is pooled over a patient's voxels.
"""

from __future__ import annotations

import math

NSD_TOLERANCE = 2.0  # mm (or pixels for PNG), the boundary tolerance of the normalised surface distance
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
T_INTERVAL_MAX_N = 20  # below this many units, Student's t intervals (bootstrap intervals are too narrow)
BCA_MAX_N = 2000  # above this many units, percentile intervals (BCa's jackknife grows as n²)
PERMUTATION_MAX_N = 50  # up to this many units the signed-rank p is exact (n <= 16) or from permutations
PERMUTATIONS = 2**16
ALPHA = 0.05
STATS_SEED = 12345  # the bootstrap's own seed, so that a report is reproducible from its cases
FOREGROUND_MEAN = "foreground mean"  # the per-case mean over labels, added when a dataset has several
METRICS = ("dice", "nsd", "hd95")
HIGHER_IS_BETTER = {"dice": True, "nsd": True, "hd95": False}
BOUNDS = {"dice": (0.0, 1.0), "nsd": (0.0, 1.0), "hd95": (0.0, math.inf)}  # CIs are clipped to a metric's range
DIFFERENCE_BOUNDS = {"dice": (-1.0, 1.0), "nsd": (-1.0, 1.0), "hd95": (-math.inf, math.inf)}


def scored_labels(labels: dict) -> dict[str, int]:
    """The dataset.json labels that are scored: integer foreground labels, not ``ignore`` nor regions."""
    return {k: v for k, v in labels.items() if isinstance(v, int) and v != 0 and k != "ignore"}


def worst_distance(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """The image diagonal in physical units: HD95 of a missed object or of a false positive."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def empty_scores(reference_empty: bool, prediction_empty: bool, diagonal: float) -> dict[str, float] | None:
    """Scores fixed by the rules above, or None when both masks hold the label (measure it)."""
    if reference_empty and prediction_empty:
        return {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    if reference_empty or prediction_empty:
        return {"dice": 0.0, "nsd": 0.0, "hd95": diagonal}
    return None


def describe(unit: str, n_units: int, n_cases: int) -> list[str]:
    """The conventions in the report's words."""
    per = (f"per patient (n = {n_units} patients from {n_cases} cases; a patient's cases are pooled first)"
           if unit == "patient" else
           f"per case (n = {n_cases}; no patient groups are known, so cases are treated as independent — "
           "record patients with 'autosam split --groups' or '--group-pattern' if several cases share one)")
    return [
        f"Unit of analysis: {per}.",
        ("Primary endpoint, fixed before any result: the mean over units of the pooled Dice of the primary row (the "
         "foreground mean over labels when there are several), challenger minus the strongest baseline. A unit's "
         "pooled Dice is 2·ΣTP / (2·ΣTP + ΣFP + ΣFN) over all its voxels, so slices empty in both masks do not "
         "inflate it (1 only when neither mask has the label anywhere); detection is reported apart, per case: "
         "false positives on empty references and objects found. NSD and HD95 are the mean of a unit's cases."),
        ("Every case counts for every label and method, so the case set depends on the references alone: a label "
         "absent from both reference and prediction scores Dice 1, NSD 1, HD95 0; a false positive on an empty "
         "reference and a missed object score Dice 0, NSD 0 and HD95 = the image diagonal."),
        (f"Primary test: the paired sign-flip permutation test of the mean difference (scipy.stats."
         f"permutation_test; exact up to {int(math.log2(PERMUTATIONS))} non-zero differences, else {PERMUTATIONS:,} "
         f"random flips; a t-test "
         f"above {PERMUTATION_MAX_N}), beside the mean's {CONFIDENCE:.0%} CI: Student's t below {T_INTERVAL_MAX_N} "
         f"units, else bootstrap ({BOOTSTRAP_RESAMPLES:,} resamples, BCa; percentile where BCa is degenerate or "
         f"above {BCA_MAX_N:,} units), clipped to the metric's range. The headline states a direction only when "
         "that test rejects. Secondary: the Hodges–Lehmann estimate of the pseudo-median with the CI from inverting "
         "the Wilcoxon signed-rank test, and that test's p (zero differences split between the signs) — the "
         "typical unit, a different question than the mean. Rows with fewer than two non-zero differences are not "
         "tested. Holm's correction (statsmodels) runs over two families: the primary endpoint against each "
         "baseline, and every other label × metric × baseline (exploratory); raw and adjusted p both shown; "
         "intervals are not adjusted."),
        (f"NSD tolerance {NSD_TOLERANCE:g} mm (pixels for PNG images); HD95 in mm (pixels for PNG); Dice and NSD: "
         "higher is better, HD95: lower is better."),
    ]
