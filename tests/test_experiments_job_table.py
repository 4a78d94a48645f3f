"""The job table: every training with its folds and steps, compute per step from the step-cost model for SAM and
nnU-Net's baselines alike, its clock each network timed on the device, and the flag that shortens nnU-Net's own
budget on a CPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.experiments.job_table import job_table, jobs
from autosam.paths import Dataset
from autosam.planners.sam_planner import BASELINE_PLANS
from autosam.planners.step_cost import iteration_gflops, nnunet_forward_gflops
from autosam.planners.step_timing import nnunet_step_time, sam_step_time, scaled_step_time
from autosam.plans import read_plans, read_sam_plan
from autosam.sam.setups import Setup
from autosam.trainers.fold_training import Budget


def test_job_table_counts_every_training_with_the_step_cost_model(planned_demo) -> None:
    dataset = Dataset.resolve("901")
    planned = read_sam_plan(dataset)
    plan, batch = planned.plan, planned.batch_size
    own = jobs(dataset, 2, ("2d",), Budget(), Budget(), plan, batch, "cpu")
    assert [j.name for j in own] == ["nnU-Net 2d", "SAM"]
    baseline, sam = own
    assert (baseline.folds, baseline.steps, sam.steps) == (2, 1000 * 250, plan.num_epochs * plan.iterations_per_epoch)
    assert sam.gflops_per_step == pytest.approx(
        iteration_gflops(plan.setup, plan.image_size, 2, plan.embedding_cache) * batch
    )
    assert baseline.gflops_per_step > 0
    lines = [line for line in job_table(own, "cpu", equal_budget=False) if not line.startswith("timed under")]
    assert len(lines) == 5 and "total about" in lines[3] and "--equal-budget" in lines[4]
    equal = jobs(dataset, 2, ("2d",), Budget(2, 3, batch), Budget(2, 3), plan, batch, "cpu")
    assert {j.steps for j in equal} == {6}
    assert equal[0].gflops_per_step < baseline.gflops_per_step * 2  # the batch changed, the network did not
    assert not any("--equal-budget" in line for line in job_table(equal, "cpu", equal_budget=True))


def test_the_estimate_is_each_network_timed_on_the_device_times_its_budget(planned_demo) -> None:
    dataset = Dataset.resolve("901")
    plan = read_sam_plan(dataset).plan
    rows = jobs(dataset, 2, ("2d",), Budget(3, 10, 2), Budget(3, 10), plan, 2, "cpu")
    for job in rows:
        assert job.time.basis.startswith("timed") and job.time.train_seconds > 0 and job.time.val_seconds > 0
        assert job.val_iterations == 2  # as Budget.apply sets them on the trainer: iterations // 5
        assert job.seconds == pytest.approx(2 * 3 * (10 * job.time.train_seconds + 2 * job.time.val_seconds))
    assert "training step and validation iteration: " in job_table(rows, "cpu", equal_budget=True)[3]


def test_the_timing_follows_the_network_and_scales_by_counted_flops(planned_demo) -> None:
    setup = Setup.parse("test_vit_encdec_lora")
    # the measured seconds enter the estimate, scaled from the timed batch to the planned one by FLOPs
    measured = scaled_step_time(1.0, 0.5, 4, "cpu", lambda: (0.3, 0.1, 1))
    assert (measured.train_seconds, measured.val_seconds) == pytest.approx((1.2, 0.4))
    assert measured.basis == "timed at batch 1, x4 by FLOPs"
    assert sam_step_time(setup, 64, 2, 4, "cpu", budget_s=0).basis == "timed at batch 1, x4 by FLOPs"
    if not torch.cuda.is_available():  # a plan for a GPU this machine lacks (--gpu-memory): no time, not a crash
        assert scaled_step_time(1.0, 0.5, 4, "cuda", lambda: (0.3, 0.1, 1)).basis.startswith("not timed: no cuda")
    # a network too large to time: its counted FLOPs at the matmul rate stand in, so twice the FLOPs, twice the time
    small, large = (sam_step_time(setup, size, 2, 4, "cpu", untimed_s=0) for size in (64, 128))
    assert small.basis.startswith("not timed")
    flops = [iteration_gflops(setup, size, 2, True) for size in (64, 128)]
    assert large.train_seconds / small.train_seconds == pytest.approx(flops[1] / flops[0])
    # nnU-Net's planned network alike: wider stages, proportionally more time
    dataset = Dataset.resolve("901")
    configuration = PlansManager(read_plans(dataset, BASELINE_PLANS, "2d")).get_configuration("2d").configuration
    wide = copy.deepcopy(configuration)
    features = configuration["architecture"]["arch_kwargs"]["features_per_stage"]
    wide["architecture"]["arch_kwargs"]["features_per_stage"] = [2 * f for f in features]
    narrow_time, wide_time = (nnunet_step_time(c, 1, 2, 2, "cpu", untimed_s=0) for c in (configuration, wide))
    ratio = nnunet_forward_gflops(wide, 1, 2) / nnunet_forward_gflops(configuration, 1, 2)
    assert ratio > 2 and wide_time.train_seconds / narrow_time.train_seconds == pytest.approx(ratio)


def test_status_says_what_is_planned_trained_and_reported(planned_demo, capsys) -> None:
    from autosam.cli import main

    fold = planned_demo["nnUNet_results"] / "Dataset901_BUSIDemo" / "nnUNetTrainerSAM__autosamPlans__2d_sam"
    for name, checkpoint in (("fold_0", "checkpoint_final.pth"), ("fold_1", "checkpoint_latest.pth")):
        (fold / name).mkdir(parents=True)
        (fold / name / checkpoint).write_bytes(b"")
    # fold 1 recorded its budget (nnU-Net's debug.json) and its log: epoch 2 started, two finished, one resumed
    (fold / "fold_1" / "debug.json").write_text(json.dumps(
        {"num_epochs": "8", "num_iterations_per_epoch": "25", "batch_size": "4"}))
    log = "2026-12-07 07:42:55.224824: Epoch {}\n2026-12-07 07:43:17.701520: Epoch time: 22.49 s\n"
    (fold / "fold_1" / "training_log_2026_12_7_07_42_55.txt").write_text(log.format(0) + log.format(1))
    (fold / "fold_1" / "training_log_2026_12_7_08_00_00.txt").write_text(
        log.format(1) + "2026-12-07 08:01:00.000000: Epoch 2\n")
    assert main(["status", "-d", "901"]) == 0
    plan, model, budget, report = capsys.readouterr().out.splitlines()
    assert budget == "  fold 1: 2 of 8 epochs x 25 iterations, batch 4 (50 optimiser steps)"
    assert plan.startswith("plan: test_vit_encdec_lora at 64 px, batch 2") and "autosamPlans.json" in plan
    assert model == (
        "nnUNetTrainerSAM__autosamPlans__2d_sam: trained folds 0; started, not finished: 1 (run again to continue)"
    )
    assert report == "report: none yet (autosam run -d 901)"
