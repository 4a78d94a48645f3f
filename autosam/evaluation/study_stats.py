"""Statistics of the ablation and few-shot studies: per-unit cross-validation Dice, intervals kept on Dice's
bounded scale, and paired tests against a reference fixed before the results, Holm-adjusted over the family.

The tests and intervals are ``stats``' (``describe``, ``paired_comparison``, ``holm``); this module only picks
what is compared with what and clips the intervals: a mean Dice lies in [0, 1] and a difference of two in
[-1, 1], while a Student-t interval of a few values can reach past either end.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from autosam.evaluation.collect import check_current_folds, reader_for, validation_metrics
from autosam.evaluation.comparison import label_rows, row_units
from autosam.evaluation.conventions import scored_labels
from autosam.evaluation.stats import describe, holm, paired_comparison

DICE_RANGE, DIFFERENCE_RANGE = (0.0, 1.0), (-1.0, 1.0)


def cv_units(
    model_folder: Path, folds: list[int], gt_folder: Path, groups: dict[str, str] | None, splits: list[dict] | None
) -> dict[str, float]:
    """unit -> cross-validation Dice under the report's conventions (``comparison.cv_dice`` is their mean): the
    foreground mean over labels, per patient when the patients are known, else per case."""
    _, dataset_json = reader_for(model_folder)
    if splits is not None:
        check_current_folds(model_folder, folds, splits, dataset_json["file_ending"])
    labels = list(scored_labels(dataset_json["labels"]))
    cases = [
        {"case": case, "metrics": {"model": scored["metrics"]}}
        for case, scored in validation_metrics(model_folder, folds, gt_folder).items()
    ]
    return row_units(cases, "model", label_rows(labels)[-1], "dice", labels, groups)


def clip(interval, bounds: tuple[float, float]) -> list[float]:
    """``interval`` (low, high) inside ``bounds``; NaN ends stay NaN."""
    return [v if math.isnan(v) else float(min(max(v, bounds[0]), bounds[1])) for v in interval]


def bounded_mean(values) -> dict:
    """``stats.describe`` of Dice values, its 95% CI clipped to [0, 1]."""
    summary = describe(list(values))
    return {**summary, "ci95": clip(summary["ci95"], DICE_RANGE)}


def paired_family(pairs: dict) -> dict:
    """``pairs``: key -> (reference units, other units). Each ``stats.paired_comparison`` (other minus reference
    over the units both have) with its CI clipped to [-1, 1] and ``p_holm``, Holm-adjusted over this family (NaN
    p-values stay out of it)."""
    tests = {key: paired_comparison(reference, other) for key, (reference, other) in pairs.items()}
    for test, adjusted in zip(tests.values(), holm([t["p_value"] for t in tests.values()])):
        test["ci95"] = clip(test["ci95"], DIFFERENCE_RANGE)
        test["p_holm"] = adjusted
    return tests


def against_reference(reference: dict[str, float], others: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Each of ``others`` (name -> unit -> Dice) against ``reference``, one Holm family (``paired_family``)."""
    return paired_family({name: (reference, units) for name, units in others.items()})


def repeat_interval(values: list[float], bounds: tuple[float, float]) -> list[float] | None:
    """The 95% CI of the mean over repeats (``stats.describe``'s: Student's t for a few), clipped to ``bounds``;
    None below two repeats."""
    return clip(describe(values)["ci95"], bounds) if len(values) > 1 else None


def mean_over_repeats(per_repeat: list[dict[str, float]]) -> dict[str, float]:
    """unit -> its value averaged over the repeats that scored it."""
    units = sorted({u for values in per_repeat for u in values})
    return {u: float(np.mean([values[u] for values in per_repeat if u in values])) for u in units}
