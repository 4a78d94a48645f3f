"""SAM inside nnU-Net on real data: plan, preprocess, train, validate, continue, predict; stock commands too."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from autosam.cli import main
from autosam.paths import EXT_TRAINER_DIR
from autosam.trainers.sam_trainer import nnUNetTrainerSAM
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset, predict_unseen, shared_dataset

BUDGET = ["--epochs", "2", "--iterations", "3"]
FOLD_DIR = "nnUNetTrainerSAM__autosamPlans__2d_sam"


def _plan(dataset: str, *extra: str) -> None:
    assert main(["plan-and-preprocess", "-d", dataset, "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 *BUDGET, *extra]) == 0


@pytest.fixture
def busi(nnunet_folders, base_checkpoint) -> dict:
    source = busi_or_demo()
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases[:8], BUSI)
    checkpoint, _ = base_checkpoint("test_vit", 1024, 4)  # a SAM-layout file trained at another size
    unseen = nnunet_folders["nnUNet_raw"].parent / "unseen"
    unseen.mkdir()
    for case in cases[-2:]:
        (unseen / f"{case}_0000.png").write_bytes((source / "imagesTr" / f"{case}_0000.png").read_bytes())
    return {"folders": nnunet_folders, "checkpoint": checkpoint, "unseen": unseen, "source": source}


def test_busi_plan_train_validate_predict(busi) -> None:
    _plan("501", "--checkpoint", str(busi["checkpoint"]))
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu"]) == 0

    fold = busi["folders"]["nnUNet_results"] / "Dataset501_BUSI" / FOLD_DIR / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    splits = json.loads((busi["folders"]["nnUNet_preprocessed"] / "Dataset501_BUSI" / "splits_final.json").read_text())
    assert len(summary["metric_per_case"]) == len(splits[0]["val"])
    assert all("Dice" in case["metrics"]["1"] for case in summary["metric_per_case"])
    assert (fold / "progress.png").is_file()

    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    weights = checkpoint["network_weights"]
    assert not any("base_layer" in k for k in weights)  # frozen base weights are not stored
    assert all("lora_" in k or k.startswith("sam.mask_decoder.") for k in weights if k != "base_sha256")
    assert checkpoint["autosam"]["base"]["sha256"] == bytes(weights["base_sha256"].tolist()).hex()
    assert sum(v.numel() for v in weights.values()) < 0.25 * sum(
        v.numel() for v in torch.load(busi["checkpoint"], weights_only=True).values())

    out = busi["folders"]["nnUNet_raw"].parent / "predicted"
    assert main(["predict", "-d", "501", "-i", str(busi["unseen"]), "-o", str(out), "-f", "0", "--device", "cpu",
                 "--disable-tta"]) == 0
    for image in busi["unseen"].iterdir():
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / image.name.replace("_0000", ""))))
        assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape[:2]
        assert set(np.unique(prediction)) <= {0, 1}


def test_stock_nnunet_commands_run_our_trainer(busi) -> None:
    _plan("501", "--checkpoint", str(busi["checkpoint"]))
    env = {**os.environ, "nnUNet_extTrainer": str(EXT_TRAINER_DIR), "nnUNet_n_proc_DA": "0", "nnUNet_compile": "f"}
    run = lambda *cmd: subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # noqa: E731
    train = run("nnUNetv2_train", "501", "2d_sam", "1", "-tr", "nnUNetTrainerSAM", "-p", "autosamPlans",
                "-device", "cpu")
    assert train.returncode == 0, train.stderr[-2000:]
    fold = busi["folders"]["nnUNet_results"] / "Dataset501_BUSI" / FOLD_DIR / "fold_1"
    assert (fold / "validation" / "summary.json").is_file()
    out = busi["folders"]["nnUNet_raw"].parent / "stock_predicted"
    predict = run("nnUNetv2_predict", "-i", str(busi["unseen"]), "-o", str(out), "-d", "501", "-c", "2d_sam",
                  "-p", "autosamPlans", "-tr", "nnUNetTrainerSAM", "-f", "1", "-device", "cpu", "-npp", "1",
                  "-nps", "1", "--disable_tta")
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == 2
    best = run("nnUNetv2_find_best_configuration", "501", "-c", "2d_sam", "-tr", "nnUNetTrainerSAM", "-p",
               "autosamPlans", "-f", "1", "-np", "1")
    assert best.returncode == 0, best.stderr[-2000:]
    assert (busi["folders"]["nnUNet_results"] / "Dataset501_BUSI" / "inference_information.json").is_file()


def test_continue_resumes_the_epoch_counter(busi, monkeypatch) -> None:
    _plan("501", "--checkpoint", str(busi["checkpoint"]))
    original = nnUNetTrainerSAM.on_epoch_end

    def crash_after_second_epoch(self):
        original(self)
        if self.current_epoch == 2:
            raise KeyboardInterrupt  # as if the job were stopped here

    monkeypatch.setattr(nnUNetTrainerSAM, "on_epoch_end", crash_after_second_epoch)
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu", "--epochs", "3"]) == 130
    fold = busi["folders"]["nnUNet_results"] / "Dataset501_BUSI" / FOLD_DIR / "fold_0"
    assert torch.load(fold / "checkpoint_latest.pth", weights_only=True)["current_epoch"] == 2
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu", "--epochs", "3"]) == 2  # refuses to overwrite

    monkeypatch.setattr(nnUNetTrainerSAM, "on_epoch_end", original)
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu", "--epochs", "3", "--continue"]) == 0
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert final["current_epoch"] == 3 and len(final["logging"]["train_losses"]) == 3
    logs = sorted(fold.glob("training_log_*.txt"))
    assert "Epoch 2" in logs[-1].read_text() and "Epoch 0" not in logs[-1].read_text()


def test_3d_volumes_train_slicewise_and_predict_with_input_geometry(nnunet_folders) -> None:
    source = shared_dataset("Dataset506_BraTS13Flair3D")
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases[:2])
    _plan("506", "--from-scratch")
    assert main(["train", "-d", "506", "-f", "all", "--device", "cpu"]) == 0
    image = source / "imagesTr" / f"{cases[-1]}_0000.nii.gz"
    predicted = predict_unseen(image, "506", "all", nnunet_folders["nnUNet_raw"].parent)
    reference, prediction = sitk.ReadImage(str(image)), sitk.ReadImage(str(predicted))
    assert prediction.GetSize() == reference.GetSize()
    assert np.allclose(prediction.GetSpacing(), reference.GetSpacing())
    assert np.allclose(prediction.GetOrigin(), reference.GetOrigin())
    assert np.allclose(prediction.GetDirection(), reference.GetDirection())
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2, 3, 4}
