"""``autosam run``: plan -> preprocess -> train nnU-Net and SAM on the same folds -> compare -> pick the best.

Idempotent: a finished fold (final checkpoint and validation) is skipped, an interrupted one continues from
its last checkpoint, and an existing SAM plan is reused so that continued folds keep their set-up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from autosam.nnunet_env import configure_training_processes, dataset_name, require_folders
from autosam.sam_plan import PLANS_NAME, SAM_CONFIGURATION
from autosam.training import latest_checkpoint, make_trainer, resolve_device, train_fold

log = logging.getLogger(__name__)
BASELINE = ("nnUNetTrainer", "nnUNetPlans", "2d")
REPORT_FOLDER = "autosam_report"


@dataclass
class RunOptions:
    folds: list[int]
    epochs: int | None = None
    iterations: int | None = None
    device: str | None = None
    gpu_memory: float | None = None
    ensembles: bool = True
    with_3d: bool = False
    replan: bool = False


def fold_done(output: Path) -> bool:
    return (output / "checkpoint_final.pth").is_file() and (output / "validation" / "summary.json").is_file()


def train_once(dataset: str, fold: int, trainer_cls, plans: str, configuration: str, options: RunOptions,
               device, label: str) -> bool:
    """Train one fold unless done; returns whether any training ran."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    # decided before building a trainer: nnU-Net's constructor already writes a new log file
    if fold_done(Path(get_output_folder(dataset_name(dataset), trainer_cls.__name__, plans, configuration, fold))):
        log.info("%s fold %d: done, skipped", label, fold)
        return False
    trainer = make_trainer(dataset, fold, trainer_cls, plans, configuration, device)
    output = Path(trainer.output_folder)
    if options.epochs:
        trainer.num_epochs = options.epochs
    if options.iterations:
        trainer.num_iterations_per_epoch = options.iterations
        trainer.num_val_iterations_per_epoch = max(1, min(trainer.num_val_iterations_per_epoch, options.iterations // 5))
    state = "continuing" if latest_checkpoint(output) else "training"
    log.info("%s fold %d: %s (%d epochs x %d iterations)", label, fold, state, trainer.num_epochs,
             trainer.num_iterations_per_epoch)
    train_fold(trainer, continue_training=True, save_probabilities=options.ensembles)
    return True


def find_best(dataset: str, folds: list[int], models: list[dict], ensembles: bool) -> dict:
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration

    return find_best_configuration(dataset_name(dataset), models, allow_ensembling=ensembles, num_processes=1,
                                   overwrite=True, folds=tuple(folds), strict=False)


def run(dataset: str, sam_options, options: RunOptions) -> Path:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from autosam.evaluation.report import Method, compare, headline, write_report
    from autosam.hardware import detect_hardware
    from autosam.preprocess import plan, preprocess
    from autosam.sam_plan import sam_plan_of
    from planners.explain import plan_summary
    from trainers.sam_trainer import nnUNetTrainerSAM

    from autosam.validate import check_dataset

    folders = require_folders("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    check_dataset(folders["nnUNet_raw"], str(dataset), max(5, len(options.folds)))  # before any work
    name = dataset_name(dataset)
    plans_file = folders["nnUNet_preprocessed"] / name / f"{PLANS_NAME}.json"
    has_plan = plans_file.is_file() and SAM_CONFIGURATION in json.loads(plans_file.read_text())["configurations"]
    if has_plan and not options.replan:
        log.info("using the existing SAM plan in %s (re-plan with --replan)", plans_file)
    else:
        device = options.device if options.device in ("cpu", "cuda") else None
        plan(dataset, sam_options, detect_hardware(options.gpu_memory, device))
    preprocess(dataset, 1, ("2d", "3d_fullres") if options.with_3d else ("2d",))

    torch_device = resolve_device(options.device)
    configure_training_processes(torch_device.type)
    baselines = [BASELINE] + ([("nnUNetTrainer", "nnUNetPlans", "3d_fullres")] if options.with_3d else [])
    for fold in options.folds:
        for trainer, plans, configuration in baselines:
            train_once(dataset, fold, nnUNetTrainer, plans, configuration, options, torch_device,
                       f"nnU-Net {configuration}")
        train_once(dataset, fold, nnUNetTrainerSAM, PLANS_NAME, SAM_CONFIGURATION, options, torch_device, "SAM")

    results = folders["nnUNet_results"] / name
    methods = [Method("nnU-Net", results / "__".join(BASELINE)),
               Method("SAM", results / f"nnUNetTrainerSAM__{PLANS_NAME}__{SAM_CONFIGURATION}")]
    groups_file = folders["nnUNet_preprocessed"] / name / "autosam_groups.json"
    groups = json.loads(groups_file.read_text()) if groups_file.is_file() else None
    gt = folders["nnUNet_preprocessed"] / name / "gt_segmentations"
    comparison = compare(methods, options.folds, gt, groups)
    configuration = json.loads(plans_file.read_text())["configurations"][SAM_CONFIGURATION]
    summary = plan_summary(sam_plan_of(configuration), configuration["batch_size"],
                           configuration["autosam_dataset_facts"])
    models = [{"trainer": t, "plans": p, "configuration": c} for t, p, c in baselines] + [
        {"trainer": "nnUNetTrainerSAM", "plans": PLANS_NAME, "configuration": SAM_CONFIGURATION}]
    best = find_best(dataset, options.folds, models, options.ensembles)
    report = write_report({**comparison, "best_configuration": _best_name(best)}, methods,
                          results / REPORT_FOLDER, folders["nnUNet_raw"] / name / "imagesTr", gt, summary)
    for line in headline(comparison):
        print(line)
    print(f"best configuration (nnU-Net's selection over both): {_best_name(best)}")
    print(f"report: {report}")
    return report


def _best_name(best: dict) -> str:
    selected = best["best_model_or_ensemble"]["selected_model_or_models"]
    name = " + ".join(f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}" for m in selected)
    return ("ensemble of " if len(selected) > 1 else "") + name
