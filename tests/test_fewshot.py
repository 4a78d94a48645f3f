"""Few-shot runs: K cases per fold drawn in nnU-Net's split step, the same for every method, one per patient;
the Dice-against-K curve in the report; the planner's few-shot rule."""

from __future__ import annotations

import json

import pytest

from autosam.cli import main
from autosam.experiments.demo import DEMO_DATA, DEMO_DATASET
from autosam.errors import AutosamError
from autosam.data.case_selection import select_cases
from autosam.experiments.fewshot import plans_identifier, write_plans
from autosam.planners.fingerprint import DatasetFacts
from autosam.planners.hardware import Hardware
from autosam.planners.choose import choose
from autosam.planners.sam_planner import SamOptions
from tests.conftest import case_ids, copy_subset
from autosam.paths import Dataset

RUN = ["run", "-d", "901", "--folds", "0", "--epochs", "1", "--iterations", "2", "--device", "cpu", "--setup",
       "test_vit_encdec_lora", "--image-size", "64", "--from-scratch", "--no-ensembles"]
GROUPS = {f"p{i // 3}_z{i}": f"p{i // 3}" for i in range(30)}  # 10 patients of 3 slices


def test_selection_is_k_distinct_patients_nested_and_differs_between_repeats() -> None:
    train = sorted(GROUPS)[:24]  # patients p0-p7
    for k in (1, 3, 8):
        chosen = select_cases(train, k, 0, 0, 0, GROUPS)
        assert len(chosen) == k and set(chosen) <= set(train)
        assert len({GROUPS[c] for c in chosen}) == k  # never two slices of one patient
        assert chosen == select_cases(train, k, 0, 0, 0, GROUPS)  # the seed, repeat and fold decide
    assert set(select_cases(train, 3, 0, 0, 0, GROUPS)) <= set(select_cases(train, 5, 0, 0, 0, GROUPS))
    draws = {tuple(select_cases(train, 3, 0, r, 0, GROUPS)) for r in range(4)}
    assert len(draws) == 4  # every repeat its own cases
    assert select_cases(train, 3, 1, 0, 0, GROUPS) != select_cases(train, 3, 0, 0, 0, GROUPS)
    without_groups = select_cases(train, 12, 0, 0, 0)  # cases are their own patients: several slices allowed
    assert len(set(without_groups)) == 12 and len({GROUPS[c] for c in without_groups}) < 12
    with pytest.raises(AutosamError, match="fold 0 holds 8 patients; choose K from 1 to 8"):
        select_cases(train, 9, 0, 0, 0, GROUPS)


def _facts(cases: int, foreground_slices: int) -> DatasetFacts:
    return DatasetFacts(
        dataset="Dataset999_Test", num_cases=cases, num_slices=foreground_slices,
        num_foreground_slices=foreground_slices, is_3d=True, median_slice_shape=[512, 512],
        median_spacing=[3.0, 1.0, 1.0], channels={"0": "CT"}, modalities=["CT"],
        labels={"background": 0, "organ": 1}, median_foreground_fraction={"organ": 0.1}, tiny_targets=[],
        unlabelled_images=0, checkpoints_present=[])


def test_planner_names_the_few_shot_regime_by_case_count() -> None:
    # the memory probes test_planner makes too (cached): the shapes of its 2000-slice CT set on an 80 GB GPU
    gpu = Hardware("cuda", 80, "a GPU with 80 GB")
    few = choose(_facts(30, 3000), gpu, 2, 1, (512, 512), SamOptions())
    assert "R20 (autosam)" in few.reasons["few_shot"] and "--train-cases 1 2 5 10 20" in few.reasons["few_shot"]
    vanilla = [c for c in few.candidates if c.setup.trains_whole_encoder]
    assert vanilla and all(c.why_not.startswith("R20 (autosam): 30 labelled cases < 50") for c in vanilla)
    many = choose(_facts(60, 3000), gpu, 2, 1, (512, 512), SamOptions())
    assert "few_shot" not in many.reasons
    assert not any(c.excluded for c in many.candidates if c.setup.trains_whole_encoder)


def test_few_shot_run_same_cases_for_every_method_and_a_curve_in_the_report(nnunet_folders, capsys) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from autosam.trainers.fold_training import make_trainer
    from autosam.trainers.fewshot import nnUNetTrainerFewShot, nnUNetTrainerSAMFewShot

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
    for repeat in (0, 1):
        nnunet = make_trainer(Dataset.resolve("901"), 0, nnUNetTrainerFewShot, plans_identifier("nnUNetPlans", 2, repeat), "2d")
        sam = make_trainer(Dataset.resolve("901"), 0, nnUNetTrainerSAMFewShot, plans_identifier("autosamPlans", 2, repeat), "2d_sam")
        (train, val), (sam_train, sam_val) = nnunet.do_split(), sam.do_split()
        assert train == sam_train and val == sam_val == splits[0]["val"]  # the fold's whole validation part
        assert len(set(train)) == 2 and set(train) <= set(splits[0]["train"])
        assert len({groups[c] for c in train}) == 2  # one slice per patient
        drawn[repeat] = train
    assert drawn[0] != drawn[1]  # the repeats drew different cases
    stock = make_trainer(Dataset.resolve("901"), 0, nnUNetTrainer, "nnUNetPlans", "2d")
    assert stock.do_split()[0] == splits[0]["train"]  # the full-data run kept its training part

    trained = sorted(p.parent.parent.name for p in results.glob("*/fold_0/checkpoint_final.pth"))
    assert trained == ["nnUNetTrainerFewShot__nnUNetPlans_2cases_r0__2d",
                       "nnUNetTrainerSAMFewShot__autosamPlans_2cases_r0__2d_sam",
                       "nnUNetTrainerSAM__autosamPlans__2d_sam", "nnUNetTrainer__nnUNetPlans__2d"]
    for folder in trained[:2]:  # chosen by the trainer's own split step; nnU-Net's records of the model folder
        log = next((results / folder / "fold_0").glob("training_log_*.txt")).read_text()
        assert f"few-shot: 2 of 8 training cases (repeat 0, seed 0, one per patient): {', '.join(drawn[0])}" in log
        assert json.loads((results / folder / "plans.json").read_text())["autosam_fewshot"]["train_cases"] == 2

    report = results / "autosam_report"
    fewshot = json.loads((report / "fewshot.json").read_text())
    assert fewshot["cases"]["0"]["0"]["2"] == drawn[0]
    rows = {(r["k"], r["method"]): r for r in fewshot["rows"]}
    assert set(rows) == {(2, "nnU-Net 2d"), (2, "SAM"), ("all", "nnU-Net 2d"), ("all", "SAM")}
    for method, trainer, plans, configuration in (("nnU-Net 2d", "nnUNetTrainerFewShot", "nnUNetPlans", "2d"),
                                                  ("SAM", "nnUNetTrainerSAMFewShot", "autosamPlans", "2d_sam")):
        # every validation case holds a lesion, and every patient two of them: nnU-Net's own mean Dice
        summary = json.loads((results / f"{trainer}__{plans_identifier(plans, 2, 0)}__{configuration}" / "fold_0"
                              / "validation" / "summary.json").read_text())
        assert rows[2, method]["per_repeat"] == pytest.approx([summary["foreground_mean"]["Dice"]], abs=1e-4)
    comparison = json.loads((report / "comparison.json").read_text())
    assert rows["all", "SAM"]["mean"] == comparison["summary"]["SAM"]["lesion"]["dice"]["mean"]
    assert (report / "fewshot.png").stat().st_size > 0
    markdown = (report / "report.md").read_text()
    assert "## Few labelled cases: Dice against K" in markdown and "| all (8) | SAM |" in markdown
    assert "![Dice against the number of labelled training cases](fewshot.png)" in markdown
    chosen = json.loads((results / "inference_information.json").read_text())["best_model_or_ensemble"]
    assert all("cases_r" not in m["plans_identifier"] for m in chosen["selected_model_or_models"])
