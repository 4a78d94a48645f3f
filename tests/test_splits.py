"""Identical folds for every method; patient-grouped folds from a groups file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autosam.cli import main
from autosam.errors import AutosamError
from autosam.splits import grouped_splits, read_groups
from tests.conftest import case_ids, copy_subset, shared_dataset


def _patient(case: str) -> str:
    return case.rsplit("_", 1)[0]  # brats13_p0001_z033 -> brats13_p0001


def test_groups_never_straddle_a_fold() -> None:
    cases = [f"p{p}_z{z}" for p in range(7) for z in range(p + 2)]
    groups = {c: c.split("_")[0] for c in cases}
    splits = grouped_splits(cases, groups)
    assert len(splits) == 5
    assert sorted(c for s in splits for c in s["val"]) == sorted(cases)
    for split in splits:
        assert not {groups[c] for c in split["train"]} & {groups[c] for c in split["val"]}
        assert sorted(split["train"] + split["val"]) == sorted(cases)
    assert grouped_splits(cases, groups) == splits  # deterministic


def test_groups_file_formats_and_errors(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("case,patient\na_1,a\na_2,a\n")
    (tmp_path / "g.json").write_text(json.dumps({"a_1": "a", "a_2": "a"}))
    assert read_groups(tmp_path / "g.csv") == read_groups(tmp_path / "g.json") == {"a_1": "a", "a_2": "a"}
    with pytest.raises(AutosamError, match="no group for 1 cases"):
        grouped_splits(["a_1", "b_1"], {"a_1": "a"}, source="g.csv")
    with pytest.raises(AutosamError, match="2 groups cannot fill 5 folds"):
        grouped_splits(["a_1", "b_1"], {"a_1": "a", "b_1": "b"})


def test_split_command_and_identical_folds_for_nnunet_and_sam(nnunet_folders, tmp_path: Path) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from autosam.training import make_trainer
    from trainers.sam_trainer import nnUNetTrainerSAM

    source = shared_dataset("Dataset503_BraTS13FlairWT")
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases)
    groups = tmp_path / "groups.csv"
    groups.write_text("case,patient\n" + "".join(f"{c},{_patient(c)}\n" for c in cases))
    assert main(["plan-and-preprocess", "-d", "503", "--setup", "test_vit_dec_lora", "--image-size", "64",
                 "--from-scratch"]) == 0
    assert main(["split", "-d", "503", "--groups", str(groups)]) == 0

    for fold in range(5):
        baseline = make_trainer("503", fold, nnUNetTrainer, "nnUNetPlans", "2d").do_split()
        sam = make_trainer("503", fold, nnUNetTrainerSAM).do_split()
        assert baseline == sam
        train, val = sam
        assert not {_patient(c) for c in train} & {_patient(c) for c in val}
