"""Trainings fanned out on Ray: the same ablation as a serial run, retries, and a task that keeps failing."""

from __future__ import annotations

import pytest

from autosam.experiments.demo import DEMO_DATASET

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[test]' installs it")

GRID = ["vit_t_dec_lora", "vit_t_encdec_lora"]
ABLATE = ["ablate", "-d", "901", "--folds", "0", "1", "--epochs", "1", "--iterations", "2", "--device", "cpu"]


def test_run_leaves_a_failed_baseline_out_and_stops_on_a_failed_sam_fold() -> None:
    from autosam.errors import AutosamError
    from autosam.experiments.run import without_failed
    from autosam.paths import Dataset
    from autosam.trainers.fold_jobs import FoldJob, Training
    from autosam.trainers.fold_training import Budget

    def job(configuration: str, label: str) -> FoldJob:
        return FoldJob(Dataset(901, DEMO_DATASET), 1, Training(object, "plans", configuration, Budget(), label), None,
                       0, False)

    both = ["nnU-Net 2d", "nnU-Net 3d_fullres"]
    assert without_failed(both, {}) == (both, [])
    kept, lines = without_failed(both, {job("3d_fullres", "nnU-Net 3d_fullres"): "killed"})
    assert kept == ["nnU-Net 2d"] and lines == ["WARNING: left out of the comparison after failing twice on Ray: "
                                        "nnU-Net 3d_fullres fold 1 (killed)"]
    with pytest.raises(AutosamError, match=r"failed twice on Ray: SAM fold 1 \(out of memory\); nothing to compare"):
        without_failed(["nnU-Net 2d"], {job("2d_sam", "SAM"): "out of memory"})
    with pytest.raises(AutosamError, match="nnU-Net 2d fold 1"):
        without_failed(["nnU-Net 2d"], {job("2d", "nnU-Net 2d"): "killed"})
