"""``autosam status -d ID``: what is planned, which folds of which models are trained, and the report."""

from __future__ import annotations

import os

from autosam.paths import Dataset, fold_has_started, fold_is_trained
from autosam.plans import PLANS_NAME, has_sam_plan, read_sam_plan

REPORT_FOLDER = "autosam_report"
RUN_LOG = "autosam_run.log"  # beside the report: autosam's lines and nnU-Net's planning output, every run appended


def status_lines(dataset: Dataset) -> list[str]:
    """One line for the plan, one per model folder (trained and started folds), one for the report."""
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
    if not models:
        lines.append(f"trained: nothing yet in {dataset.results}")
    report = dataset.results / REPORT_FOLDER / "report.md"
    lines.append(f"report: {report}" if report.is_file() else f"report: none yet (autosam run -d {dataset.id})")
    if (report.parent / RUN_LOG).is_file():
        lines.append(f"log of the runs: {report.parent / RUN_LOG}")
    return lines
