"""One seed, one result: the same command with the same seed trains the same weights on a CPU; several seeds train
apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATASET
from autosam.inference.trained_models import Model, resolve_model
from autosam.paths import Dataset
from autosam.trainers.fold_training import make_trainer
from autosam.trainers.seeding import seed_data_loaders, seed_everything

TRAIN = ["train", "-d", "901", "-f", "0", "--device", "cpu", "--epochs", "1", "--iterations", "3"]


def _train(folders, seed: int | None) -> tuple[dict, float, dict]:
    """Train fold 0, return its weights, validation Dice and autosam's training record; then clear the results."""
    assert main(TRAIN + ([] if seed is None else ["--seed", str(seed)])) == 0
    model = folders["nnUNet_results"] / DEMO_DATASET / "nnUNetTrainerSAM__autosamPlans__2d_sam"
    fold = model / "fold_0"
    weights = torch.load(fold / "checkpoint_final.pth", weights_only=True)["network_weights"]
    dice = json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
    record = json.loads((fold / "autosam_training.json").read_text())
    shutil.rmtree(model)
    return weights, dice, record


def _weights(model: Path) -> dict:
    return torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=True)["network_weights"]


def test_several_seeds_train_apart_and_the_same_seed_trains_the_same_weights(planned_demo, capsys) -> None:
    """``run --seed 3 4``: each method once per seed, seed 4 under its own plans identifier that find_best and
    predict never see; then ``train`` with the plan's seed (3) again gives the run's seed-3 weights."""
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 "--from-scratch", "--batch-size", "2", "--seed", "3"]) == 0
    preprocessed = planned_demo["nnUNet_preprocessed"] / DEMO_DATASET
    plans = json.loads((preprocessed / "autosamPlans.json").read_text())
    assert plans["configurations"]["2d_sam"]["sam"]["seed"] == 3

    assert main(["run", "-d", "901", "--folds", "0", "--epochs", "1", "--iterations", "3", "--device", "cpu",
                 "--seed", "3", "4", "--no-ensembles"]) == 0
    results = planned_demo["nnUNet_results"] / DEMO_DATASET
    folders = {(method, seed): results / f"{trainer}__{plans}{suffix}__{configuration}"
               for method, trainer, plans, configuration in (("SAM", "nnUNetTrainerSAM", "autosamPlans", "2d_sam"),
                                                             ("nnU-Net", "nnUNetTrainer", "nnUNetPlans", "2d"))
               for seed, suffix in ((3, ""), (4, "_seed4"))}
    for (method, seed), folder in folders.items():
        record = json.loads((folder / "fold_0" / "autosam_training.json").read_text())
        assert record["seed"] == seed, folder.name
    assert json.loads((preprocessed / "autosamPlans_seed4.json").read_text())["autosam_seed"] == {
        "seed": 4, "plans": "autosamPlans"}
    run_weights = _weights(folders["SAM", 3])
    assert any(not torch.equal(run_weights[k], v) for k, v in _weights(folders["SAM", 4]).items())
    # find_best ranked the first seed's models only, and predict takes its choice
    assert "_seed4" not in (results / "inference_information.json").read_text()
    assert "_seed" not in resolve_model(Dataset.resolve("901")).name
    (results / "inference_information.json").unlink()  # without it: the only trained SAM model, not seed 4's
    assert resolve_model(Dataset.resolve("901")).models == (Model.for_setup(None),)
    comparison = json.loads((results / "autosam_report" / "comparison.json").read_text())
    assert comparison["seeds"]["seeds"] == [3, 4] and comparison["seeds"]["n_units"] == 2
    out = capsys.readouterr().out
    assert "seeds 3, 4: every method trained once per seed" in out and "this training recipe (" in out

    shutil.rmtree(folders["SAM", 3])
    torch.manual_seed(12345)  # whatever state the process is in, the seed decides
    again, _, record = _train(planned_demo, None)  # the plan's seed, 3
    assert record["seed"] == 3 and again.keys() == run_weights.keys()
    assert all(torch.equal(run_weights[k], again[k]) for k in again)


def test_augmentation_workers_draw_from_the_seed(planned_demo, monkeypatch) -> None:
    """With worker processes (nnUNet_n_proc_DA > 0, as on a GPU machine) nnU-Net starts them with fresh
    entropy; the seed must reach them, so the same seed gives the same first augmented batch."""
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 "--from-scratch"]) == 0
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")  # one worker: batches arrive in a fixed order

    def first_batch(seed: int):
        trainer = make_trainer(Dataset.resolve("901"), 0, nnUNetTrainer, "nnUNetPlans", "2d")
        trainer.initialize()
        seed_everything(seed)
        seed_data_loaders(trainer, seed)
        train, val = trainer.get_dataloaders()
        try:
            assert train.seeds == [seed + 1000]  # a multi-process augmenter, seeded
            return next(train)["data"].clone()
        finally:
            train._finish()
            val._finish()

    first, again, other = first_batch(5), first_batch(5), first_batch(6)
    assert torch.equal(first, again) and not torch.equal(first, other)
