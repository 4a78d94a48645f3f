"""Train one fold of a SAM configuration (or nnU-Net's baseline) with nnU-Net's trainer classes.

The trainer is instantiated directly (no lookup by name) so that autosam controls threads, worker counts and
the budget; its output folder and files are exactly those of ``nnUNetv2_train``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from autosam.data.splits import resolve_folds
from autosam.errors import AutosamError
from autosam.files import atomic_write_json
from autosam.paths import (
    Dataset,
    configure_training_processes,
    fold_is_trained,
    latest_checkpoint,
    require_folders,
    validation_summary,
)
from autosam.planners.preprocess import preprocess_sam_data
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION, read_plans, read_sam_plan
from autosam.sam.weights.safe_load import load_fold_checkpoint
from autosam.trainers.distributed import check_world, launch
from autosam.trainers.seeding import seed_data_loaders, seed_everything
from autosam.trainers.variants import trainer_for_setup

log = logging.getLogger(__name__)
TRAINING_RECORD = "autosam_training.json"  # beside nnU-Net's files in each fold: what autosam trained it with


@dataclass
class Budget:
    """A training budget; None keeps what the plan (SAM) or nnU-Net's trainer (baseline) says."""

    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None

    def apply(self, trainer) -> None:
        """Epochs and iterations on a built trainer (the batch size goes into its plans, see ``make_trainer``)."""
        if self.epochs:
            trainer.num_epochs = self.epochs
        if self.iterations:
            trainer.num_iterations_per_epoch = self.iterations
            trainer.num_val_iterations_per_epoch = max(1, min(trainer.num_val_iterations_per_epoch,
                                                              self.iterations // 5))


def configuration_budget(configuration: str, baseline_budget: Budget) -> Budget:
    """A baseline configuration's budget: SAM's batch applies to 2d only, a 3d_fullres patch is a volume."""
    return baseline_budget if configuration == "2d" else Budget(baseline_budget.epochs, baseline_budget.iterations)


def resolve_device(device: str | None) -> torch.device:
    """``--device``: auto (None), cpu, cuda or cuda:N, checked against the GPUs torch sees."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = device.partition(":")
    if device == "cpu":
        return torch.device("cpu")
    if kind != "cuda" or (index and not index.isdigit()):
        raise AutosamError(f"--device {device}: choose auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        raise AutosamError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu")
    if index and int(index) >= count:
        raise AutosamError(f"--device {device}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}; choose one")
    return torch.device(device)


def make_trainer(dataset: Dataset, fold: int | str, trainer_cls, plans_name: str = PLANS_NAME,
                 configuration: str = SAM_CONFIGURATION, device: torch.device = torch.device("cpu"),
                 batch_size: int | None = None):
    require_folders("nnUNet_preprocessed", "nnUNet_results")
    plans = read_plans(dataset, plans_name, configuration)
    if batch_size:  # nnU-Net's trainer takes its batch size from the plans (and records them in the fold)
        plans["configurations"][configuration]["batch_size"] = batch_size
    plans["continue_training"] = False  # nnU-Net's constructor pops this key
    dataset_json = json.loads((dataset.preprocessed / "dataset.json").read_text())
    return trainer_cls(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json, device=device)


@contextmanager
def fold_lock(output: Path):
    """One process per fold: a second run on the same fold is refused instead of corrupting it."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / ".autosam.lock"
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AutosamError(f"{output}: another autosam process is training this fold (lock {path}); wait for "
                               "it to finish or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_fold(trainer, continue_training: bool = False, save_probabilities: bool = False,
               seed: int = 0) -> Path:
    """Run (or continue) training and the final validation; returns the fold folder.

    ``seed`` seeds everything before the network is built; the fold's ``autosam_training.json`` records it
    beside the budget, for the report."""
    output = Path(trainer.output_folder)
    seed_everything(seed)
    seed_data_loaders(trainer, seed)
    # under DDP the ranks are one training: rank 0 holds the lock and owns the folder's files
    with fold_lock(output) if trainer.local_rank == 0 else contextlib.nullcontext():
        if trainer.local_rank == 0:
            for leftover in output.glob(".*.tmp"):  # a write cut short by a kill (files.py); nothing else writes them
                leftover.unlink()
            atomic_write_json({"seed": seed}, output / TRAINING_RECORD)
        _train_fold(trainer, output, continue_training, save_probabilities)
    return output


def _train_fold(trainer, output: Path, continue_training: bool, save_probabilities: bool) -> None:
    checkpoint = latest_checkpoint(output)
    if checkpoint is not None and not continue_training:
        raise AutosamError(
            f"{output}: this fold already has {checkpoint.name}; pass --continue to resume it "
            "(autosam never overwrites a trained fold)")
    if continue_training and checkpoint is not None:
        log.info("continuing from %s", checkpoint)
        load_fold_checkpoint(checkpoint)  # refused here if it needs code: nnU-Net's own loader would run it
        trainer.load_checkpoint(str(checkpoint))
    if not fold_is_trained(output):
        try:
            trainer.run_training()
        except torch.OutOfMemoryError:
            batch = trainer.configuration_manager.batch_size
            raise AutosamError(
                f"{output}: the GPU ran out of memory at batch {batch}; re-plan for less memory "
                f"('autosam plan -d {trainer.plans_manager.dataset_name} --gpu-memory GB' with the free memory), "
                f"or fix --batch-size {max(1, batch // 2)}, then 'autosam train --continue'") from None
    if not validation_summary(output).is_file():
        trainer.perform_actual_validation(save_probabilities)


def train(dataset: Dataset, folds: list[str], setup: str | None = None, budget: Budget = Budget(),
          device: str | None = None, continue_training: bool = False, from_scratch: bool = False,
          save_probabilities: bool = False, seed: int | None = None, gpus: int = 1) -> list[Path]:
    """``seed``: None takes the plan's. ``gpus`` > 1: each fold is one DDP training on that many GPUs (with
    ``device='cpu'``: that many CPU processes, gloo)."""
    torch_device = resolve_device(device)
    configure_training_processes(torch_device.type)
    cls = trainer_for_setup(setup)
    planned = read_sam_plan(dataset)
    seed = planned.plan.seed if seed is None else seed
    resolve_folds([int(f) for f in folds if f != "all"], dataset.raw, dataset.preprocessed)
    preprocess_sam_data(dataset)  # once, before any rank starts
    check_world(gpus, torch_device, budget.batch_size or planned.batch_size, device == "cpu")
    if gpus > 1:
        launch(gpus, torch_device, train_folds, dataset, folds, cls, budget, torch_device, continue_training,
               from_scratch, save_probabilities, seed)
        return [fold_folder(dataset, cls, fold) for fold in folds]
    return train_folds(dataset, folds, cls, budget, torch_device, continue_training, from_scratch,
                       save_probabilities, seed)


def train_folds(dataset: Dataset, folds: list[str], cls, budget: Budget, device: torch.device,
                continue_training: bool, from_scratch: bool, save_probabilities: bool, seed: int) -> list[Path]:
    """Train the folds one after the other in this process (each rank runs this under DDP)."""
    return [Path(train_one(dataset, fold, cls, budget, device, continue_training, from_scratch, save_probabilities,
                           seed).output_folder) for fold in folds]


def train_one(dataset: Dataset, fold: str, cls, budget: Budget, device: torch.device, continue_training: bool,
              from_scratch: bool, save_probabilities: bool, seed: int):
    """Train and validate one fold; returns the trainer."""
    trainer = make_trainer(dataset, fold if fold == "all" else int(fold), cls, device=device,
                           batch_size=budget.batch_size)
    if from_scratch and not trainer.from_scratch:
        trainer.from_scratch = True
    budget.apply(trainer)
    train_fold(trainer, continue_training, save_probabilities, seed)
    return trainer


def fold_folder(dataset: Dataset, cls, fold: str) -> Path:
    return dataset.model_folder(cls.__name__, PLANS_NAME, SAM_CONFIGURATION) / f"fold_{fold}"
