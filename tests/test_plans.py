"""The SAM plan: written and read back unchanged, refused in one line when stale or incomplete, and read from the
dataset's plans file by its one reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autosam.errors import AutosamError
from autosam.paths import Dataset
from autosam.plans import PLANS_NAME, has_sam_plan, read_plans, read_sam_plan

TRAINED = Path(__file__).parent / "data" / "results_before_relayout" / "Dataset901_BUSIDemo"
PLANS = TRAINED / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "plans.json"


@pytest.fixture
def planned(nnunet_folders) -> Dataset:
    """A dataset whose preprocessed folder holds a real autosam plans file (a trained model's copy of it)."""
    folder = nnunet_folders["nnUNet_preprocessed"] / "Dataset901_BUSIDemo"
    folder.mkdir()
    shutil.copy(PLANS, folder / f"{PLANS_NAME}.json")
    return Dataset.resolve("901")


def test_the_reader_gives_the_plan_and_nnunets_view_of_its_configuration(planned) -> None:
    assert has_sam_plan(planned)
    stored = read_sam_plan(planned)
    assert stored.plan.setup.name == "test_vit_encdec_lora" and stored.plan.image_size == 64
    assert stored.batch_size == 2 and stored.configuration.patch_size == [64, 64]  # 2d_sam's own, over 2d's
    assert stored.dataset_facts["modality"] == "US"
    assert stored.file == planned.preprocessed / f"{PLANS_NAME}.json"
    assert type(stored.plan).from_dict(stored.plan.to_dict()) == stored.plan


def test_stale_incomplete_or_missing_plans_are_one_line(planned) -> None:
    plans_file = planned.preprocessed / f"{PLANS_NAME}.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["2d_sam"]["sam"]["format_version"] = 0
    plans_file.write_text(json.dumps(plans))
    with pytest.raises(AutosamError, match="SAM plan format 0 is not 1; re-run 'autosam plan-and-preprocess'"):
        read_sam_plan(planned)
    del plans["configurations"]["2d_sam"]["sam"]["format_version"], plans["configurations"]["2d_sam"]["sam"]["setup"]
    plans["configurations"]["2d_sam"]["sam"]["format_version"] = 1
    plans_file.write_text(json.dumps(plans))
    with pytest.raises(AutosamError, match="the SAM plan is incomplete"):
        read_sam_plan(planned)
    with pytest.raises(AutosamError, match="has no configuration '3d_fullres'"):
        read_plans(planned, PLANS_NAME, "3d_fullres")
    plans_file.unlink()
    assert not has_sam_plan(planned)
    with pytest.raises(AutosamError, match=r"autosamPlans.json: not found; run 'autosam plan-and-preprocess -d 901'"):
        read_sam_plan(planned)
