"""The plan ``run`` trains: a stored plan made for other hardware is made again for this machine, keeping the
fields set by flags, unless a SAM fold has started on it; ``autosam plan`` previews and writes nothing."""

from __future__ import annotations

import json

from autosam.cli import main
from autosam.experiments.run import RunOptions, plan_for_run
from autosam.inference.trained_models import Model
from autosam.paths import Dataset
from autosam.planners.hardware import detect_hardware
from autosam.planners.sam_planner import SamOptions
from autosam.plans import read_sam_plan
from tests.test_planners_choose import assert_every_reason_tagged

OTHER = "NVIDIA H100 80GB HBM3 (79 GB)"


def _plan_for(dataset: Dataset, hardware: str) -> None:
    plans_file = dataset.preprocessed / "autosamPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["2d_sam"]["sam"]["hardware"] = hardware
    plans_file.write_text(json.dumps(plans))


def test_a_plan_for_other_hardware_is_made_again_keeping_the_flags(planned_demo) -> None:
    dataset = Dataset.resolve("901")
    _plan_for(dataset, OTHER)
    line = plan_for_run(dataset, SamOptions(), RunOptions(device="cpu"))
    here = detect_hardware(None, "cpu").description
    assert "\n" not in line and OTHER in line and "planned again" in line and here in line
    planned = read_sam_plan(dataset)
    assert planned.plan.hardware == here
    # the fixture planned --setup test_vit_encdec_lora --image-size 64 --from-scratch --batch-size 2
    assert (planned.plan.setup.name, planned.plan.image_size, planned.plan.from_scratch, planned.batch_size) == (
        "test_vit_encdec_lora",
        64,
        True,
        2,
    )
    assert "using the existing SAM plan" in plan_for_run(dataset, SamOptions(), RunOptions(device="cpu"))


def test_a_plan_with_started_sam_folds_is_kept(planned_demo) -> None:
    dataset = Dataset.resolve("901")
    _plan_for(dataset, OTHER)
    fold = Model.for_setup(None).folder(dataset) / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(b"")
    line = plan_for_run(dataset, SamOptions(), RunOptions(device="cpu"))
    assert "kept because SAM folds" in line and str(fold.parent) in line
    assert read_sam_plan(dataset).plan.hardware == OTHER


def test_plan_previews_and_writes_no_plan(planned_demo, capsys) -> None:
    plans_file = planned_demo["nnUNet_preprocessed"] / "Dataset901_BUSIDemo" / "autosamPlans.json"
    before = plans_file.read_bytes()
    assert main(["plan", "-d", "901", "--setup", "test_vit_dec_lora", "--image-size", "64", "--from-scratch"]) == 0
    assert "test_vit_dec_lora" in capsys.readouterr().out
    assert plans_file.read_bytes() == before
    # every reason the planner writes names its rule, those it adds itself (--prompts, --native-patches) too
    assert main(["plan", "-d", "901", "--setup", "test_vit_dec_lora", "--image-size", "64", "--from-scratch",
                 "--prompts", "box", "--native-patches", "--json"]) == 0
    reasons = json.loads(capsys.readouterr().out)["reasons"]
    assert {"prompts", "patch_size", "setup", "base_checkpoint"} <= set(reasons)
    assert_every_reason_tagged(reasons)


def test_run_refuses_a_missing_base_file_before_any_training(planned_demo, monkeypatch, capsys) -> None:
    monkeypatch.delenv("AUTOSAM_CHECKPOINT_DIR", raising=False)
    assert main(["run", "-d", "901", "-f", "0", "--epochs", "1", "--iterations", "1", "--device", "cpu", "--replan",
                 "--setup", "vit_t_encdec_lora", "--image-size", "256", "--checkpoint", "mobile_sam"]) == 2
    assert "mobile_sam.pt not found" in capsys.readouterr().err
    assert not list(planned_demo["nnUNet_results"].glob("*/*/fold_0"))  # nnU-Net did not train first
