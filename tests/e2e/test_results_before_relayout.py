"""A SAM model trained by the autosam release before the stage-package re-layout (its results folder, kept in
tests/data) still loads, predicts and reports: nothing in nnU-Net's results names an autosam module."""

from __future__ import annotations

import shutil
from pathlib import Path

from autosam.cli import main
from autosam.evaluation.collect import fold_budget
from autosam.experiments.demo import DEMO_DATA, DEMO_DATASET
from autosam.paths import Dataset

TRAINED = Path(__file__).parents[1] / "data" / "results_before_relayout" / DEMO_DATASET
MODEL = "nnUNetTrainerSAM__autosamPlans__2d_sam"


def test_a_fold_trained_before_the_relayout_predicts_and_reports_its_seed(nnunet_folders, tmp_path) -> None:
    shutil.copytree(TRAINED, nnunet_folders["nnUNet_results"] / DEMO_DATASET)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("busi_ben001_0000.png", "busi_mal001_0000.png"):
        shutil.copy(DEMO_DATA / "imagesTr" / name, images / name)
    out = tmp_path / "out"
    assert main(["predict", "-d", "901", "-i", str(images), "-o", str(out), "--device", "cpu", "--disable-tta"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["busi_ben001.png", "busi_mal001.png"]
    # the seed of a fold trained then lives in nnU-Net's debug.json; the report still finds it
    assert fold_budget(Dataset.resolve("901").results / MODEL, 0)["seed"] == 5
