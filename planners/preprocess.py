"""Fingerprint, plan (nnU-Net's plans and autosam's) and preprocess a dataset with nnU-Net's own code."""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.data.checks import check_dataset
from autosam.errors import AutosamError
from autosam.paths import Dataset, require_folders
from autosam.planners.sam_planner import BASELINE_PLANS, SAMPlanner
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION, has_sam_plan, read_plans

log = logging.getLogger(__name__)


@contextmanager
def planning_processes():
    """nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0 (a common setting)."""
    value = os.environ.get("nnUNet_n_proc_DA")
    if value == "0":
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        yield
    finally:
        if value == "0":
            os.environ["nnUNet_n_proc_DA"] = value


def _check_splits_agree(raw: Path, preprocessed: Path) -> None:
    """nnU-Net asserts (bare AssertionError) that a dataset's own folds equal the ones in use."""
    if raw.is_file() and preprocessed.is_file():
        as_sets = lambda splits: [(set(s["train"]), set(s["val"])) for s in splits]
        theirs, ours = json.loads(raw.read_text()), json.loads(preprocessed.read_text())
        if as_sets(theirs) != as_sets(ours[: len(theirs)]):
            raise AutosamError(f"{preprocessed}: differs from the dataset's own {raw}; keep one of them "
                               "(delete the preprocessed copy to use the dataset's folds)")


def _preprocessed_cases(folder: Path) -> int:
    return len(list(folder.glob("*.pkl"))) if folder.is_dir() else 0


def plan(dataset: Dataset, sam_options, hardware, num_processes: int = 1, validated: bool = False,
         write: bool = True) -> SAMPlanner:
    """nnU-Net's fingerprint and plans (``nnUNetPlans``), then autosam's (``autosamPlans``); returns the
    planner, which holds the plans and the choice with its candidates. ``validated``: the caller has already
    checked the dataset. ``write=False`` previews: autosam's plan is not written (nnU-Net's fingerprint and
    plans, caches that depend on the data alone, are written when missing)."""
    require_folders("nnUNet_raw", "nnUNet_preprocessed")
    if not validated:
        log.info("checking %s (every case is read)", dataset.name)
    for warning in [] if validated else check_dataset(dataset):
        log.warning("%s", warning)
    out = dataset.preprocessed
    if not (out / "dataset_fingerprint.json").is_file():
        log.info("fingerprinting %s", dataset.name)
        # autosam's validation above already read every case (one line per cause instead of nnU-Net's tracebacks)
        extract_fingerprint_dataset(dataset.id, num_processes=num_processes, check_dataset_integrity=False)
    _check_splits_agree(dataset.raw / "splits_final.json", out / "splits_final.json")
    with planning_processes():
        if not (out / f"{BASELINE_PLANS}.json").is_file():
            log.info("planning nnU-Net's configurations")
            ExperimentPlanner(dataset.id).plan_experiment()
        log.info("planning SAM for %s: dataset facts, then the training memory of each set-up", hardware.description)
        planner = SAMPlanner(dataset.id, sam_options=sam_options, hardware=hardware, write=write)
        planner.plan_experiment()
    return planner


def baseline_configurations(dataset: Dataset, with_3d: bool = True) -> tuple[str, ...]:
    """nnU-Net's configurations autosam trains as baselines: ``2d``, and ``3d_fullres`` where it planned one
    (3D data) unless ``with_3d`` is off."""
    plans_file = dataset.preprocessed / f"{BASELINE_PLANS}.json"
    planned = json.loads(plans_file.read_text())["configurations"]
    return ("2d",) + (("3d_fullres",) if with_3d and "3d_fullres" in planned else ())


def preprocess(dataset: Dataset, num_processes: int = 1, configurations: tuple[str, ...] = ("2d",)) -> None:
    """nnU-Net's preprocessing for configurations whose data are missing or incomplete (its preprocessor
    deletes the output folder first, which would pull the data from under a running training)."""
    require_folders("nnUNet_raw", "nnUNet_preprocessed")
    out = dataset.preprocessed
    baseline = json.loads((out / f"{BASELINE_PLANS}.json").read_text())
    num_cases = json.loads((dataset.raw / "dataset.json").read_text())["numTraining"]
    for configuration in configurations:
        if configuration not in baseline["configurations"]:
            raise AutosamError(f"{dataset.name}: nnU-Net planned no '{configuration}' configuration (2D data has only '2d')")
        data = out / baseline["configurations"][configuration]["data_identifier"]
        if _preprocessed_cases(data) < num_cases:
            preprocess_dataset(dataset.id, BASELINE_PLANS, (configuration,), (num_processes,), verbose=False)
    preprocess_sam_data(dataset, num_processes)


def preprocess_sam_data(dataset: Dataset, num_processes: int = 1) -> None:
    """2d_sam's own data (SAM-sized patches at their own spacing) when the plan gives it some and they are
    missing or incomplete, e.g. after planning again at another image size."""
    require_folders("nnUNet_raw", "nnUNet_preprocessed")
    num_cases = json.loads((dataset.raw / "dataset.json").read_text())["numTraining"]
    sam_data = _sam_data_identifier(dataset)
    if sam_data and _preprocessed_cases(dataset.preprocessed / sam_data) < num_cases:
        log.info("preprocessing %s for 2d_sam (%s)", dataset.name, sam_data)
        preprocess_dataset(dataset.id, PLANS_NAME, (SAM_CONFIGURATION,), (num_processes,), verbose=False)


def _sam_data_identifier(dataset: Dataset) -> str | None:
    """2d_sam's data folder when it has its own (``sam_planner.sam_sized``), else None (it shares 2d's)."""
    if not has_sam_plan(dataset):
        return None
    plans = PlansManager(read_plans(dataset))
    own = plans.get_configuration(SAM_CONFIGURATION).data_identifier
    return None if own == plans.get_configuration("2d").data_identifier else own
