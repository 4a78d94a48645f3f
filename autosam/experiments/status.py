"""``autosam status -d ID``: what is planned, which folds of which models are trained, and the report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from autosam.paths import Dataset, fold_has_started, fold_is_trained
from autosam.plans import PLANS_NAME, has_sam_plan, read_sam_plan

REPORT_FOLDER = "autosam_report"
RUN_LOG = "autosam_run.log"  # beside the report: autosam's lines and nnU-Net's planning output, every run appended
EPOCH_LINE = re.compile(r": Epoch (\d+)\s*$")  # nnU-Net's training log: an epoch starts ...
EPOCH_DONE = ": Epoch time: "  # ... and ends


def epochs_done(fold: Path) -> int | None:
    """Epochs the fold finished, from nnU-Net's training logs (a resumed training repeats epochs after its last
    checkpoint in a new log: the highest epoch that ended counts); None: no log."""
    logs = sorted(fold.glob("training_log_*.txt"))
    if not logs:
        return None
    done = 0
    for log in logs:
        epoch = None
        for line in log.read_text(errors="replace").splitlines():
            started = EPOCH_LINE.search(line)
            if started:
                epoch = int(started.group(1))
            elif EPOCH_DONE in line and epoch is not None:
                done = max(done, epoch + 1)
    return done


def fold_budget(fold: Path) -> str | None:
    """'fold 0: 8 of 8 epochs x 25 iterations, batch 4 (200 optimiser steps)': the budget the fold was started
    with (nnU-Net's debug.json) and the epochs it finished (its logs); no checkpoint is loaded. None: neither."""
    debug_file, done = fold / "debug.json", epochs_done(fold)
    debug = json.loads(debug_file.read_text()) if debug_file.is_file() else {}
    if "num_epochs" not in debug and done is None:
        return None
    epochs = debug.get("num_epochs", "?")
    iterations, batch = debug.get("num_iterations_per_epoch"), debug.get("batch_size")
    line = f"  {fold.name.replace('_', ' ')}: {done if done is not None else '?'} of {epochs} epochs"
    if iterations:
        line += f" x {iterations} iterations" + (f", batch {batch}" if batch else "")
        if done is not None:
            line += f" ({done * int(iterations):,} optimiser steps)"
    return line


def status_lines(dataset: Dataset) -> list[str]:
    """One line for the plan, one per model folder (trained and started folds) with one per fold that recorded
    its budget, one for the report."""
    plan_file = dataset.preprocessed / f"{PLANS_NAME}.json"
    if os.environ.get("nnUNet_preprocessed") and has_sam_plan(dataset):
        planned = read_sam_plan(dataset)
        plan = planned.plan
        base = plan.base_checkpoint.name if plan.base_checkpoint else "random weights"
        line = (
            f"plan: {plan.setup.name} at {plan.image_size} px, batch {planned.batch_size}, {plan.num_epochs} "
            f"epochs x {plan.iterations_per_epoch} iterations, from {base}, planned for {plan.hardware} "
            f"({plan_file})"
        )
        lines = [line]
    else:
        lines = [
            f"plan: none yet (autosam plan-and-preprocess -d {dataset.id} writes one; autosam run plans by itself)"
        ]
    models = sorted(p for p in dataset.results.glob("*__*__*") if p.is_dir()) if dataset.results.is_dir() else []
    for model in models:
        folds = sorted((f for f in model.glob("fold_*") if f.is_dir()), key=lambda f: f.name)
        trained = [f.name.removeprefix("fold_") for f in folds if fold_is_trained(f)]
        started = [f.name.removeprefix("fold_") for f in folds if fold_has_started(f) and not fold_is_trained(f)]
        lines.append(
            f"{model.name}: trained folds {', '.join(trained) or 'none'}"
            + (f"; started, not finished: {', '.join(started)} (run again to continue)" if started else "")
        )
        lines += [line for line in map(fold_budget, folds) if line]
    if not models:
        lines.append(f"trained: nothing yet in {dataset.results}")
    report = dataset.results / REPORT_FOLDER / "report.md"
    lines.append(f"report: {report}" if report.is_file() else f"report: none yet (autosam run -d {dataset.id})")
    if (report.parent / RUN_LOG).is_file():
        lines.append(f"log of the runs: {report.parent / RUN_LOG}")
    return lines
