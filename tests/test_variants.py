"""The 18 fixed set-up trainers: found by nnU-Net's own lookup, and they train the set-up they name."""

from __future__ import annotations

import os

import torch

from autosam.cli import main
from autosam.nnunet_env import EXT_TRAINER_DIR
from autosam.sam.setups import all_setups
from tests.conftest import case_ids, copy_subset, shared_dataset
from trainers.variants import VARIANTS


def test_nnunet_finds_every_variant_through_ext_trainer(monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(EXT_TRAINER_DIR))
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    assert len(VARIANTS) == 18
    for setup in all_setups():
        name = f"nnUNetTrainerSAM_{setup.name}"
        assert recursive_find_trainer_class_by_name(name) is VARIANTS[name]


def test_variant_trains_its_own_setup(nnunet_folders) -> None:
    source = shared_dataset("Dataset501_BUSI")
    copy_subset(source, nnunet_folders["nnUNet_raw"], case_ids(source)[:6])
    assert main(["plan-and-preprocess", "-d", "501", "--setup", "test_vit_encdec_lora", "--image-size", "256",
                 "--from-scratch", "--epochs", "1", "--iterations", "2"]) == 0
    assert main(["train", "-d", "501", "-f", "0", "--setup", "vit_t_dec_adapter", "--device", "cpu"]) == 0
    fold = (nnunet_folders["nnUNet_results"] / "Dataset501_BUSI"
            / "nnUNetTrainerSAM_vit_t_dec_adapter__autosamPlans__2d_sam" / "fold_0")
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainerSAM_vit_t_dec_adapter"
    assert checkpoint["autosam"]["setup"]["name"] == "vit_t_dec_adapter"
    assert any(".adapter_tokens." in k for k in checkpoint["network_weights"])
    assert os.path.isfile(fold / "validation" / "summary.json")
