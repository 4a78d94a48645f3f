"""Trainings fanned out on Ray: the same ablation as a serial run, retries, and a task that keeps failing."""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

import pytest

from autosam.cli import main
from autosam.experiments import ray_cluster
from autosam.experiments.demo import DEMO_DATASET
from tests.conftest import copy_planned

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[test]' installs it")

GRID = ["vit_t_dec_lora", "vit_t_encdec_lora"]
ABLATE = ["ablate", "-d", "901", "--folds", "0", "--epochs", "1", "--iterations", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module, as a user's own ``ray.init`` would be: autosam uses it as it is."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the faulty task reaches the workers whole
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def planned(planned_templates, tmp_path_factory) -> dict[str, Path]:
    """nnUNet_raw and nnUNet_preprocessed with the demo subset planned for ViT-T at 256 px."""
    root = tmp_path_factory.mktemp("ray_data")
    return copy_planned(planned_templates("vit_t"), {"nnUNet_raw": root / "raw", "nnUNet_preprocessed": root / "pre"})


@pytest.fixture(scope="module")
def ray_results(tmp_path_factory) -> Path:
    """The Ray run's results folder, shared so that a later test finds the grid's folds done."""
    return tmp_path_factory.mktemp("ray_results")


def _fail_then_train(faults: Path, job, cpus: int) -> dict:
    """A Ray task that fails as often as ``faults`` says for its job ({"<job name>": N}, -1: always), counting
    down across the run's tasks, then trains as autosam's own task does."""
    with open(faults, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        counts = json.load(handle)
        left = counts.get(job.name, 0)
        if left > 0:
            counts[job.name] = left - 1
            handle.seek(0), handle.truncate(), json.dump(counts, handle)
    if left != 0:
        raise RuntimeError(f"{job.name}: fault injected by the test")
    return ray_cluster.train_task(job, cpus)


def _inject_faults(monkeypatch, faults: Path, counts: dict[str, int]) -> None:
    faults.write_text(json.dumps(counts))
    real = ray_cluster.train_task

    def task(job, cpus: int) -> dict:
        return _fail_then_train(faults, job, cpus) if job.name in counts else real(job, cpus)

    monkeypatch.setattr(ray_cluster, "train_task", task)


def _use(monkeypatch, planned: dict[str, Path], results: Path) -> Path:
    for name, path in planned.items():
        monkeypatch.setenv(name, str(path))
    results.mkdir(exist_ok=True)
    monkeypatch.setenv("nnUNet_results", str(results))
    return results / DEMO_DATASET


def _validated_cases(results: Path, setup: str, fold: int) -> set[str]:
    summary = results / f"nnUNetTrainerSAM_{setup}__autosamPlans__2d_sam" / f"fold_{fold}" / "validation" / "summary.json"
    return {Path(case["reference_file"]).name for case in json.loads(summary.read_text())["metric_per_case"]}


def test_ray_ablation_matches_the_serial_one_and_retries_a_failed_task(
        ray_instance, planned, ray_results, tmp_path, monkeypatch, capsys) -> None:
    serial = _use(monkeypatch, planned, tmp_path / "serial")
    assert main([*ABLATE, "--setups", *GRID]) == 0
    serial_summary = json.loads((serial / "autosam_ablation" / "ablation.json").read_text())

    fanned = _use(monkeypatch, planned, ray_results)
    faults = tmp_path / "faults.json"
    _inject_faults(monkeypatch, faults, {"vit_t_dec_lora fold 0": 1})  # fails once, then trains
    capsys.readouterr()
    assert main([*ABLATE, "--setups", *GRID, "--ray"]) == 0
    assert json.loads(faults.read_text()) == {"vit_t_dec_lora fold 0": 0}  # the fault fired; Ray ran it again
    summary = json.loads((fanned / "autosam_ablation" / "ablation.json").read_text())
    # the same table: keys, rows, set-ups, and each fold validated on the same cases
    assert summary.keys() == serial_summary.keys() and summary["failed"] == serial_summary["failed"] == {}
    assert [r.keys() for r in summary["rows"]] == [r.keys() for r in serial_summary["rows"]]
    assert [r["setup"] for r in summary["rows"]] == [r["setup"] for r in serial_summary["rows"]] == GRID
    for setup in GRID:
        assert _validated_cases(fanned, setup, 0) == _validated_cases(serial, setup, 0)
    err = capsys.readouterr().err
    assert all(f"Ray: {setup} fold 0 trained in" in err for setup in GRID)


def test_a_task_that_keeps_failing_is_named_and_the_others_report(
        ray_instance, planned, ray_results, tmp_path, monkeypatch, capsys) -> None:
    fanned = _use(monkeypatch, planned, ray_results)
    _inject_faults(monkeypatch, tmp_path / "faults.json", {"vit_t_dec_adapter fold 0": -1})  # fails every time
    assert main(["ablate", "-d", "901", "--folds", "0", "--epochs", "1", "--iterations", "2", "--device", "cpu",
                 "--setups", "vit_t_dec_lora", "vit_t_dec_adapter", "--ray"]) == 0
    summary = json.loads((fanned / "autosam_ablation" / "ablation.json").read_text())
    assert [r["setup"] for r in summary["rows"]] == ["vit_t_dec_lora", "vit_t_dec_adapter"]
    assert isinstance(summary["rows"][0]["cv_dice"], float) and summary["best"] == "vit_t_dec_lora"
    assert summary["rows"][1]["cv_dice"] is None
    assert summary["failed"] == {"vit_t_dec_adapter": ["fold 0: vit_t_dec_adapter fold 0: fault injected by "
                                                       "the test"]}
    table = (fanned / "autosam_ablation" / "ablation.md").read_text()
    assert "| vit_t_dec_adapter | failed: fold 0: vit_t_dec_adapter fold 0: fault injected by the test |" \
        in table
    assert "Ray: vit_t_dec_adapter fold 0 failed twice" in capsys.readouterr().err


def test_ray_refuses_a_job_no_node_can_hold(ray_instance, planned, tmp_path, monkeypatch, capsys) -> None:
    _use(monkeypatch, planned, tmp_path / "results")
    monkeypatch.setenv("nnUNet_n_proc_DA", "4")  # 1 + 4 CPUs per task; the instance has 2
    assert main([*ABLATE, "--setups", "vit_t_dec_lora", "--ray"]) == 2
    err = capsys.readouterr().err
    assert "vit_t_dec_lora fold 0: needs 5 CPU(s)" in err and "no node of the Ray cluster has that" in err
    assert not list((tmp_path / "results").rglob("fold_0"))  # refused before anything was submitted


def test_without_ray_the_flag_says_how_to_get_it(planned, tmp_path, monkeypatch, capsys) -> None:
    _use(monkeypatch, planned, tmp_path / "results")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*ABLATE, "--setups", "vit_t_dec_lora", "--ray"]) == 2
    assert capsys.readouterr().err.strip().endswith("autosam: error: --ray needs Ray: pip install 'autosam[ray]'")
