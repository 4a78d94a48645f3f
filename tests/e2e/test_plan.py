"""`autosam plan-and-preprocess` end to end: every candidate with its reason in the plan, and 2d_sam's own
spacing and data unless --native-patches."""

from __future__ import annotations

import json
import shutil

import pytest

from autosam.cli import main
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset

SIZE_ORDER = ["vit_t", "vit_b", "vit_h"]


def test_plan_json_has_18_candidates_and_a_reason_for_every_field(nnunet_folders, capsys) -> None:
    source = busi_or_demo()
    copy_subset(source, nnunet_folders["nnUNet_raw"], case_ids(source)[:12], BUSI)
    assert main(["plan", "-d", "501", "--gpu-memory", "8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # nnU-Net's own chatter goes to stderr
    assert len(summary["candidates"]) == 18
    assert {"name", "predicted_memory_gb", "fits"} <= set(summary["candidates"][0])
    for field in ("setup", "image_size", "batch_size", "predicted_memory_gb", "base_checkpoint", "learning_rate",
                  "num_epochs", "gradient_checkpointing"):
        assert summary["reasons"].get(field), field
    assert summary["predicted_memory_gb"] <= 8

def test_plans_give_2d_sam_its_own_spacing_and_data_unless_native_patches(nnunet_folders) -> None:
    source = busi_or_demo()
    copy_subset(source, nnunet_folders["nnUNet_raw"], case_ids(source)[:8], BUSI)
    plans_file = nnunet_folders["nnUNet_preprocessed"] / BUSI / "autosamPlans.json"
    for extra, own in (([], True), (["--native-patches"], False)):
        assert main(["plan-and-preprocess", "-d", "501", "--setup", "test_vit_encdec_lora", "--image-size", "64", "--from-scratch",
                     *extra]) == 0
        configurations = json.loads(plans_file.read_text())["configurations"]
        two_d, sam = configurations["2d"], configurations["2d_sam"]
        assert ("data_identifier" in sam) == own
        if own:
            assert sam["patch_size"] == [64, 64] and sam["data_identifier"] == "autosamPlans_2d_sam_64px"
            assert [p * s for p, s in zip(sam["patch_size"], sam["spacing"])] == pytest.approx(
                [p * s for p, s in zip(two_d["patch_size"], two_d["spacing"])])
        assert "patch" in sam["sam"]["reasons"]["patch_size"]
    # planned, and 2d_sam's own data gone: train preprocesses them itself
    assert main(["plan-and-preprocess", "-d", "501", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 "--from-scratch"]) == 0
    shutil.rmtree(nnunet_folders["nnUNet_preprocessed"] / BUSI / "autosamPlans_2d_sam_64px")
    assert main(["train", "-d", "501", "-f", "0", "--epochs", "1", "--iterations", "1", "--device", "cpu"]) == 0
    assert len(list((nnunet_folders["nnUNet_preprocessed"] / BUSI / "autosamPlans_2d_sam_64px").glob("*.pkl"))) == 8
