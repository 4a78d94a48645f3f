"""The one fold-job builder of run, ablate and few-shot runs, and a job that skips a trained fold."""

from __future__ import annotations

import torch

from autosam.paths import Dataset
from autosam.trainers.fold_jobs import SerialExecutor, Training, fold_jobs
from autosam.trainers.fold_training import Budget


class _NeverBuilt:
    """A trainer class that must not be instantiated: its fold is trained."""

    def __init__(self, *args, **kwargs) -> None:
        raise AssertionError("a trained fold was built again")


def test_every_training_on_every_fold_fold_by_fold() -> None:
    dataset = Dataset(901, "Dataset901_BUSIDemo")
    trainings = [Training(object, "nnUNetPlans", "2d", Budget(), "nnU-Net 2d"),
                 Training(object, "autosamPlans", "2d_sam", Budget(2, 3), "SAM")]
    jobs = fold_jobs(dataset, [0, 1], trainings, torch.device("cpu"), seed=7, save_probabilities=True)
    assert [job.name for job in jobs] == ["nnU-Net 2d fold 0", "SAM fold 0", "nnU-Net 2d fold 1", "SAM fold 1"]
    assert all(job.seed == 7 and job.save_probabilities and job.dataset is dataset for job in jobs)
    assert len({id(job) for job in jobs}) == len(set(jobs)) == 4  # each job is its own key for failures


def test_a_trained_fold_is_skipped_before_any_trainer_is_built(nnunet_folders) -> None:
    dataset = Dataset(901, "Dataset901_BUSIDemo")
    job = fold_jobs(dataset, [0], [Training(_NeverBuilt, "autosamPlans", "2d_sam", Budget(), "SAM")],
                    torch.device("cpu"), seed=0)[0]
    fold = dataset.model_folder("_NeverBuilt", "autosamPlans", "2d_sam") / "fold_0"
    (fold / "validation").mkdir(parents=True)
    (fold / "checkpoint_final.pth").touch()
    (fold / "validation" / "summary.json").write_text("{}")
    assert job.output_folder == fold
    assert SerialExecutor().run([job]) == {} and job.run() is False
