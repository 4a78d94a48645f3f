"""nnU-Net's folders and environment variables in one place.

Call ``configure_defaults()`` before anything imports nnunetv2: ``nnUNet_def_n_proc`` is read at import.
Values the user has set always win.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from autosam.errors import AutosamError

FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# The folder nnU-Net searches for our trainers (it imports every module in it, so it holds one shim only).
EXT_TRAINER_DIR = Path(str(resources.files("autosam.trainers") / "nnunet_ext"))


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
    import torch

    cpus = os.cpu_count() or 1
    if device == "cpu":
        # On a few cores, augmentation workers steal the cores the model needs (0 = in the main process).
        os.environ.setdefault("nnUNet_n_proc_DA", "0" if cpus <= 4 else str(cpus // 4))
        torch.set_num_threads(max(1, cpus - int(os.environ["nnUNet_n_proc_DA"])))
        os.environ.setdefault("nnUNet_compile", "false")  # compiling costs more than it saves on a CPU


def require_folders(*names: str) -> dict[str, Path]:
    """The nnU-Net folders this command needs, or a one-line error saying which to export."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise AutosamError(
            f"{', '.join(missing)} not set: export {' '.join(f'{n}=/path/to/{n}' for n in missing)} "
            "(nnU-Net's folder variables)"
        )
    folders = {n: Path(os.environ[n]) for n in names}
    for name, path in folders.items():
        if name == "nnUNet_raw" and not path.is_dir():
            raise AutosamError(f"{name}={path}: no such folder; point it at your nnU-Net raw data")
    return folders


def dataset_name(dataset: str | int) -> str:
    """'501' or 'Dataset501_BUSI' -> 'Dataset501_BUSI', with nnU-Net's own lookup."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(str(dataset))
    except (RuntimeError, ValueError) as e:
        raise AutosamError(f"dataset {dataset}: {str(e).splitlines()[0]}") from None


def model_folder(dataset: str | int, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's results folder of one trained configuration, named by nnU-Net's own helper."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    require_folders("nnUNet_results")
    return Path(get_output_folder(dataset_name(dataset), trainer, plans, configuration))
