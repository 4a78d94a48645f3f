"""SAM 2.1 through the whole nnU-Net path: plan with an official-layout checkpoint, train a decoder-only fold on the
embedding cache (all three feature levels), predict a case nnU-Net's predictor has not seen, export what the official
builder loads."""

from __future__ import annotations

import json

import SimpleITK as sitk
import torch
from autosam_test_backbones import TEST_HIERA_OVERRIDES
from sam2.build_sam import build_sam2

from autosam.cli import main
from autosam.trainers import embedding_cache
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset, predict_unseen

SETUP = "test_hiera_dec_lora"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def test_a_sam2_fold_trains_predicts_and_exports(nnunet_folders, tmp_path) -> None:
    source = busi_or_demo()
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases[:6], BUSI)
    overrides = [*TEST_HIERA_OVERRIDES, "++model.image_size=64"]
    checkpoint = tmp_path / "sam2.1_hiera_test.pt"  # as SAM 2.1's releases are: {"model": state dict}
    torch.save({"model": build_sam2(CONFIG, None, device="cpu", hydra_overrides_extra=overrides,
                                    apply_postprocessing=False).state_dict()}, checkpoint)
    assert main(["plan-and-preprocess", "-d", "501", "--setup", SETUP, "--image-size", "64", "--epochs", "1",
                 "--iterations", "2", "--checkpoint", str(checkpoint)]) == 0
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu"]) == 0

    fold = nnunet_folders["nnUNet_results"] / BUSI / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    saved = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert saved["autosam"]["setup"]["name"] == SETUP
    assert any(k.startswith("sam.sam_mask_decoder.transformer.") and "lora_" in k for k in saved["network_weights"])
    (cache,) = (nnunet_folders["nnUNet_preprocessed"] / BUSI / embedding_cache.FOLDER).iterdir()
    features = embedding_cache.open_case(cache, next(cache.glob("*.pt")).stem)["features"]
    assert [level.shape[-1] for level in features] == [64 // 16, 64 // 4, 64 // 8]  # embedding, then s0 and s1
    assert json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0

    image = source / "imagesTr" / f"{cases[-1]}_0000.png"
    predicted = predict_unseen(image, "501", "0", nnunet_folders["nnUNet_raw"].parent)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted)))
    assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape[:2]

    exported = tmp_path / "busi_sam2.pt"
    assert main(["export", "-d", "501", "-f", "0", "-o", str(exported)]) == 0
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["setup"]["backbone"] == "test_hiera" and "sam_mask_decoder" in sidecar["decoding"]
    # two classes (background, lesion) in SAM2Base's fixed 4 tokens: its own builder loads the file strictly
    assert "loads unchanged with sam2.build_sam.build_sam2(" in sidecar["loading"] and "tokens 0-1" in sidecar["loading"]
    official = build_sam2(CONFIG, str(exported), device="cpu", hydra_overrides_extra=overrides,
                          apply_postprocessing=False)
    fold_weights = saved["network_weights"]
    assert torch.equal(official.sam_mask_decoder.mask_tokens.weight[:2], fold_weights["sam.sam_mask_decoder.mask_tokens.weight"])
