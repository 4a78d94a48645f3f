"""Few-shot case selection: K distinct patients of a fold's training part, nested in K, drawn again per repeat,
each draw holding foreground."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from autosam.data.case_selection import check_train_cases, labelled_foreground, select_cases
from autosam.errors import AutosamError

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


def test_every_draw_holds_foreground_and_a_patient_without_any_is_never_drawn(tmp_path) -> None:
    train = sorted(GROUPS)[:24]  # patients p0-p7, three slices each
    with_foreground = {"p0_z1", "p1_z4", "p5_z16"}  # one slice of p0, p1 and p5; the other patients none
    assert with_foreground <= set(train)
    for seed in range(10):
        for repeat in range(3):
            for k in (1, 2, 3):
                chosen = select_cases(train, k, seed, repeat, 0, GROUPS, lambda c: c in with_foreground)
                assert len(chosen) == k and set(chosen) <= with_foreground
            assert set(select_cases(train, 1, seed, repeat, 0, GROUPS, with_foreground.__contains__)) <= set(
                select_cases(train, 2, seed, repeat, 0, GROUPS, with_foreground.__contains__)
            )  # still nested
    with pytest.raises(AutosamError, match="fold 0 holds 3 patients with foreground; choose K from 1 to 3"):
        select_cases(train, 4, 0, 0, 0, GROUPS, with_foreground.__contains__)
    with pytest.raises(AutosamError, match="choose K from 1 to 3"):
        check_train_cases([1, 4], 1, [0], [{"train": train, "val": []}], GROUPS, with_foreground.__contains__)

    raw = tmp_path / "Dataset999_Slices"
    (raw / "labelsTr").mkdir(parents=True)
    (raw / "dataset.json").write_text(
        json.dumps({"file_ending": ".png", "labels": {"background": 0, "lesion": 1, "ignore": 2}})
    )
    for case, value in (("lesion", 1), ("blank", 0), ("ignored", 2)):
        label = np.zeros((8, 8), np.uint8)
        label[2:4, 2:4] = value
        Image.fromarray(label).save(raw / "labelsTr" / f"{case}.png")
    has_foreground = labelled_foreground(raw)
    assert [has_foreground(c) for c in ("lesion", "blank", "ignored")] == [True, False, False]
    with pytest.raises(AutosamError, match="missing.png: no reference for case missing"):
        has_foreground("missing")
