"""Seeds as a factor: what several trainings per method (``autosam run --seed 0 1 2``) say, and about what.

Every seed trains every method on the same folds, so each validation unit (patient, else case) is scored once
per seed: a crossed design of units and seeds, the folds fixed. Two claims, each with its own test:

- **these models**: each unit's SAM − baseline difference averaged over the seeds, tested over the units with
  the report's paired test (``stats.paired_comparison``). The seeds run are held fixed: it says how the models
  trained here compare on new patients of the same kind, not what training again would give.
- **this training recipe**: a linear mixed model of the differences ``d[unit, seed] = mu + a[unit] + b[seed] +
  e`` with unit and seed as crossed random effects (statsmodels ``MixedLM``, REML), tested with a t statistic on
  Satterthwaite's degrees of freedom (as lmerTest does; statsmodels' Wald z ignores how few seeds estimate the
  seed variance). It carries the seed-to-seed spread, so it speaks of training again with a new seed. Re-drawn
  folds per seed (Nadeau-Bengio's corrected t) would also vary the split; here the folds stay fixed, which keeps
  every seed's units identical and the patient-level pairing exact.

Seed numbers pair the methods' trainings arbitrarily (seed 1 of SAM has nothing to do with seed 1 of nnU-Net);
the model's seed effect is the difference of the two methods' seed effects, which is what the pairing needs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy.stats import t

from autosam.evaluation.conventions import ALPHA, CONFIDENCE
from autosam.evaluation.stats import paired_comparison


def mixed_model_test(differences: np.ndarray) -> dict:
    """The mean of ``differences`` (units × seeds, complete) under crossed random unit and seed effects: estimate,
    standard error, Satterthwaite df, CI, two-sided p and the variance components."""
    n_units, n_seeds = differences.shape
    if n_units < 2 or n_seeds < 2 or np.all(differences == differences.flat[0]):
        return {
            "estimate": float(differences.mean()) if differences.size else math.nan,
            "se": math.nan,
            "df": math.nan,
            "ci95": [math.nan, math.nan],
            "p_value": math.nan,
            "variance": None,
            "converged": False,
        }  # not tested: nothing varies, or too few units or seeds
    frame = pd.DataFrame(
        {
            "d": differences.ravel(),
            "unit": np.repeat(np.arange(n_units), n_seeds),
            "seed": np.tile(np.arange(n_seeds), n_units),
            "all": 0,
        }
    )
    model = smf.mixedlm(
        "d ~ 1", frame, groups="all", re_formula="0", vc_formula={"unit": "0 + C(unit)", "seed": "0 + C(seed)"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a variance on its boundary (zero) warns; the fit is still the REML one
        # statsmodels' default gradient search can stop far from the optimum on crossed variances of unequal size
        # (seen on hand-built data): keep the highest REML likelihood of three optimisers
        fit = max((model.fit(reml=True, method=method) for method in ("nm", "powell", "lbfgs")), key=lambda f: f.llf)
    components = dict(zip(model.exog_vc.names, fit.vcomp))
    unit_var, seed_var, residual = components["unit"], components["seed"], float(fit.scale)
    # expected mean squares of the balanced crossed design; Var(mean) = (EMS_unit + EMS_seed - EMS_residual) / (U S)
    ems_unit, ems_seed = residual + n_seeds * unit_var, residual + n_units * seed_var
    combined = ems_unit + ems_seed - residual
    se = math.sqrt(combined / (n_units * n_seeds))
    df = combined**2 / (
        ems_unit**2 / (n_units - 1) + ems_seed**2 / (n_seeds - 1) + residual**2 / ((n_units - 1) * (n_seeds - 1))
    )
    estimate = float(fit.fe_params.iloc[0])
    p = float(2 * t.sf(abs(estimate) / se, df))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    low, high = estimate - half, estimate + half
    return {
        "estimate": estimate,
        "se": se,
        "df": float(df),
        "ci95": [low, high],
        "p_value": p,
        "variance": {"unit": float(unit_var), "seed": float(seed_var), "residual": residual},
        "converged": bool(fit.converged),
    }


def seed_analysis(values: dict[int, dict[str, dict[str, float]]], baseline: str, challenger: str, unit: str) -> dict:
    """``values``: seed -> method -> unit -> the primary endpoint's value (the report's unit values of the primary
    row's Dice). Units scored for both methods under every seed enter; the seeds keep their order."""
    seeds = list(values)
    units = sorted(set.intersection(*(set(values[s][m]) for s in seeds for m in (baseline, challenger))))
    table = {m: np.array([[values[s][m][u] for s in seeds] for u in units]) for m in (baseline, challenger)}
    differences = table[challenger] - table[baseline]
    spread = {}
    for name, matrix in ((baseline, table[baseline]), (challenger, table[challenger]), ("difference", differences)):
        per_seed = matrix.mean(axis=0)
        spread[name] = {
            "per_seed": [float(v) for v in per_seed],
            "sd": float(per_seed.std(ddof=1)),
            "range": [float(per_seed.min()), float(per_seed.max())],
        }
    averaged = {m: {u: float(row.mean()) for u, row in zip(units, table[m])} for m in (baseline, challenger)}
    return {
        "seeds": seeds,
        "baseline": baseline,
        "challenger": challenger,
        "unit": unit,
        "n_units": len(units),
        "spread": spread,
        "these_models": paired_comparison(averaged[baseline], averaged[challenger]),
        "training_recipe": mixed_model_test(differences),
    }


def _direction(challenger: str, estimate: float, p: float) -> str:
    if not math.isfinite(p):
        return "not tested (nothing varies, or fewer than two units)"
    if p >= ALPHA:
        return "no detectable difference"
    return f"{challenger} {'higher' if estimate > 0 else 'lower'} by {abs(estimate):.3f}"


def seed_lines(analysis: dict) -> list[str]:
    """The headline's seed lines: the spread, and the two claims, each named by what it answers."""
    a, spread, unit = analysis, analysis["spread"], analysis["unit"]
    challenger, baseline, seeds = a["challenger"], a["baseline"], a["seeds"]
    models, recipe = a["these_models"], a["training_recipe"]
    per_seed = ", ".join(f"{v:+.3f}" for v in spread["difference"]["per_seed"])
    return [
        (f"seeds {', '.join(map(str, seeds))}: every method trained once per seed on the same folds; {challenger} − "
        f"{baseline} in mean Dice per {unit}, seed by seed: {per_seed}; between-seed SD of the mean Dice: "
        f"{challenger} {spread[challenger]['sd']:.3f}, {baseline} {spread[baseline]['sd']:.3f}"),
        (f"these models (each {unit}'s difference averaged over the {len(seeds)} seeds, paired test over "
        f"{models['n']} {unit}s; the seeds held fixed): {_direction(challenger, models['mean_difference'], models['p_value'])}"
        f"; difference {models['mean_difference']:+.3f} [{models['ci95'][0]:+.3f}, {models['ci95'][1]:+.3f}], "
        f"p = {models['p_value']:.3g}"),
        (f"this training recipe (mixed model, {unit} and seed random, Satterthwaite t on {recipe['df']:.1f} df; "
        f"the seed variance rests on {len(seeds) - 1} df): "
        f"{_direction(challenger, recipe['estimate'], recipe['p_value'])}; difference {recipe['estimate']:+.3f} "
        f"[{recipe['ci95'][0]:+.3f}, {recipe['ci95'][1]:+.3f}], p = {recipe['p_value']:.3g} — what training again "
        "with a new seed would give; the line above speaks only of the models trained here"),
    ]
