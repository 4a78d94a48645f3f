"""Identical folds for every method; patient-grouped folds from a groups file or a name pattern; the groups file
the report reads; dataset folds that split a patient and new folds after training are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from PIL import Image

from autosam.cli import main
from autosam.data.checks import check_dataset
from autosam.data.splits import grouped_splits, load_groups, read_groups
from autosam.errors import AutosamError
from autosam.paths import Dataset
from autosam.trainers.fold_training import make_trainer
from autosam.trainers.sam_trainer import nnUNetTrainerSAM
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
    source = shared_dataset("Dataset503_BraTS13FlairWT")
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases)
    groups = tmp_path / "groups.csv"
    groups.write_text("case,patient\n" + "".join(f"{c},{_patient(c)}\n" for c in cases))
    assert main(["plan-and-preprocess", "-d", "503", "--setup", "test_vit_dec_lora", "--image-size", "64",
                 "--from-scratch"]) == 0
    assert main(["split", "-d", "503", "--groups", str(groups)]) == 0

    for fold in range(5):
        baseline = make_trainer(Dataset.resolve("503"), fold, nnUNetTrainer, "nnUNetPlans", "2d").do_split()
        sam = make_trainer(Dataset.resolve("503"), fold, nnUNetTrainerSAM).do_split()
        assert baseline == sam
        train, val = sam
        assert not {_patient(c) for c in train} & {_patient(c) for c in val}


PATTERN = r"(.*)_z\d+"
SLICES = "Dataset990_Slices"


def _png_dataset(raw: Path, cases: list[str], name: str = SLICES, splits: list[dict] | None = None) -> Path:
    """A small nnU-Net raw dataset of 16 x 16 PNGs, one image per case, optionally with its own folds."""
    folder = raw / name
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    label = np.zeros((16, 16), np.uint8)
    label[4:12, 4:12] = 1
    for case in cases:
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(label).save(folder / "labelsTr" / f"{case}.png")
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "target": 1}, "numTraining": len(cases),
            "file_ending": ".png"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    if splits is not None:
        (folder / "splits_final.json").write_text(json.dumps(splits))
    return folder


def _slice_cases(patients: int = 7) -> list[str]:
    return [f"pat{p:02d}_z{z:02d}" for p in range(patients) for z in range(p % 3 + 2)]


def _straddling(splits: list[dict], patient=_patient) -> set[str]:
    return {p for s in splits for p in {patient(c) for c in s["train"]} & {patient(c) for c in s["val"]}}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_group_pattern_writes_grouped_folds_and_groups_file(nnunet_folders, capsys) -> None:
    cases = _slice_cases()
    _png_dataset(nnunet_folders["nnUNet_raw"], cases)
    assert main(["split", "-d", "990", "--group-pattern", PATTERN]) == 0
    out = nnunet_folders["nnUNet_preprocessed"] / SLICES
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(c for s in splits for c in s["val"]) == cases
    assert not _straddling(splits)
    assert json.loads((out / "autosam_groups.json").read_text()) == {c: _patient(c) for c in cases}
    assert load_groups(out) == {c: _patient(c) for c in cases}
    assert load_groups(nnunet_folders["nnUNet_preprocessed"]) is None
    assert "7 patients" in capsys.readouterr().out


def test_group_pattern_on_real_slices(nnunet_folders) -> None:
    source = shared_dataset("Dataset503_BraTS13FlairWT")
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases)  # without the dataset's own folds
    assert main(["split", "-d", "503", "--group-pattern", PATTERN, "--num-folds", "3"]) == 0
    out = nnunet_folders["nnUNet_preprocessed"] / source.name
    assert not _straddling(json.loads((out / "splits_final.json").read_text()))
    assert load_groups(out) == {c: _patient(c) for c in cases}
    assert len(set(load_groups(out).values())) == 6


@pytest.mark.parametrize("pattern, named", [(r".*_z\d+", "has no group"), (r"(.*)_s\d+", "pat00_z00"),
                                            (r"(.*_z\d+", "not a regular expression")])
def test_bad_pattern_is_one_line(pattern: str, named: str, nnunet_folders, capsys) -> None:
    _png_dataset(nnunet_folders["nnUNet_raw"], _slice_cases())
    assert main(["split", "-d", "990", "--group-pattern", pattern]) == 2
    line = _one_error_line(capsys)
    assert named in line and "--group-pattern" in line and "e.g." in line
    assert not (nnunet_folders["nnUNet_preprocessed"] / SLICES).exists()


def test_shipped_patient_consistent_folds_are_kept(nnunet_folders, capsys) -> None:
    source = shared_dataset("Dataset503_BraTS13FlairWT")
    cases = case_ids(source)
    target = copy_subset(source, nnunet_folders["nnUNet_raw"], cases)
    shutil.copy(source / "splits_final.json", target / "splits_final.json")
    assert main(["split", "-d", "503", "--group-pattern", PATTERN]) == 0
    out = nnunet_folders["nnUNet_preprocessed"] / source.name
    assert sorted(p.name for p in out.iterdir()) == ["autosam_groups.json"]
    assert load_groups(out) == {c: _patient(c) for c in cases}
    assert "dataset's own 3 folds" in capsys.readouterr().out


def test_shipped_folds_splitting_a_patient_are_refused(nnunet_folders, capsys) -> None:
    cases = _slice_cases()
    mixed = [{"train": [c for c in cases if c != "pat01_z00"], "val": ["pat01_z00"]}]  # pat01_z01 trains
    _png_dataset(nnunet_folders["nnUNet_raw"], cases, splits=mixed)
    assert main(["split", "-d", "990", "--group-pattern", PATTERN]) == 2
    line = _one_error_line(capsys)
    assert "patient pat01" in line and "splits_final.json" in line and "fold 0" in line
    assert not (nnunet_folders["nnUNet_preprocessed"] / SLICES).exists()


def test_new_folds_after_training_are_refused(nnunet_folders, capsys) -> None:
    _png_dataset(nnunet_folders["nnUNet_raw"], _slice_cases())
    assert main(["split", "-d", "990", "--group-pattern", PATTERN]) == 0
    splits_file = nnunet_folders["nnUNet_preprocessed"] / SLICES / "splits_final.json"
    before = splits_file.read_text()
    model = nnunet_folders["nnUNet_results"] / SLICES / "nnUNetTrainer__nnUNetPlans__2d"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    assert main(["split", "-d", "990", "--group-pattern", PATTERN]) == 0  # same folds: nothing changes
    capsys.readouterr()
    assert main(["split", "-d", "990", "--group-pattern", PATTERN, "--num-folds", "3"]) == 2
    line = _one_error_line(capsys)
    assert str(model) in line and "move" in line and "keep the current folds" in line
    assert splits_file.read_text() == before
    assert main(["split", "-d", "990", "--group-pattern", r"(pat0\d)_z0\d"]) == 0  # same patients, other pattern


def test_validate_warns_about_slices_without_groups(nnunet_folders, capsys) -> None:
    raw = nnunet_folders["nnUNet_raw"]
    _png_dataset(raw, _slice_cases())
    _png_dataset(raw, [f"{k}_{i:03d}" for k in ("case", "liver") for i in range(3)], "Dataset991_Cases")
    _png_dataset(raw, [f"busi_{k}{i:03d}" for k in ("ben", "mal") for i in range(3)], "Dataset992_Busi")
    _png_dataset(raw, [f"pat{p:02d}_z{p:02d}" for p in range(6)], "Dataset993_OneSliceEach")
    assert main(["validate", "-d", "990"]) == 0
    warnings = [w for w in capsys.readouterr().out.splitlines() if "slices" in w]
    assert len(warnings) == 1
    assert "20 cases look like slices of 7 patients" in warnings[0] and "pat00_z00, pat00_z01" in warnings[0]
    assert f"autosam split -d 990 --group-pattern '{PATTERN}'" in warnings[0]
    for other in ("991", "992", "993"):
        assert not [w for w in check_dataset(Dataset.resolve(other)) if "slices" in w.message]
    assert main(["split", "-d", "990", "--group-pattern", PATTERN]) == 0
    assert not [w for w in check_dataset(Dataset.resolve("990")) if "slices" in w.message]  # groups recorded


def test_csv_of_more_columns_needs_the_group_column_named(tmp_path: Path) -> None:
    csv_file = tmp_path / "cases.csv"
    csv_file.write_text("case,source_image,patientid\na_1,img7.png,a\na_2,img8.png,a\nb_1,img9.png,b\n")
    with pytest.raises(AutosamError, match=r"has 3 columns \(case, source_image, patientid\).*--group-column"):
        read_groups(csv_file)
    assert read_groups(csv_file, "patientid") == {"a_1": "a", "a_2": "a", "b_1": "b"}
    with pytest.raises(AutosamError, match="--group-column patient: .* no such column"):
        read_groups(csv_file, "patient")


def test_split_command_takes_the_named_group_column(nnunet_folders, tmp_path: Path) -> None:
    cases = _slice_cases()
    _png_dataset(nnunet_folders["nnUNet_raw"], cases)
    csv_file = tmp_path / "cases.csv"
    csv_file.write_text("case,scan,patientid\n" + "".join(f"{c},{c}.png,{_patient(c)}\n" for c in cases))
    assert main(["split", "-d", "990", "--groups", str(csv_file)]) == 2
    assert main(["split", "-d", "990", "--groups", str(csv_file), "--group-column", "patientid"]) == 0
    assert load_groups(nnunet_folders["nnUNet_preprocessed"] / SLICES) == {c: _patient(c) for c in cases}


def test_num_folds_against_the_datasets_own_folds_is_refused(nnunet_folders, capsys) -> None:
    cases = _slice_cases()
    own = [{"train": [c for c in cases if not c.startswith(p)], "val": [c for c in cases if c.startswith(p)]}
           for p in ("pat00", "pat01")]
    _png_dataset(nnunet_folders["nnUNet_raw"], cases, splits=own)
    assert main(["split", "-d", "990", "--group-pattern", PATTERN, "--num-folds", "3"]) == 2
    line = _one_error_line(capsys)
    assert "--num-folds 3" in line and "splits_final.json" in line and "2 folds" in line
    assert main(["split", "-d", "990", "--group-pattern", PATTERN, "--num-folds", "2"]) == 0
