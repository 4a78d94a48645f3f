"""Per-case metrics of a trained configuration's cross-validation predictions (each fold's validation set)."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.evaluation.metrics import case_metrics


def reader_for(model_folder: Path):
    """nnU-Net's image reader/writer of the dataset the model was trained on."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((model_folder / "plans.json").read_text())
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    return PlansManager(plans).image_reader_writer_class, dataset_json


def validation_metrics(model_folder: Path, folds: list[int], gt_folder: Path) -> dict[str, dict]:
    """case id -> {"fold": k, "metrics": {label: {dice, nsd, hd95}}} over the given folds."""
    reader_class, dataset_json = reader_for(model_folder)
    ending = dataset_json["file_ending"]
    labels = {k: v for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    reader = reader_class()
    results = {}
    for fold in folds:
        validation = model_folder / f"fold_{fold}" / "validation"
        if not (validation / "summary.json").is_file():
            raise AutosamError(f"{validation}: no validation results; train fold {fold} first")
        predictions = sorted(validation.glob(f"*{ending}"))
        for prediction in tqdm(predictions, desc=f"{model_folder.name.split('__')[0]} fold {fold}", leave=False):
            case = prediction.name[: -len(ending)]
            reference, properties = reader.read_seg(str(gt_folder / prediction.name))
            predicted, _ = reader.read_seg(str(prediction))
            results[case] = {"fold": fold, "metrics": case_metrics(reference[0], predicted[0], labels,
                                                                   tuple(properties["spacing"]))}
    return results
