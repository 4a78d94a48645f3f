"""``autosam ablate``: the study's grid of fine-tuning set-ups on the same folds and budget, as a table and heat map."""

from __future__ import annotations

import logging
from pathlib import Path

from autosam.data.splits import load_groups, resolve_folds
from autosam.errors import AutosamError
from autosam.evaluation.comparison import cv_dice, read_splits
from autosam.evaluation.figures import ablation_heatmap
from autosam.experiments.ray_cluster import executor_for, import_ray
from autosam.files import atomic_write_json, atomic_write_text
from autosam.paths import Dataset, configure_training_processes, require_folders
from autosam.planners.preprocess import preprocess_sam_data
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION, read_sam_plan
from autosam.sam.setups import Setup, all_setups
from autosam.trainers.fold_jobs import Training, fold_jobs
from autosam.trainers.fold_training import Budget
from autosam.trainers.variants import trainer_for_setup

log = logging.getLogger(__name__)
ABLATION_FOLDER = "autosam_ablation"
SELECTION_NOTE = ("The best set-up is chosen on the same cross-validation folds its Dice is reported on, so its "
                  "Dice is optimistic; confirm it on held-out data.")


def cache_note(plan, names: list[str]) -> list[str]:
    """Decoder-only set-ups on the embedding cache see no augmentation: said beside their Dice."""
    cached = [n for n in names if not Setup.parse(n).trains_encoder]
    if not (plan.embedding_cache and plan.prompts is None and cached):
        return []
    return [f"The decoder-only set-ups ({', '.join(cached)}) trained on cached embeddings of un-augmented slices "
            "(the plan's embedding cache), the others with nnU-Net's augmentation; plan with --no-embedding-cache "
            "to compare them at equal augmentation."]


def ablate(dataset: Dataset, setups: list[str], options, ray_address: str | None = None) -> Path:
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
    names = [s.name for s in all_setups()] if setups == ["all"] else setups
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
    rows = []
    for setup in names:
        lost = [f"fold {job.fold}: {error}" for job, error in failed.items() if job.training.label == setup]
        if lost:
            rows.append({"setup": setup, "cv_dice": None, "failed": lost})
            log.warning("%s: not scored, %s", setup, "; ".join(lost))
            continue
        dice = cv_dice(dataset.model_folder(trainers[setup].__name__, PLANS_NAME, SAM_CONFIGURATION), folds,
                       preprocessed / "gt_segmentations", groups, splits)
        rows.append({"setup": setup, "cv_dice": dice})
        log.info("%s: CV Dice %.4f", setup, dice)
    scored = [r for r in rows if r["cv_dice"] is not None]
    if not scored:
        raise AutosamError(f"{dataset.name}: no set-up finished its folds (" +
                           "; ".join(f"{r['setup']} {r['failed'][0]}" for r in rows) + ")")
    best = max(scored, key=lambda r: r["cv_dice"])
    picked = next((r for r in scored if r["setup"] == chosen), None)
    out = dataset.results / ABLATION_FOLDER
    table: dict[str, dict[str, float]] = {}
    for row in scored:
        s = Setup.parse(row["setup"])
        table.setdefault(s.backbone, {})[f"{s.scope}_{s.method}"] = row["cv_dice"]
    out.mkdir(parents=True, exist_ok=True)
    ablation_heatmap(table, chosen, out / "ablation_heatmap.png")
    summary = {"folds": folds, "epochs": options.epochs, "iterations": options.iterations, "seed": seed,
               "unit": "patient" if groups else "case",
               "selection": SELECTION_NOTE, "notes": notes, "rows": rows,
               "failed": {r["setup"]: r["failed"] for r in rows if "failed" in r},
               "best": best["setup"], "planner_pick": chosen,
               "planner_gap_to_best": None if picked is None else round(best["cv_dice"] - picked["cv_dice"], 4)}
    atomic_write_json(summary, out / "ablation.json")
    lines = ["| set-up | CV Dice |", "|---|---|"] + [
        f"| {r['setup']}{' (planner)' if r['setup'] == chosen else ''}{' (best)' if r is best else ''} | "
        f"{r['cv_dice']:.4f} |" for r in sorted(scored, key=lambda r: -r["cv_dice"])] + [
        f"| {r['setup']} | failed: {'; '.join(r['failed'])} |" for r in rows if "failed" in r]
    atomic_write_text("\n".join(lines) + f"\n\nCV Dice: the foreground mean, averaged per {summary['unit']} (the "
                      f"comparison report's conventions). Seed {seed}. {' '.join(notes)}\n\n"
                      "![heat map](ablation_heatmap.png)\n", out / "ablation.md")
    print("\n".join(lines))
    print("\n".join(notes))
    if picked is None:
        print(f"the planner's pick ({chosen}) was not in this grid")
    else:
        print(f"planner's pick {chosen}: {summary['planner_gap_to_best']:+.4f} Dice below the best ({best['setup']})")
    print(f"ablation: {out / 'ablation.md'}")
    return out
