"""What a run will train and about how long it takes, before it starts: one row per training (nnU-Net's
baselines and SAM) with its folds, optimiser steps, compute per step from the step-cost model
(``planners/step_cost.py``: SAM's set-ups and nnU-Net's planned networks alike) and an estimated time.

The clock: each network's training step and validation iteration timed on the device at its planned input
(``planners/step_timing.py``), times the budget's training steps and validation iterations. Because the networks
themselves are timed, the estimate follows their step costs as they change (new attention, backbones, baselines)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.paths import Dataset
from autosam.planners.sam_planner import BASELINE_PLANS
from autosam.planners.step_cost import iteration_gflops, nnunet_forward_gflops
from autosam.planners.step_timing import StepTime, nnunet_step_time, sam_step_time
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
    val_iterations: int  # per epoch, forward only
    gflops_per_step: float  # training step, the whole batch
    time: StepTime  # seconds per training step and validation iteration, and what they rest on

    @property
    def steps(self) -> int:
        return self.epochs * self.iterations

    @property
    def seconds(self) -> float:
        return (
            self.folds
            * self.epochs
            * (self.iterations * self.time.train_seconds + self.val_iterations * self.time.val_seconds)
        )


def _classes_and_channels(dataset: Dataset) -> tuple[int, int]:
    meta = json.loads((dataset.raw / "dataset.json").read_text())
    channels = len(meta.get("channel_names", meta.get("modality", {})))
    return len([v for v in meta["labels"].values() if isinstance(v, int)]), channels


def _val_iterations(budget: Budget, default: int) -> int:
    """Validation iterations per epoch, as ``Budget.apply`` sets them on the trainer."""
    return max(1, min(default, budget.iterations // 5)) if budget.iterations else default


def jobs(
    dataset: Dataset,
    folds: int,
    configurations: tuple[str, ...],
    baseline: Budget,
    sam: Budget,
    plan: SamPlan,
    sam_batch: int,
    device: str,
) -> list[Job]:
    """The run's trainings: nnU-Net's ``configurations`` at ``baseline``'s budget (None: its defaults) and SAM's
    ``plan`` (at ``sam_batch``) at ``sam``'s budget (None: the plan's), each network timed on ``device``."""
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
                _val_iterations(baseline, NNUNET_VAL_ITERATIONS),
                3 * forward * batch,
                nnunet_step_time(configuration.configuration, channels, classes, batch, device),
            )
        )
    rows.append(
        Job(
            "SAM",
            folds,
            sam.epochs or plan.num_epochs,
            sam.iterations or plan.iterations_per_epoch,
            sam_batch,
            _val_iterations(sam, plan.val_iterations_per_epoch),
            iteration_gflops(plan.setup, plan.image_size, classes, plan.embedding_cache) * sam_batch,
            sam_step_time(
                plan.setup,
                plan.image_size,
                classes,
                sam_batch,
                device,
                plan.embedding_cache,
                plan.gradient_checkpointing,
                plan.precision,
            ),
        )
    )
    return rows


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} days"


def job_table(rows: list[Job], device: str, equal_budget: bool) -> list[str]:
    """The table's lines, the total, and on a CPU with nnU-Net's own budget the flag that shortens it."""
    header = f"{'training':<20}{'folds':>6}{'steps each':>22}{'GFLOPs/step':>13}{'s/step':>8}{'estimated':>11}"
    lines = [header]
    for job in rows:
        steps = f"{job.steps:,} ({job.epochs}x{job.iterations})"
        lines.append(
            f"{job.name:<20}{job.folds:>6}{steps:>22}{job.gflops_per_step:>13.1f}"
            f"{'?' if math.isnan(job.time.train_seconds) else f'{job.time.train_seconds:.2f}':>8}"
            f"{_duration(job.seconds):>11}"
        )
    bases = {job.time.basis for job in rows}
    basis = (
        "each timed at its planned batch"
        if bases == {"timed"}
        else "; ".join(f"{job.name} {job.time.basis}" for job in rows)
    )
    lines.append(
        f"total about {_duration(sum(job.seconds for job in rows))} of training on {device} (every network's "
        f"training step and validation iteration: {basis}; data loading, set-up and final validation not counted)"
    )
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if device == "cpu" and load > cores:
        lines.append(
            f"timed under a load average of {load:.1f} on {cores} cores: other processes share the CPU, "
            "and the estimate holds only while they do"
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
    rows = jobs(dataset, folds, baseline_configurations(dataset, with_3d), Budget(), Budget(), plan, sam_batch, device)
    return job_table(rows, device, equal_budget=False)
