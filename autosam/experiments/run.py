"""``autosam run``: plan -> preprocess -> train nnU-Net and SAM on the same folds -> compare -> pick the best.

Idempotent: a finished fold (final checkpoint and validation) is skipped, an interrupted one continues from
its last checkpoint, and an existing SAM plan is reused so that continued folds keep their set-up.

Budgets (stated in the report's first lines): by default each method trains its own standard budget —
nnU-Net its defaults (1000 epochs × 250 iterations at its planned batch), SAM its plan. ``--equal-budget``,
or giving ``--epochs`` / ``--iterations``, makes them equal: every method trains those epochs × iterations
(SAM's planned ones where not given) and nnU-Net's 2d baseline takes SAM's batch size, so both take the same
optimiser steps and see the same number of training patches (a 3d_fullres patch is a volume: it keeps its
own batch).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path

from nnunetv2.evaluation.find_best_configuration import find_best_configuration
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.data.case_selection import check_train_cases, fold_splits, labelled_foreground
from autosam.data.checks import check_dataset, slices_per_patient
from autosam.data.splits import load_groups, resolve_folds, straddling_patient
from autosam.errors import AutosamError
from autosam.evaluation.comparison import Method, compare, read_splits
from autosam.evaluation.interactive_report import headline_lines, interactive_section
from autosam.evaluation.report import headline, write_report
from autosam.evaluation.seeds import seed_analysis
from autosam.experiments.fewshot import fewshot_jobs, fewshot_report, fewshot_trainings
from autosam.experiments.job_table import job_table
from autosam.experiments.job_table import jobs as planned_jobs
from autosam.experiments.ray_cluster import executor_for
from autosam.experiments.seeds import check_seeds, seed_trainings
from autosam.experiments.seeds import model_folder as seed_model_folder
from autosam.experiments.seen_base import refuse_seen_base
from autosam.experiments.status import REPORT_FOLDER, RUN_LOG
from autosam.inference.trained_models import Choice, Model
from autosam.paths import FINAL_CHECKPOINT, Dataset, configure_training_processes, fold_has_started, require_folders
from autosam.planners.baselines import Baseline, baseline_sentence, default_baselines, parse_baselines, plan_baselines
from autosam.planners.explain import plan_summary
from autosam.planners.hardware import detect_hardware
from autosam.planners.preprocess import baseline_configurations, plan, preprocess
from autosam.planners.sam_planner import BASELINE_PLANS
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION, PlannedSam, SamPlan, has_sam_plan, read_plans, read_sam_plan
from autosam.sam.registry import get_backbone
from autosam.sam.setups import Setup
from autosam.sam.weights.safe_load import load_fold_checkpoint
from autosam.trainers.cached import LOST_AUGMENTATION
from autosam.trainers.fold_jobs import FoldJob, Training, fold_jobs
from autosam.trainers.fold_training import Budget, configuration_budget
from autosam.trainers.sam_trainer import PROMPTED_SHARE
from autosam.trainers.variants import trainer_for_setup

log = logging.getLogger(__name__)
NNUNET_EPOCHS, NNUNET_ITERATIONS = 1000, 250  # nnU-Net's trainer defaults


@dataclass
class RunOptions:
    folds: list[int] | None = None  # None: every fold of the dataset's folds file (five when there is none)
    epochs: int | None = None
    iterations: int | None = None
    equal_budget: bool = False
    device: str | None = None
    gpu_memory: float | None = None
    ensembles: bool = True
    no_3d: bool = False
    replan: bool = False
    seed: int | None = None  # None: the plan's
    seeds: list[int] | None = None  # several: every method trains once per seed (experiments.seeds); None: [seed]
    baselines: list[str] | None = None  # nnU-Net presets (planners.baselines); None: the default for the device
    train_cases: list[int] | None = None  # few-shot: also train every method on K cases per fold (fewshot.py)
    repeats: int = 1  # few-shot draws per K
    allow_seen_base: bool = False  # train from a base whose lineage saw the dataset's images (the headline says so)


def refuse_conflicting_flags(sam_options, dataset: Dataset, gpu_memory: float | None = None) -> None:
    """A flag that contradicts the existing plan is an error, never silently ignored."""
    planned = read_sam_plan(dataset)
    plan, plans_file = planned.plan, planned.file
    base = plan.base_checkpoint
    same_base = base is not None and sam_options.checkpoint is not None and (
        sam_options.checkpoint in (base.name, base.file) or str(Path(sam_options.checkpoint).resolve()) == base.path)
    given = {"--setup": (sam_options.setup, plan.setup.name), "--image-size": (sam_options.image_size, plan.image_size),
             "--batch-size": (sam_options.batch_size, planned.batch_size),
             "--lora-rank": (sam_options.lora_rank, plan.setup.lora_rank),
             "--from-scratch": (sam_options.from_scratch or None, plan.from_scratch),
             "--checkpoint": (sam_options.checkpoint,
                              sam_options.checkpoint if same_base else base and base.name),
             "--checkpoint-dir": (sam_options.checkpoint_dir and str(Path(sam_options.checkpoint_dir).resolve()),
                                  base and base.path and str(Path(base.path).parent)),
             "--gpu-memory": (gpu_memory and detect_hardware(gpu_memory).description, plan.hardware),
             "--native-patches": (sam_options.native_patches or None, "patch_size" in plan.overridden),
             "--prompts": (sam_options.prompts, plan.prompts)}
    given["--no-embedding-cache"] = (not sam_options.embedding_cache or None, not plan.embedding_cache)
    for flag, (wanted, planned) in given.items():
        if wanted is not None and wanted != planned:
            shown = "" if isinstance(wanted, bool) else f" {wanted}"
            raise AutosamError(f"{plans_file}: {flag}{shown} contradicts the existing plan ({flag.lstrip('-')}: "
                               f"{planned}); pass --replan to plan again, or drop the flag")


def plan_device(device: str | None) -> str | None:
    """The planner's device for a ``--device`` value (``auto``: this machine)."""
    return None if device in (None, "auto") else device


def kept_options(sam_options, planned: PlannedSam):
    """``sam_options`` with the fields the stored plan had set by flags, where the user gives none now: planning
    again for another machine keeps what the user fixed."""
    plan, fixed, kept = planned.plan, set(planned.plan.overridden), {}
    if "setup" in fixed and sam_options.setup is None:
        kept.update(setup=plan.setup.name, lora_rank=sam_options.lora_rank or plan.setup.lora_rank)
    if "image_size" in fixed and sam_options.image_size is None:
        kept["image_size"] = plan.image_size
    if "batch_size" in fixed and sam_options.batch_size is None:
        kept["batch_size"] = planned.batch_size
    if "base_checkpoint" in fixed and sam_options.checkpoint is None and not sam_options.from_scratch:
        base = plan.base_checkpoint
        if base is None:
            kept["from_scratch"] = True
        else:
            kept["checkpoint"] = base.path or base.name
    if "num_epochs" in fixed and sam_options.num_epochs is None:
        kept["num_epochs"] = plan.num_epochs
    if "iterations_per_epoch" in fixed and sam_options.iterations_per_epoch is None:
        kept["iterations_per_epoch"] = plan.iterations_per_epoch
    if "embedding_cache" in fixed:
        kept["embedding_cache"] = False
    if "prompts" in fixed and sam_options.prompts is None:
        kept["prompts"] = plan.prompts
    if "patch_size" in fixed:
        kept["native_patches"] = True
    return replace(sam_options, **kept)


def plan_for_run(dataset: Dataset, sam_options, options: RunOptions) -> str:
    """The SAM plan ``run`` trains: the stored one, else a new one. A stored plan made for other hardware than
    this machine (detected, not given by --gpu-memory) is made again for this machine, keeping the fields set
    by flags, unless a SAM fold has started on it. Returns the one line said about it."""
    hardware = detect_hardware(options.gpu_memory, plan_device(options.device))
    plans_file = dataset.preprocessed / f"{PLANS_NAME}.json"
    if not has_sam_plan(dataset) or options.replan:
        plan(dataset, sam_options, hardware, validated=True)
        return _said(f"planned SAM for {hardware.description} in {plans_file}")
    refuse_conflicting_flags(sam_options, dataset, options.gpu_memory)
    planned = read_sam_plan(dataset)
    stored = planned.plan.hardware
    if stored == hardware.description or stored.endswith("(--gpu-memory)") or options.gpu_memory is not None:
        return _said(f"using the existing SAM plan in {plans_file} (re-plan with --replan)")
    sam_folder = Model.for_setup(None).folder(dataset)
    if any(fold_has_started(f) for f in sam_folder.glob("fold_*")):
        return _said(f"the SAM plan in {plans_file} was made for {stored}, not this machine ({hardware.description}); "
                     f"kept because SAM folds in {sam_folder} started on it (--replan after moving them away)")
    plan(dataset, kept_options(sam_options, planned), hardware, validated=True)
    return _said(f"the SAM plan was made for {stored}; planned again for this machine ({hardware.description}), "
                 "keeping the fields set by flags")


def _said(line: str) -> str:
    log.info("%s", line)
    return line


def without_failed(baselines: list[str], failed: dict) -> tuple[list[str], list[str]]:
    """Baselines (by name, their trainings' label) whose folds all trained, and the report's lines on those left
    out. A failed SAM fold, or every baseline failing, leaves nothing to compare: one error naming every failed
    job."""
    if not failed:
        return baselines, []
    names = "; ".join(f"{job.name} ({error})" for job, error in failed.items())
    lost = {job.training.label for job in failed}
    if "SAM" in lost or lost >= set(baselines):
        raise AutosamError(f"failed twice on Ray: {names}; nothing to compare without them. Finished folds are "
                           "kept: run the same command again to retry the rest")
    return ([b for b in baselines if b not in lost],
            [f"WARNING: left out of the comparison after failing twice on Ray: {names}"])


def budgets(options: RunOptions, plan: SamPlan, sam_batch: int) -> tuple[Budget, Budget, str]:
    """(nnU-Net 2d's budget, SAM's budget, the policy in words)."""
    if options.equal_budget or options.epochs or options.iterations:
        epochs, iterations = options.epochs or plan.num_epochs, options.iterations or plan.iterations_per_epoch
        return (Budget(epochs, iterations, sam_batch), Budget(epochs, iterations),
                f"equal: every method {epochs} epochs × {iterations} iterations, nnU-Net 2d at SAM's batch "
                f"{sam_batch}" + (" (--equal-budget)" if options.equal_budget else " (--epochs/--iterations)"))
    return (Budget(), Budget(), "each method its own standard budget: nnU-Net's defaults, SAM's plan "
                                "(--equal-budget makes them equal)")


def find_best(dataset: Dataset, folds: list[int], models: list[dict], ensembles: bool) -> dict:
    return find_best_configuration(dataset.name, models, allow_ensembling=ensembles, num_processes=1,
                                   overwrite=True, folds=tuple(folds), strict=False)


def trained_sam(sam_folder: Path, folds: list[int]) -> set[tuple[str, int, str]]:
    """(set-up, image size, base weights) of each trained SAM fold, from its own checkpoint."""
    identities = set()
    for fold in folds:
        record = load_fold_checkpoint(sam_folder / f"fold_{fold}" / FINAL_CHECKPOINT).get("autosam", {})
        identities.add((record["setup"]["name"], record["image_size"], record["base"]["name"]))
    return identities


def conditions(dataset: Dataset, plan: SamPlan, baselines: list[Baseline], skipped_3d: str | None, comparison: dict,
               best: list[str], groups: dict[str, str] | None, splits: list[dict] | None,
               trained: set[tuple[str, int, str]], cpu_default: bool = False) -> list[str]:
    """What a reader must know to judge the headline, said in the headline itself. ``trained``: what the SAM
    folds were trained as (finished folds are kept when the plan changes); ``cpu_default``: the baselines are
    the CPU default (no ResEnc)."""
    planned = (plan.setup.name, plan.image_size, plan.base_checkpoint.name if plan.base_checkpoint else "from-scratch")
    setup, size, base = sorted(trained)[0] if len(trained) == 1 else planned
    start = ("trained from random weights (no checkpoint): this says nothing about pretrained SAM"
             if base == "from-scratch" else f"fine-tuned from {base}")
    family = get_backbone(Setup.parse(setup).backbone).description  # e.g. "SAM ViT-B", "SAM 2.1 Hiera-T"
    lines = [f"SAM: {setup} ({family}) at {size} px, {start}; planned for {plan.hardware}"]
    if trained != {planned}:
        as_trained = ", ".join(f"{t[0]} at {t[1]} px from {t[2]}" for t in sorted(trained))
        lines.append(f"WARNING: the SAM folds were trained as {as_trained}, but the plan now says {planned[0]} at "
                     f"{planned[1]} px from {planned[2]}: finished folds are kept; move the SAM results folder away "
                     "to train the current plan")
    lines += [baseline_sentence(baselines, cpu_default) + (
                  f"; nnU-Net's 3d_fullres was not trained ({skipped_3d}), although the data are 3D" if skipped_3d
                  else ""),
              _seeds_text(comparison["training"])] + best + sam_caveats(dataset, plan)
    return lines + grouping_warnings(dataset, [c["case"] for c in comparison["cases"]], groups, splits)


def grouping_warnings(dataset: Dataset, cases: list[str], groups: dict[str, str] | None,
                      splits: list[dict] | None) -> list[str]:
    """Loud lines when the unit of analysis is probably wrong."""
    if not groups:
        found = slices_per_patient(cases)
        if found:
            return [f"WARNING: the case names look like slices of {len(found[0])} patients, but no patient groups "
                    "are recorded: slices are counted as independent, so CIs and p-values are optimistic; record them "
                    f"with: autosam split -d {dataset.id} --group-pattern '{found[1]}' (then run again)"]
        return []
    straddling = straddling_patient(splits or [], groups)
    if straddling:
        return [f"WARNING: patient {straddling[0]} has cases on both sides of fold {straddling[1]}: the folds leak "
                "a patient between training and validation, so every number here is optimistic"]
    return []


def _seeds_text(training: dict) -> str:
    """The seeds the folds actually recorded (folds trained earlier or outside autosam may have none)."""
    seeds = {fold["seed"] for folds in training.values() for fold in folds}
    if seeds == {None}:
        return "no seed recorded: the folds were trained outside autosam or before it recorded seeds"
    if None in seeds:
        return f"seeds {sorted(s for s in seeds if s is not None)}; some folds recorded none (trained elsewhere)"
    return f"seed {seeds.pop()} for every fold" if len(seeds) == 1 else f"seeds differ between folds: {sorted(seeds)}"


@contextmanager
def run_log(path: Path):
    """autosam's log lines also go to ``path``; yields the open file, for output to keep off the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("autosam")
        logger.addHandler(handler)
        try:
            yield stream
        finally:
            logger.removeHandler(handler)


def run(dataset: Dataset, sam_options, options: RunOptions, ray_address: str | None = None) -> Path:
    """``ray_address``: train every fold job as a Ray task ("" starts a local instance); the comparison waits
    for all of them. The run's log: ``RUN_LOG`` beside the report."""
    require_folders("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    for warning in check_dataset(dataset, max(5, len(options.folds or []))):
        log.warning("%s", warning)  # checked once, before any work
    preprocessed = dataset.preprocessed
    options = replace(options, folds=resolve_folds(options.folds, dataset.raw, preprocessed))
    if options.train_cases:  # a K the folds cannot give is refused before any work (and before the log)
        options = replace(options, train_cases=check_train_cases(
            options.train_cases, options.repeats, options.folds, fold_splits(dataset.raw, preprocessed),
            load_groups(preprocessed), labelled_foreground(dataset.raw)))
    path = dataset.results / REPORT_FOLDER / RUN_LOG
    with run_log(path) as stream:
        log.info("log: %s", path)
        return _run(dataset, sam_options, options, ray_address, stream)


def _run(dataset: Dataset, sam_options, options: RunOptions, ray_address: str | None, chatter) -> Path:
    """``chatter``: where nnU-Net's planning and preprocessing output goes (the run's log); ``options``: with
    the folds resolved and the few-shot K checked."""
    preprocessed = dataset.preprocessed
    with redirect_stdout(chatter):  # nnU-Net's plans and progress, printed as dicts: into the log
        plan_for_run(dataset, sam_options, options)
        sam_folder = Model.for_setup(None).folder(dataset)  # refused before any preprocessing or training:
        refuse_seen_base(dataset, read_sam_plan(dataset).plan, sam_folder, options.folds, options.allow_seen_base)
    planned = read_sam_plan(dataset)
    sam_plan = planned.plan
    if sam_plan.base_checkpoint is not None and ray_address is None:  # (Ray's workers look for it themselves)
        sam_plan.base_checkpoint.locate()  # a missing base file: refused now, not after nnU-Net's trainings
    baseline_budget, sam_budget, policy = budgets(options, sam_plan, planned.batch_size)
    seeds = check_seeds(options.seeds or [sam_plan.seed if options.seed is None else options.seed])
    seed = seeds[0]  # the first seed's models are the comparison's, find_best's and predict's
    executor = executor_for(ray_address, options.gpu_memory)  # serial, or each fold job a Ray task
    try:
        torch_device = executor.device(options.device)  # the default baselines depend on it
        configure_training_processes(torch_device.type)
        chosen, skipped_3d = chosen_baselines(dataset, options, torch_device.type == "cuda")
        configurations = tuple(dict.fromkeys(b.configuration for b in chosen))
        with redirect_stdout(chatter):
            preprocess(dataset, 1, configurations)
            plan_baselines(dataset, chosen)
        rows = planned_jobs(dataset, len(options.folds) * len(seeds), list(configurations), baseline_budget,
                            sam_budget, sam_plan, planned.batch_size, str(torch_device))
        for line in job_table(rows, torch_device.type, baseline_budget.epochs is not None):
            print(line)
        trainings = baseline_trainings(chosen, baseline_budget)
        trainings.append(Training(trainer_for_setup(None), PLANS_NAME, SAM_CONFIGURATION, sam_budget, "SAM"))
        per_seed = seed_trainings(dataset, trainings, seeds)
        fewshot, fewshot_models = [], []
        if options.train_cases:
            fewshot, fewshot_models = fewshot_trainings(dataset, options.train_cases, options.repeats,
                                                        fewshot_configurations(chosen), baseline_budget, sam_budget,
                                                        seed)
        jobs = fold_jobs(dataset, options.folds, trainings, torch_device, seed, options.ensembles)
        for other in seeds[1:]:
            jobs += fold_jobs(dataset, options.folds, per_seed[other], torch_device, other)
        jobs += fewshot_jobs(dataset, options.folds, fewshot, fewshot_models, torch_device, seed)
        failed = executor.run(jobs)  # every fold is in before the comparison starts
    finally:
        executor.close()
    names, left_out = without_failed([b.name for b in chosen], {j: e for j, e in failed.items()
                                                                if j.training in trainings})
    chosen = [b for b in chosen if b.name in names]
    fewshot_models, fewshot_left_out = without_failed_fewshot(fewshot_models, failed)

    baseline_models = [Model(nnUNetTrainer.__name__, b.plans, b.configuration) for b in chosen]
    sam_model = Model.for_setup(None)
    baselines = [Method(b.name, m.folder(dataset)) for b, m in zip(chosen, baseline_models)]
    requested = {b.name: {"epochs": baseline_budget.epochs or NNUNET_EPOCHS,
                          "iterations_per_epoch": baseline_budget.iterations or NNUNET_ITERATIONS,
                          "batch_size": (baseline_budget.batch_size if b.configuration == "2d" else None)
                          or planned_configuration(dataset, b).get("batch_size"), "seed": seed}
                 for b in chosen}
    requested["SAM"] = {"epochs": sam_budget.epochs or sam_plan.num_epochs,
                        "iterations_per_epoch": sam_budget.iterations or sam_plan.iterations_per_epoch,
                        "batch_size": planned.batch_size, "seed": seed}
    sam = Method("SAM", sam_model.folder(dataset))
    splits, groups = read_splits(preprocessed), load_groups(preprocessed)
    comparison = compare(baselines, sam, options.folds, preprocessed / "gt_segmentations", groups, splits)
    models = [m.for_find_best() for m in baseline_models + [sam_model]]
    choice = Choice.chosen_by_nnunet(find_best(dataset, options.folds, models, options.ensembles), "find_best")
    best = ("ensemble of " if len(choice.models) > 1 else "") + choice.name
    methods = {m.folder(dataset): method for m, method in zip(baseline_models + [sam_model], baselines + [sam])}
    comparison["budget_policy"], comparison["requested_budgets"] = policy, requested
    comparison["conditions"] = conditions(dataset, sam_plan, chosen, skipped_3d, comparison,
                                          best_configuration_lines(choice, dataset, methods, comparison), groups,
                                          splits, trained_sam(sam.model_folder, options.folds),
                                          options.baselines is None and torch_device.type != "cuda") \
        + refuse_seen_base(dataset, sam_plan, sam.model_folder, options.folds, options.allow_seen_base) \
        + left_out + fewshot_left_out
    if len(seeds) > 1:
        comparison["seeds"], seed_left_out = seeds_section(dataset, comparison, per_seed, failed, options.folds,
                                                           groups, splits)
        comparison["conditions"] += seed_left_out
    if fewshot_models:
        comparison["fewshot"] = fewshot_report(fewshot_models, comparison, options.folds, options.train_cases,
                                               options.repeats, seed, preprocessed, dataset.results / REPORT_FOLDER)
    if sam_plan.prompts is not None:  # a prompted plan: the click loop on the same folds, its own table
        comparison["interactive"] = interactive_section(dataset, options.folds, torch_device, groups)
    summary = plan_summary(sam_plan, planned.batch_size, planned.dataset_facts)
    report = write_report({**comparison, "best_configuration": best}, baselines + [sam],
                          dataset.results / REPORT_FOLDER, dataset.raw / "imagesTr",
                          preprocessed / "gt_segmentations", summary)
    for line in headline(comparison):
        print(line)
    for line in headline_lines(comparison["interactive"]) if comparison.get("interactive") else []:
        print(line)
    print(f"report: {report}")
    return report


def planned_configuration(dataset: Dataset, baseline: Baseline) -> dict:
    """nnU-Net's plans of one baseline, as its trainer reads them."""
    plans = PlansManager(read_plans(dataset, baseline.plans, baseline.configuration))
    return plans.get_configuration(baseline.configuration).configuration


def chosen_baselines(dataset: Dataset, options: RunOptions, on_gpu: bool) -> tuple[list[Baseline], str | None]:
    """The baselines to train (``--baselines``, else the default of ``planners.baselines``), and why 3D data's
    3d_fullres is left out (None: it is not)."""
    planned = baseline_configurations(dataset)
    if options.baselines is None:
        chosen = default_baselines(baseline_configurations(dataset, not options.no_3d), on_gpu)
    else:
        chosen = parse_baselines(options.baselines)
        if options.no_3d and any(b.configuration == "3d_fullres" for b in chosen):
            raise AutosamError("--no-3d contradicts a 3d_fullres preset in --baselines; drop one of them")
    skipped = len(planned) > 1 and all(b.configuration != "3d_fullres" for b in chosen)
    return chosen, ("--no-3d" if options.no_3d else "not in --baselines") if skipped else None


def baseline_trainings(baselines: list[Baseline], budget: Budget) -> list[Training]:
    """nnU-Net's stock trainer on each baseline's plans identifier, as ``nnUNetv2_train -p <plans>`` trains it."""
    return [Training(nnUNetTrainer, b.plans, b.configuration, configuration_budget(b.configuration, budget), b.name)
            for b in baselines]


def fewshot_configurations(chosen: list[Baseline]) -> tuple[str, ...]:
    """Few-shot runs train the plain presets among the chosen baselines."""
    plain = tuple(b.configuration for b in chosen if not b.preset)
    if not plain:
        raise AutosamError("--train-cases trains nnU-Net's plain presets only; add 2d to --baselines")
    return plain


def seeds_section(dataset: Dataset, comparison: dict, per_seed: dict[int, list[Training]], failed: dict,
                  folds: list[int], groups: dict[str, str] | None, splits: list[dict] | None) -> tuple[dict, list[str]]:
    """The seed analysis of SAM against the strongest baseline (``evaluation.seeds``): every seed's models
    scored like the first seed's; a seed with a failed fold is left out, with a line saying so."""
    challenger, baseline, primary = comparison["challenger"], comparison["strongest_baseline"], comparison["primary_row"]
    first, *others = per_seed
    values = {first: {m: comparison["unit_values"][m][primary]["dice"] for m in (baseline, challenger)}}
    lost = [job.training for job in failed]
    left_out = []
    for seed in others:
        trainings = {t.label.removesuffix(f", seed {seed}"): t for t in per_seed[seed]}
        wanted = [trainings[baseline], trainings[challenger]]
        if any(t in lost for t in wanted):
            left_out.append(f"WARNING: seed {seed} left out of the seed analysis after failing twice on Ray")
            continue
        scored = compare([Method(baseline, seed_model_folder(dataset, wanted[0]))],
                         Method(challenger, seed_model_folder(dataset, wanted[1])), folds,
                         dataset.preprocessed / "gt_segmentations", groups, splits)
        values[seed] = {m: scored["unit_values"][m][primary]["dice"] for m in (baseline, challenger)}
    return seed_analysis(values, baseline, challenger, comparison["unit"]), left_out


def without_failed_fewshot(models: list, failed: dict[FoldJob, str]) -> tuple[list, list[str]]:
    """Few-shot models whose folds all trained, and the report's lines on those left out."""
    lost = {job.output_folder.parent: f"{job.name} ({error})" for job, error in failed.items()}
    kept = [m for m in models if m.model_folder not in lost]
    return kept, [f"WARNING: left out of the few-shot curve after failing twice on Ray: {lost[m.model_folder]}"
                  for m in models if m.model_folder in lost]


def best_configuration_lines(chosen: Choice, dataset: Dataset, methods: dict[Path, Method], comparison: dict) -> list[str]:
    """Which configuration nnU-Net's find_best_configuration chose, on which endpoint, and whether this report's
    primary endpoint ranks the trained methods the same way."""
    name = ("ensemble of " if len(chosen.models) > 1 else "") + chosen.name
    lines = [f"best configuration by nnU-Net's find_best_configuration: {name} — ranked on nnU-Net's own endpoint "
             "(the mean over cases of each label's Dice, cases empty in both masks left out), not on this report's "
             "primary endpoint, and selected on the same cross-validation folds it is scored on (optimistic)"]
    primary = comparison["primary_row"]
    means = {name: comparison["summary"][name][primary]["dice"]["mean"] for name in comparison["summary"]}
    leader = max(means, key=lambda n: -1 if math.isnan(means[n]) else means[n])
    if len(chosen.models) > 1:
        return lines + [f"the ensemble is not scored on the primary endpoint; of the single methods, {leader} leads it"]
    picked = methods.get(chosen.models[0].folder(dataset))
    if picked is not None and picked.name != leader:
        lines.append(f"WARNING: the endpoints disagree: find_best chose {picked.name}, but on the primary endpoint "
                     f"{leader} leads ({means[leader]:.3f} vs {means[picked.name]:.3f})")
    return lines


def sam_caveats(dataset: Dataset, plan: SamPlan) -> list[str]:
    """How SAM's training differed from nnU-Net's beyond the budget, as the plan made it."""
    lines = []
    sam_spacing = read_plans(dataset, PLANS_NAME, SAM_CONFIGURATION)["configurations"][SAM_CONFIGURATION].get("spacing")
    nnunet_spacing = read_plans(dataset, BASELINE_PLANS, "2d")["configurations"]["2d"]["spacing"]
    if sam_spacing and any(s > n * 1.01 for s, n in zip(sam_spacing, nnunet_spacing)):
        shown = lambda values: " x ".join(f"{v:.3g}" for v in values)
        lines.append(f"SAM's patches are coarser: it sees the images at spacing {shown(sam_spacing)} (its "
                     f"{plan.image_size} px input), nnU-Net 2d at {shown(nnunet_spacing)}; fine detail is lost to SAM")
    if plan.prompts is not None:
        lines.append(f"the prompted plan trains the promptless path this comparison scores on about "
                     f"{1 - PROMPTED_SHARE:.0%} of its training images (the rest carry {plan.prompts} prompts)")
    if plan.embedding_cache and not plan.setup.trains_encoder and plan.prompts is None:
        lines.append("SAM's decoder trained on cached embeddings: " + LOST_AUGMENTATION + "; nnU-Net trained with them")
    return lines
