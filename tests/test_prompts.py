"""Prompts from reference masks, the prompted forward, and a prompted fold trained by the real trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autosam.cli import main
from autosam.errors import CheckpointError
from autosam.sam.prompts import Prompt, batch_prompts, bounding_box, image_prompts
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset
from autosam.paths import Dataset

FOLD_DIR = "nnUNetTrainerSAM__autosamPlans__2d_sam"


def _label_maps() -> list[np.ndarray]:
    """Objects in the middle, touching each border and corner, one pixel, and two classes with an ignore label."""
    maps = []
    for rows, cols in ((slice(10, 20), slice(5, 30)), (slice(0, 8), slice(0, 40)), (slice(30, 40), slice(35, 48)),
                       (slice(17, 18), slice(22, 23)), (slice(0, 40), slice(0, 48))):
        label = np.zeros((40, 48), np.int64)
        label[rows, cols] = 1
        maps.append(label)
    two = np.zeros((40, 48), np.int64)
    two[2:12, 3:9], two[20:38, 25:47], two[14:40, 0:20] = 1, 2, 3  # 3 plays the ignore label
    maps.append(two)
    return maps


@pytest.mark.parametrize("mode", ["box", "point", "box+point"])
def test_boxes_contain_the_object_and_points_fall_on_the_right_side(mode: str) -> None:
    rng = np.random.default_rng(0)
    boxes = points = 0
    for label in _label_maps():
        for _ in range(20):
            prompts = image_prompts(label, mode, rng, ignore_label=3)
            assert set(prompts) == set(np.unique(label)) - {0, 3}
            for k, prompt in prompts.items():
                mask = label == k
                if prompt.box is not None:
                    boxes += 1
                    x0, y0, x1, y1 = prompt.box
                    bx0, by0, bx1, by1 = bounding_box(mask)
                    assert 0 <= x0 <= bx0 and 0 <= y0 <= by0, prompt.box  # contains the object ...
                    assert bx1 <= x1 <= label.shape[1] - 1 and by1 <= y1 <= label.shape[0] - 1, prompt.box  # ... inside
                    width, height = bx1 - bx0 + 1, by1 - by0 + 1
                    assert bx0 - x0 <= 0.1 * width and x1 - bx1 <= 0.1 * width  # jitter at most 10% per side
                    assert by0 - y0 <= 0.1 * height and y1 - by1 <= 0.1 * height
                for (x, y), positive in zip(prompt.points, prompt.labels):
                    points += 1
                    assert float(x).is_integer() and float(y).is_integer()
                    assert mask[int(y), int(x)] == bool(positive), (k, x, y, positive)
                    assert label[int(y), int(x)] != 3  # never on the ignore label
                if prompt.points:
                    assert 1 in prompt.labels  # at least one positive point
    assert (boxes > 0) == (mode != "point") and (points > 0) == (mode != "box")


def test_boxes_are_jittered_and_batches_are_reproducible() -> None:
    label = _label_maps()[0]
    boxes = {image_prompts(label, "box", np.random.default_rng(seed))[1].box for seed in range(10)}
    assert len(boxes) == 10  # jittered, not the bare bounding box every time
    target = torch.from_numpy(np.stack(_label_maps())[:, None].astype(np.float32))
    first = batch_prompts(target, "box+point", np.random.default_rng(5), ignore_label=3, share=0.5)
    again = batch_prompts(target, "box+point", np.random.default_rng(5), ignore_label=3, share=0.5)
    assert first == again and any(first) and not all(first)  # a seeded share of the images is prompted


def test_a_prompted_forward_changes_only_the_prompted_classes() -> None:
    network = build_network(Setup.parse("test_vit_encdec_lora"), 64, 4, 1).eval()
    x = torch.randn(2, 1, 48, 64)
    prompts = [{1: Prompt((3.0, 4.0, 20.0, 30.0))}, {2: Prompt(None, ((5.0, 6.0), (30.0, 40.0)), (1, 0)),
                                                    3: Prompt((10.0, 10.0, 40.0, 30.0), ((20.0, 20.0),), (1,))}]
    with torch.no_grad():
        automatic = network(x)
        prompted = network(x, prompts)
        with network.prompting(prompts):
            through_context = network(x)
        after = network(x)
        empty = network(x, [{}, {}])
    assert torch.equal(automatic, after) and torch.equal(automatic, empty)  # the promptless forward is unchanged
    assert torch.equal(prompted, through_context)
    changed = (prompted != automatic).flatten(2).any(-1)
    assert changed.tolist() == [[False, True, False, False], [False, False, True, True]]
    with pytest.raises(ValueError, match="classes 1..3"):
        network(x, [{4: Prompt((1.0, 1.0, 2.0, 2.0))}, {}])


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
        assert main(["plan-and-preprocess", "-d", "501", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                     "--epochs", "1", "--iterations", "2", "--checkpoint", str(root / "base.pth"),
                     "--prompts", "box+point"]) == 0
        assert main(["train", "-d", "501", "-f", "0", "--device", "cpu"]) == 0
        patch.setattr(SamSegmenter, "_prompted", original)
        yield {"folders": folders, "root": root, "source": source, "prompted_calls": prompted_calls,
               "fold": folders["nnUNet_results"] / "Dataset501_BUSI" / FOLD_DIR / "fold_0"}


def test_a_prompted_plan_trains_with_prompts_and_records_them(prompted_fold) -> None:
    plans = json.loads((prompted_fold["folders"]["nnUNet_preprocessed"] / "Dataset501_BUSI"
                        / "autosamPlans.json").read_text())
    assert plans["configurations"]["2d_sam"]["sam"]["prompts"] == "box+point"
    calls = prompted_fold["prompted_calls"]
    assert len(calls) == 2  # every training step went through the prompted path ...
    prompted = [classes for call in calls for classes in call]
    assert [1] in prompted and [] in prompted  # ... with some images prompted and some promptless
    checkpoint = torch.load(prompted_fold["fold"] / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["autosam"]["prompts"] == "box+point"
    assert (prompted_fold["fold"] / "validation" / "summary.json").is_file()
    assert "Prompts: box+point" in next(prompted_fold["fold"].glob("training_log_*.txt")).read_text()

    from autosam.sam.weights.fold_checkpoint import check_identity

    promptless = {k: v for k, v in checkpoint["autosam"].items() if k != "prompts"}
    with pytest.raises(CheckpointError, match="trained with prompts box\\+point, but the plan now gives no prompts"):
        check_identity(checkpoint["autosam"], promptless, "fold_0")
    with pytest.raises(CheckpointError, match="trained with no prompts"):
        check_identity(promptless, checkpoint["autosam"], "fold_0")


def test_promptless_plans_are_written_as_before() -> None:
    from autosam.plans import SamPlan

    plan = SamPlan(Setup.parse("test_vit_encdec_lora"), 64, "imagenet", None, 1e-4)
    assert "prompts" not in plan.to_dict()
    assert SamPlan.from_dict(plan.to_dict()).prompts is None
    plan.prompts = "box"
    assert SamPlan.from_dict(plan.to_dict()).prompts == "box"


def test_the_prompted_fold_is_evaluated_interactively(prompted_fold, tmp_path) -> None:
    from autosam.evaluation.interactive_report import curve, interactive_section, markdown_lines

    summary = interactive_section(Dataset.resolve("501"), [0], torch.device("cpu"), None)
    splits = json.loads((prompted_fold["folders"]["nnUNet_preprocessed"] / "Dataset501_BUSI"
                         / "splits_final.json").read_text())
    assert [c["case"] for c in summary["cases"]] == splits[0]["val"]  # every validation case, per case
    for case in summary["cases"]:
        assert set(case["starts"]) == {"box", "click"}
        assert all(len(case["starts"][s]["1"]["dice"]) == 5 for s in ("box", "click"))
    assert [(r["start"], r["label"], len(r["dice"])) for r in summary["rows"]] == [("box", "lesion", 5),
                                                                                  ("click", "lesion", 5)]
    assert summary["rows"][0]["dice"][2]["mean"] == pytest.approx(
        np.mean([c["starts"]["box"]["1"]["dice"][2] for c in summary["cases"]]))
    text = "\n".join(markdown_lines(summary))
    assert "| box | lesion | 2 |" in text and "not comparable to the automatic" in text
    curve(summary, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    written = prompted_fold["fold"] / "interactive.json"
    before = written.stat().st_mtime_ns
    interactive_section(Dataset.resolve("501"), [0], torch.device("cpu"), None)
    assert written.stat().st_mtime_ns == before  # evaluated once per final checkpoint


def test_prompts_map_through_nnunet_crop_and_resampling() -> None:
    from autosam.inference.prompt_file import to_preprocessed

    properties = {"bbox_used_for_cropping": [[0, 1], [10, 50], [20, 80]],
                  "shape_after_cropping_and_before_resampling": (1, 40, 60)}
    mapped = to_preprocessed(Prompt((20.0, 10.0, 79.0, 49.0), ((50.0, 30.0), (5.0, 5.0)), (1, 0)), properties,
                             (1, 80, 30), [0, 1, 2])
    assert mapped.box == pytest.approx((0.0, 0.5, 29.0, 78.5))  # x halves, y doubles, clipped to the slice
    assert [list(p) for p in mapped.points] == [[14.75, 40.5], [0.0, 0.0]]  # outside the crop: clipped to it
    assert mapped.labels == (1, 0)


def _unseen(prompted_fold, name: str) -> tuple[Path, list[str]]:
    folder = prompted_fold["root"] / name
    folder.mkdir()
    cases = case_ids(prompted_fold["source"])[-2:]
    for case in cases:
        image = prompted_fold["source"] / "imagesTr" / f"{case}_0000.png"
        (folder / image.name).write_bytes(image.read_bytes())
    return folder, cases


def test_predict_with_prompts_writes_the_input_geometry(prompted_fold) -> None:
    import SimpleITK as sitk

    unseen, cases = _unseen(prompted_fold, "unseen")
    height, width = sitk.GetArrayFromImage(sitk.ReadImage(str(unseen / f"{cases[0]}_0000.png"))).shape[:2]
    prompts = prompted_fold["root"] / "prompts.json"
    prompts.write_text(json.dumps({cases[0]: {"lesion": {"box": [5, 5, width // 2, height // 2]}},
                                   cases[1]: {"1": {"points": [[10, 12], [3, 3]], "labels": [1, 0]}}}))
    out = prompted_fold["root"] / "predicted"
    assert main(["predict", "-d", "501", "-i", str(unseen), "-o", str(out), "-f", "0", "--device", "cpu",
                 "--prompts", str(prompts)]) == 0
    for case in cases:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(unseen / f"{case}_0000.png")))
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.png")))
        assert prediction.shape == image.shape[:2] and set(np.unique(prediction)) <= {0, 1}


@pytest.mark.parametrize("content, message", [
    ({"no_such_case": {"lesion": {"box": [1, 1, 5, 5]}}}, "unknown image 'no_such_case'"),
    ({"CASE": {"lesion": {"box": [1, 1, 5, 99999]}}}, "lies outside the image"),
    ({"CASE": {"lesion": {"points": [[-1, 3]]}}}, "lies outside the image"),
    ({"CASE": {"tumour": {"box": [1, 1, 5, 5]}}}, "unknown class 'tumour'"),
    ("{not json", "not valid JSON"),
])
def test_a_malformed_prompts_file_is_one_line_and_writes_nothing(prompted_fold, capsys, content, message) -> None:
    unseen, cases = _unseen(prompted_fold, f"unseen_{abs(hash(message)) % 10**6}_{len(str(content))}")
    prompts = unseen.parent / f"{unseen.name}.json"
    text = content if isinstance(content, str) else json.dumps(content).replace("CASE", cases[0])
    prompts.write_text(text)
    out = unseen.parent / f"{unseen.name}_out"
    capsys.readouterr()
    assert main(["predict", "-d", "501", "-i", str(unseen), "-o", str(out), "-f", "0", "--device", "cpu",
                 "--prompts", str(prompts)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(prompts) in error[0] and message in error[0], error
    assert not out.exists()
