"""Few-shot runs end to end: the same K cases for every method of a repeat, and the Dice-against-K curve in the
report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA, DEMO_DATASET
from autosam.experiments.fewshot import plans_identifier, training_seed, write_plans
from autosam.paths import Dataset
from autosam.trainers.fewshot import nnUNetTrainerFewShot, nnUNetTrainerSAMFewShot
from autosam.trainers.fold_training import make_trainer
from tests.conftest import case_ids, copy_subset

RUN = [
    "run",
    "-d",
    "901",
    "--folds",
    "0",
    "--epochs",
    "1",
    "--iterations",
    "2",
    "--device",
    "cpu",
    "--setup",
    "test_vit_encdec_lora",
    "--image-size",
    "64",
    "--from-scratch",
    "--no-ensembles",
]
GROUPS = {f"p{i // 3}_z{i}": f"p{i // 3}" for i in range(30)}  # 10 patients of 3 slices


def test_few_shot_run_same_cases_for_every_method_and_a_curve_in_the_report(nnunet_folders, capsys) -> None:
    cases = case_ids(DEMO_DATA)[:12]
    raw = copy_subset(DEMO_DATA, nnunet_folders["nnUNet_raw"], cases)
    for i, case in enumerate(cases):  # slices of 6 patients, two each
        for folder, suffix in (("imagesTr", "_0000.png"), ("labelsTr", ".png")):
            (raw / folder / f"{case}{suffix}").rename(raw / folder / f"p{i // 2}_z{i:02d}{suffix}")
    assert main(["split", "-d", "901", "--group-pattern", r"(p\d+)_z\d+", "--num-folds", "3"]) == 0
    preprocessed, results = (nnunet_folders[n] / DEMO_DATASET for n in ("nnUNet_preprocessed", "nnUNet_results"))
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    groups = json.loads((preprocessed / "autosam_groups.json").read_text())
    capsys.readouterr()
    assert main(RUN + ["--train-cases", "1", "5"]) == 2  # fold 0 trains on 4 patients
    assert "--train-cases 5: the training part of fold 0 holds 4 patients" in capsys.readouterr().err
    assert not results.exists() and not (preprocessed / "nnUNetPlans.json").exists()  # refused before any work

    assert main(RUN + ["--train-cases", "2"]) == 0
    plan = json.loads((preprocessed / "autosamPlans.json").read_text())["configurations"]["2d_sam"]["sam"]
    assert plan["reasons"]["few_shot"].startswith("12 labelled cases < 50: the few-shot regime (R20 (autosam)")
    assert plan["reasons"]["few_shot"].endswith("autosam run -d 901 --train-cases 1 2 5 --repeats 3")
    for base in ("nnUNetPlans", "autosamPlans"):  # a second repeat's plans, as a run with --repeats 2 writes them
        write_plans(preprocessed, base, 2, 1, 0, results)
    drawn = {}
    dataset = Dataset.resolve("901")
    for repeat in (0, 1):
        nnunet = make_trainer(dataset, 0, nnUNetTrainerFewShot, plans_identifier("nnUNetPlans", 2, repeat), "2d")
        sam = make_trainer(dataset, 0, nnUNetTrainerSAMFewShot, plans_identifier("autosamPlans", 2, repeat), "2d_sam")
        (train, val), (sam_train, sam_val) = nnunet.do_split(), sam.do_split()
        assert train == sam_train and val == sam_val == splits[0]["val"]  # the fold's whole validation part
        assert len(set(train)) == 2 and set(train) <= set(splits[0]["train"])
        assert len({groups[c] for c in train}) == 2  # one slice per patient
        drawn[repeat] = train
    assert drawn[0] != drawn[1]  # the repeats drew different cases
    stock = make_trainer(Dataset.resolve("901"), 0, nnUNetTrainer, "nnUNetPlans", "2d")
    assert stock.do_split()[0] == splits[0]["train"]  # the full-data run kept its training part

    trained = sorted(p.parent.parent.name for p in results.glob("*/fold_0/checkpoint_final.pth"))
    assert trained == [
        "nnUNetTrainerFewShot__nnUNetPlans_2cases_r0__2d",
        "nnUNetTrainerSAMFewShot__autosamPlans_2cases_r0__2d_sam",
        "nnUNetTrainerSAM__autosamPlans__2d_sam",
        "nnUNetTrainer__nnUNetPlans__2d",
    ]
    for folder in trained[:2]:  # chosen by the trainer's own split step; nnU-Net's records of the model folder
        log = next((results / folder / "fold_0").glob("training_log_*.txt")).read_text()
        assert (
            f"few-shot: 2 of 8 training cases (repeat 0, seed 0, one per patient, each with foreground; "
            f"training seed {training_seed(0, 0)}): {', '.join(drawn[0])}"
        ) in log
        record = json.loads((results / folder / "fold_0" / "autosam_training.json").read_text())
        assert record["seed"] == training_seed(0, 0)  # the repeat's own seed, not the run's
        assert json.loads((results / folder / "plans.json").read_text())["autosam_fewshot"]["train_cases"] == 2

    report = results / "autosam_report"
    fewshot = json.loads((report / "fewshot.json").read_text())
    assert fewshot["cases"]["0"]["0"]["2"] == drawn[0]
    rows = {(r["k"], r["method"]): r for r in fewshot["rows"]}
    assert set(rows) == {(2, "nnU-Net 2d"), (2, "SAM"), ("all", "nnU-Net 2d"), ("all", "SAM")}
    for method, trainer, plans, configuration in (
        ("nnU-Net 2d", "nnUNetTrainerFewShot", "nnUNetPlans", "2d"),
        ("SAM", "nnUNetTrainerSAMFewShot", "autosamPlans", "2d_sam"),
    ):
        # the report's unit: each patient's Dice pooled over its two slices
        summary = json.loads(
            (
                results
                / f"{trainer}__{plans_identifier(plans, 2, 0)}__{configuration}"
                / "fold_0"
                / "validation"
                / "summary.json"
            ).read_text()
        )
        pooled: dict[str, list[float]] = {}  # each patient's voxels pooled, from nnU-Net's own counts per case
        for case in summary["metric_per_case"]:
            counts = case["metrics"]["1"]
            patient = groups[Path(case["reference_file"]).name.removesuffix(".png")]
            pooled[patient] = [a + b for a, b in zip(pooled.get(patient, [0, 0, 0]),
                                                     (counts["TP"], counts["FP"], counts["FN"]))]
        expected = [2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0 for tp, fp, fn in pooled.values()]
        assert rows[2, method]["per_repeat"] == pytest.approx([sum(expected) / len(expected)], abs=1e-4)
    comparison = json.loads((report / "comparison.json").read_text())
    assert rows["all", "SAM"]["mean"] == comparison["summary"]["SAM"]["lesion"]["dice"]["mean"]
    assert (report / "fewshot.png").stat().st_size > 0
    markdown = (report / "report.md").read_text()
    assert (
        "## Few labelled cases: Dice against K" in markdown and "| all (4) | SAM |" in markdown
    )  # 4 training patients, as K counts
    assert "![Dice against the number of labelled training patients](fewshot.png)" in markdown
    chosen = json.loads((results / "inference_information.json").read_text())["best_model_or_ensemble"]
    assert all("cases_r" not in m["plans_identifier"] for m in chosen["selected_model_or_models"])
