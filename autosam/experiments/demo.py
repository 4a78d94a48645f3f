"""``autosam demo``: the embedded BUSI subset through ``autosam run`` on a CPU-sized budget.

The data (100 breast-ultrasound images, downscaled to 128 px; CC0, Al-Dhabyani et al., Data in Brief 2020)
ship inside the package and are written to a fresh nnU-Net folder tree under the chosen directory.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from autosam.errors import AutosamError
from autosam.experiments.run import RunOptions, run
from autosam.paths import CHECKPOINT_DIR_ENV, Dataset, checkpoint_folder
from autosam.planners.sam_planner import SamOptions
from autosam.plans import has_sam_plan, read_sam_plan
from autosam.sam.weights.catalogue import CATALOGUE

log = logging.getLogger(__name__)
DEMO_DATASET = "Dataset901_BUSIDemo"
DEMO_DATA = Path(__file__).parent / "demo_data" / DEMO_DATASET
QUICK_BUDGET = {"folds": [0, 1], "epochs": 8, "iterations": 25, "batch_size": 4}


def prepare(directory: Path) -> dict[str, Path]:
    """nnU-Net folders under ``directory`` with the demo dataset in ``nnUNet_raw``; existing runs are kept."""
    folders = {name: directory / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    try:
        for path in folders.values():
            path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AutosamError(f"{directory}: cannot create the demo folders ({e.strerror}); pass --dir to a writable place")
    target = folders["nnUNet_raw"] / DEMO_DATASET
    if not target.is_dir():
        shutil.copytree(DEMO_DATA, target)
    for name, path in folders.items():
        os.environ[name] = str(path.resolve())
    return folders


def run_demo(directory: Path, full: bool = False, device: str | None = None, seed: int | None = None) -> Path:
    prepare(directory)
    dataset = Dataset.resolve(DEMO_DATASET)
    folder = checkpoint_folder()
    weights = folder is not None and (folder / CATALOGUE["mobile_sam"].filename).is_file()
    if weights and has_sam_plan(dataset) and read_sam_plan(dataset).plan.from_scratch:
        raise AutosamError(f"{directory}: holds a demo trained from scratch; run 'autosam demo --dir NEW_FOLDER' to "
                           f"compare from {CATALOGUE['mobile_sam'].filename} (the finished folds are kept as they are)")
    if not weights and not full:
        log.warning("WARNING: %s not found in $%s: the demo trains SAM FROM SCRATCH (random weights), so its Dice "
                    "says little about pretrained SAM. Put the MobileSAM weights there for a meaningful comparison.",
                    CATALOGUE["mobile_sam"].filename, CHECKPOINT_DIR_ENV)
    if full:
        options = RunOptions(folds=[0, 1, 2, 3, 4], device=device, seed=seed)
        sam_options = SamOptions()
    else:
        options = RunOptions(folds=QUICK_BUDGET["folds"], epochs=QUICK_BUDGET["epochs"],
                             iterations=QUICK_BUDGET["iterations"], device=device or "cpu", ensembles=False, seed=seed)
        sam_options = SamOptions(from_scratch=not weights, batch_size=QUICK_BUDGET["batch_size"])
    return run(dataset, sam_options, options)
