"""Patient-grouped cross-validation folds written as nnU-Net's ``splits_final.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold

from autosam.errors import AutosamError
from autosam.files import atomic_write_json

SEED = 12345  # nnU-Net's split seed


def read_groups(path: Path) -> dict[str, str]:
    """case id -> group from a JSON object or a CSV whose first two columns are case and group."""
    if not path.is_file():
        raise AutosamError(f"{path}: no such groups file; give a CSV (case,group) or a JSON object case -> group")
    try:
        if path.suffix.lower() == ".json":
            groups = json.loads(path.read_text())
            if not isinstance(groups, dict):
                raise ValueError("not an object")
        else:
            rows = list(csv.reader(path.read_text().splitlines()))
            if rows and rows[0][:1] and rows[0][0].strip().lower() in ("case", "case_id", "identifier"):
                rows = rows[1:]
            groups = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2 and r[0].strip()}
    except (ValueError, UnicodeDecodeError) as e:
        raise AutosamError(f"{path}: cannot be read as a groups file ({e}); use CSV case,group or a JSON object") from None
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


def write_grouped_splits(dataset: str, groups_file: Path, n_splits: int = 5) -> Path:
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    from autosam.nnunet_env import dataset_name, require_folders

    folders = require_folders("nnUNet_raw", "nnUNet_preprocessed")
    name = dataset_name(dataset)
    raw = folders["nnUNet_raw"] / name
    if (raw / "splits_final.json").is_file():
        raise AutosamError(
            f"{raw / 'splits_final.json'}: the dataset ships its own folds, which nnU-Net enforces; "
            "use those, or move that file away to write grouped folds")
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = sorted(get_identifiers_from_splitted_dataset_folder(str(raw / "imagesTr"), ending))
    splits = grouped_splits(cases, read_groups(groups_file), n_splits, str(groups_file))
    target = folders["nnUNet_preprocessed"] / name / "splits_final.json"
    atomic_write_json(splits, target)
    return target
