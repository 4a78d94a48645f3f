"""Patient-grouped cross-validation folds written as nnU-Net's ``splits_final.json``, and the patient of every
case (``autosam_groups.json``) that the report's statistics pair by."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold

from autosam.data.subset import case_ids
from autosam.errors import AutosamError
from autosam.files import atomic_write_json
from autosam.paths import Dataset, fold_has_started, require_folders

SEED = 12345  # nnU-Net's split seed
GROUPS_FILE = "autosam_groups.json"  # in nnUNet_preprocessed/DatasetXXX/: case -> patient
SPLITS_FILE = "splits_final.json"


CASE_COLUMNS = ("case", "case_id", "identifier")


def read_groups(path: Path, column: str | None = None) -> dict[str, str]:
    """case id -> group from a JSON object or a CSV: case in the first column, group in the second, or in the
    column named ``column`` (required when the CSV has more than two columns: guessing one silently mis-groups)."""
    if not path.is_file():
        raise AutosamError(f"{path}: no such groups file; give a CSV (case,group) or a JSON object case -> group")
    try:
        if path.suffix.lower() == ".json":
            if column is not None:
                raise AutosamError(f"--group-column {column}: {path} is a JSON object case -> group; drop the flag")
            groups = json.loads(path.read_text())
            if not isinstance(groups, dict):
                raise ValueError("not an object")
        else:
            groups = _csv_groups(path, list(csv.reader(path.read_text().splitlines())), column)
    except (ValueError, UnicodeDecodeError) as e:
        raise AutosamError(f"{path}: cannot be read as a groups file ({e}); use CSV case,group or a JSON object") from None
    return {str(k): str(v) for k, v in groups.items()}


def _csv_groups(path: Path, rows: list[list[str]], column: str | None) -> dict[str, str]:
    header = [c.strip() for c in rows[0]] if rows and rows[0][:1] and rows[0][0].strip().lower() in CASE_COLUMNS else None
    width = max((len(r) for r in rows), default=0)
    if column is None and width > 2:
        named = f" ({', '.join(header)})" if header else ""
        raise AutosamError(f"{path}: has {width} columns{named}; name the patient column with --group-column NAME "
                           "(the case is the first column)")
    index = 1
    if column is not None:
        if header is None or column not in header:
            raise AutosamError(f"--group-column {column}: {path} has no such column in a header row starting with "
                               f"'case' ({', '.join(header) if header else 'no header row'}); name one of its columns")
        index = header.index(column)
    body = rows[1:] if header else rows
    return {r[0].strip(): r[index].strip() for r in body if len(r) > index and r[0].strip()}


def groups_from_pattern(cases: list[str], pattern: str) -> dict[str, str]:
    """case id -> patient: group 1 of ``pattern`` matched against the whole case id."""
    fix = r"e.g. --group-pattern '(.*)_z\d+' for cases named <patient>_z<slice>"
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise AutosamError(f"--group-pattern '{pattern}': not a regular expression ({e}); {fix}") from None
    if regex.groups < 1:
        raise AutosamError(f"--group-pattern '{pattern}': has no group; put the patient part in parentheses, {fix}")
    groups = {}
    for case in cases:
        match = regex.fullmatch(case)
        if match is None or not match.group(1):
            raise AutosamError(f"--group-pattern '{pattern}': does not match case {case} (or its group 1 is empty); "
                               f"write a pattern that matches every case id whole, {fix}")
        groups[case] = match.group(1)
    return groups


def fold_count(raw_dataset_folder: Path, preprocessed_dataset_folder: Path) -> int | None:
    """How many folds the dataset's folds file defines (its own, else the preprocessed one), if any."""
    for folder in (raw_dataset_folder, preprocessed_dataset_folder):
        if (folder / SPLITS_FILE).is_file():
            return len(json.loads((folder / SPLITS_FILE).read_text()))
    return None


def resolve_folds(folds: list[int] | None, raw: Path, preprocessed: Path) -> list[int]:
    """The folds to run: all of the folds file's by default. A fold beyond it would be split at random by
    nnU-Net, ignoring patients, so it is refused."""
    count = fold_count(raw, preprocessed)
    if folds is None:
        return list(range(count or 5))
    beyond = [f for f in folds if count is not None and not 0 <= f < count]
    if beyond:
        raise AutosamError(f"--folds {beyond[0]}: the dataset's splits_final.json defines folds 0-{count - 1}; "
                           f"choose among them (default: all {count})")
    return folds


def load_groups(preprocessed_dataset_folder: Path) -> dict[str, str] | None:
    """The patient of every case recorded by ``autosam split``, or None when no groups were recorded."""
    path = Path(preprocessed_dataset_folder) / GROUPS_FILE
    if not path.is_file():
        return None
    try:
        groups = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AutosamError(f"{path}: not valid JSON ({e}); write it again with autosam split") from None
    if not isinstance(groups, dict):
        raise AutosamError(f"{path}: must be a JSON object case -> patient; write it again with autosam split")
    return {str(k): str(v) for k, v in groups.items()}


def grouped_splits(cases: list[str], groups: dict[str, str], n_splits: int = 5, source: str = "groups") -> list[dict]:
    """nnU-Net's split format; every group lies on one side of every fold, folds balanced by case count."""
    missing = [c for c in cases if c not in groups]
    if missing:
        raise AutosamError(f"{source}: no group for {len(missing)} cases (e.g. {missing[0]}); list every training case")
    labels = [groups[c] for c in cases]
    distinct = sorted(set(labels))
    if len(distinct) < n_splits:
        raise AutosamError(f"{source}: {len(distinct)} groups cannot fill {n_splits} folds; use fewer folds")
    # GroupKFold is deterministic and balances fold sizes; a seeded relabelling breaks ties reproducibly.
    order = {g: i for i, g in enumerate(np.random.default_rng(SEED).permutation(distinct))}
    splitter = GroupKFold(n_splits=n_splits)
    splits = []
    for train, val in splitter.split(cases, groups=[order[g] for g in labels]):
        splits.append({"train": sorted(cases[i] for i in train), "val": sorted(cases[i] for i in val)})
    return splits


def straddling_patient(splits: list[dict], groups: dict[str, str]) -> tuple[str, int] | None:
    """A patient with cases on both sides of a fold, and that fold; None when every fold keeps patients whole.
    A case without a group counts as its own patient."""
    for fold, split in enumerate(splits):
        train = {groups.get(c, c) for c in split["train"]}
        both = sorted(g for g in {groups.get(c, c) for c in split["val"]} if g in train)
        if both:
            return both[0], fold
    return None


def _as_sets(splits: list[dict]) -> list[tuple[set[str], set[str]]]:
    return [(set(s["train"]), set(s["val"])) for s in splits]


def trained_fold_folders(results_dataset_folder: Path) -> list[Path]:
    """Model folders with a started cross-validation fold (fold_all does not depend on the folds)."""
    return sorted({fold.parent for fold in results_dataset_folder.glob("*/fold_*")
                   if fold.name != "fold_all" and fold_has_started(fold)})


def _refuse_stale_folds(splits: list[dict], current: Path, results_dataset_folder: Path | None) -> None:
    """New folds would silently mix with folds already trained on other cases."""
    if results_dataset_folder is None:
        return
    trained = trained_fold_folders(results_dataset_folder)
    if not trained:
        return
    if current.is_file() and _as_sets(json.loads(current.read_text())) == _as_sets(splits):
        return
    raise AutosamError(
        f"{current}: folds were already trained on other splits in {', '.join(str(t) for t in trained)}; move those "
        "model folders away to train on the new folds, or keep the current folds (do not run autosam split)")


@dataclass(frozen=True)
class SplitResult:
    groups_file: Path
    splits_file: Path | None  # None: the dataset's own folds are used
    shipped: Path | None  # the dataset's own splits_final.json, when it has one
    num_folds: int
    num_patients: int


def write_grouped_splits(dataset: Dataset, groups_file: Path | None = None, pattern: str | None = None,
                         n_splits: int | None = None, group_column: str | None = None) -> SplitResult:
    """Patient-grouped folds (``n_splits``, default 5) and the groups file; a dataset's own folds are kept when
    they keep patients whole, and another fold count is then refused."""
    require_folders("nnUNet_raw", "nnUNet_preprocessed")
    raw, out = dataset.raw, dataset.preprocessed
    cases = case_ids(raw)
    if groups_file is not None:
        source, every = str(groups_file), read_groups(groups_file, group_column)
    else:
        source, every = f"--group-pattern '{pattern}'", groups_from_pattern(cases, pattern)
    missing = [c for c in cases if c not in every]
    if missing:
        raise AutosamError(f"{source}: no group for {len(missing)} cases (e.g. {missing[0]}); list every training case")
    groups = {c: every[c] for c in cases}
    shipped = raw / SPLITS_FILE
    if shipped.is_file():  # nnU-Net copies and enforces these folds; only check them
        splits = json.loads(shipped.read_text())
        if n_splits is not None and n_splits != len(splits):
            raise AutosamError(f"--num-folds {n_splits}: {shipped} defines the dataset's own {len(splits)} folds, "
                               "which nnU-Net enforces; drop --num-folds, or move that file away to split anew")
        bad = straddling_patient(splits, groups)
        if bad:
            raise AutosamError(
                f"{shipped}: patient {bad[0]} has cases in both training and validation of fold {bad[1]}; fix that "
                "file so each patient sits in one fold, or move it away to let autosam split write grouped folds")
        atomic_write_json(groups, out / GROUPS_FILE)
        return SplitResult(out / GROUPS_FILE, None, shipped, len(splits), len(set(groups.values())))
    n_splits = n_splits or 5
    splits = grouped_splits(cases, groups, n_splits, source)
    _refuse_stale_folds(splits, out / SPLITS_FILE, dataset.results if os.environ.get("nnUNet_results") else None)
    atomic_write_json(splits, out / SPLITS_FILE)
    atomic_write_json(groups, out / GROUPS_FILE)
    return SplitResult(out / GROUPS_FILE, out / SPLITS_FILE, None, n_splits, len(set(groups.values())))
