"""Simulated clicks by RITM's rule (the deepest false-negative point against the deepest false-positive point,
clicked pixels excluded), per-class decisions at logit > 0, three starts; a real (small, random) SAM network
answers the prompts in the loop test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from autosam.evaluation.interactive import (
    INTERACTIONS,
    STARTS,
    decision,
    evaluate_case,
    network_segmenter,
    next_click,
    simulate,
    start_prompt,
)
from autosam.evaluation.interactive_report import summarise
from autosam.sam.model import build_network
from autosam.sam.prompts import BOX_JITTER, bounding_box
from autosam.sam.setups import Setup


def _disk(radius: float, size: int = 41, centre: tuple[int, int] = (20, 20)) -> np.ndarray:
    rows, cols = np.ogrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_a_thin_false_positive_ring_around_a_missed_hole_draws_a_positive_click_at_the_hole_centre() -> None:
    reference = _disk(10)
    prediction = _disk(12) & ~_disk(5)  # over-reaches by a 2-pixel ring, misses the middle
    ring, hole = prediction & ~reference, reference & ~prediction
    assert ring.sum() > hole.sum()  # the larger error by area is the ring ...
    click = next_click(prediction, reference)
    assert (click.x, click.y, click.positive) == (20, 20, True)  # ... the deeper one the hole


def test_the_image_border_bounds_an_error_region_and_ties_go_to_the_false_positives() -> None:
    reference = np.zeros((40, 40), bool)
    reference[0:6, :] = True  # a missed strip along the top edge: 3 deep, counting the border as its edge
    prediction = np.zeros_like(reference)
    prediction[20:29, 20:29] = True  # a 9 x 9 false positive: 5 deep
    click = next_click(prediction, reference)
    assert (click.x, click.y, click.positive) == (24, 24, False)
    both = next_click(
        np.pad(np.ones((5, 5), bool), ((2, 33), (2, 33))),  # a 5 x 5 false positive ...
        np.pad(np.ones((5, 5), bool), ((30, 5), (30, 5))),
    )  # ... and a 5 x 5 miss: equally deep
    assert not both.positive and (both.x, both.y) == (4, 4)
    ignore = np.ones_like(reference)
    ignore[20:29, 20:29] = False  # errors on the ignore label do not count
    assert next_click(prediction, reference, ignore).positive


def test_a_clicked_pixel_is_never_clicked_again() -> None:
    reference = np.zeros((30, 30), bool)
    reference[5:16, 5:16] = True
    empty = np.zeros_like(reference)
    clicked = np.zeros_like(reference)
    seen = set()
    for _ in range(6):  # a model that never changes its answer: every click a new pixel
        click = next_click(empty, reference, clicked=clicked)
        assert click.positive and reference[click.y, click.x] and (click.x, click.y) not in seen
        seen.add((click.x, click.y))
        clicked[click.y, click.x] = True
    assert (10, 10) in seen  # the first went to the centre
    single = np.zeros_like(reference)
    single[3, 4] = True
    assert next_click(empty, single, clicked=single) is None  # the only error pixel is clicked: no click left

    logits = np.full((2, 30, 30), -1.0)  # the same answer whatever the prompt: an empty mask
    results = simulate(
        lambda prompts: np.stack([logits] * len(prompts)), reference.astype(np.int64), [1], interactions=INTERACTIONS
    )
    for start in STARTS:
        clicks = [tuple(c[:2]) for c in results[start, 1]["clicks"]]
        assert len(clicks) == (INTERACTIONS if start == "click" else INTERACTIONS - 1)
        assert len(set(clicks)) == len(clicks), (start, clicks)


def test_a_prompted_class_is_its_own_logit_above_zero_not_an_argmax_against_the_background() -> None:
    label = np.zeros((20, 20), np.int64)
    label[4:12, 4:12] = 1
    logits = np.full((3, 20, 20), -2.0)
    logits[0] = 5.0  # the promptless background outscores the class everywhere
    logits[1, 4:12, 4:12] = 1.0  # yet the prompted class says "inside" on its object
    assert (decision(logits, 1) == (label == 1)).all()
    assert not (logits.argmax(0) == 1).any()  # an argmax would have found nothing
    results = simulate(lambda prompts: np.stack([logits] * len(prompts)), label, [1], starts=("box",), interactions=2)
    assert results["box", 1]["dice"] == [1.0, 1.0] and results["box", 1]["clicks"] == [None]


def test_the_jittered_box_contains_the_tight_box_within_the_documented_jitter_and_is_seeded() -> None:
    reference = np.zeros((60, 60), bool)
    reference[10:30, 20:50] = True  # 30 wide, 20 high
    x0, y0, x1, y1 = bounding_box(reference)
    boxes = []
    for seed in range(20):
        box = start_prompt("jittered_box", reference, np.ones_like(reference), np.random.default_rng(seed))[0].box
        assert 0 <= x0 - box[0] <= BOX_JITTER * 30 and 0 <= box[2] - x1 <= BOX_JITTER * 30
        assert 0 <= y0 - box[1] <= BOX_JITTER * 20 and 0 <= box[3] - y1 <= BOX_JITTER * 20
        boxes.append(box)
    assert len(set(boxes)) == 20  # really jittered
    again = start_prompt("jittered_box", reference, np.ones_like(reference), np.random.default_rng(3))[0].box
    assert again == boxes[3]
    assert start_prompt("box", reference, np.ones_like(reference))[0].box == (20.0, 10.0, 49.0, 29.0)


@pytest.mark.parametrize("setup", ["test_vit_encdec_lora", "test_hiera_encdec_lora"])
def test_each_click_follows_the_rule_on_a_real_network_and_dice_is_recorded(setup: str) -> None:
    network = build_network(Setup.parse(setup), 64, 3, 1).eval()
    torch.manual_seed(1)
    image = torch.randn(1, 48, 56)
    label = np.zeros((48, 56), np.int64)
    label[8:30, 10:40], label[35:45, 5:20] = 1, 2
    seen = []

    def segment(prompts):  # the network's answer, kept to check where the next click went
        logits = network_segmenter(network, image)(prompts)
        seen.append(logits)
        return logits

    results = simulate(segment, label, [1, 2])
    assert set(results) == {(s, k) for s in STARTS for k in (1, 2)}
    assert len(seen) == INTERACTIONS
    for index, ((start, k), result) in enumerate(results.items()):
        assert len(result["dice"]) == INTERACTIONS and all(0 <= d <= 1 for d in result["dice"])
        clicked = np.zeros(label.shape, bool)
        clicks = result["clicks"]
        if start == "click":  # the first click: the object's deepest point
            x, y, positive = clicks[0]
            assert positive and label[y, x] == k
            clicked[y, x] = True
            clicks = clicks[1:]
        assert len(clicks) == INTERACTIONS - 1
        for step, click in enumerate(clicks):
            mask, reference = seen[step][index][k] > 0, label == k
            dice = 2 * (mask & reference).sum() / max(1, mask.sum() + reference.sum())
            assert np.isclose(result["dice"][step], dice)
            if click is None:
                continue
            x, y, positive = click
            errors = (reference & ~mask) if positive else (mask & ~reference)
            assert errors[y, x] and not clicked[y, x], (start, k, step, click)
            depth = ndimage.distance_transform_edt(np.pad(errors, 1))[1:-1, 1:-1] * ~clicked
            other = (
                ndimage.distance_transform_edt(np.pad((mask & ~reference) if positive else (reference & ~mask), 1))[
                    1:-1, 1:-1
                ]
                * ~clicked
            )
            assert depth[y, x] == depth.max() and depth.max() >= other.max()  # the deeper region's deepest point
            clicked[y, x] = True

    case = evaluate_case(network, image[:, None].numpy(), label[None, None], torch.device("cpu"), case="c1")
    assert set(case) == set(STARTS) and set(case["box"]) == {"1", "2"}
    assert all(len(v["dice"]) == INTERACTIONS and v["slices"] == 1 for s in case.values() for v in s.values())
    assert case == evaluate_case(network, image[:, None].numpy(), label[None, None], torch.device("cpu"), case="c1")


def test_the_reports_interactive_intervals_stay_within_dice_range(tmp_path) -> None:
    dices = ([1.0, 1.0], [0.9, 1.0], [1.0, 1.0])  # three cases near the ceiling: a t interval passes 1
    cases = [{"case": f"c{i}", "starts": {"box": {"1": {"dice": d, "slices": 1}}}} for i, d in enumerate(dices)]
    (tmp_path / "interactive.json").write_text(
        json.dumps({"interactions": 2, "starts": ["box"], "prompt_mode": "box", "cases": cases})
    )
    summary = summarise({0: tmp_path / "interactive.json"}, {"1": "lesion"}, None)
    first = summary["rows"][0]["dice"][0]
    assert first["n"] == 3 and first["ci95"][1] == 1.0 and first["ci95"][0] < first["mean"]
