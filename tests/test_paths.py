"""nnU-Net's folders and dataset names in one place: a Dataset resolved once, and when a fold counts as trained."""

from __future__ import annotations

import pytest

from autosam.errors import AutosamError
from autosam.paths import Dataset, checkpoint_folder, fold_has_started, fold_is_finished, fold_is_trained


def _raw_dataset(nnunet_folders, name: str) -> None:
    (nnunet_folders["nnUNet_raw"] / name / "imagesTr").mkdir(parents=True)


def test_id_name_and_dataset_resolve_to_one_dataset_with_its_folders(nnunet_folders) -> None:
    _raw_dataset(nnunet_folders, "Dataset042_Liver")
    dataset = Dataset.resolve("42")
    assert dataset == Dataset.resolve("Dataset042_Liver") == Dataset.resolve(42) == Dataset(42, "Dataset042_Liver")
    assert Dataset.resolve(dataset) is dataset  # resolved once: passing it down resolves nothing again
    assert dataset.raw == nnunet_folders["nnUNet_raw"] / "Dataset042_Liver"
    assert dataset.preprocessed == nnunet_folders["nnUNet_preprocessed"] / "Dataset042_Liver"
    assert dataset.model_folder("nnUNetTrainer", "nnUNetPlans", "2d") == \
        nnunet_folders["nnUNet_results"] / "Dataset042_Liver" / "nnUNetTrainer__nnUNetPlans__2d"


def test_unknown_ids_and_unset_folders_are_one_line(nnunet_folders, monkeypatch) -> None:
    with pytest.raises(AutosamError, match="dataset 43: .*43"):
        Dataset.resolve("43")
    _raw_dataset(nnunet_folders, "Dataset044_A")
    _raw_dataset(nnunet_folders, "Dataset044_B")
    with pytest.raises(AutosamError, match="dataset id 044 matches Dataset044_A, Dataset044_B; rename one"):
        Dataset.resolve("44")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name)
    with pytest.raises(AutosamError, match="nnUNet_raw, nnUNet_preprocessed, nnUNet_results not set: export"):
        Dataset.resolve("42")


def test_a_fold_predicts_once_trained_and_a_run_skips_it_once_validated_too(tmp_path) -> None:
    fold = tmp_path / "fold_0"
    fold.mkdir()
    assert not fold_has_started(fold) and not fold_is_trained(fold)
    (fold / "checkpoint_latest.pth").touch()
    assert fold_has_started(fold) and not fold_is_trained(fold)
    (fold / "checkpoint_final.pth").touch()
    assert fold_is_trained(fold) and not fold_is_finished(fold)  # killed in its validation: continued
    (fold / "validation").mkdir()
    (fold / "validation" / "summary.json").write_text("{}")
    assert fold_is_finished(fold)


def test_the_checkpoint_folder_is_the_flag_else_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("AUTOSAM_CHECKPOINT_DIR", raising=False)
    assert checkpoint_folder() is None
    with pytest.raises(AutosamError, match="no checkpoint folder: pass --checkpoint-dir DIR or export"):
        checkpoint_folder(required=True)
    monkeypatch.setenv("AUTOSAM_CHECKPOINT_DIR", str(tmp_path / "env"))
    assert checkpoint_folder() == tmp_path / "env"
    assert checkpoint_folder(tmp_path / "flag") == tmp_path / "flag"
