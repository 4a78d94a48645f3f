"""No code runs from a checkpoint: a fold file that needs pickled code is refused before nnU-Net loads it."""

from __future__ import annotations

from pathlib import Path

import torch

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATASET
from tests.conftest import PickledPayload


def test_predict_refuses_a_checkpoint_that_needs_code(nnunet_folders, tmp_path: Path, capsys) -> None:
    fold = nnunet_folders["nnUNet_results"] / "Dataset901_Planted" / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    fold.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"network_weights": {}, "payload": PickledPayload(marker)}, fold / "checkpoint_final.pth")
    images = tmp_path / "images"
    images.mkdir()

    code = main(["predict", "-d", "901", "-i", str(images), "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    torch.load(fold / "checkpoint_final.pth", weights_only=False)  # the positive control: a plain load runs it
    assert marker.exists()
    assert f"checkpoint {fold / 'checkpoint_final.pth'}: needs code to be read" in err and len(err.splitlines()) == 1


def test_train_continue_refuses_a_checkpoint_that_needs_code(planned_demo, tmp_path: Path, capsys) -> None:
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_dec_lora", "--image-size", "64",
                 "--from-scratch"]) == 0
    fold = planned_demo["nnUNet_results"] / DEMO_DATASET / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    fold.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"network_weights": {}, "payload": PickledPayload(marker)}, fold / "checkpoint_latest.pth")
    capsys.readouterr()

    code = main(["train", "-d", "901", "-f", "0", "--continue", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    last = err.splitlines()[-1]  # the line before it logs which checkpoint training continues from
    assert last.startswith(f"autosam: error: checkpoint {fold / 'checkpoint_latest.pth'}: needs code to be read (it "
                           "pickles ") and last.endswith("autosam never runs code from a checkpoint: use one written "
                                                         "by nnU-Net or autosam, or train the fold again")
