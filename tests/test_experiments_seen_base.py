"""A base whose lineage saw the dataset's images is refused by 'autosam run', also through a descendant and through a
renamed, re-encoded copy of the dataset; the base a trained fold recorded is checked, not only the plan's. (The
planner's side, R19: tests/test_planners_choose.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from autosam.cli import _run_options, build_parser
from autosam.errors import AutosamError
from autosam.experiments.seen_base import base_lines, refuse_seen_base
from autosam.paths import CHECKPOINT_DIR_ENV, Dataset
from autosam.planners.sam_planner import base_checkpoint_for
from autosam.plans import SamPlan
from autosam.pretraining.mae import PretrainOptions, pretrain
from autosam.pretraining.prompted import PromptedOptions, prompted_pretrain
from autosam.sam.setups import Setup
from autosam.sam.weights.catalogue import CATALOGUE, user_catalogue
from autosam.sam.weights.lineage import check_lineage
from tests.conftest import busi_or_demo, case_ids, copy_subset, make_volumes
from tests.test_data_image_digests import renamed_nifti_copy

SETUP = Setup("test_vit", "encdec", "lora")
ONE_STEP = {"backbone": "test_vit", "image_size": 64, "epochs": 1, "iterations": 1, "batch_size": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def lineage(tmp_path_factory) -> dict:
    """Made once for the module: the BUSI images (992, PNG) and MR volumes (991) of ``two_labelled_datasets``;
    'prompted': prompted-pretrained (labels) on 992, one step; 'child': MAE-pretrained from it on 991 only, one
    step; 995: the BUSI images renamed and re-encoded as NIfTI."""
    root = tmp_path_factory.mktemp("seen_base")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / name).mkdir()
            patch.setenv(name, str(root / name))
        raw = root / "nnUNet_raw"
        source = busi_or_demo()
        copy_subset(source, raw, case_ids(source)[:3], "Dataset992_Busi")
        meta_file = make_volumes(raw) / "dataset.json"
        meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "channel_names": {"0": "MRI"}}))
        weights = root / "weights"
        prompted_pretrain(weights / "prompted.pth", PromptedOptions(**ONE_STEP), [Dataset.resolve("992")])
        patch.setenv(CHECKPOINT_DIR_ENV, str(weights))
        pretrain(weights / "child.pth", PretrainOptions(**ONE_STEP, base="prompted"), datasets=[Dataset.resolve("991")])
        renamed_nifti_copy(raw / "Dataset992_Busi", raw, "Dataset995_Renamed")
        yield {"weights": weights, "entries": user_catalogue(weights), "results": root / "nnUNet_results"}


def _plan(name: str | None) -> SamPlan:
    base = base_checkpoint_for(SETUP, name)[0] if name else None
    return SamPlan(SETUP, 64, "imagenet", base, 1e-4)


def test_pretraining_records_labels_images_and_lineage(lineage) -> None:
    prompted, child = lineage["entries"]["prompted"], lineage["entries"]["child"]
    assert prompted.labels_used is True and child.labels_used is False
    assert list(prompted.seen_images) == ["Dataset992_Busi"] and len(prompted.seen_images["Dataset992_Busi"]) == 3
    assert list(child.seen_images) == ["Dataset991_Volumes"] and len(child.seen_images["Dataset991_Volumes"]) == 6
    assert child.started_from == "prompted" and [a["name"] for a in child.ancestors] == ["prompted"]
    assert child.ancestors[0]["seen_images"] == prompted.seen_images and child.ancestors[0]["labels_used"] is True


def test_run_refuses_a_base_that_saw_the_dataset_its_descendant_and_a_renamed_copy(lineage) -> None:
    folder = lineage["results"] / "sam_model_unstarted"
    for target in ("992", "995"):  # the dataset itself, and its renamed NIfTI copy (other id, names, format)
        dataset = Dataset.resolve(target)
        for name in ("prompted", "child"):
            with pytest.raises(AutosamError) as refused:
                refuse_seen_base(dataset, _plan(name), folder, [0, 1], allow=False)
            message = str(refused.value)
            assert "\n" not in message and f"base {name} refused" in message
            assert (
                "3 of the dataset's 3 images" in message and "with labels" in message and "--allow-seen-base" in message
            )
            assert ("via prompted" in message) == (name == "child")
        # run anyway when asked: the headline says so
        lines = refuse_seen_base(dataset, _plan("child"), folder, [0, 1], allow=True)
        assert len(lines) == 1 and lines[0].startswith("WARNING: run with --allow-seen-base: the SAM base child")
    # the MR volumes: the parent never saw them (accepted, and the headline says what was not checkable), the child did
    volumes = Dataset.resolve("991")
    line = refuse_seen_base(volumes, _plan("prompted"), folder, [0], allow=False)[0]
    assert "none of the dataset's 6 images" in line and "other scans of the same patients" in line
    with pytest.raises(AutosamError, match="6 of the dataset's 6 images.*without labels"):
        refuse_seen_base(volumes, _plan("child"), folder, [0], allow=False)


def test_the_base_recorded_in_a_trained_fold_is_checked_not_only_the_plan(lineage) -> None:
    folder = lineage["results"] / "sam_model_started"
    dataset = Dataset.resolve("995")
    assert refuse_seen_base(dataset, _plan(None), folder, [0], allow=False) == []  # the plan: from random weights
    child = lineage["entries"]["child"]
    (folder / "fold_0").mkdir(parents=True)  # but fold 0 was trained from 'child' (what its checkpoint records)
    torch.save(
        {"autosam": {"base": {"name": child.name, "sha256": child.sha256}}}, folder / "fold_0" / "checkpoint_latest.pth"
    )
    with pytest.raises(AutosamError, match=f"base child refused.*move {folder} away \\(folds 0 were trained"):
        refuse_seen_base(dataset, _plan(None), folder, [0, 1], allow=False)


def test_an_official_base_is_named_with_what_cannot_be_checked_and_random_weights_need_no_line() -> None:
    checks = [(check_lineage(CATALOGUE["sam_vit_b"], "sam_vit_b", {}), [0])]
    assert not checks[0][0].refused
    assert base_lines(checks) == [
        (
            "SAM base sam_vit_b: trained by its authors on public data that is not disclosed image by image: whether it "
            "saw these images, or other scans of these patients, cannot be checked"
        )
    ]
    assert base_lines([(check_lineage(None, "from-scratch", {}), [0])]) == []


def test_the_flag_reaches_the_run_options() -> None:
    parse = build_parser().parse_args
    assert _run_options(parse(["run", "-d", "501", "--allow-seen-base"])).allow_seen_base is True
    assert _run_options(parse(["run", "-d", "501"])).allow_seen_base is False
