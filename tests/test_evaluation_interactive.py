"""Simulated clicks: each lands at the centre of the current largest error region, and Dice is recorded after
every interaction, with a real (small, random) SAM network answering the prompts."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from autosam.evaluation.interactive import INTERACTIONS, error_click, evaluate_case, network_segmenter, simulate
from autosam.sam.model import build_network
from autosam.sam.setups import Setup


def test_the_click_goes_to_the_centre_of_the_largest_error() -> None:
    reference = np.zeros((40, 40), bool)
    reference[5:16, 5:16] = True  # an 11 x 11 object, missed entirely
    prediction = np.zeros_like(reference)
    prediction[30:35, 30:35] = True  # a 5 x 5 false positive
    click = error_click(prediction, reference)
    assert (click.x, click.y, click.positive) == (10, 10, True)

    prediction[20:39, 20:39] = True  # now the false positive is the larger error
    click = error_click(prediction, reference)
    assert not click.positive and (click.x, click.y) == (29, 29)
    assert error_click(reference.copy(), reference) is None  # nothing to correct

    ignore = np.ones_like(reference)
    ignore[20:39, 20:39] = False  # errors on the ignore label do not count
    assert error_click(prediction, reference, ignore).positive


def test_each_click_lands_in_the_largest_error_region_and_dice_is_recorded() -> None:
    network = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1).eval()
    torch.manual_seed(1)
    image = torch.randn(1, 48, 56)
    label = np.zeros((48, 56), np.int64)
    label[8:30, 10:40], label[35:45, 5:20] = 1, 2
    seen = []

    def segment(prompts):  # the network's answer, kept to check where the next click went
        predictions = network_segmenter(network, image)(prompts)
        seen.append(predictions)
        return predictions

    results = simulate(segment, label, [1, 2])
    assert set(results) == {("box", 1), ("box", 2), ("click", 1), ("click", 2)}
    assert len(seen) == INTERACTIONS
    for index, ((start, k), result) in enumerate(results.items()):
        assert len(result["dice"]) == INTERACTIONS and all(0 <= d <= 1 for d in result["dice"])
        clicks = result["clicks"][1:] if start == "click" else result["clicks"]
        if start == "click":  # the first click: the object's centre
            x, y, positive = result["clicks"][0]
            assert positive and label[y, x] == k
        assert len(clicks) == INTERACTIONS - 1
        for step, click in enumerate(clicks):
            mask, reference = seen[step][index] == k, label == k
            dice = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
            assert np.isclose(result["dice"][step], dice)
            if click is None:
                assert (mask == reference).all()
                continue
            x, y, positive = click
            errors = (reference & ~mask) if positive else (mask & ~reference)
            assert errors[y, x], (start, k, step, click)  # inside an error of the right kind ...
            labelled, _ = ndimage.label(errors, structure=np.ones((3, 3)))
            largest = max(np.bincount(labelled[labelled > 0]))
            misses, extras = (ndimage.label(e, structure=np.ones((3, 3)))[0] for e in
                              (reference & ~mask, mask & ~reference))
            biggest = max([np.bincount(m[m > 0]).max() for m in (misses, extras) if m.any()])
            assert np.bincount(labelled[labelled > 0])[labelled[y, x]] == largest == biggest  # ... the largest one

    case = evaluate_case(network, image[:, None].numpy(), label[None, None], torch.device("cpu"))
    assert set(case) == {"box", "click"} and set(case["box"]) == {"1", "2"}
    assert all(len(v["dice"]) == INTERACTIONS and v["slices"] == 1 for s in case.values() for v in s.values())
