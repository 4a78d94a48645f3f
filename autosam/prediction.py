"""Predict new images with a trained configuration through nnU-Net's predictor.

Outputs are written by the dataset's own reader/writer: PNG in, PNG out; NIfTI in, NIfTI out with the
input's spacing, origin and direction. Input files follow nnU-Net's naming (``<case>_0000<ending>``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from autosam.errors import AutosamError
from autosam.nnunet_env import dataset_name, model_folder, require_folders
from autosam.safe_load import load_fold_checkpoint
from autosam.sam_plan import PLANS_NAME, SAM_CONFIGURATION
from autosam.training import resolve_device


@dataclass
class Model:
    trainer: str
    plans: str = PLANS_NAME
    configuration: str = SAM_CONFIGURATION

    @property
    def name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"


def _trained(folder: Path) -> bool:
    return any((fold / "checkpoint_final.pth").is_file() for fold in folder.glob("fold_*"))


def resolve_model(dataset: str, setup: str | None = None) -> tuple[Model, str]:
    """Which trained model ``predict`` uses, and why: the fixed set-up asked for; else the configuration
    nnU-Net's find_best_configuration chose (after ``autosam run``); else the only trained SAM model."""
    if setup:
        return Model(f"nnUNetTrainerSAM_{setup}"), f"the fixed set-up {setup} (--setup)"
    results = require_folders("nnUNet_results")["nnUNet_results"] / dataset_name(dataset)
    information = results / "inference_information.json"
    if information.is_file():
        chosen = json.loads(information.read_text())["best_model_or_ensemble"]["selected_model_or_models"]
        models = [Model(m["trainer"], m["plans_identifier"], m["configuration"]) for m in chosen]
        if len(models) > 1:
            raise AutosamError(
                f"{information}: nnU-Net's find_best_configuration chose an ensemble of "
                f"{' + '.join(m.name for m in models)}; predict it with the commands in inference_instructions.txt, "
                "or one SAM model with --setup")
        return models[0], f"the configuration nnU-Net's find_best_configuration chose ({information.name})"
    trained = sorted(f.name for f in results.glob(f"nnUNetTrainerSAM*__{PLANS_NAME}__{SAM_CONFIGURATION}")
                     if _trained(f))
    if len(trained) > 1:
        setups = ", ".join(name.split("__")[0].removeprefix("nnUNetTrainerSAM_") for name in trained)
        raise AutosamError(f"{results}: several trained SAM models ({setups}); choose one with --setup "
                           "('nnUNetTrainerSAM' is the planned set-up)")
    if not trained:
        raise AutosamError(f"{results}: no trained SAM model; run 'autosam train -d {dataset} -f 0' first")
    return Model(trained[0].split("__")[0]), "the only trained SAM model"


def trained_model_folder(dataset: str, model: Model) -> Path:
    folder = model_folder(dataset, model.trainer, model.plans, model.configuration)
    if not folder.is_dir():
        raise AutosamError(f"{folder}: no trained model; run 'autosam train -d {dataset} -f 0' first")
    return folder


def predict(dataset: str, input_dir: Path, output_dir: Path, folds: list[str] | None = None,
            model: Model = Model("nnUNetTrainerSAM"), device: str | None = None,
            checkpoint: str = "checkpoint_final.pth", mirroring: bool = True) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if not Path(input_dir).is_dir():
        raise AutosamError(f"{input_dir}: no such input folder")
    if Path(output_dir).resolve() == Path(input_dir).resolve():
        raise AutosamError(f"{output_dir}: output folder must differ from the input folder (inputs are never overwritten)")
    folder = trained_model_folder(dataset, model)
    use_folds = folds or sorted(p.name[5:] for p in folder.glob("fold_*") if (p / checkpoint).is_file())
    use_folds = [f if f == "all" else int(f) for f in use_folds]
    missing = [f for f in use_folds if not (folder / f"fold_{f}" / checkpoint).is_file()]
    if not use_folds or missing:
        raise AutosamError(f"{folder}: no {checkpoint} for fold(s) {missing or 'any'}; train them first")
    for fold in use_folds:  # nnU-Net's predictor loads them with weights_only=False: check them first
        load_fold_checkpoint(folder / f"fold_{fold}" / checkpoint)
    torch_device = resolve_device(device)
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=torch_device.type == "cuda", device=torch_device, verbose=False,
        allow_tqdm=True,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds, checkpoint_name=checkpoint)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files(str(input_dir), str(output_dir), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
