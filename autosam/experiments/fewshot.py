"""Few-shot runs (``autosam run --train-cases K [K ...] --repeats R``): how many labelled cases before SAM stops
helping?

Every method of the run trains on K labelled cases of each fold's training part and is validated on the fold's
whole validation part. The cases are chosen in nnU-Net's split step (``autosam.trainers.fewshot``) by
``select_cases``: drawn with the run's seed, the repeat and the fold, so every method of a repeat gets the same
K; one case per patient when the patients are known (K then counts patients); each with foreground in its
reference; nested in K (the 5 cases of a repeat include its 1). Each repeat trains with a seed of its own,
``training_seed(run seed, repeat)``, the same for every method of the repeat (so SAM and the baseline stay
paired), recorded in the plans' few-shot block and in each fold's ``autosam_training.json``.

SAM is compared with one baseline declared before any training (``declared_baseline``: nnU-Net 2d, the
configuration that trains on the same 2D slices; recorded in the plans' few-shot block), never with whichever
baseline did best at a K.

Each (K, repeat) is an nnU-Net plans identifier of its own, ``<plans>_<K>cases_r<repeat>``: a copy of the run's
plans carrying an ``autosam_fewshot`` block, written next to them. Its model folders
(``nnUNetTrainerFewShot__nnUNetPlans_5cases_r0__2d``, ``nnUNetTrainerSAMFewShot__autosamPlans_5cases_r0__2d_sam``)
sit beside the full-data ones without touching them, train on the same preprocessed data, and nnU-Net's own
tools read them like any other; nnU-Net's find_best_configuration and ``autosam predict`` never see them.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autosam.data.case_selection import FEWSHOT_KEY, labelled_foreground, patients_of, select_cases
from autosam.data.splits import load_groups
from autosam.errors import AutosamError
from autosam.evaluation.comparison import read_splits
from autosam.evaluation.fewshot_curve import summarise, summary_lines, write_fewshot
from autosam.evaluation.study_stats import cv_units
from autosam.files import atomic_write_json
from autosam.paths import Dataset, fold_has_started
from autosam.planners.sam_planner import BASELINE_PLANS
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION
from autosam.trainers.fewshot import nnUNetTrainerFewShot, nnUNetTrainerSAMFewShot
from autosam.trainers.fold_jobs import FoldJob, Training, fold_jobs
from autosam.trainers.fold_training import Budget, configuration_budget

log = logging.getLogger(__name__)


def training_seed(seed: int, repeat: int) -> int:
    """A repeat's training seed, from the run's seed and the repeat by numpy's ``SeedSequence`` (below 2**31, so
    the offsets ``trainers.seeding`` adds for loader workers stay within numpy's seed range)."""
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0] % 2**31)


def declared_baseline(configurations: tuple[str, ...] | list[str]) -> str:
    """The baseline SAM's few-shot gap is measured against, fixed before training: nnU-Net 2d when the run trains
    it (the configuration on SAM's 2D slices), else the run's first configuration."""
    return f"nnU-Net {'2d' if '2d' in configurations else configurations[0]}"


def plans_identifier(base: str, train_cases: int, repeat: int) -> str:
    """The plans identifier of one (K, repeat): ``nnUNetPlans_5cases_r0``."""
    return f"{base}_{train_cases}cases_r{repeat}"


def write_plans(
    preprocessed: Path, base: str, train_cases: int, repeat: int, seed: int, results: Path, baseline: str | None = None
) -> str:
    """The few-shot plans file of one (K, repeat), a copy of ``base`` with the few-shot block (the draw's seed,
    the repeat's training seed and the declared baseline); returns its identifier. A file whose folds were
    trained with other settings is refused, never replaced."""
    name = plans_identifier(base, train_cases, repeat)
    plans = copy.deepcopy(json.loads((preprocessed / f"{base}.json").read_text()))
    plans["plans_name"] = name
    plans[FEWSHOT_KEY] = {
        "train_cases": train_cases,
        "repeat": repeat,
        "seed": seed,
        "training_seed": training_seed(seed, repeat),
        "compared_with": baseline,
        "plans": base,
    }
    path = preprocessed / f"{name}.json"
    if path.is_file() and json.loads(path.read_text()) != plans:
        trained = sorted(f.parent.name for f in results.glob(f"*__{name}__*/fold_*") if fold_has_started(f))
        if trained:
            raise AutosamError(
                f"{path}: {trained[0]} was trained with other settings ({FEWSHOT_KEY} or "
                f"{base}.json changed since, e.g. another --seed); move the folders "
                f"{results}/*__{name}__* away to train them again"
            )
    atomic_write_json(plans, path)
    return name


@dataclass(frozen=True)
class FewShotModel:
    method: str  # "nnU-Net 2d", "SAM", as in the comparison
    train_cases: int
    repeat: int
    model_folder: Path


def fewshot_trainings(
    dataset: Dataset,
    train_cases: list[int],
    repeats: int,
    configurations: tuple[str, ...],
    baseline_budget: Budget,
    sam_budget: Budget,
    seed: int,
) -> tuple[list[Training], list[FewShotModel]]:
    """Every method on K cases per fold, for every K and repeat: the plans files written, the trainings for
    ``fold_jobs`` and the model folders they fill."""
    methods = [
        (nnUNetTrainerFewShot, BASELINE_PLANS, c, f"nnU-Net {c}", configuration_budget(c, baseline_budget))
        for c in configurations
    ]
    methods.append((nnUNetTrainerSAMFewShot, PLANS_NAME, SAM_CONFIGURATION, "SAM", sam_budget))
    baseline = declared_baseline(configurations)
    trainings, models = [], []
    for repeat in range(repeats):
        for k in train_cases:
            for trainer, base, configuration, method, budget in methods:
                plans = write_plans(dataset.preprocessed, base, k, repeat, seed, dataset.results, baseline)
                trainings.append(
                    Training(trainer, plans, configuration, budget, f"{method}, {k} cases, repeat {repeat}")
                )
                models.append(
                    FewShotModel(method, k, repeat, dataset.model_folder(trainer.__name__, plans, configuration))
                )
    return trainings, models


def declared_in(models: list[FewShotModel]) -> str | None:
    """The baseline the few-shot plans declared before training (read back from a trained model's plans)."""
    return json.loads((models[0].model_folder / "plans.json").read_text())[FEWSHOT_KEY].get("compared_with")


def fewshot_jobs(
    dataset: Dataset, folds: list[int], trainings: list[Training], models: list[FewShotModel], device, seed: int
) -> list[FoldJob]:
    """``fold_jobs`` of ``fewshot_trainings``' trainings (``models`` in the same order), each repeat with its own
    ``training_seed``, fold by fold as ``fold_jobs`` orders them."""
    jobs = [
        job
        for training, model in zip(trainings, models, strict=True)
        for job in fold_jobs(dataset, folds, [training], device, training_seed(seed, model.repeat))
    ]
    return sorted(jobs, key=lambda job: job.fold)


def fewshot_report(
    models: list[FewShotModel],
    comparison: dict,
    folds: list[int],
    train_cases: list[int],
    repeats: int,
    seed: int,
    preprocessed: Path,
    out: Path,
) -> dict:
    """Dice of every few-shot model under the comparison's conventions, the full-data run as the last point, and
    SAM paired with the declared baseline per K; writes ``fewshot.json``, ``fewshot.md`` and ``fewshot.png`` into
    ``out`` and returns the summary."""
    groups, splits = load_groups(preprocessed), read_splits(preprocessed)
    gt = preprocessed / "gt_segmentations"
    units = {}
    for m in models:
        units.setdefault((m.method, m.train_cases), {})[m.repeat] = cv_units(m.model_folder, folds, gt, groups, splits)
    primary = comparison["primary_row"]
    full = {method: comparison["summary"][method][primary]["dice"]["mean"] for method in comparison["summary"]}
    has_foreground = labelled_foreground(preprocessed, "gt_segmentations")
    chosen = {
        fold: {
            repeat: {
                k: select_cases(splits[fold]["train"], k, seed, repeat, fold, groups, has_foreground)
                for k in train_cases
            }
            for repeat in range(repeats)
        }
        for fold in folds
    }
    summary = summarise(
        units,
        full,
        declared_in(models),
        {
            "folds": folds,
            "seed": seed,
            "repeats": repeats,
            "train_cases": train_cases,
            "training_seeds": [training_seed(seed, r) for r in range(repeats)],
            "unit": comparison["unit"],
            "full_training_units": [len(patients_of(splits[f]["train"], groups)) for f in folds],
            "cases": chosen,
            "models": sorted({m.model_folder.name for m in models}),
        },
    )
    write_fewshot(summary, out)
    print("\n".join(summary_lines(summary)))
    return summary
