"""The trainings of ``run`` and ``ablate`` as a list of fold jobs, and where they run.

A job is the arguments of ``pipeline.train_once`` (one dataset, configuration and fold); serially it runs in
this process, on Ray (``ray_runner``) as one task per job. Both call the same ``train_once``: the executor
only decides where it runs, and says which jobs failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from autosam.trainers.fold_training import Budget

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # a job is itself (a dict key), whatever its fields
class FoldJob:
    dataset: str
    fold: int
    trainer_cls: type  # an importable trainer class (pickled by reference for Ray)
    plans: str
    configuration: str
    budget: Budget
    device: torch.device
    label: str  # "SAM", "nnU-Net 2d", a set-up name
    seed: int
    save_probabilities: bool

    @property
    def name(self) -> str:
        return f"{self.label} fold {self.fold}"

    def run(self) -> bool:
        """Train the fold unless it is done; returns whether any training ran."""
        from autosam.experiments.run import train_once

        return train_once(self.dataset, self.fold, self.trainer_cls, self.plans, self.configuration, self.budget,
                          self.device, self.label, self.seed, self.save_probabilities)


class SerialExecutor:
    """Every job in this process, one after the other; the first error stops the run (as it always did)."""

    def device(self, requested: str | None) -> torch.device:
        from autosam.trainers.fold_training import resolve_device

        return resolve_device(requested)

    def run(self, jobs: list[FoldJob]) -> dict[FoldJob, str]:
        for job in jobs:
            job.run()
        return {}

    def close(self) -> None:
        pass


def executor_for(ray_address: str | None, gpu_memory_gb: float | None = None):
    """Serial without ``--ray``; else Ray at ``ray_address`` ("" starts a local instance). ``gpu_memory_gb``:
    the cluster's GPU memory, against which Ray jobs are checked (None: this machine's GPU, if any)."""
    if ray_address is None:
        return SerialExecutor()
    from autosam.experiments.ray_cluster import RayExecutor

    return RayExecutor(ray_address, gpu_memory_gb)
