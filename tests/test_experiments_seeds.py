"""Several seeds: the first keeps the run's identifiers, each further seed trains under a plans identifier of its own."""

from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from autosam.errors import AutosamError
from autosam.experiments.seeds import check_seeds, seed_trainings
from autosam.paths import Dataset
from autosam.trainers.fold_jobs import FoldJob, Training
from autosam.trainers.fold_training import Budget
from autosam.trainers.sam_trainer import nnUNetTrainerSAM


def test_each_further_seed_trains_its_own_model_folders(planned_demo) -> None:
    dataset = Dataset.resolve("901")
    trainings = [
        Training(nnUNetTrainer, "nnUNetPlans", "2d", Budget(), "nnU-Net 2d"),
        Training(nnUNetTrainerSAM, "autosamPlans", "2d_sam", Budget(), "SAM"),
    ]
    per_seed = seed_trainings(dataset, trainings, [0, 7])
    assert per_seed[0] is trainings  # the first seed: today's identifiers, so earlier results stay valid
    assert [(t.plans, t.label) for t in per_seed[7]] == [
        ("nnUNetPlans_seed7", "nnU-Net 2d, seed 7"),
        ("autosamPlans_seed7", "SAM, seed 7"),
    ]
    folders = {
        FoldJob(dataset, 0, t, torch.device("cpu"), seed, False).output_folder.parent.name
        for seed, ts in per_seed.items()
        for t in ts
    }
    assert folders == {
        "nnUNetTrainer__nnUNetPlans__2d",
        "nnUNetTrainerSAM__autosamPlans__2d_sam",
        "nnUNetTrainer__nnUNetPlans_seed7__2d",
        "nnUNetTrainerSAM__autosamPlans_seed7__2d_sam",
    }
    base = json.loads((dataset.preprocessed / "autosamPlans.json").read_text())
    copy = json.loads((dataset.preprocessed / "autosamPlans_seed7.json").read_text())
    assert copy["autosam_seed"] == {"seed": 7, "plans": "autosamPlans"} and copy["plans_name"] == "autosamPlans_seed7"
    assert copy["configurations"]["2d_sam"]["sam"]["seed"] == 7
    assert copy["configurations"]["2d"] == base["configurations"]["2d"]  # the same preprocessed data

    with pytest.raises(AutosamError, match="--seed 1 2 1: a seed is given twice"):
        check_seeds([1, 2, 1])
