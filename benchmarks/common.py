"""What the benchmarks share: the data they run on, a planned nnU-Net folder tree, and a started trainer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from autosam.cli import main as autosam
from autosam.experiments.demo import DEMO_DATA
from autosam.paths import Dataset
from autosam.trainers.fold_training import make_trainer
from autosam.trainers.variants import trainer_for_setup

SHARED_BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "Dataset501_BUSI"


def default_source(given: Path | None = None) -> Path:
    """The dataset a benchmark runs on: the one given, else the shared BUSI set, else the bundled subset."""
    return given or (SHARED_BUSI if (SHARED_BUSI / "dataset.json").is_file() else DEMO_DATA)


def case_ids(source: Path) -> list[str]:
    ending = json.loads((source / "dataset.json").read_text())["file_ending"]
    return sorted(p.name[: -len(ending)] for p in (source / "labelsTr").glob(f"*{ending}"))


def copy_subset(source: Path, raw_root: Path, cases: list[str]) -> Path:
    """A new nnU-Net raw dataset holding ``cases`` of ``source`` (images, labels, dataset.json)."""
    meta = json.loads((source / "dataset.json").read_text())
    ending = meta["file_ending"]
    target = raw_root / source.name
    for folder in ("imagesTr", "labelsTr"):
        (target / folder).mkdir(parents=True)
    for case in cases:
        for image in sorted((source / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            shutil.copy(image, target / "imagesTr" / image.name)
        shutil.copy(source / "labelsTr" / f"{case}{ending}", target / "labelsTr" / f"{case}{ending}")
    (target / "dataset.json").write_text(json.dumps({**meta, "numTraining": len(cases)}, indent=2))
    return target


def planned_subset(source: Path, root: Path, cases: int, setup: str, image_size: int, batch_size: int,
                   device: str, extra: tuple[str, ...] = ()) -> Dataset:
    """nnU-Net folders under ``root`` (exported) with ``cases`` cases of ``source``, planned and preprocessed
    for ``setup`` from random weights."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(root / name)
        (root / name).mkdir(parents=True)
    name = copy_subset(source, root / "nnUNet_raw", case_ids(source)[:cases]).name
    if autosam(["plan-and-preprocess", "-d", name, "--setup", setup, "--image-size", str(image_size),
                "--batch-size", str(batch_size), "--from-scratch", "--device", device, *extra]):
        raise SystemExit(f"planning failed for {name}")
    return Dataset.resolve(name)


def started_trainer(dataset: Dataset, setup: str | None, device: torch.device, embedding_cache: bool | None = None):
    """nnU-Net's own start of fold 0 (network, optimiser, data loaders with the planned workers; with the
    embedding cache, its build). ``embedding_cache``: overrides the plan's."""
    trainer = make_trainer(dataset, 0, trainer_for_setup(setup), device=device)
    if embedding_cache is not None:
        trainer.sam_plan.embedding_cache = embedding_cache
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    return trainer
