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

from autosam.cli import main
from autosam.demo import DEMO_DATA, DEMO_DATASET
from tests.conftest import case_ids, copy_subset

RUN = ["run", "-d", "901", "--folds", "0", "1", "--epochs", "1", "--iterations", "2", "--device", "cpu",
       "--setup", "test_vit_encdec_lora", "--image-size", "64", "--from-scratch"]


def _fold_files(results: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in results.rglob("checkpoint_final.pth")}


def test_run_compares_both_methods_on_the_same_cases(nnunet_folders, capsys) -> None:
    copy_subset(DEMO_DATA, nnunet_folders["nnUNet_raw"], case_ids(DEMO_DATA)[:20])
    assert main(RUN) == 0
    results = nnunet_folders["nnUNet_results"] / DEMO_DATASET
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
    assert all(set(c["metrics"]) == {"nnU-Net", "SAM"} for c in comparison["cases"])
    paired = comparison["paired"]["lesion"]["dice"]
    assert math.isfinite(paired["p_value"]) and all(math.isfinite(v) for v in paired["ci95"])
    for method in ("nnU-Net", "SAM"):
        assert all(math.isfinite(v) for v in comparison["summary"][method]["lesion"]["dice"]["ci95"])
    assert "data:image/png;base64," in (report / "report.html").read_text()
    assert "report:" in capsys.readouterr().out

    before = _fold_files(results)
    assert main(RUN) == 0  # everything is done: no fold trains again
    assert _fold_files(results) == before
    assert len(list(results.rglob("training_log_*.txt"))) == 4


def test_demo_data_ship_in_the_wheel_and_read_with_nnunet(tmp_path: Path) -> None:
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    meta = json.loads((DEMO_DATA / "dataset.json").read_text())
    assert meta["numTraining"] == len(case_ids(DEMO_DATA)) == 100 and "Al-Dhabyani" in meta["reference"]
    image, properties = NaturalImage2DIO().read_images([str(DEMO_DATA / "imagesTr" / "busi_ben001_0000.png")])
    label, _ = NaturalImage2DIO().read_seg(str(DEMO_DATA / "labelsTr" / "busi_ben001.png"))
    assert image.shape[1:] == label.shape[1:] and max(image.shape[2:]) == 128
    assert set(np.unique(label)) <= {0, 1}

    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("autosam-*.whl"))).namelist()
    shipped = [n for n in names if n.startswith(f"autosam/demo_data/{DEMO_DATASET}/")]
    assert f"autosam/demo_data/{DEMO_DATASET}/dataset.json" in shipped
    assert sum(n.endswith(".png") for n in shipped) == 200
    assert "trainers/nnunet_ext/autosam_trainers.py" in names


def test_ablate_trains_each_setup_on_the_same_folds(nnunet_folders, capsys) -> None:
    copy_subset(DEMO_DATA, nnunet_folders["nnUNet_raw"], case_ids(DEMO_DATA)[:10])
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "vit_t_encdec_lora", "--image-size", "256",
                 "--from-scratch", "--batch-size", "2"]) == 0
    assert main(["ablate", "-d", "901", "--setups", "vit_t_dec_lora", "vit_t_encdec_lora", "--folds", "0",
                 "--epochs", "1", "--iterations", "2", "--device", "cpu"]) == 0
    out = nnunet_folders["nnUNet_results"] / DEMO_DATASET / "autosam_ablation"
    summary = json.loads((out / "ablation.json").read_text())
    assert [r["setup"] for r in summary["rows"]] == ["vit_t_dec_lora", "vit_t_encdec_lora"]
    assert summary["planner_pick"] == "vit_t_encdec_lora" and summary["planner_gap_to_best"] >= 0
    assert (out / "ablation_heatmap.png").is_file()
    assert "planner's pick vit_t_encdec_lora" in capsys.readouterr().out
