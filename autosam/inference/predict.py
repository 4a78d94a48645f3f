"""Predict new images with a trained configuration, or nnU-Net's chosen ensemble, through nnU-Net's predictor.

Outputs are written by the dataset's own reader/writer: PNG in, PNG out; NIfTI in, NIfTI out with the
input's spacing, origin and direction. Input files follow nnU-Net's naming (``<case>_0000<ending>``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from nnunetv2.ensembling.ensemble import ensemble_folders
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from autosam.data.inputs import check_input_folder
from autosam.errors import AutosamError
from autosam.inference.prompt_file import read_prompt_file, to_preprocessed
from autosam.inference.trained_models import Choice, Model, SamFold, trained_model_folder
from autosam.paths import FINAL_CHECKPOINT, Dataset
from autosam.sam.weights.safe_load import load_fold_checkpoint, load_postprocessing
from autosam.trainers.fold_training import resolve_device

log = logging.getLogger("autosam")


def _check_inputs(input_dir: Path, output_dir: Path, model_folder: Path) -> None:
    """The input folder against the model (one line per cause, nothing written on refusal), warnings logged."""
    if output_dir.resolve() == input_dir.resolve():
        raise AutosamError(f"{output_dir}: output folder must differ from the input folder (inputs are never overwritten)")
    for warning in check_input_folder(input_dir, json.loads((model_folder / "dataset.json").read_text())):
        log.warning("%s", warning)


def _check_folds(folder: Path, model: Model, folds: list[str] | None, checkpoint: str) -> list[int | str]:
    """The folds to use, each opened weights-only (nnU-Net's predictor loads them with weights_only=False)
    and, for SAM, checked against its plan and base file."""
    trained = sorted(p.name[5:] for p in folder.glob("fold_*") if (p / checkpoint).is_file())
    # as nnU-Net: the cross-validation folds; fold 'all' (trained on every case) only when it is the only one
    use_folds = folds or [f for f in trained if f != "all"] or trained
    use_folds = [f if f == "all" else int(f) for f in use_folds]
    missing = [f for f in use_folds if not (folder / f"fold_{f}" / checkpoint).is_file()]
    if not use_folds or missing:
        raise AutosamError(f"{folder}: no {checkpoint} for fold(s) {missing or 'any'}; train them first")
    for fold in use_folds:
        if model.is_sam:
            SamFold(folder, model.trainer, model.configuration, str(fold), checkpoint).read_checked()
        else:
            load_fold_checkpoint(folder / f"fold_{fold}" / checkpoint)
    return use_folds


def _predict_model(folder: Path, folds: list[int | str], input_dir: Path, output_dir: Path, device: torch.device,
                   checkpoint: str, mirroring: bool, probabilities: bool) -> None:
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=device.type == "cuda", device=device, verbose=False, allow_tqdm=True,
    )
    predictor.initialize_from_trained_model_folder(str(folder), folds, checkpoint_name=checkpoint)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files(str(input_dir), str(output_dir), save_probabilities=probabilities, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


def _ensemble_and_postprocess(members: list[Path], choice: Choice, work: Path, output_dir: Path) -> None:
    """nnU-Net's own ensembling (mean of the members' probabilities) and post-processing."""
    merged = members[0]
    if len(members) > 1:
        merged = work / "ensemble"
        ensemble_folders([str(m) for m in members], str(merged), num_processes=1)
    pp_fns, pp_fn_kwargs = load_postprocessing(choice.postprocessing)
    apply_postprocessing_to_folder(str(merged), str(output_dir), pp_fns, pp_fn_kwargs, str(choice.plans_file),
                                   str(members[0] / "dataset.json"), num_processes=1)


def predict(dataset: Dataset, input_dir: Path, output_dir: Path, folds: list[str] | None = None,
            choice: Choice | None = None, device: str | None = None,
            checkpoint: str = FINAL_CHECKPOINT, mirroring: bool = True) -> None:
    """Segment every image of ``input_dir`` with ``choice`` (default: the planned SAM set-up)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise AutosamError(f"{input_dir}: no such input folder")
    choice = choice or Choice((Model.for_setup(None),), "the planned set-up")
    if choice.postprocessing is not None and not choice.postprocessing.is_file():
        raise AutosamError(f"{choice.postprocessing}: not found; run 'autosam run -d {dataset.id}' again to choose the "
                           "configuration, or pick a model with --setup")
    folders = [trained_model_folder(dataset, model) for model in choice.models]
    checked = [_check_folds(folder, model, folds, checkpoint) for folder, model in zip(folders, choice.models)]
    _check_inputs(input_dir, output_dir, folders[0])
    torch_device = resolve_device(device)
    if choice.postprocessing is None and len(choice.models) == 1:
        _predict_model(folders[0], checked[0], input_dir, output_dir, torch_device, checkpoint, mirroring, False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".autosam_members_", dir=output_dir) as work:
        members = [Path(work) / model.name for model in choice.models]
        for folder, folds_used, member in zip(folders, checked, members):
            _predict_model(folder, folds_used, input_dir, member, torch_device, checkpoint, mirroring,
                           probabilities=len(members) > 1)
        _ensemble_and_postprocess(members, choice, Path(work), output_dir)


def predict_with_prompts(dataset: Dataset, input_dir: Path, output_dir: Path, prompts_file: Path,
                         folds: list[str] | None = None, setup: str | None = None, device: str | None = None,
                         checkpoint: str = FINAL_CHECKPOINT) -> None:
    """Segment every 2D image of ``input_dir`` with the prompted SAM model, using the user's boxes and points
    (``autosam.inference.prompt_file``) for the classes they name; images and classes without prompts are segmented
    automatically. Each image is one network input: the whole preprocessed slice, resized to the SAM input (as
    in the interactive evaluation; no sliding window, no mirroring); the folds' probabilities are averaged and
    written in the input's geometry by nnU-Net's exporter. The prompts file is checked before anything is written."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise AutosamError(f"{input_dir}: no such input folder")
    model = Model.for_setup(setup)
    folder = trained_model_folder(dataset, model)
    use_folds = _check_folds(folder, model, folds, checkpoint)
    _check_inputs(input_dir, output_dir, folder)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans = PlansManager(str(folder / "plans.json"))
    configuration = plans.get_configuration(model.configuration)
    networks = [SamFold(folder, model.trainer, model.configuration, str(f), checkpoint).network()[0] for f in use_folds]
    if networks[0].prompt_mode is None:
        raise AutosamError(f"{folder}: this SAM model was trained without prompts; plan and train with --prompts "
                           "box|point|box+point to predict with prompts")
    ending = dataset_json["file_ending"]
    channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    cases = sorted(p.name[: -len(f"_0000{ending}")] for p in input_dir.glob(f"*_0000{ending}"))
    if not cases:
        raise AutosamError(f"{input_dir}: no <case>_0000{ending} images")
    reader = plans.image_reader_writer_class()
    files = {c: [str(input_dir / f"{c}_{i:04d}{ending}") for i in range(channels)] for c in cases}
    shapes = {c: reader.read_images(files[c])[0].shape[1:] for c in cases}
    flat = [c for c, shape in shapes.items() if shape[0] != 1]
    if flat:
        raise AutosamError(f"{input_dir / (flat[0] + '_0000' + ending)}: --prompts takes 2D images; this one holds "
                           f"{shapes[flat[0]][0]} slices")
    labels = {name: v for name, v in dataset_json["labels"].items() if isinstance(v, int) and v > 0 and name != "ignore"}
    requests = read_prompt_file(prompts_file, {c: tuple(s[1:]) for c, s in shapes.items()}, labels)

    torch_device = resolve_device(device)
    for network in networks:
        network.to(torch_device).eval()
    preprocessor = configuration.preprocessor_class(verbose=False)
    output_dir.mkdir(parents=True, exist_ok=True)
    for case in tqdm(cases, desc="prompted prediction", unit="image"):
        data, _, properties = preprocessor.run_case(files[case], None, plans, configuration, dataset_json)
        prompts = {k: to_preprocessed(p, properties, data.shape[1:], plans.transpose_forward)
                   for k, p in requests.get(case, {}).items()}
        x = torch.from_numpy(data[:, 0]).float()[None].to(torch_device)
        with torch.no_grad():
            probabilities = torch.stack([torch.softmax(n(x, [prompts]), 1) for n in networks]).mean(0)
        logits = torch.log(probabilities.clamp_min(1e-8))[0][:, None].cpu()  # (K, 1, H, W), as nnU-Net's 2D
        export_prediction_from_logits(logits, properties, configuration, plans, dataset_json,
                                      str(output_dir / case), False)
