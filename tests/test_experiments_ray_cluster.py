"""What a fold job asks of a Ray cluster, few-shot jobs included (they read the plans file they train on)."""

from __future__ import annotations

import torch

from autosam.experiments.fewshot import fewshot_trainings
from autosam.experiments.ray_cluster import PROCESS_GB, resources_for
from autosam.paths import Dataset
from autosam.plans import read_sam_plan
from autosam.sam.memory import estimate_training_memory
from autosam.sam.network import bf16_native
from autosam.trainers.fold_jobs import fold_jobs
from autosam.trainers.fold_training import Budget


def test_few_shot_jobs_are_fold_jobs_sized_from_their_own_plans(planned_demo, monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    dataset = Dataset.resolve("901")
    trainings, models = fewshot_trainings(dataset, [2], 1, ("2d",), Budget(), Budget(batch_size=3), seed=0)
    jobs = fold_jobs(dataset, [0], trainings, torch.device("cpu"), seed=0)
    assert [job.name for job in jobs] == ["nnU-Net 2d, 2 cases, repeat 0 fold 0", "SAM, 2 cases, repeat 0 fold 0"]
    assert [job.output_folder.parent for job in jobs] == [m.model_folder for m in models]
    plan = read_sam_plan(dataset)
    expected = estimate_training_memory(plan.plan.setup, plan.plan.image_size, 3, 2, 1,
                                        tuple(plan.configuration.patch_size), False, "cpu",
                                        "bf16" if bf16_native(torch.device("cpu")) else "fp32").peak_gb
    plan.file.unlink()  # only the few-shot copy is left: the job must read the plans it trains on
    need = resources_for(jobs[1])
    assert (need.cpus, need.gpus) == (1, 0) and need.memory_gb == PROCESS_GB + expected
