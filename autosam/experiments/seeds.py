"""Several seeds (``autosam run --seed 0 1 2``): every method trains once per seed, on the same folds.

The first seed keeps the run's own plans identifiers (``nnUNetPlans``, ``autosamPlans``, ...), so results trained
before stay valid and nnU-Net's find_best_configuration and ``autosam predict`` see one model per method, as
without seeds. Each further seed is a plans identifier of its own, ``<plans>_seed<N>``: a copy of the plans with
an ``autosam_seed`` block, written beside them, on the same preprocessed data (as few-shot's
``<plans>_<K>cases_r<R>``). Its model folders (``nnUNetTrainer__nnUNetPlans_seed1__2d``,
``nnUNetTrainerSAM__autosamPlans_seed1__2d_sam``) sit beside the first seed's; find_best is never given them and
``predict`` never picks them, and nnU-Net's own tools read them like any other trained configuration.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

from autosam.errors import AutosamError
from autosam.files import atomic_write_json
from autosam.paths import Dataset, fold_has_started
from autosam.trainers.fold_jobs import Training

SEED_KEY = "autosam_seed"


def check_seeds(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise AutosamError(f"--seed {' '.join(map(str, seeds))}: a seed is given twice; give each seed once")
    return seeds


def plans_identifier(base: str, seed: int) -> str:
    """A further seed's plans identifier: ``nnUNetPlans_seed1``."""
    return f"{base}_seed{seed}"


def write_plans(preprocessed: Path, base: str, seed: int, results: Path) -> str:
    """A further seed's plans file, a copy of ``base`` recording the seed (also as the SAM plan's seed); returns its
    identifier. A file whose folds were trained from other plans is refused, never replaced."""
    name = plans_identifier(base, seed)
    plans = copy.deepcopy(json.loads((preprocessed / f"{base}.json").read_text()))
    plans["plans_name"] = name
    plans[SEED_KEY] = {"seed": seed, "plans": base}
    for configuration in plans["configurations"].values():
        if isinstance(configuration.get("sam"), dict):
            configuration["sam"]["seed"] = seed
    path = preprocessed / f"{name}.json"
    if path.is_file() and json.loads(path.read_text()) != plans:
        trained = sorted(f.parent.name for f in results.glob(f"*__{name}__*/fold_*") if fold_has_started(f))
        if trained:
            raise AutosamError(
                f"{path}: {trained[0]} was trained from other plans ({base}.json changed since); move "
                f"the folders {results}/*__{name}__* away to train them again"
            )
    atomic_write_json(plans, path)
    return name


def seed_trainings(dataset: Dataset, trainings: list[Training], seeds: list[int]) -> dict[int, list[Training]]:
    """seed -> the run's trainings for that seed: the first seed's are ``trainings`` themselves, each further seed's
    train the same methods from its own plans identifier."""
    out = {seeds[0]: trainings}
    for seed in seeds[1:]:
        out[seed] = [
            replace(
                t,
                plans=write_plans(dataset.preprocessed, t.plans, seed, dataset.results),
                label=f"{t.label}, seed {seed}",
            )
            for t in trainings
        ]
    return out


def model_folder(dataset: Dataset, training: Training) -> Path:
    return dataset.model_folder(training.trainer_cls.__name__, training.plans, training.configuration)
