"""The few-shot summary: one unit on the x-axis, SAM paired with the declared baseline per K (never the best one
after the fact), intervals inside Dice's range."""

from __future__ import annotations

import numpy as np
import pytest

from autosam.evaluation.fewshot_curve import markdown_lines, summarise, write_fewshot
from autosam.evaluation.stats import holm, paired_comparison
from autosam.evaluation.study_stats import mean_over_repeats

PATIENTS = [f"p{i}" for i in range(6)]


def _units(rng: np.random.Generator, mean: float) -> dict[str, float]:
    return {p: float(np.clip(mean + rng.normal(0, 0.04), 0, 1)) for p in PATIENTS}


def test_sam_is_paired_with_the_declared_baseline_within_each_repeat_and_intervals_stay_in_range(tmp_path) -> None:
    rng = np.random.default_rng(0)
    means = {
        ("nnU-Net 2d", 1): 0.40,
        ("nnU-Net 3d_fullres", 1): 0.60,
        ("SAM", 1): 0.50,
        ("nnU-Net 2d", 4): 0.97,
        ("nnU-Net 3d_fullres", 4): 0.90,
        ("SAM", 4): 0.985,
    }
    units = {key: {r: _units(rng, m) for r in range(3)} for key, m in means.items()}
    units["SAM", 4] = {r: dict.fromkeys(PATIENTS, v) for r, v in enumerate((1.0, 0.95, 1.0))}  # near the ceiling
    full = {"nnU-Net 2d": 0.99, "nnU-Net 3d_fullres": 0.95, "SAM": 0.99}
    info = {
        "folds": [0, 1],
        "seed": 0,
        "repeats": 3,
        "train_cases": [1, 4],
        "training_seeds": [11, 12, 13],
        "unit": "patient",
        "full_training_units": [8, 8],
        "cases": {},
        "models": [],
    }
    summary = summarise(units, full, "nnU-Net 2d", info)

    gaps = {g["k"]: g for g in summary["sam_minus_baseline"]}
    assert set(gaps) == {1, 4} and all(g["baseline"] == "nnU-Net 2d" for g in gaps.values())  # 3d is better at K=1
    for k, gap in gaps.items():
        sam, base = units["SAM", k], units["nnU-Net 2d", k]
        per_repeat = [np.mean([sam[r][p] - base[r][p] for p in PATIENTS]) for r in range(3)]
        assert gap["per_repeat"] == pytest.approx(per_repeat) and gap["difference"] == pytest.approx(
            np.mean(per_repeat)
        )
        assert -1 <= gap["ci95"][0] <= gap["difference"] <= gap["ci95"][1] <= 1
        expected = paired_comparison(mean_over_repeats(list(base.values())), mean_over_repeats(list(sam.values())))
        assert gap["per_unit"]["n"] == 6 and gap["per_unit"]["mean_difference"] == pytest.approx(
            expected["mean_difference"]
        )
    assert [gaps[k]["per_unit"]["p_holm"] for k in (1, 4)] == pytest.approx(
        holm([gaps[k]["per_unit"]["p_value"] for k in (1, 4)])
    )

    rows = {(r["k"], r["method"]): r for r in summary["rows"]}
    near_one = rows[4, "SAM"]  # three repeats near the ceiling: their t interval passes 1, clipped here
    assert near_one["ci95"][1] == 1 and near_one["ci95"][0] < near_one["mean"]
    assert rows["all", "SAM"]["training_units"] == 8  # the full-data point counts patients, as K does

    lines = markdown_lines(summary)
    assert lines[0].startswith("| K (patients) |") and "| all (8) | SAM | 0.990 |" in "\n".join(lines)
    assert any(line.startswith("SAM minus nnU-Net 2d (the baseline declared before training)") for line in lines)
    assert any(line.startswith("- K = 1: ") and "Holm over the Ks" in line for line in lines)
    assert "training seeds 11, 12, 13" in "\n".join(lines)
    write_fewshot(summary, tmp_path)
    assert (tmp_path / "fewshot.png").stat().st_size > 0 and (tmp_path / "fewshot.md").is_file()

    missing = summarise({k: v for k, v in units.items() if k[0] != "nnU-Net 2d"}, full, "nnU-Net 2d", info)
    assert missing["sam_minus_baseline"] == []  # no other baseline stands in for the declared one
    assert "SAM minus nnU-Net 2d: not available" in "\n".join(markdown_lines(missing))
