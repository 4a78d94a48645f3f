"""Prompts from reference masks and the prompted forward of the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autosam.inference.prompt_file import to_preprocessed
from autosam.plans import SamPlan
from autosam.sam.model import build_network
from autosam.sam.prompts import Prompt, batch_prompts, bounding_box, image_prompts
from autosam.sam.setups import Setup

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


@pytest.mark.parametrize("setup", ["test_vit_encdec_lora", "test_hiera_encdec_lora"])
def test_a_prompted_forward_changes_only_the_prompted_classes(setup: str) -> None:
    network = build_network(Setup.parse(setup), 64, 4, 1).eval()
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


def test_promptless_plans_are_written_as_before() -> None:
    plan = SamPlan(Setup.parse("test_vit_encdec_lora"), 64, "imagenet", None, 1e-4)
    assert "prompts" not in plan.to_dict()
    assert SamPlan.from_dict(plan.to_dict()).prompts is None
    plan.prompts = "box"
    assert SamPlan.from_dict(plan.to_dict()).prompts == "box"


def test_prompts_map_through_nnunet_crop_and_resampling() -> None:
    properties = {"bbox_used_for_cropping": [[0, 1], [10, 50], [20, 80]],
                  "shape_after_cropping_and_before_resampling": (1, 40, 60)}
    mapped = to_preprocessed(Prompt((20.0, 10.0, 79.0, 49.0), ((50.0, 30.0), (5.0, 5.0)), (1, 0)), properties,
                             (1, 80, 30), [0, 1, 2])
    assert mapped.box == pytest.approx((0.0, 0.5, 29.0, 78.5))  # x halves, y doubles, clipped to the slice
    assert [list(p) for p in mapped.points] == [[14.75, 40.5], [0.0, 0.0]]  # outside the crop: clipped to it
    assert mapped.labels == (1, 0)
