"""Which trained model a command means: a fixed set-up, nnU-Net's choice after a run, or the only SAM model."""

from __future__ import annotations

import json

import pytest

from autosam.errors import AutosamError
from autosam.inference.trained_models import Model, resolve_model, trained_model_folder
from autosam.paths import Dataset

DATASET = "Dataset901_BUSIDemo"


def _trained(dataset: Dataset, model: Model, finished: bool = True) -> None:
    fold = model.folder(dataset) / "fold_0"
    fold.mkdir(parents=True)
    if finished:
        (fold / "checkpoint_final.pth").touch()


@pytest.fixture
def dataset(nnunet_folders) -> Dataset:
    (nnunet_folders["nnUNet_raw"] / DATASET).mkdir()
    return Dataset.resolve("901")


def test_names_round_trip_through_the_results_folder_name() -> None:
    planned, fixed = Model.for_setup(None), Model.for_setup("vit_t_dec_lora")
    assert planned.name == "nnUNetTrainerSAM__autosamPlans__2d_sam" and planned.setup == "planned"
    assert fixed.trainer == "nnUNetTrainerSAM_vit_t_dec_lora" and fixed.setup == "vit_t_dec_lora" and fixed.is_sam
    assert Model.from_name(fixed.name) == fixed and Model.for_setup("planned") == planned
    assert not Model("nnUNetTrainer", "nnUNetPlans", "2d").is_sam


def test_the_only_trained_sam_model_else_one_line_saying_what_to_do(dataset) -> None:
    with pytest.raises(AutosamError, match="no trained SAM model; run 'autosam train -d 901 -f 0' first"):
        resolve_model(dataset)
    _trained(dataset, Model.for_setup("vit_t_dec_lora"), finished=False)  # started, no final checkpoint
    with pytest.raises(AutosamError, match="no trained SAM model"):
        resolve_model(dataset)
    _trained(dataset, Model.for_setup(None))
    assert resolve_model(dataset).models == (Model.for_setup(None),)
    _trained(dataset, Model.for_setup("vit_b_dec_lora"))
    with pytest.raises(AutosamError, match=r"several trained SAM models \(planned, vit_b_dec_lora\); choose one"):
        resolve_model(dataset)
    assert resolve_model(dataset, "vit_b_dec_lora").models == (Model.for_setup("vit_b_dec_lora"),)
    with pytest.raises(AutosamError, match="train -d 901 -f 0 --setup vit_t_encdec_lora' first"):
        trained_model_folder(dataset, Model.for_setup("vit_t_encdec_lora"))


def test_after_a_run_nnunets_choice_is_used_with_its_post_processing(dataset) -> None:
    best = {"selected_model_or_models": [
        {"trainer": "nnUNetTrainer", "plans_identifier": "nnUNetPlans", "configuration": "2d"},
        {"trainer": "nnUNetTrainerSAM", "plans_identifier": "autosamPlans", "configuration": "2d_sam"}],
        "postprocessing_file": "/x/postprocessing.pkl", "some_plans_file": "/x/plans.json"}
    dataset.results.mkdir(parents=True)
    (dataset.results / "inference_information.json").write_text(json.dumps({"best_model_or_ensemble": best}))
    choice = resolve_model(dataset)
    assert choice.models == (Model("nnUNetTrainer", "nnUNetPlans", "2d"), Model.for_setup(None))
    assert choice.name == "nnUNetTrainer__nnUNetPlans__2d + nnUNetTrainerSAM__autosamPlans__2d_sam"
    assert str(choice.postprocessing) == "/x/postprocessing.pkl" and "the ensemble" in choice.why
