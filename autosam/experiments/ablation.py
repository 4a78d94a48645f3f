"""``autosam ablate``: the study's grid of fine-tuning set-ups on the same folds and budget, as a table and heat map.

Each row: the set-up's cross-validation Dice with its 95% CI over units (patients when known; clipped to [0, 1]),
its start weights and learning rate (as its trainer plans them from the trained folds' plans), and the paired
difference to the planner's pick over the same units (``stats.paired_comparison``), Holm-adjusted over the family
of every set-up compared with the pick. The pick is the reference because it was fixed before any result.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.data.splits import load_groups, resolve_folds
from autosam.errors import AutosamError
from autosam.evaluation.comparison import read_splits
from autosam.evaluation.figures import ablation_heatmap
from autosam.evaluation.study_stats import against_reference, bounded_mean, cv_units
from autosam.experiments.ray_cluster import executor_for, import_ray
from autosam.files import atomic_write_json, atomic_write_text
from autosam.paths import Dataset, configure_training_processes, require_folders
from autosam.planners.preprocess import preprocess_sam_data
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION, read_sam_plan
from autosam.sam.registry import family_backbones
from autosam.sam.setups import Setup, all_setups
from autosam.trainers.fold_jobs import Training, fold_jobs
from autosam.trainers.fold_training import Budget
from autosam.trainers.variants import trainer_for_setup

log = logging.getLogger(__name__)
ABLATION_FOLDER = "autosam_ablation"
SELECTION_NOTE = (
    "The best set-up is chosen on the same cross-validation folds its Dice is reported on, so its "
    "Dice is optimistic; confirm it on held-out data."
)


def cache_note(plan, names: list[str]) -> list[str]:
    """Decoder-only set-ups on the embedding cache see no augmentation: said beside their Dice."""
    cached = [n for n in names if not Setup.parse(n).trains_encoder]
    if not (plan.embedding_cache and plan.prompts is None and cached):
        return []
    return [
        (
            f"The decoder-only set-ups ({', '.join(cached)}) trained on cached embeddings of un-augmented slices "
            "(the plan's embedding cache), the others with nnU-Net's augmentation; plan with --no-embedding-cache "
            "to compare them at equal augmentation."
        )
    ]


def ablate(dataset: Dataset, setups: list[str], options, ray_address: str | None = None, family: str = "sam") -> Path:
    """``options``: a ``run.RunOptions`` (folds, budget, device, seed), read and never changed. The dataset must
    be planned. ``ray_address``: train on Ray ("" starts a local instance); a set-up with a fold that failed
    twice there is named in the table instead of scored."""
    if ray_address is not None:
        import_ray()  # without Ray, say how to get it before any work
    require_folders("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    preprocessed = dataset.preprocessed
    folds = resolve_folds(options.folds, dataset.raw, preprocessed)
    groups, splits = load_groups(preprocessed), read_splits(preprocessed)
    plan = read_sam_plan(dataset).plan
    chosen = plan.setup.name
    names = [s.name for s in all_setups(family_backbones(family))] if setups == ["all"] else setups
    notes = [SELECTION_NOTE] + cache_note(plan, names)
    trainers = {setup: trainer_for_setup(setup) for setup in names}  # refuses an unknown set-up before training
    preprocess_sam_data(dataset)
    seed = plan.seed if options.seed is None else options.seed
    budget = Budget(options.epochs, options.iterations)
    trainings = [Training(trainers[setup], PLANS_NAME, SAM_CONFIGURATION, budget, setup) for setup in names]
    executor = executor_for(ray_address, options.gpu_memory)
    try:
        device = executor.device(options.device)
        configure_training_processes(device.type)
        failed = executor.run(fold_jobs(dataset, folds, trainings, device, seed))  # all folds in before scoring
    finally:
        executor.close()
    units, starts, lost = {}, {}, {}
    for setup in names:
        lost[setup] = [f"fold {job.fold}: {error}" for job, error in failed.items() if job.training.label == setup]
        if lost[setup]:
            log.warning("%s: not scored, %s", setup, "; ".join(lost[setup]))
            continue
        folder = dataset.model_folder(trainers[setup].__name__, PLANS_NAME, SAM_CONFIGURATION)
        units[setup] = cv_units(folder, folds, preprocessed / "gt_segmentations", groups, splits)
        starts[setup] = start_of(trainers[setup], folder / "plans.json")
    rows = score_rows(names, units, starts, lost, chosen)
    scored = [r for r in rows if r["cv_dice"] is not None]
    if not scored:
        raise AutosamError(
            f"{dataset.name}: no set-up finished its folds ("
            + "; ".join(f"{r['setup']} {r['failed'][0]}" for r in rows)
            + ")"
        )
    best = max(scored, key=lambda r: r["cv_dice"])
    picked = next((r for r in scored if r["setup"] == chosen), None)
    out = dataset.results / ABLATION_FOLDER
    table: dict[str, dict[str, float]] = {}
    for row in scored:
        s = Setup.parse(row["setup"])
        table.setdefault(s.backbone, {})[f"{s.scope}_{s.method}"] = row["cv_dice"]
    out.mkdir(parents=True, exist_ok=True)
    ablation_heatmap(table, chosen, out / "ablation_heatmap.png")
    unit = "patient" if groups else "case"
    summary = {
        "folds": folds,
        "epochs": options.epochs,
        "iterations": options.iterations,
        "seed": seed,
        "unit": unit,
        "selection": SELECTION_NOTE,
        "notes": notes,
        "rows": rows,
        "failed": {r["setup"]: r["failed"] for r in rows if "failed" in r},
        "best": best["setup"],
        "planner_pick": chosen,
        "planner_gap_to_best": None if picked is None else round(best["cv_dice"] - picked["cv_dice"], 4),
    }
    atomic_write_json(summary, out / "ablation.json")
    lines = table_lines(rows, chosen, best["setup"])
    atomic_write_text(
        "\n".join(lines) + f"\n\nCV Dice: the foreground mean, averaged per {unit} (the comparison "
        f"report's conventions), with its 95% CI over {unit}s ({CI_NOTE}). {TEST_NOTE} Seed {seed}. "
        f"{' '.join(notes)}\n\n![heat map](ablation_heatmap.png)\n",
        out / "ablation.md",
    )
    print("\n".join(lines))
    print("\n".join(notes))
    if picked is None:
        print(f"the planner's pick ({chosen}) was not in this grid: no set-up was tested against it")
    else:
        print(f"planner's pick {chosen}: {summary['planner_gap_to_best']:+.4f} Dice below the best ({best['setup']})")
    return out


CI_NOTE = "the report's interval, its method in ablation.json's ci_method, clipped to [0, 1]"
TEST_NOTE = (
    "Difference to the planner's pick: the set-up's Dice minus the pick's over the units both have, with "
    "its 95% CI (clipped to [-1, 1]) and the paired test's p, Holm-adjusted over every set-up compared "
    "with the pick."
)


def start_of(trainer, plans_file: Path) -> dict:
    """The start weights and learning rate the set-up's trainer plans from ``plans_file`` (the trained model
    folder's ``plans.json``: the plans its folds trained with)."""
    plans = PlansManager(str(plans_file))
    plan = trainer.plan_for(plans.get_configuration(SAM_CONFIGURATION))
    weights = "random (from scratch)" if plan.base_checkpoint is None else plan.base_checkpoint.name
    return {"start_weights": weights, "learning_rate": plan.learning_rate}


def score_rows(
    names: list[str],
    units: dict[str, dict[str, float]],
    starts: dict[str, dict],
    lost: dict[str, list[str]],
    chosen: str,
) -> list[dict]:
    """One row per set-up: its mean Dice over units with the CI, its start (``start_of``), and, when the planner's
    pick was scored, ``vs_planner``: the paired difference to the pick (None for the pick itself), one Holm
    family; a set-up with failed folds is named with its failures instead."""
    tests = {}
    if chosen in units:
        tests = against_reference(units[chosen], {s: u for s, u in units.items() if s != chosen})
    rows = []
    for setup in names:
        if lost.get(setup):
            rows.append({"setup": setup, "cv_dice": None, "failed": lost[setup]})
            continue
        dice = bounded_mean(units[setup].values())
        row = {
            "setup": setup,
            "cv_dice": dice["mean"],
            "ci95": dice["ci95"],
            "ci_method": dice["ci_method"],
            "n": dice["n"],
            **starts[setup],
        }
        if tests:
            row["vs_planner"] = tests.get(setup)
        rows.append(row)
    return rows


def _test_cell(test: dict | None) -> str:
    if test is None:
        return "reference"
    low, high = test["ci95"]
    p = test["p_holm"]
    return f"{test['mean_difference']:+.4f} [{low:+.4f}, {high:+.4f}], " + (
        "not tested" if math.isnan(p) else f"p_Holm = {p:.3g}"
    )


def table_lines(rows: list[dict], chosen: str, best: str) -> list[str]:
    """The markdown table: scored rows best first, then the failed ones."""
    scored = sorted((r for r in rows if r["cv_dice"] is not None), key=lambda r: -r["cv_dice"])
    compared = any("vs_planner" in r for r in scored)
    header = "| set-up | CV Dice [95% CI] | start weights | learning rate |" + (
        " minus the planner's pick [95% CI], Holm p |" if compared else ""
    )
    lines = [header, "|---|---|---|---|" + ("---|" if compared else "")]
    for r in scored:
        low, high = r["ci95"]
        interval = "" if math.isnan(low) else f" [{low:.4f}, {high:.4f}]"
        lines.append(
            f"| {r['setup']}{' (planner)' if r['setup'] == chosen else ''}"
            f"{' (best)' if r['setup'] == best else ''} | {r['cv_dice']:.4f}{interval} | "
            f"{r['start_weights']} | {r['learning_rate']:.2g} |"
            + (f" {_test_cell(r.get('vs_planner'))} |" if compared else "")
        )
    return lines + [f"| {r['setup']} | failed: {'; '.join(r['failed'])} |" for r in rows if "failed" in r]
