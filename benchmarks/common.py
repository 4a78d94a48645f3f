"""What the benchmarks share: the data they run on, a planned nnU-Net folder tree, and a started trainer."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from autosam.cli import main as autosam
from autosam.data.subset import case_ids, copy_subset
from autosam.experiments.demo import DEMO_DATA
from autosam.paths import Dataset, configure_training_processes
from autosam.trainers.fold_training import make_trainer
from autosam.trainers.variants import trainer_for_setup

SHARED_BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "Dataset501_BUSI"


def default_source(given: Path | None = None) -> Path:
    """The dataset a benchmark runs on: the one given, else the shared BUSI set, else the bundled subset."""
    return given or (SHARED_BUSI if (SHARED_BUSI / "dataset.json").is_file() else DEMO_DATA)


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


def subset_arguments(description: str, setups: list[str]) -> argparse.ArgumentParser:
    """The arguments of a benchmark that times set-ups on a planned subset of a dataset."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an nnU-Net raw dataset folder (default: BUSI)")
    parser.add_argument("--setups", nargs="+", default=setups)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--cases", type=int, default=20, help="cases copied from the dataset")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def measure_setups(args: argparse.Namespace, measure: Callable[[Dataset, str, torch.device], dict]
                   ) -> tuple[Path, torch.device, list[dict]]:
    """``measure`` of every ``--setups`` entry on a temporary planned subset; (source, device, rows)."""
    source = default_source(args.data)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as work:
        dataset = planned_subset(source, Path(work), args.cases, args.setups[0], args.image_size, args.batch_size,
                                 args.device)
        configure_training_processes(device.type)
        rows = [measure(dataset, setup, device) for setup in args.setups]
    return source, device, rows
