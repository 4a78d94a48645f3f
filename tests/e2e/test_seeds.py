"""One seed, one result: the same command with the same seed trains the same weights on a CPU."""

from __future__ import annotations

import json
import shutil

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATASET
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


def test_same_seed_same_weights_another_seed_other_weights(planned_demo) -> None:
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 "--from-scratch", "--batch-size", "2", "--seed", "3"]) == 0
    plans = json.loads((planned_demo["nnUNet_preprocessed"] / DEMO_DATASET / "autosamPlans.json").read_text())
    assert plans["configurations"]["2d_sam"]["sam"]["seed"] == 3

    first, first_dice, record = _train(planned_demo, None)  # the plan's seed
    assert record["seed"] == 3
    torch.manual_seed(12345)  # whatever state the process is in, the seed decides
    again, again_dice, _ = _train(planned_demo, 3)
    other, _, other_record = _train(planned_demo, 4)
    assert other_record["seed"] == 4
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert abs(first_dice - again_dice) <= 1e-3
    assert any(not torch.equal(first[k], other[k]) for k in first)


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
