"""The ablation's rows: CIs on Dice's scale, paired tests against the planner's pick with Holm's correction, and
each row's start weights and learning rate."""

from __future__ import annotations

import numpy as np
import pytest

from autosam.evaluation.stats import holm, paired_comparison
from autosam.experiments.ablation import score_rows, start_of, table_lines
from autosam.experiments.demo import DEMO_DATASET
from autosam.planners.choose import learning_rate_for
from autosam.sam.setups import Setup
from autosam.trainers.variants import trainer_for_setup

PICK = "vit_t_encdec_lora"


def _units(rng: np.random.Generator, mean: float, n: int = 8) -> dict[str, float]:
    return {f"p{i}": float(np.clip(mean + rng.normal(0, 0.05), 0, 1)) for i in range(n)}


def test_each_row_has_a_bounded_ci_and_a_holm_adjusted_paired_test_against_the_planners_pick() -> None:
    rng = np.random.default_rng(0)
    units = {PICK: _units(rng, 0.80), "vit_t_dec_lora": _units(rng, 0.70), "vit_t_dec_adapter": _units(rng, 0.81)}
    units["vit_t_dec_vanilla"] = {u: min(1.0, v + 0.19) for u, v in units[PICK].items()}  # near the ceiling
    starts = {s: {"start_weights": "mobile_sam", "learning_rate": 1e-4} for s in units}
    names = [*units, "vit_t_encdec_adapter"]
    rows = {r["setup"]: r for r in score_rows(names, units, starts, {"vit_t_encdec_adapter": ["fold 0: OOM"]}, PICK)}

    assert rows["vit_t_encdec_adapter"] == {"setup": "vit_t_encdec_adapter", "cv_dice": None, "failed": ["fold 0: OOM"]}
    assert rows[PICK]["vs_planner"] is None  # the reference itself
    others = [s for s in units if s != PICK]
    raw = [paired_comparison(units[PICK], units[s]) for s in others]
    for setup, expected, adjusted in zip(others, raw, holm([t["p_value"] for t in raw])):
        test = rows[setup]["vs_planner"]
        assert test["n"] == 8 and test["mean_difference"] == pytest.approx(expected["mean_difference"])
        assert test["mean_difference"] == pytest.approx(
            np.mean([units[setup][u] - units[PICK][u] for u in units[PICK]])
        )
        assert test["p_holm"] == pytest.approx(adjusted) and test["p_holm"] >= test["p_value"]
    assert rows["vit_t_dec_lora"]["vs_planner"]["ci95"][1] < 0  # clearly worse than the pick
    for row in (r for r in rows.values() if r["cv_dice"] is not None):
        low, high = row["ci95"]
        assert 0 <= low <= row["cv_dice"] <= high <= 1 and row["n"] == 8
    assert rows["vit_t_dec_vanilla"]["ci95"][1] == 1.0  # a t interval near 1 is clipped, not past it

    lines = table_lines(list(rows.values()), PICK, "vit_t_dec_vanilla")
    assert lines[0].startswith("| set-up | CV Dice [95% CI] | start weights | learning rate | minus the planner")
    pick_line = next(line for line in lines if line.startswith(f"| {PICK} (planner)"))
    assert "| mobile_sam | 0.0001 | reference |" in pick_line
    assert "p_Holm = " in next(line for line in lines if line.startswith("| vit_t_dec_lora |"))
    assert lines[-1] == "| vit_t_encdec_adapter | failed: fold 0: OOM |"

    alone = score_rows([others[0]], {others[0]: units[others[0]]}, starts, {}, PICK)  # the pick not in the grid
    assert "vs_planner" not in alone[0] and "minus the planner" not in table_lines(alone, PICK, others[0])[0]


def test_a_rows_start_is_what_its_trainer_plans_from_the_trained_plans(planned_demo) -> None:
    plans = planned_demo["nnUNet_preprocessed"] / DEMO_DATASET / "autosamPlans.json"  # planned --from-scratch
    rates = set()
    for setup in ("vit_t_dec_lora", "vit_t_encdec_vanilla"):
        start = start_of(trainer_for_setup(setup), plans)
        assert start == {
            "start_weights": "random (from scratch)",
            "learning_rate": learning_rate_for(Setup.parse(setup)),
        }
        rates.add(start["learning_rate"])
    assert len(rates) == 2  # each set-up its own rate, not the plan's
