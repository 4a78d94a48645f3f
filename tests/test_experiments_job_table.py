"""The job table: every training with its folds and steps, compute per step from the step-cost model for SAM and
nnU-Net's baselines alike, and the flag that shortens nnU-Net's own budget on a CPU."""

from __future__ import annotations

import pytest

from autosam.experiments.job_table import job_table, jobs
from autosam.paths import Dataset
from autosam.planners.step_cost import iteration_gflops
from autosam.plans import read_sam_plan
from autosam.trainers.fold_training import Budget


def test_job_table_counts_every_training_with_the_step_cost_model(planned_demo) -> None:
    dataset = Dataset.resolve("901")
    planned = read_sam_plan(dataset)
    plan, batch = planned.plan, planned.batch_size
    own = jobs(dataset, 2, ("2d",), Budget(), Budget(), plan, batch)
    assert [j.name for j in own] == ["nnU-Net 2d", "SAM"]
    baseline, sam = own
    assert (baseline.folds, baseline.steps, sam.steps) == (2, 1000 * 250, plan.num_epochs * plan.iterations_per_epoch)
    assert sam.gflops_per_step == pytest.approx(
        iteration_gflops(plan.setup, plan.image_size, 2, plan.embedding_cache) * batch
    )
    assert baseline.gflops_per_step > 0
    lines = job_table(own, "cpu", equal_budget=False)
    assert len(lines) == 5 and "total about" in lines[3] and "--equal-budget" in lines[4]
    equal = jobs(dataset, 2, ("2d",), Budget(2, 3, batch), Budget(2, 3), plan, batch)
    assert {j.steps for j in equal} == {6}
    assert equal[0].gflops_per_step < baseline.gflops_per_step * 2  # the batch changed, the network did not
    assert not any("--equal-budget" in line for line in job_table(equal, "cpu", equal_budget=True))


def test_status_says_what_is_planned_trained_and_reported(planned_demo, capsys) -> None:
    from autosam.cli import main

    fold = planned_demo["nnUNet_results"] / "Dataset901_BUSIDemo" / "nnUNetTrainerSAM__autosamPlans__2d_sam"
    for name, checkpoint in (("fold_0", "checkpoint_final.pth"), ("fold_1", "checkpoint_latest.pth")):
        (fold / name).mkdir(parents=True)
        (fold / name / checkpoint).write_bytes(b"")
    assert main(["status", "-d", "901"]) == 0
    plan, model, report = capsys.readouterr().out.splitlines()
    assert plan.startswith("plan: test_vit_encdec_lora at 64 px, batch 2") and "autosamPlans.json" in plan
    assert model == (
        "nnUNetTrainerSAM__autosamPlans__2d_sam: trained folds 0; started, not finished: 1 (run again to continue)"
    )
    assert report == "report: none yet (autosam run -d 901)"
