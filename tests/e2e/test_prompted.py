"""A prompted plan trained by the real trainer: prompts recorded, interactive clicks evaluated, predict with a
prompts file, malformed prompts files refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from autosam.cli import main
from autosam.errors import CheckpointError
from autosam.evaluation.interactive import PROTOCOL, STARTS
from autosam.evaluation.interactive_report import curve, interactive_section, markdown_lines
from autosam.paths import Dataset
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.weights.fold_checkpoint import check_identity
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset

FOLD_DIR = "nnUNetTrainerSAM__autosamPlans__2d_sam"


@pytest.fixture(scope="module")
def prompted_fold(tmp_path_factory) -> dict:
    """A BUSI subset planned with --prompts box+point and fold 0 trained by the real trainer (1 x 2 steps)."""
    root = tmp_path_factory.mktemp("prompted")
    with pytest.MonkeyPatch.context() as patch:
        folders = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        for name, path in folders.items():
            path.mkdir()
            patch.setenv(name, str(path))
        source = busi_or_demo()
        copy_subset(source, folders["nnUNet_raw"], case_ids(source)[:8], BUSI)
        torch.manual_seed(0)
        torch.save(build_sam("test_vit", 64, 2).state_dict(), root / "base.pth")
        prompted_calls = []
        original = SamSegmenter._prompted

        def recording(self, logits, embeddings, prompts, height, width):
            if self.training:
                prompted_calls.append([sorted(p) for p in prompts])
            return original(self, logits, embeddings, prompts, height, width)

        patch.setattr(SamSegmenter, "_prompted", recording)
        assert (
            main(
                [
                    "plan-and-preprocess",
                    "-d",
                    "501",
                    "--setup",
                    "test_vit_encdec_lora",
                    "--image-size",
                    "64",
                    "--epochs",
                    "1",
                    "--iterations",
                    "2",
                    "--checkpoint",
                    str(root / "base.pth"),
                    "--prompts",
                    "box+point",
                ]
            )
            == 0
        )
        assert main(["train", "-d", "501", "-f", "0", "--device", "cpu"]) == 0
        patch.setattr(SamSegmenter, "_prompted", original)
        yield {
            "folders": folders,
            "root": root,
            "source": source,
            "prompted_calls": prompted_calls,
            "fold": folders["nnUNet_results"] / "Dataset501_BUSI" / FOLD_DIR / "fold_0",
        }


def test_a_prompted_plan_trains_with_prompts_and_records_them(prompted_fold) -> None:
    plans = json.loads(
        (prompted_fold["folders"]["nnUNet_preprocessed"] / "Dataset501_BUSI" / "autosamPlans.json").read_text()
    )
    assert plans["configurations"]["2d_sam"]["sam"]["prompts"] == "box+point"
    calls = prompted_fold["prompted_calls"]
    assert len(calls) == 2  # every training step went through the prompted path ...
    prompted = [classes for call in calls for classes in call]
    assert [1] in prompted and [] in prompted  # ... with some images prompted and some promptless
    checkpoint = torch.load(prompted_fold["fold"] / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["autosam"]["prompts"] == "box+point"
    assert (prompted_fold["fold"] / "validation" / "summary.json").is_file()
    assert "Prompts: box+point" in next(prompted_fold["fold"].glob("training_log_*.txt")).read_text()

    promptless = {k: v for k, v in checkpoint["autosam"].items() if k != "prompts"}
    with pytest.raises(CheckpointError, match="trained with prompts box\\+point, but the plan now gives no prompts"):
        check_identity(checkpoint["autosam"], promptless, "fold_0")
    with pytest.raises(CheckpointError, match="trained with no prompts"):
        check_identity(promptless, checkpoint["autosam"], "fold_0")


def test_the_prompted_fold_is_evaluated_interactively(prompted_fold, tmp_path) -> None:
    summary = interactive_section(Dataset.resolve("501"), [0], torch.device("cpu"), None)
    splits = json.loads(
        (prompted_fold["folders"]["nnUNet_preprocessed"] / "Dataset501_BUSI" / "splits_final.json").read_text()
    )
    assert [c["case"] for c in summary["cases"]] == splits[0]["val"]  # every validation case, per case
    for case in summary["cases"]:
        assert set(case["starts"]) == set(STARTS)
        assert all(len(case["starts"][s]["1"]["dice"]) == 5 for s in STARTS)
    assert [(r["start"], r["label"], len(r["dice"])) for r in summary["rows"]] == [(s, "lesion", 5) for s in STARTS]
    assert summary["rows"][0]["dice"][2]["mean"] == pytest.approx(
        np.mean([c["starts"]["box"]["1"]["dice"][2] for c in summary["cases"]])
    )
    text = "\n".join(markdown_lines(summary))
    assert "| box | lesion | 2 |" in text and "not comparable to the automatic" in text
    curve(summary, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    written = prompted_fold["fold"] / "interactive.json"
    record = json.loads(written.read_text())
    assert record["protocol"] == PROTOCOL and record["decision"] == "logit > 0"
    before = written.stat().st_mtime_ns
    interactive_section(Dataset.resolve("501"), [0], torch.device("cpu"), None)
    assert written.stat().st_mtime_ns == before  # evaluated once per final checkpoint


def _unseen(prompted_fold, name: str) -> tuple[Path, list[str]]:
    folder = prompted_fold["root"] / name
    folder.mkdir()
    cases = case_ids(prompted_fold["source"])[-2:]
    for case in cases:
        image = prompted_fold["source"] / "imagesTr" / f"{case}_0000.png"
        (folder / image.name).write_bytes(image.read_bytes())
    return folder, cases


def test_predict_with_prompts_writes_the_input_geometry(prompted_fold) -> None:
    unseen, cases = _unseen(prompted_fold, "unseen")
    height, width = sitk.GetArrayFromImage(sitk.ReadImage(str(unseen / f"{cases[0]}_0000.png"))).shape[:2]
    prompts = prompted_fold["root"] / "prompts.json"
    prompts.write_text(
        json.dumps(
            {
                cases[0]: {"lesion": {"box": [5, 5, width // 2, height // 2]}},
                cases[1]: {"1": {"points": [[10, 12], [3, 3]], "labels": [1, 0]}},
            }
        )
    )
    out = prompted_fold["root"] / "predicted"
    assert (
        main(
            [
                "predict",
                "-d",
                "501",
                "-i",
                str(unseen),
                "-o",
                str(out),
                "-f",
                "0",
                "--device",
                "cpu",
                "--prompts",
                str(prompts),
            ]
        )
        == 0
    )
    for case in cases:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(unseen / f"{case}_0000.png")))
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.png")))
        assert prediction.shape == image.shape[:2] and set(np.unique(prediction)) <= {0, 1}


@pytest.mark.parametrize(
    "content, message",
    [
        ({"no_such_case": {"lesion": {"box": [1, 1, 5, 5]}}}, "unknown image 'no_such_case'"),
        ({"CASE": {"lesion": {"box": [1, 1, 5, 99999]}}}, "lies outside the image"),
        ({"CASE": {"lesion": {"points": [[-1, 3]]}}}, "lies outside the image"),
        ({"CASE": {"tumour": {"box": [1, 1, 5, 5]}}}, "unknown class 'tumour'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_malformed_prompts_file_is_one_line_and_writes_nothing(prompted_fold, capsys, content, message) -> None:
    unseen, cases = _unseen(prompted_fold, f"unseen_{abs(hash(message)) % 10**6}_{len(str(content))}")
    prompts = unseen.parent / f"{unseen.name}.json"
    text = content if isinstance(content, str) else json.dumps(content).replace("CASE", cases[0])
    prompts.write_text(text)
    out = unseen.parent / f"{unseen.name}_out"
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "-d",
                "501",
                "-i",
                str(unseen),
                "-o",
                str(out),
                "-f",
                "0",
                "--device",
                "cpu",
                "--prompts",
                str(prompts),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(prompts) in error[0] and message in error[0], error
    assert not out.exists()
