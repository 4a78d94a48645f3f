"""A smaller raw dataset cut from another: the chosen cases with every channel, and its dataset.json."""

from __future__ import annotations

import json

from autosam.data.subset import case_ids, copy_subset
from autosam.experiments.demo import DEMO_DATA


def test_the_chosen_cases_are_copied_with_their_labels_under_a_new_name(tmp_path) -> None:
    cases = case_ids(DEMO_DATA)
    assert len(cases) == 100 and cases == sorted(cases)
    target = copy_subset(DEMO_DATA, tmp_path, cases[:3], "Dataset777_Three")
    assert target == tmp_path / "Dataset777_Three" and case_ids(target) == cases[:3]
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == [f"{c}.png" for c in cases[:3]]
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"] == json.loads((DEMO_DATA / "dataset.json").read_text())["labels"]
