"""nnU-Net's presets as baselines: their spelling, the default per device, nnU-Net's own ResEnc plans, the
headline's sentence."""

from __future__ import annotations

import json

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

from autosam.errors import AutosamError
from autosam.experiments.run import RunOptions, baseline_trainings, chosen_baselines
from autosam.paths import Dataset
from autosam.planners.baselines import Baseline, baseline_sentence, default_baselines, parse_baselines, plan_baselines
from autosam.trainers.fold_jobs import FoldJob
from autosam.trainers.fold_training import Budget, make_trainer


def test_presets_are_spelled_as_nnunet_names_them_and_the_default_depends_on_the_device() -> None:
    chosen = parse_baselines(["2d", "resenc_m:2d", "resenc_l:3d_fullres", "2d"])
    assert [(b.plans, b.configuration, b.name) for b in chosen] == [
        ("nnUNetPlans", "2d", "nnU-Net 2d"),
        ("nnUNetResEncUNetMPlans", "2d", "nnU-Net ResEnc M 2d"),
        ("nnUNetResEncUNetLPlans", "3d_fullres", "nnU-Net ResEnc L 3d_fullres"),
    ]
    with pytest.raises(
        AutosamError,
        match=r"--baselines resenc_xl:2d: not an nnU-Net preset; choose from 2d, "
        r"3d_fullres, resenc_m:2d, resenc_m:3d_fullres, resenc_l:2d",
    ):
        parse_baselines(["resenc_xl:2d"])
    assert default_baselines(("2d", "3d_fullres"), on_gpu=False) == [Baseline("2d"), Baseline("3d_fullres")]
    assert default_baselines(("2d",), on_gpu=True) == [Baseline("2d"), Baseline("2d", "resenc_m")]


def test_the_headline_says_when_nnunets_recommended_preset_was_not_trained() -> None:
    plain = baseline_sentence([Baseline("2d")], default_on_cpu=True)
    assert plain.startswith("baselines: nnU-Net 2d; nnU-Net's recommended residual-encoder preset (ResEnc M")
    assert "was NOT trained (the CPU default leaves it out; add --baselines 2d resenc_m:2d)" in plain
    assert "not in --baselines" in baseline_sentence([Baseline("2d")], default_on_cpu=False)
    assert (
        baseline_sentence([Baseline("2d"), Baseline("2d", "resenc_m")], True)
        == "baselines: nnU-Net 2d, nnU-Net ResEnc M 2d"
    )


def test_a_resenc_preset_trains_nnunets_own_residual_encoder_plans(planned_demo) -> None:
    """``--baselines resenc_m:2d``: nnU-Net's nnUNetPlannerResEncM writes the plans, read back here, and the run's
    training of it builds a ResidualEncoderUNet fed by the shared data (a training step is nnU-Net's own code and
    takes 5-20 s on a CPU, so none is run)."""
    dataset = Dataset.resolve("901")
    chosen, skipped_3d = chosen_baselines(dataset, RunOptions(baselines=["2d", "resenc_m:2d"]), on_gpu=False)
    assert [b.spelling for b in chosen] == ["2d", "resenc_m:2d"] and skipped_3d is None
    plan_baselines(dataset, chosen)
    plans = json.loads((dataset.preprocessed / "nnUNetResEncUNetMPlans.json").read_text())
    assert plans["plans_name"] == "nnUNetResEncUNetMPlans"
    configuration = plans["configurations"]["2d"]
    assert configuration["architecture"]["network_class_name"].endswith(".ResidualEncoderUNet")
    assert configuration["architecture"]["arch_kwargs"]["n_blocks_per_stage"][:3] == [1, 3, 4]
    assert configuration["data_identifier"] == "nnUNetPlans_2d"  # the plain plans' data: nothing to preprocess
    with pytest.raises(AutosamError, match="nnU-Net planned no '3d_fullres' configuration"):
        plan_baselines(dataset, [Baseline("3d_fullres", "resenc_m")])

    training = baseline_trainings(chosen, Budget(1, 1))[1]
    job = FoldJob(dataset, 0, training, torch.device("cpu"), 0, False)
    assert job.output_folder.parent.name == "nnUNetTrainer__nnUNetResEncUNetMPlans__2d"
    trainer = make_trainer(dataset, 0, training.trainer_cls, training.plans, training.configuration, batch_size=2)
    trainer.initialize()
    assert isinstance(trainer.network, ResidualEncoderUNet)
    trainer.on_train_start()  # the plain plans' preprocessed data feed it, in its own patch size
    try:
        batch = next(trainer.dataloader_train)["data"]
        assert list(batch.shape[2:]) == configuration["patch_size"]
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            getattr(loader, "_finish", lambda: None)()
