"""Few-shot case selection: K distinct patients of a fold's training part, nested in K, drawn again per repeat."""

from __future__ import annotations

import pytest

from autosam.data.case_selection import select_cases
from autosam.errors import AutosamError

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
