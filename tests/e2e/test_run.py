"""`autosam run` end to end on a small real subset; the embedded demo data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from PIL import Image

from autosam.cli import main
from autosam.evaluation.report import budget_lines
from autosam.experiments.demo import DEMO_DATA, DEMO_DATASET
from autosam.experiments.run import RunOptions, budgets
from autosam.inference.predict import predict
from autosam.inference.trained_models import Choice, Model
from autosam.paths import Dataset
from autosam.plans import sam_plan_of
from autosam.trainers.fold_training import make_trainer
from autosam.trainers.sam_trainer import nnUNetTrainerSAM
from tests.conftest import case_ids, copy_subset, make_volumes

RUN = ["run", "-d", "901", "--folds", "0", "1", "--epochs", "1", "--iterations", "2", "--device", "cpu",
       "--setup", "test_vit_encdec_lora", "--image-size", "64", "--from-scratch", "--equal-budget"]


def _as_slices(raw_dataset: Path, cases: list[str]) -> None:
    """Rename cases to slices of patients, two per patient: p00_z000, p00_z001, p01_z002, ..."""
    for i, case in enumerate(cases):
        name = f"p{i // 2:02d}_z{i:03d}"
        (raw_dataset / "imagesTr" / f"{case}_0000.png").rename(raw_dataset / "imagesTr" / f"{name}_0000.png")
        (raw_dataset / "labelsTr" / f"{case}.png").rename(raw_dataset / "labelsTr" / f"{name}.png")


def _fold_files(results: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in results.rglob("checkpoint_final.pth")}


def test_run_compares_both_methods_on_the_same_cases_per_patient(nnunet_folders, capsys) -> None:
    cases = case_ids(DEMO_DATA)[:20]
    _as_slices(copy_subset(DEMO_DATA, nnunet_folders["nnUNet_raw"], cases), cases)
    assert main(["validate", "-d", "901"]) == 0
    assert "look like slices of 10 patients" in capsys.readouterr().out
    assert main(["split", "-d", "901", "--group-pattern", r"(.*)_z\d+"]) == 0
    assert main(RUN) == 0
    results = nnunet_folders["nnUNet_results"] / DEMO_DATASET
    assert "planned SAM for" in (results / "autosam_report" / "autosam_run.log").read_text()
    for folder in ("nnUNetTrainer__nnUNetPlans__2d", "nnUNetTrainerSAM__autosamPlans__2d_sam"):
        for fold in (0, 1):
            assert (results / folder / f"fold_{fold}" / "validation" / "summary.json").is_file()
    report = results / "autosam_report"
    for name in ("report.md", "report.html", "comparison.json", "paired_dice.png", "dice_boxplots.png",
                 "training_curves.png", "overlays.png"):
        assert (report / name).is_file(), name
    comparison = json.loads((report / "comparison.json").read_text())
    splits = json.loads((nnunet_folders["nnUNet_preprocessed"] / DEMO_DATASET / "splits_final.json").read_text())
    validated = sorted(splits[0]["val"] + splits[1]["val"])
    assert sorted(c["case"] for c in comparison["cases"]) == validated
    assert all(set(c["metrics"]) == {"nnU-Net 2d", "SAM"} for c in comparison["cases"])
    paired = comparison["paired"]["nnU-Net 2d"]["lesion"]["dice"]
    assert math.isfinite(paired["p_value"]) and all(math.isfinite(v) for v in paired["ci95"])
    assert paired["p_holm"] >= paired["p_value"]
    for method in ("nnU-Net 2d", "SAM"):
        assert all(math.isfinite(v) for v in comparison["summary"][method]["lesion"]["dice"]["ci95"])
    # each method's budget as it trained, read back from its folds: --equal-budget gives nnU-Net SAM's batch
    sam_batch = json.loads((nnunet_folders["nnUNet_preprocessed"] / DEMO_DATASET / "autosamPlans.json").read_text())[
        "configurations"]["2d_sam"]["batch_size"]
    for method in ("SAM", "nnU-Net 2d"):
        budget = comparison["training"][method][0]
        assert (budget["epochs"], budget["iterations_per_epoch"], budget["batch_size"], budget["seed"],
                budget["images_seen"], budget["device"]) == (1, 2, sam_batch, 0, 2 * sam_batch, "cpu")
    report_text = (report / "report.md").read_text()
    assert "every method the same 2 optimiser steps per fold; every method the same" in report_text
    assert "scored on (optimistic)" in report_text and "trained from random weights" in report_text
    assert comparison["unit"] == "patient" and comparison["n_units"] == 4 and comparison["n_cases"] == 8
    assert paired["n"] == 4 and "unit of analysis: patient (n = 4 patients, 8 cases)" in report_text
    if paired["nonzero"] == 4:
        assert "the smallest p the tests can give is 0.125" in report_text  # 2 / 2**4
    assert "ranked on nnU-Net's own endpoint" in report_text and "- verdict: " in report_text
    assert "secondary (the typical patient, not the mean): Hodges–Lehmann" in report_text
    assert "SAM's patches are coarser: it sees the images at spacing" in report_text  # 64 px input
    assert "detection of lesion per case: nnU-Net 2d: " in report_text
    assert "data:image/png;base64," in (report / "report.html").read_text()
    out = capsys.readouterr().out
    assert "report:" in out and "budget of SAM: 1 epochs × 2 iterations" in out
    assert "total about" in out.split("report:")[0]  # the job table, printed before training

    # predict uses what nnU-Net's find_best_configuration chose, and says so
    unseen, out = nnunet_folders["nnUNet_raw"].parent / "unseen", nnunet_folders["nnUNet_raw"].parent / "out"
    unseen.mkdir()
    shutil.copy(DEMO_DATA / "imagesTr" / "busi_mal010_0000.png", unseen / "new_0000.png")
    chosen = json.loads((results / "inference_information.json").read_text())["best_model_or_ensemble"][
        "selected_model_or_models"]
    assert main(["predict", "-d", "901", "-i", str(unseen), "-o", str(out), "--device", "cpu", "--disable-tta"]) == 0
    assert " + ".join(f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}" for m in chosen) + \
        ": the " in capsys.readouterr().out
    assert (out / "new.png").is_file() and not list(out.glob(".autosam_members_*"))
    # the ensemble of both methods, as nnU-Net ensembles and post-processes them, whatever was chosen
    best = json.loads((results / "inference_information.json").read_text())["best_model_or_ensemble"]
    both = Choice((Model("nnUNetTrainer", "nnUNetPlans", "2d"), Model.for_setup(None)), "both",
                  Path(best["postprocessing_file"]), Path(best["some_plans_file"]))
    predict(Dataset.resolve("901"), unseen, out / "ensemble", choice=both, device="cpu", mirroring=False)
    ensembled = np.asarray(Image.open(out / "ensemble" / "new.png"))
    assert ensembled.shape == np.asarray(Image.open(unseen / "new_0000.png")).shape[:2]
    assert set(np.unique(ensembled)) <= {0, 1} and not list((out / "ensemble").glob(".autosam_members_*"))

    before = _fold_files(results)
    assert main(RUN) == 0  # everything is done: no fold trains again
    assert _fold_files(results) == before
    capsys.readouterr()
    assert main(RUN[:-3] + ["128", "--from-scratch", "--equal-budget"]) == 2  # another image size than planned
    assert "--image-size 128 contradicts the existing plan (image-size: 64); pass --replan" in capsys.readouterr().err
    assert main([a for a in RUN if a not in ("--device", "cpu")] + ["--gpu-memory", "8"]) == 2  # planned for the CPU
    assert "--gpu-memory a GPU with 8 GB (--gpu-memory) contradicts the existing plan (gpu-memory: CPU" in \
        capsys.readouterr().err
    assert len(list(results.rglob("training_log_*.txt"))) == 4


def test_3d_data_train_nnunets_3d_fullres_too_and_the_report_names_the_strongest(nnunet_folders, capsys) -> None:
    make_volumes(nnunet_folders["nnUNet_raw"])
    run = ["run", "-d", "991", "--folds", "0", "--epochs", "1", "--iterations", "2", "--device", "cpu", "--setup",
           "test_vit_encdec_lora", "--image-size", "64", "--from-scratch", "--no-ensembles"]
    assert main(run) == 0
    report = nnunet_folders["nnUNet_results"] / "Dataset991_Volumes" / "autosam_report"
    comparison = json.loads((report / "comparison.json").read_text())
    assert comparison["baselines"] == ["nnU-Net 2d", "nnU-Net 3d_fullres"]
    assert set(comparison["paired"]) == {"nnU-Net 2d", "nnU-Net 3d_fullres"}
    strongest = comparison["strongest_baseline"]
    means = {b: comparison["summary"][b]["organ"]["dice"]["mean"] for b in comparison["baselines"]}
    assert means[strongest] == max(means.values())
    assert f"SAM vs {strongest} (the strongest baseline on the primary endpoint; also trained:" in \
        capsys.readouterr().out
    family = [t for b in comparison["paired"].values() for row in b.values() for t in row.values()]
    assert len(family) == 6 and all(t["p_holm"] >= t["p_value"] for t in family if t["p_value"] is not None)
    assert {t["family"] for t in family} == {"primary", "exploratory"}

    assert main(run + ["--no-3d"]) == 0
    assert "nnU-Net's 3d_fullres was not trained (--no-3d), although the data are 3D" in capsys.readouterr().out


def test_budget_lines_compare_every_fold_with_what_the_run_asks() -> None:
    def fold(epochs, batch, seed=0, iterations=20):
        return {"epochs": epochs, "iterations_per_epoch": iterations, "batch_size": batch, "seed": seed,
                "optimizer_steps": epochs * iterations, "images_seen": epochs * iterations * batch,
                "seconds": 1.0, "device": "cpu"}

    training = {"nnU-Net 2d": [fold(5, 2), fold(5, 2)], "SAM": [fold(5, 4), fold(5, 4)]}
    asked = {"nnU-Net 2d": {"epochs": 1000, "iterations_per_epoch": 250, "batch_size": 2, "seed": 0},
             "SAM": {"epochs": 5, "iterations_per_epoch": 20, "batch_size": 4, "seed": 0}}
    lines = budget_lines(training, "standard", asked)
    assert lines[0].startswith("budgets: every method the same 100 optimiser steps per fold; training patches differ")
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: nnU-Net 2d: 2 fold(s) were trained with other settings")
    assert "epochs 5, iterations_per_epoch 20" in notes[0]
    unknown = {"nnU-Net 2d": [{**fold(5, 2), "iterations_per_epoch": None, "batch_size": None,
                               "optimizer_steps": None, "images_seen": None}], "SAM": [fold(5, 4)]}
    assert "optimiser steps unknown" in budget_lines(unknown, None, None)[0]  # and no crash on the missing numbers


def test_budget_policies_set_each_trainer(planned_demo) -> None:
    """Default: nnU-Net's own 1000 x 250 at its batch and SAM's plan; equal: SAM's steps and batch for both."""
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 "--from-scratch", "--batch-size", "3", "--epochs", "7", "--iterations", "11"]) == 0
    preprocessed = planned_demo["nnUNet_preprocessed"] / DEMO_DATASET
    plan = sam_plan_of(json.loads((preprocessed / "autosamPlans.json").read_text())["configurations"]["2d_sam"])
    nnunet_batch = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"]["2d"]["batch_size"]
    assert nnunet_batch != 3

    def built(budget, cls, plans, configuration):
        trainer = make_trainer(Dataset.resolve("901"), 0, cls, plans, configuration, batch_size=budget.batch_size)
        budget.apply(trainer)
        return trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.configuration_manager.batch_size

    baseline, sam, policy = budgets(RunOptions(), plan, 3)
    assert built(baseline, nnUNetTrainer, "nnUNetPlans", "2d") == (1000, 250, nnunet_batch)
    assert built(sam, nnUNetTrainerSAM, "autosamPlans", "2d_sam") == (7, 11, 3) and "standard" in policy
    for options in (RunOptions(equal_budget=True), RunOptions(epochs=7)):
        baseline, sam, policy = budgets(options, plan, 3)
        assert built(baseline, nnUNetTrainer, "nnUNetPlans", "2d") == (7, 11, 3) and policy.startswith("equal")
        assert built(sam, nnUNetTrainerSAM, "autosamPlans", "2d_sam") == (7, 11, 3)


def test_demo_data_ship_in_the_wheel_and_read_with_nnunet(tmp_path: Path) -> None:
    meta = json.loads((DEMO_DATA / "dataset.json").read_text())
    assert meta["numTraining"] == len(case_ids(DEMO_DATA)) == 100 and "Al-Dhabyani" in meta["reference"]
    image, properties = NaturalImage2DIO().read_images([str(DEMO_DATA / "imagesTr" / "busi_ben001_0000.png")])
    label, _ = NaturalImage2DIO().read_seg(str(DEMO_DATA / "labelsTr" / "busi_ben001.png"))
    assert image.shape[1:] == label.shape[1:] and max(image.shape[2:]) == 128
    assert set(np.unique(label)) <= {0, 1}

    repo = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("autosam-*.whl"))).namelist()
    shipped = [n for n in names if n.startswith(f"autosam/experiments/demo_data/{DEMO_DATASET}/")]
    assert f"autosam/experiments/demo_data/{DEMO_DATASET}/dataset.json" in shipped
    assert sum(n.endswith(".png") for n in shipped) == 200
    assert "autosam/trainers/nnunet_ext/autosam_trainers.py" in names and "autosam/planners/choose.py" in names
    assert {"autosam/planners/rules.json", "autosam/sam/weights/official_checkpoints.json"} <= set(names)
    assert not [n for n in names if n.startswith(("trainers/", "planners/"))]  # no generic top-level packages


def test_ablate_trains_each_setup_on_the_same_folds(planned_vit_t, capsys) -> None:
    assert main(["ablate", "-d", "901", "--setups", "vit_t_dec_lora", "vit_t_encdec_lora", "--folds", "0",
                 "--epochs", "1", "--iterations", "2", "--device", "cpu"]) == 0
    out = planned_vit_t["nnUNet_results"] / DEMO_DATASET / "autosam_ablation"
    summary = json.loads((out / "ablation.json").read_text())
    rows = {r["setup"]: r["cv_dice"] for r in summary["rows"]}
    assert list(rows) == ["vit_t_dec_lora", "vit_t_encdec_lora"]
    # each row is the fold's Dice as nnU-Net's own validation measured it (every validation case has a lesion)
    for setup, dice in rows.items():
        validation = json.loads((planned_vit_t["nnUNet_results"] / DEMO_DATASET / f"nnUNetTrainerSAM_{setup}__"
                                 "autosamPlans__2d_sam" / "fold_0" / "validation" / "summary.json").read_text())
        assert dice == pytest.approx(np.mean([c["metrics"]["1"]["Dice"] for c in validation["metric_per_case"]]),
                                     abs=1e-4)
    assert summary["planner_pick"] == "vit_t_encdec_lora" and summary["best"] == max(rows, key=rows.get)
    assert summary["planner_gap_to_best"] == pytest.approx(max(rows.values()) - rows["vit_t_encdec_lora"], abs=1e-4)
    assert (out / "ablation_heatmap.png").is_file()
    assert "planner's pick vit_t_encdec_lora" in capsys.readouterr().out

    # two trained set-ups: predict asks which, and --setup picks one
    unseen, predicted = planned_vit_t["nnUNet_raw"].parent / "unseen", planned_vit_t["nnUNet_raw"].parent / "out"
    unseen.mkdir()
    shutil.copy(DEMO_DATA / "imagesTr" / "busi_mal010_0000.png", unseen / "new_0000.png")
    predict = ["predict", "-d", "901", "-i", str(unseen), "-o", str(predicted), "--device", "cpu", "--disable-tta"]
    assert main(predict) == 2
    assert "several trained SAM models (vit_t_dec_lora, vit_t_encdec_lora); choose one with --setup" in \
        capsys.readouterr().err
    assert main(predict + ["--setup", "vit_t_dec_lora"]) == 0 and (predicted / "new.png").is_file()
    assert "model: nnUNetTrainerSAM_vit_t_dec_lora__autosamPlans__2d_sam: the fixed set-up" in capsys.readouterr().out
