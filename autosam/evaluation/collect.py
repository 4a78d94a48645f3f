"""What a trained configuration left in nnU-Net's results folder: per-case metrics of its cross-validation
predictions (each fold's validation set), its training log and the budget it trained with."""

from __future__ import annotations

import json
from pathlib import Path

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.evaluation.conventions import scored_labels
from autosam.evaluation.metrics import case_metrics
from autosam.paths import FINAL_CHECKPOINT, validation_summary
from autosam.sam.weights.safe_load import load_fold_checkpoint
from autosam.trainers.fold_training import TRAINING_RECORD


def reader_for(model_folder: Path):
    """nnU-Net's image reader/writer of the dataset the model was trained on."""
    plans = json.loads((model_folder / "plans.json").read_text())
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    return PlansManager(plans).image_reader_writer_class, dataset_json


def validated_cases(model_folder: Path, fold: int, ending: str) -> list[str]:
    validation = model_folder / f"fold_{fold}" / "validation"
    if not validation_summary(model_folder / f"fold_{fold}").is_file():
        raise AutosamError(f"{validation}: no validation results; train fold {fold} first")
    return sorted(p.name[: -len(ending)] for p in validation.glob(f"*{ending}"))


def check_current_folds(model_folder: Path, folds: list[int], splits: list[dict], ending: str) -> None:
    """A fold validated on other cases than today's ``splits_final.json`` was trained on other folds (stale)."""
    for fold in folds:
        if fold >= len(splits) or validated_cases(model_folder, fold, ending) != sorted(splits[fold]["val"]):
            raise AutosamError(
                f"{model_folder / f'fold_{fold}'}: validated on other cases than fold {fold} of splits_final.json "
                "(the folds changed after it was trained: stale); move the folder away and train it again")


def validation_metrics(model_folder: Path, folds: list[int], gt_folder: Path) -> dict[str, dict]:
    """case id -> {"fold": k, "metrics": {label: {dice, nsd, hd95, empty}}} over the given folds."""
    reader_class, dataset_json = reader_for(model_folder)
    ending = dataset_json["file_ending"]
    labels, ignore = scored_labels(dataset_json["labels"]), dataset_json["labels"].get("ignore")
    reader = reader_class()
    results = {}
    for fold in folds:
        validation = model_folder / f"fold_{fold}" / "validation"
        cases = validated_cases(model_folder, fold, ending)
        for case in tqdm(cases, desc=f"{model_folder.name.split('__')[0]} fold {fold}", leave=False):
            reference, properties = reader.read_seg(str(gt_folder / f"{case}{ending}"))
            predicted, _ = reader.read_seg(str(validation / f"{case}{ending}"))
            results[case] = {"fold": fold, "metrics": case_metrics(reference[0], predicted[0], labels,
                                                                   tuple(properties["spacing"]), ignore=ignore)}
    return results


def training_log(model_folder: Path, fold: int) -> dict:
    return load_fold_checkpoint(model_folder / f"fold_{fold}" / FINAL_CHECKPOINT)["logging"]


def fold_budget(model_folder: Path, fold: int) -> dict:
    """What one fold trained with, read back from nnU-Net's own records (``debug.json``, the log) and autosam's
    (the seed; folds trained outside autosam have none)."""
    log = training_log(model_folder, fold)
    debug_file = model_folder / f"fold_{fold}" / "debug.json"
    debug = json.loads(debug_file.read_text()) if debug_file.is_file() else {}
    record_file = model_folder / f"fold_{fold}" / TRAINING_RECORD
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    epochs = len(log["train_losses"])
    iterations = int(debug["num_iterations_per_epoch"]) if "num_iterations_per_epoch" in debug else None
    batch = int(debug["batch_size"]) if "batch_size" in debug else None
    steps = epochs * iterations if iterations else None
    seed = record.get("seed", debug.get("autosam_seed"))  # folds trained by earlier autosam: nnU-Net's debug.json
    return {"epochs": epochs, "iterations_per_epoch": iterations, "batch_size": batch, "optimizer_steps": steps,
            "images_seen": steps * batch if steps and batch else None,
            "seconds": round(float(sum(e - s for s, e in zip(log["epoch_start_timestamps"],
                                                            log["epoch_end_timestamps"]))), 1),
            "seed": int(seed) if seed not in (None, "None") else None, "device": debug.get("device")}
