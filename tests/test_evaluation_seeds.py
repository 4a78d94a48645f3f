"""The seed analysis on hand-built numbers: the spread, and two claims that answer different questions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autosam.evaluation.seeds import mixed_model_test, seed_analysis, seed_lines

PATIENTS = [f"p{i}" for i in range(8)]


def _values(differences: np.ndarray, baseline: np.ndarray) -> dict:
    """seed -> method -> patient -> value, SAM = baseline + difference (patients × seeds)."""
    return {
        seed: {
            "nnU-Net 2d": dict(zip(PATIENTS, baseline[:, s])),
            "SAM": dict(zip(PATIENTS, baseline[:, s] + differences[:, s])),
        }
        for s, seed in enumerate((0, 1, 2))
    }


def test_a_seed_effect_moves_the_recipe_claim_but_not_the_models_claim() -> None:
    """Each patient gains +0.05 (± a little) from SAM averaged over the seeds, but the seeds shift the gain by
    −0.10, 0, +0.10: the models trained here are reliably better, training again may well not be."""
    patient = np.linspace(-0.004, 0.004, len(PATIENTS))[:, None]
    seed_shift = np.array([[-0.10, 0.0, 0.10]])
    noise = np.tile([[0.001, -0.001, 0.0]], (len(PATIENTS), 1)) * np.where(np.arange(len(PATIENTS)) % 2, 1, -1)[:, None]
    differences = 0.05 + patient + seed_shift + noise
    baseline = np.full((len(PATIENTS), 3), 0.6) + np.array([[0.0, 0.02, -0.02]])
    analysis = seed_analysis(_values(differences, baseline), "nnU-Net 2d", "SAM", "patient")

    assert analysis["seeds"] == [0, 1, 2] and analysis["n_units"] == len(PATIENTS)
    spread = analysis["spread"]
    assert spread["difference"]["per_seed"] == pytest.approx([-0.05, 0.05, 0.15])
    assert spread["difference"]["sd"] == pytest.approx(0.1)
    assert spread["nnU-Net 2d"]["per_seed"] == pytest.approx([0.6, 0.62, 0.58])
    assert spread["nnU-Net 2d"]["sd"] == pytest.approx(0.02)

    models, recipe = analysis["these_models"], analysis["training_recipe"]
    assert models["mean_difference"] == pytest.approx(0.05) and recipe["estimate"] == pytest.approx(0.05)
    assert models["p_value"] < 0.05 and models["ci95"][0] > 0  # patients averaged over seeds: all about +0.05
    assert recipe["p_value"] > 0.05 and recipe["ci95"][0] < 0 < recipe["ci95"][1]  # the seed spread is in it
    assert recipe["variance"]["seed"] > 100 * recipe["variance"]["unit"]

    lines = seed_lines(analysis)
    assert lines[0].startswith("seeds 0, 1, 2: every method trained once per seed on the same folds")
    assert "seed by seed: -0.050, +0.050, +0.150" in lines[0]
    assert lines[1].startswith("these models (") and "SAM higher by 0.050" in lines[1]
    assert lines[2].startswith("this training recipe (") and "no detectable difference" in lines[2]
    assert "the seed variance rests on 2 df" in lines[2]


def test_the_mixed_model_is_the_balanced_crossed_design() -> None:
    """Balanced data: REML's estimate is the grand mean and its variance the ANOVA one,
    (MS_patient + MS_seed − MS_residual) / (U S); without seed or patient effects both tests agree closely."""
    rng = np.random.default_rng(3)
    d = 0.02 + rng.normal(0, 0.05, (12, 1)) + rng.normal(0, 0.03, (1, 3)) + rng.normal(0, 0.01, (12, 3))
    result = mixed_model_test(d)
    n, s = d.shape
    mean = d.mean()
    ms_patient = s * ((d.mean(axis=1) - mean) ** 2).sum() / (n - 1)
    ms_seed = n * ((d.mean(axis=0) - mean) ** 2).sum() / (s - 1)
    residual = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + mean
    ms_residual = (residual**2).sum() / ((n - 1) * (s - 1))
    assert result["estimate"] == pytest.approx(mean)
    assert result["se"] == pytest.approx(math.sqrt((ms_patient + ms_seed - ms_residual) / (n * s)), rel=1e-3)
    assert 1 < result["df"] < n * s

    nothing = mixed_model_test(np.full((5, 2), 0.1))
    assert math.isnan(nothing["p_value"])  # nothing varies: not tested
