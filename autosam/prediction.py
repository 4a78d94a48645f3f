"""Predict new images with a trained configuration through nnU-Net's predictor.

Outputs are written by the dataset's own reader/writer: PNG in, PNG out; NIfTI in, NIfTI out with the
input's spacing, origin and direction. Input files follow nnU-Net's naming (``<case>_0000<ending>``).
"""

from __future__ import annotations

from pathlib import Path

from autosam.errors import AutosamError
from autosam.models import Model, SamFold, trained_model_folder
from autosam.safe_load import load_fold_checkpoint
from autosam.training import resolve_device


def predict(dataset: str, input_dir: Path, output_dir: Path, folds: list[str] | None = None,
            model: Model = Model.for_setup(None), device: str | None = None,
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
        if model.is_sam:  # ... and a SAM fold against its plan and base file
            SamFold(folder, model.trainer, model.configuration, str(fold), checkpoint).read_checked()
        else:
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
