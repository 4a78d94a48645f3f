"""Which cases train: the folds nnU-Net will use and the few-shot draw of K cases from a fold's training part.

``select_cases`` is drawn with the run's seed, the repeat and the fold, so every method of a repeat gets the
same K; one case per patient when the patients are known; nested in K (the 5 cases of a repeat include its 1).
It runs in nnU-Net's split step (``autosam.trainers.fewshot``), where the plans' few-shot block asks for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nnunetv2.utilities.crossval_split import generate_crossval_split

from autosam.data.subset import case_ids
from autosam.errors import AutosamError

FEWSHOT_KEY = "autosam_fewshot"  # top-level block of a few-shot plans file: train_cases, repeat, seed


def patients_of(cases: list[str], groups: dict[str, str] | None) -> dict[str, list[str]]:
    """patient -> its cases (sorted); a case without a recorded patient is its own patient."""
    patients: dict[str, list[str]] = {}
    for case in sorted(cases):
        patients.setdefault((groups or {}).get(case, case), []).append(case)
    return patients


def select_cases(train: list[str], train_cases: int, seed: int, repeat: int, fold: int,
                 groups: dict[str, str] | None = None) -> list[str]:
    """``train_cases`` cases of a fold's training part, one per patient when ``groups`` are known.

    Every draw is made whatever K is (a slice per patient, then an order of the patients), so a repeat's sets are
    nested in K and depend only on (seed, repeat, fold) and the training part."""
    patients = patients_of(train, groups)
    if not 1 <= train_cases <= len(patients):
        unit = "patients" if groups else "cases"
        raise AutosamError(f"--train-cases {train_cases}: the training part of fold {fold} holds {len(patients)} "
                           f"{unit}; choose K from 1 to {len(patients)}")
    rng = np.random.default_rng([seed, repeat, fold])
    names = sorted(patients)
    one_each = {p: patients[p][int(rng.integers(len(patients[p])))] for p in names}
    order = rng.permutation(len(names))
    return sorted(one_each[names[i]] for i in order[:train_cases])


def fold_splits(raw: Path, preprocessed: Path) -> list[dict]:
    """The folds nnU-Net will train on: ``splits_final.json`` (preprocessed, else the dataset's own), else the
    seeded 5-fold split nnU-Net writes on its first training."""
    for folder in (preprocessed, raw):
        if (folder / "splits_final.json").is_file():
            return json.loads((folder / "splits_final.json").read_text())
    return generate_crossval_split(case_ids(raw), seed=12345, n_splits=5)


def check_train_cases(train_cases: list[int], repeats: int, folds: list[int], splits: list[dict],
                      groups: dict[str, str] | None) -> list[int]:
    """The K values in increasing order; a K that some fold's training part cannot give (in patients when they
    are known) is refused before any training."""
    if repeats < 1:
        raise AutosamError(f"--repeats {repeats}: give 1 or more")
    for fold in folds:
        if not 0 <= fold < len(splits):
            raise AutosamError(f"--folds {fold}: the split has folds 0 to {len(splits) - 1}")
        for k in train_cases:
            select_cases(splits[fold]["train"], k, 0, 0, fold, groups)
    return sorted(set(train_cases))
