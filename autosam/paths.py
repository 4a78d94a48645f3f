"""nnU-Net's folders, environment variables and dataset names, and autosam's checkpoint folder, in one place.

``configure_defaults()`` runs when autosam is first imported (``autosam/__init__.py``), before any autosam
module imports nnunetv2: ``nnUNet_def_n_proc`` is read at nnU-Net's import. Values the user has set always win.
Every entry point turns the user's ``-d`` into one ``Dataset`` (nnU-Net's own id conversion) and passes it down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from autosam.errors import AutosamError

FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
CHECKPOINT_DIR_ENV = "AUTOSAM_CHECKPOINT_DIR"
# The folder nnU-Net searches for our trainers (it imports every module in it, so it holds one shim only).
EXT_TRAINER_DIR = Path(str(resources.files("autosam") / "trainers" / "nnunet_ext"))
FINAL_CHECKPOINT = "checkpoint_final.pth"


def configure_defaults() -> None:
    """Process-pool sizes that do not oversubscribe a small machine; our trainers visible to nnU-Net."""
    cpus = os.cpu_count() or 1
    # nnU-Net's default of 8 export/metric workers costs more in start-up than it saves on a few cores.
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, min(8, cpus // 2))))
    ext = os.environ.get("nnUNet_extTrainer", "")
    if str(EXT_TRAINER_DIR) not in ext.split(os.pathsep):
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(p for p in (str(EXT_TRAINER_DIR), ext) if p)


def configure_training_processes(device: str) -> None:
    """Data-augmentation workers and torch threads for training on ``device``."""
    import torch  # here, not at the top: the command line starts without torch

    cpus = os.cpu_count() or 1
    if device == "cpu":
        # On a few cores, augmentation workers steal the cores the model needs (0 = in the main process).
        os.environ.setdefault("nnUNet_n_proc_DA", "0" if cpus <= 4 else str(cpus // 4))
        torch.set_num_threads(max(1, cpus - int(os.environ["nnUNet_n_proc_DA"])))
        os.environ.setdefault("nnUNet_compile", "false")  # compiling costs more than it saves on a CPU


def _why_not_found(dataset: str) -> str | None:
    """Two folders with one id in one of nnU-Net's folders, said with their names and the fix."""
    digits = dataset.removeprefix("Dataset").split("_")[0]
    if not digits.isdigit():
        return None
    for variable in FOLDER_VARIABLES:
        root = Path(os.environ.get(variable) or "/nonexistent")
        matches = sorted(p.name for p in root.glob(f"Dataset{int(digits):03d}_*") if p.is_dir())
        if len(matches) > 1:
            return (f"{root}: dataset id {int(digits):03d} matches {', '.join(matches)}; rename one so every id is "
                    "unique")
    return None


def nnunet_folder(variable: str) -> Path:
    """One of nnU-Net's folders, or a one-line error saying what to export."""
    if not os.environ.get(variable):
        raise AutosamError(f"{variable} not set: export {variable}=/path/to/{variable} (nnU-Net's folder variables)")
    path = Path(os.environ[variable])
    if variable == "nnUNet_raw" and not path.is_dir():
        raise AutosamError(f"{variable}={path}: no such folder; point it at your nnU-Net raw data")
    return path


def require_folders(*variables: str) -> None:
    """Every folder variable a command needs, checked at once before any work (one line naming all missing)."""
    missing = [v for v in variables if not os.environ.get(v)]
    if missing:
        raise AutosamError(f"{', '.join(missing)} not set: export "
                           f"{' '.join(f'{v}=/path/to/{v}' for v in missing)} (nnU-Net's folder variables)")
    for variable in variables:
        nnunet_folder(variable)


@dataclass(frozen=True)
class Dataset:
    """One nnU-Net dataset: its id, its name and its three folders. Make it with ``Dataset.resolve``."""

    id: int
    name: str

    @classmethod
    def resolve(cls, dataset: str | int | Dataset) -> Dataset:
        """'501', 501 or 'Dataset501_BUSI' -> the dataset, with nnU-Net's own lookup in its folders."""
        if isinstance(dataset, Dataset):
            return dataset
        if not any(os.environ.get(v) for v in FOLDER_VARIABLES):
            require_folders(*FOLDER_VARIABLES)  # nowhere to look: say which variables to export
        # here, not at the top: autosam/__init__.py imports this module to set nnU-Net's variables first
        from nnunetv2.utilities.dataset_name_id_conversion import (
            convert_dataset_name_to_id,
            maybe_convert_to_dataset_name,
        )

        try:
            name = maybe_convert_to_dataset_name(str(dataset))
        except (RuntimeError, ValueError) as e:
            raise AutosamError(_why_not_found(str(dataset)) or f"dataset {dataset}: {str(e).splitlines()[0]}") from None
        return cls(convert_dataset_name_to_id(name), name)

    def __str__(self) -> str:
        return self.name

    @property
    def raw(self) -> Path:
        return nnunet_folder("nnUNet_raw") / self.name

    @property
    def preprocessed(self) -> Path:
        return nnunet_folder("nnUNet_preprocessed") / self.name

    @property
    def results(self) -> Path:
        return nnunet_folder("nnUNet_results") / self.name

    def model_folder(self, trainer: str, plans: str, configuration: str) -> Path:
        """nnU-Net's results folder of one trained configuration (``<trainer>__<plans>__<configuration>``)."""
        return self.results / f"{trainer}__{plans}__{configuration}"


def latest_checkpoint(fold_folder: Path) -> Path | None:
    """The checkpoint a fold continues from: its final one, else its latest, else its best; None: not started."""
    for name in (FINAL_CHECKPOINT, "checkpoint_latest.pth", "checkpoint_best.pth"):
        if (fold_folder / name).is_file():
            return fold_folder / name
    return None


def validation_summary(fold_folder: Path) -> Path:
    """nnU-Net's summary of a fold's validation, written last."""
    return fold_folder / "validation" / "summary.json"


def fold_has_started(fold_folder: Path) -> bool:
    """A fold has started once it wrote a checkpoint: its folds file and plans may no longer change."""
    return latest_checkpoint(fold_folder) is not None


def fold_is_trained(fold_folder: Path) -> bool:
    """Its final checkpoint is written: the fold predicts and exports."""
    return (fold_folder / FINAL_CHECKPOINT).is_file()


def fold_is_finished(fold_folder: Path) -> bool:
    """Trained and validated: a run skips it; anything less is continued."""
    return fold_is_trained(fold_folder) and validation_summary(fold_folder).is_file()


def checkpoint_folder(checkpoint_dir: str | os.PathLike | None = None, required: bool = False) -> Path | None:
    """The folder of weights files: ``--checkpoint-dir``, else ``$AUTOSAM_CHECKPOINT_DIR``, else None (or, when
    ``required``, a one-line error)."""
    folder = checkpoint_dir or os.environ.get(CHECKPOINT_DIR_ENV)
    if not folder and required:
        raise AutosamError(f"no checkpoint folder: pass --checkpoint-dir DIR or export {CHECKPOINT_DIR_ENV}=DIR "
                           "(training and prediction read the weights from there)")
    return Path(folder) if folder else None
