"""The trainings of ``run``, ``ablate`` and few-shot runs as one list of fold jobs, and the serial executor.

``fold_jobs`` is the one builder: every method of a study (a ``Training``) on every fold. A job trains its
fold unless the fold is finished; serially it runs in this process, on Ray (``experiments.ray_cluster``) as one
task per job. Both call the same ``FoldJob.run``: the executor only decides where it runs, and says which
jobs failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from autosam.paths import Dataset, fold_is_finished, latest_checkpoint
from autosam.trainers.fold_training import Budget, make_trainer, resolve_device, train_fold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """One method of a study: which trainer trains which plans and configuration, on what budget."""

    trainer_cls: type  # an importable trainer class (pickled by reference for Ray)
    plans: str
    configuration: str
    budget: Budget
    label: str  # "SAM", "nnU-Net 2d", a set-up name, "SAM, 5 cases, repeat 0"


@dataclass(frozen=True, eq=False)  # a job is itself (a dict key), whatever its fields
class FoldJob:
    dataset: Dataset
    fold: int
    training: Training
    device: torch.device
    seed: int
    save_probabilities: bool

    @property
    def name(self) -> str:
        return f"{self.training.label} fold {self.fold}"

    @property
    def output_folder(self):
        t = self.training
        return self.dataset.model_folder(t.trainer_cls.__name__, t.plans, t.configuration) / f"fold_{self.fold}"

    def run(self) -> bool:
        """Train the fold unless it is finished; returns whether any training ran."""
        t = self.training
        # decided before building a trainer: nnU-Net's constructor already writes a new log file
        if fold_is_finished(self.output_folder):
            log.info("%s: done, skipped", self.name)
            return False
        trainer = make_trainer(self.dataset, self.fold, t.trainer_cls, t.plans, t.configuration, self.device,
                               t.budget.batch_size)
        t.budget.apply(trainer)
        state = "continuing" if latest_checkpoint(self.output_folder) else "training"
        log.info("%s: %s (%d epochs x %d iterations, batch %d, seed %d)", self.name, state, trainer.num_epochs,
                 trainer.num_iterations_per_epoch, trainer.configuration_manager.batch_size, self.seed)
        train_fold(trainer, continue_training=True, save_probabilities=self.save_probabilities, seed=self.seed)
        return True


def fold_jobs(dataset: Dataset, folds: list[int], trainings: list[Training], device: torch.device, seed: int,
              save_probabilities: bool = False) -> list[FoldJob]:
    """Every training on every fold, fold by fold (a serial run finishes fold 0 of every method first)."""
    return [FoldJob(dataset, fold, training, device, seed, save_probabilities)
            for fold in folds for training in trainings]


class SerialExecutor:
    """Every job in this process, one after the other; the first error stops the run."""

    def device(self, requested: str | None) -> torch.device:
        return resolve_device(requested)

    def run(self, jobs: list[FoldJob]) -> dict[FoldJob, str]:
        for job in jobs:
            job.run()
        return {}

    def close(self) -> None:
        pass
