"""Few-shot runs: a training seed per repeat, shared by every method of the repeat and recorded in the plans, and
the baseline declared before training."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from autosam.data.case_selection import FEWSHOT_KEY
from autosam.experiments.fewshot import (
    FewShotModel,
    declared_baseline,
    fewshot_jobs,
    training_seed,
    write_plans,
)
from autosam.paths import Dataset
from autosam.trainers.fold_jobs import Training
from autosam.trainers.fold_training import Budget


def test_each_repeat_trains_every_method_with_a_seed_of_its_own() -> None:
    seeds = [training_seed(0, r) for r in range(4)]
    assert len(set(seeds)) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [training_seed(0, r) for r in range(4)] and training_seed(1, 0) != seeds[0]

    trainings, models = [], []
    for repeat in (0, 1):
        for method, plans in (("nnU-Net 2d", "nnUNetPlans"), ("SAM", "autosamPlans")):
            label = f"{method}, 2 cases, repeat {repeat}"
            trainings.append(Training(object, f"{plans}_2cases_r{repeat}", "2d", Budget(), label))
            models.append(FewShotModel(method, 2, repeat, Path(label)))
    jobs = fewshot_jobs(Dataset(901, "Dataset901_BUSIDemo"), [0, 1], trainings, models, torch.device("cpu"), 5)
    assert [job.fold for job in jobs] == [0] * 4 + [1] * 4  # fold by fold, as fold_jobs orders them
    for job in jobs:
        assert job.seed == training_seed(5, int(job.training.label[-1]))  # the repeat's seed, whatever the method


def test_the_plans_record_the_repeats_training_seed_and_the_declared_baseline(tmp_path) -> None:
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {}}))
    baseline = declared_baseline(("2d", "3d_fullres"))
    assert baseline == "nnU-Net 2d" and declared_baseline(["3d_fullres"]) == "nnU-Net 3d_fullres"
    name = write_plans(tmp_path, "nnUNetPlans", 3, 1, 7, tmp_path / "results", baseline)
    block = json.loads((tmp_path / f"{name}.json").read_text())[FEWSHOT_KEY]
    assert block == {
        "train_cases": 3,
        "repeat": 1,
        "seed": 7,
        "training_seed": training_seed(7, 1),
        "compared_with": "nnU-Net 2d",
        "plans": "nnUNetPlans",
    }
