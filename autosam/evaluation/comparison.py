"""The comparison itself: every method scored on the same cases and units, SAM paired against each baseline."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autosam.errors import AutosamError
from autosam.evaluation import conventions
from autosam.evaluation.collect import check_current_folds, fold_budget, reader_for, validation_metrics
from autosam.evaluation.conventions import BOUNDS, DIFFERENCE_BOUNDS, FOREGROUND_MEAN, METRICS, scored_labels
from autosam.evaluation.stats import describe, holm, paired_comparison, pooled_dice, unit_values


@dataclass
class Method:
    name: str  # "nnU-Net 2d", "nnU-Net 3d_fullres", "SAM"
    model_folder: Path


def label_rows(labels: list[str]) -> list[str]:
    """The labels compared, plus their per-case mean when there are several."""
    return labels + ([FOREGROUND_MEAN] if len(labels) > 1 else [])


def case_value(case: dict, method: str, row: str, metric: str, labels: list[str]) -> float:
    """A case's score for one row: a label's, or the mean over the labels."""
    if row != FOREGROUND_MEAN:
        return case["metrics"][method][row][metric]
    return float(np.mean([case["metrics"][method][label][metric] for label in labels]))


def row_units(cases: list[dict], method: str, row: str, metric: str, labels: list[str],
              groups: dict[str, str] | None) -> dict[str, float]:
    """unit -> value of one row: Dice pooled over a patient's voxels (the mean over labels of each label's
    pooled Dice for the foreground mean); NSD and HD95 the mean of the patient's cases."""
    names = [c["case"] for c in cases]
    if metric != "dice":
        return unit_values(names, [case_value(c, method, row, metric, labels) for c in cases], groups)
    per_label = [pooled_dice(names, [tuple(c["metrics"][method][label][k] for k in ("tp", "fp", "fn"))
                                     for c in cases], groups) for label in (labels if row == FOREGROUND_MEAN else [row])]
    return {unit: float(np.mean([values[unit] for values in per_label])) for unit in per_label[0]}


def empty_counts(cases: list[dict], labels: list[str], names: list[str]) -> dict:
    """Detection, reported apart from overlap, per label and case: how many references are empty, each
    method's false positives on them (and their rate) and its missed objects among the others (and its
    sensitivity: the share of non-empty references it found at all)."""
    out = {}
    for label in labels:
        empty = sum(c["metrics"][names[0]][label]["empty"] in ("both", "reference") for c in cases)
        false_positives = {m: sum(c["metrics"][m][label]["empty"] == "reference" for c in cases) for m in names}
        missed = {m: sum(c["metrics"][m][label]["empty"] == "prediction" for c in cases) for m in names}
        out[label] = {
            "cases": len(cases), "empty_reference": empty,
            "false_positive_on_empty_reference": false_positives, "missed_object": missed,
            "false_positive_rate": {m: v / empty if empty else math.nan for m, v in false_positives.items()},
            "sensitivity": {m: 1 - v / (len(cases) - empty) if len(cases) > empty else math.nan
                            for m, v in missed.items()},
        }
    return out


def compare(baselines: list[Method], challenger: Method, folds: list[int], gt_folder: Path,
            groups: dict[str, str] | None = None, splits: list[dict] | None = None) -> dict:
    methods = baselines + [challenger]
    names = [m.name for m in methods]
    _, dataset_json = reader_for(challenger.model_folder)
    if splits is not None:
        for m in methods:
            check_current_folds(m.model_folder, folds, splits, dataset_json["file_ending"])
    per_method = {m.name: validation_metrics(m.model_folder, folds, gt_folder) for m in methods}
    shared = sorted(set.intersection(*(set(v) for v in per_method.values())))
    if not shared:
        raise AutosamError("the methods share no validated case; were they trained on the same folds?")
    labels = list(scored_labels(dataset_json["labels"]))
    if not labels:
        raise AutosamError(f"{challenger.model_folder / 'dataset.json'}: the labels are regions (lists of ids); the "
                           "comparison scores integer labels only")
    if groups is not None and any(c not in groups for c in shared):
        missing = next(c for c in shared if c not in groups)
        raise AutosamError(f"the patient groups (autosam_groups.json) name no patient for case {missing}; write "
                           "them again with 'autosam split' for every case")
    cases = [{"case": c, "fold": per_method[names[0]][c]["fold"], "group": (groups or {}).get(c),
              "metrics": {n: per_method[n][c]["metrics"] for n in names}} for c in shared]
    return {"dataset": challenger.model_folder.parent.name, "folds": folds,
            "methods": {m.name: str(m.model_folder) for m in methods},
            **analyse(cases, labels, [b.name for b in baselines], challenger.name, groups),
            "training": {m.name: [fold_budget(m.model_folder, f) for f in folds] for m in methods}}


def analyse(cases: list[dict], labels: list[str], baselines: list[str], challenger: str,
            groups: dict[str, str] | None = None) -> dict:
    """Summaries and paired tests of ``challenger`` against each baseline on identical cases and units.

    ``cases``: {"case", "group", "metrics": {method: {label: case_metrics()'s scores and counts}}}. The primary
    endpoint is the primary row's pooled per-unit Dice; its tests against the baselines form one Holm family
    (the headline's), every other row and metric the exploratory family."""
    names = baselines + [challenger]
    rows = label_rows(labels)
    units = {n: {row: {metric: row_units(cases, n, row, metric, labels, groups) for metric in METRICS}
                 for row in rows} for n in names}
    summary = {n: {row: {metric: describe(list(units[n][row][metric].values()), BOUNDS[metric]) for metric in METRICS}
                   for row in rows} for n in names}
    paired = {b: {row: {metric: paired_comparison(units[b][row][metric], units[challenger][row][metric],
                                                  DIFFERENCE_BOUNDS[metric])
                        for metric in METRICS} for row in rows} for b in baselines}
    primary = rows[-1]  # the foreground mean when there are several labels, else the only label
    families = {"primary": [paired[b][primary]["dice"] for b in baselines],
                "exploratory": [paired[b][row][metric] for b in baselines for row in rows for metric in METRICS
                                if (row, metric) != (primary, "dice")]}
    for family, tests in families.items():
        for test, adjusted in zip(tests, holm([t["p_value"] if t["tested"] else math.nan for t in tests])):
            test["family"], test["p_holm"] = family, adjusted
    strongest = max(baselines, key=lambda n: np.nan_to_num(summary[n][primary]["dice"]["mean"], nan=-1))
    test = paired[strongest][primary]["dice"]
    unit, n_units = ("patient" if groups else "case"), len({(groups or {}).get(c["case"], c["case"]) for c in cases})
    return {"labels": labels, "rows": rows, "primary_row": primary, "baselines": baselines, "challenger": challenger,
            "strongest_baseline": strongest, "unit": unit, "n_cases": len(cases), "n_units": n_units,
            "conventions": conventions.describe(unit, n_units, len(cases)),
            "counts": empty_counts(cases, labels, names), "cases": cases, "unit_values": units, "summary": summary,
            "paired": paired, "smallest_attainable_p": {
                "raw": test["smallest_p"], "holm": min(1.0, test["smallest_p"] * len(baselines))}}


def read_splits(preprocessed_dataset: Path) -> list[dict] | None:
    path = preprocessed_dataset / "splits_final.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cv_dice(model_folder: Path, folds: list[int], gt_folder: Path, groups: dict[str, str] | None,
            splits: list[dict] | None) -> float:
    """Mean cross-validation Dice under the report's conventions (``evaluation.conventions``): every case
    counts, the foreground mean over labels, pooled per patient when the patients are known."""
    _, dataset_json = reader_for(model_folder)
    if splits is not None:
        check_current_folds(model_folder, folds, splits, dataset_json["file_ending"])
    labels = list(scored_labels(dataset_json["labels"]))
    cases = [{"case": case, "metrics": {"set-up": scored["metrics"]}}
             for case, scored in validation_metrics(model_folder, folds, gt_folder).items()]
    return float(np.mean(list(row_units(cases, "set-up", label_rows(labels)[-1], "dice", labels, groups).values())))
