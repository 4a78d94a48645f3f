"""What a run will train and about how long it takes, before it starts: one row per training (nnU-Net's
baselines and SAM) with its folds, optimiser steps, compute per step from the step-cost model
(``planners/step_cost.py``: SAM's set-ups and nnU-Net's planned networks alike) and an estimated time.

The clock: every step's training GFLOPs (3x the forward for weights that train, SAM's own factors from the
step-cost model) plus the forward-only validation iterations, over this machine's measured matrix-multiply rate
times ``STEP_EFFICIENCY``. The estimate follows the step costs as they change (new attention, backbones,
baselines), because it counts the networks' FLOPs rather than a table of timings."""

from __future__ import annotations

import json
from dataclasses import dataclass

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.paths import Dataset
from autosam.planners.sam_planner import BASELINE_PLANS
from autosam.planners.step_cost import (
    STEP_EFFICIENCY,
    forward_gflops,
    iteration_gflops,
    measured_gflops_per_second,
    nnunet_forward_gflops,
)
from autosam.plans import SamPlan, read_plans
from autosam.trainers.fold_training import Budget

NNUNET_EPOCHS, NNUNET_ITERATIONS, NNUNET_VAL_ITERATIONS = 1000, 250, 50  # nnU-Net's trainer defaults


@dataclass(frozen=True)
class Job:
    name: str
    folds: int
    epochs: int
    iterations: int
    batch_size: int
    gflops_per_step: float  # training step, the whole batch
    val_gflops_per_epoch: float  # forward-only validation iterations

    @property
    def steps(self) -> int:
        return self.epochs * self.iterations

    @property
    def gflops(self) -> float:
        return self.folds * self.epochs * (self.iterations * self.gflops_per_step + self.val_gflops_per_epoch)


def _classes_and_channels(dataset: Dataset) -> tuple[int, int]:
    meta = json.loads((dataset.raw / "dataset.json").read_text())
    channels = len(meta.get("channel_names", meta.get("modality", {})))
    return len([v for v in meta["labels"].values() if isinstance(v, int)]), channels


def jobs(
    dataset: Dataset,
    folds: int,
    configurations: tuple[str, ...],
    baseline: Budget,
    sam: Budget,
    plan: SamPlan,
    sam_batch: int,
) -> list[Job]:
    """The run's trainings: nnU-Net's ``configurations`` at ``baseline``'s budget (None: its defaults) and SAM's
    ``plan`` (at ``sam_batch``) at ``sam``'s budget (None: the plan's)."""
    classes, channels = _classes_and_channels(dataset)
    plans = PlansManager(read_plans(dataset, BASELINE_PLANS, "2d"))
    rows = []
    for name in configurations:
        configuration = plans.get_configuration(name)
        batch = (baseline.batch_size if name == "2d" else None) or configuration.batch_size
        forward = nnunet_forward_gflops(configuration.configuration, channels, classes)
        rows.append(
            Job(
                f"nnU-Net {name}",
                folds,
                baseline.epochs or NNUNET_EPOCHS,
                baseline.iterations or NNUNET_ITERATIONS,
                batch,
                3 * forward * batch,
                NNUNET_VAL_ITERATIONS * forward * batch,
            )
        )
    batch = sam_batch
    encoder, decoder = forward_gflops(plan.setup.backbone, plan.image_size, classes)
    rows.append(
        Job(
            "SAM",
            folds,
            sam.epochs or plan.num_epochs,
            sam.iterations or plan.iterations_per_epoch,
            batch,
            iteration_gflops(plan.setup, plan.image_size, classes, plan.embedding_cache) * batch,
            plan.val_iterations_per_epoch * (encoder + decoder) * batch,
        )
    )
    return rows


def estimated_seconds(job: Job, device: str) -> float:
    return job.gflops / (measured_gflops_per_second(device) * STEP_EFFICIENCY)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} days"


def job_table(rows: list[Job], device: str, equal_budget: bool) -> list[str]:
    """The table's lines, the total, and on a CPU with nnU-Net's own budget the flag that shortens it."""
    header = f"{'training':<20}{'folds':>6}{'steps each':>22}{'GFLOPs/step':>13}{'estimated':>12}"
    lines = [header]
    total = 0.0
    for job in rows:
        seconds = estimated_seconds(job, device)
        total += seconds
        steps = f"{job.steps:,} ({job.epochs}x{job.iterations})"
        lines.append(f"{job.name:<20}{job.folds:>6}{steps:>22}{job.gflops_per_step:>13.1f}{_duration(seconds):>12}")
    rate = measured_gflops_per_second(device)
    lines.append(
        f"total about {_duration(total)} on {device} (step-cost model: {rate:.0f} GFLOP/s measured x "
        f"{STEP_EFFICIENCY:g} per training step)"
    )
    if device == "cpu" and not equal_budget and any(j.epochs == NNUNET_EPOCHS for j in rows):
        lines.append(
            "nnU-Net's own budget (1000 x 250 steps per fold) is days on a CPU: --equal-budget gives it SAM's steps"
        )
    return lines


def run_job_table(dataset: Dataset, plan: SamPlan, sam_batch: int, device: str, with_3d: bool = True) -> list[str]:
    """The job table of ``autosam run`` with each method's own budget on every fold of the dataset's folds."""
    from autosam.data.splits import resolve_folds
    from autosam.planners.preprocess import baseline_configurations

    folds = len(resolve_folds(None, dataset.raw, dataset.preprocessed))
    rows = jobs(dataset, folds, baseline_configurations(dataset, with_3d), Budget(), Budget(), plan, sam_batch)
    return job_table(rows, device, equal_budget=False)
