"""`autosam train` end to end: a fixed set-up's trainer trains the set-up it names; a decoder-only set-up trains
on the embedding cache and writes a fold nnU-Net's predictor loads."""

from __future__ import annotations

import json
import os

import SimpleITK as sitk
import torch

from autosam.cli import main
from autosam.sam.setups import Setup
from autosam.trainers import embedding_cache
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset, predict_unseen

SETUP = Setup.parse("test_tiny_vit_dec_lora")


def test_variant_trains_its_own_setup(nnunet_folders) -> None:
    source = busi_or_demo()
    copy_subset(source, nnunet_folders["nnUNet_raw"], case_ids(source)[:6], BUSI)
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


def test_decoder_only_training_on_the_cache_writes_a_fold_the_predictor_loads(nnunet_folders, base_checkpoint) -> None:
    source = busi_or_demo()
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases[:6], BUSI)
    checkpoint, _ = base_checkpoint("test_tiny_vit", 64, 4)
    assert main(["plan-and-preprocess", "-d", "501", "--setup", SETUP.name, "--image-size", "64", "--epochs", "1",
                 "--iterations", "2", "--checkpoint", str(checkpoint)]) == 0
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu"]) == 0

    preprocessed = nnunet_folders["nnUNet_preprocessed"] / BUSI
    plan = json.loads((preprocessed / "autosamPlans.json").read_text())["configurations"]["2d_sam"]["sam"]
    assert plan["embedding_cache"] and "GFLOPs" in plan["reasons"]["embedding_cache"]
    (folder,) = (preprocessed / embedding_cache.FOLDER).iterdir()
    train_cases = json.loads((preprocessed / "splits_final.json").read_text())[0]["train"]
    assert sorted(p.stem for p in folder.glob("*.pt")) == sorted(train_cases)
    assert json.loads((folder / "key.json").read_text())["base_sha256"] != ""

    fold = nnunet_folders["nnUNet_results"] / BUSI / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    assert "Embedding cache" in next(fold.glob("training_log_*.txt")).read_text()
    weights = torch.load(fold / "checkpoint_final.pth", weights_only=True)["network_weights"]
    assert any("lora_" in k for k in weights) and not any(k.startswith("sam.image_encoder.") for k in weights)
    assert (fold / "validation" / "summary.json").is_file()

    image = source / "imagesTr" / f"{cases[-1]}_0000.png"
    predicted = predict_unseen(image, "501", "0", nnunet_folders["nnUNet_raw"].parent)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted)))
    assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape[:2]
