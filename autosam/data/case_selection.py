"""Which cases train: the folds nnU-Net will use and the few-shot draw of K cases from a fold's training part.

``select_cases`` is drawn with the run's seed, the repeat and the fold, so every method of a repeat gets the
same K; one case per patient when the patients are known; nested in K (the 5 cases of a repeat include its 1);
only cases whose reference holds foreground, so a draw never trains on empty slices alone. It runs in nnU-Net's
split step (``autosam.trainers.fewshot``), where the plans' few-shot block asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
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


def labelled_foreground(folder: Path, labels: str = "labelsTr") -> Callable[[str], bool]:
    """case -> whether its reference in ``folder / labels`` holds a label other than background and ignore
    (``folder``: a raw dataset, or a preprocessed one with ``labels="gt_segmentations"``); each file read once."""
    dataset_json = json.loads((folder / "dataset.json").read_text())
    ending, ignore = dataset_json["file_ending"], dataset_json["labels"].get("ignore")
    reader = None

    @cache
    def has_foreground(case: str) -> bool:
        nonlocal reader
        path = folder / labels / f"{case}{ending}"
        if not path.is_file():
            raise AutosamError(f"{path}: no reference for case {case}; the few-shot draw reads every case's labels")
        reader = reader or determine_reader_writer_from_dataset_json(dataset_json, str(path), verbose=False)()
        seg, _ = reader.read_seg(str(path))
        return bool(((seg > 0) & (seg != ignore)).any())

    return has_foreground


def select_cases(
    train: list[str],
    train_cases: int,
    seed: int,
    repeat: int,
    fold: int,
    groups: dict[str, str] | None = None,
    has_foreground: Callable[[str], bool] | None = None,
) -> list[str]:
    """``train_cases`` cases of a fold's training part, one per patient when ``groups`` are known, each holding
    foreground when ``has_foreground`` says which do (patients without any are never drawn).

    Every draw is made whatever K is (an order of each patient's cases, then an order of the patients); each
    patient in turn gives the first case of its order that holds foreground, so a repeat's sets are nested in K
    and depend only on (seed, repeat, fold), the training part and the references. Labels are read lazily: about
    K patients' worth unless the draw runs short."""
    patients = patients_of(train, groups)
    rng = np.random.default_rng([seed, repeat, fold])
    names = sorted(patients)
    case_orders = {p: [patients[p][i] for i in rng.permutation(len(patients[p]))] for p in names}
    wanted = train_cases if train_cases >= 1 else len(names)  # K < 1: refused below with the K it could have
    chosen = []
    for i in rng.permutation(len(names)):
        if len(chosen) == wanted:
            break
        usable = (c for c in case_orders[names[i]] if has_foreground is None or has_foreground(c))
        case = next(usable, None)
        if case is not None:
            chosen.append(case)
    if not 1 <= train_cases <= len(chosen):
        unit = "patients" if groups else "cases"
        held = f"{len(chosen)} {unit}" + (" with foreground" if has_foreground is not None else "")
        raise AutosamError(
            f"--train-cases {train_cases}: the training part of fold {fold} holds {held}; choose K "
            f"from 1 to {len(chosen)}"
        )
    return sorted(chosen)


def fold_splits(raw: Path, preprocessed: Path) -> list[dict]:
    """The folds nnU-Net will train on: ``splits_final.json`` (preprocessed, else the dataset's own), else the
    seeded 5-fold split nnU-Net writes on its first training."""
    for folder in (preprocessed, raw):
        if (folder / "splits_final.json").is_file():
            return json.loads((folder / "splits_final.json").read_text())
    return generate_crossval_split(case_ids(raw), seed=12345, n_splits=5)


def check_train_cases(
    train_cases: list[int],
    repeats: int,
    folds: list[int],
    splits: list[dict],
    groups: dict[str, str] | None,
    has_foreground: Callable[[str], bool] | None = None,
) -> list[int]:
    """The K values in increasing order; a K that some fold's training part cannot give (in patients when they
    are known, with foreground when ``has_foreground`` is given) is refused before any training."""
    if repeats < 1:
        raise AutosamError(f"--repeats {repeats}: give 1 or more")
    for fold in folds:
        if not 0 <= fold < len(splits):
            raise AutosamError(f"--folds {fold}: the split has folds 0 to {len(splits) - 1}")
        for k in train_cases:
            select_cases(splits[fold]["train"], k, 0, 0, fold, groups, has_foreground)
    return sorted(set(train_cases))
