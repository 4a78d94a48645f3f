"""autosam from Python: the commands' work as functions, with the same checks and defaults as the command line.

Reached as ``autosam.<name>`` (resolved on first use, so ``import autosam`` stays light and sets nnU-Net's
environment before anything imports nnU-Net). Datasets are ids or names, as ``-d`` takes them; the nnU-Net
folders come from ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` as for the command line::

    import autosam

    autosam.validate(501)                                   # warnings; an invalid dataset raises, every problem listed
    preview = autosam.plan(501, device="cpu")               # the plan summary (dict), nothing written
    report = autosam.run(501, folds=[0, 1], equal_budget=True)  # the report's path
    print("\\n".join(autosam.status(501)))
    autosam.predict(501, "new_images", "segmentations")
"""

from __future__ import annotations

from pathlib import Path

from autosam.paths import Dataset

__all__ = ["plan", "plan_and_preprocess", "predict", "run", "status", "validate"]


def _dataset(dataset: int | str | Dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset.resolve(str(dataset))


def _hardware_device(device: str | None) -> str | None:
    return None if device in (None, "auto") else device


def validate(dataset: int | str) -> list:
    """The dataset's warnings (``autosam.data.checks.Finding``); raises ``DatasetInvalid`` listing every error."""
    from autosam.data.checks import check_dataset

    return check_dataset(_dataset(dataset))


def plan(
    dataset: int | str, *, device: str | None = None, gpu_memory: float | None = None, write: bool = False, **fixed
) -> dict:
    """The SAM plan for this machine (or ``device`` / ``gpu_memory``) as ``autosam plan --json`` prints it;
    ``fixed``: any field of ``autosam.planners.sam_planner.SamOptions`` (setup, image_size, checkpoint, ...).
    Writes nothing unless ``write`` (then ``plan_and_preprocess`` is usually what you want)."""
    from autosam.planners.explain import plan_summary
    from autosam.planners.hardware import detect_hardware
    from autosam.planners.preprocess import plan as make_plan
    from autosam.planners.sam_planner import SamOptions
    from autosam.plans import SAM_CONFIGURATION, sam_plan_of

    planner = make_plan(
        _dataset(dataset), SamOptions(**fixed), detect_hardware(gpu_memory, _hardware_device(device)), write=write
    )
    configuration = planner.plans["configurations"][SAM_CONFIGURATION]
    return plan_summary(sam_plan_of(configuration), configuration["batch_size"], configuration["autosam_dataset_facts"])


def plan_and_preprocess(
    dataset: int | str,
    *,
    device: str | None = None,
    gpu_memory: float | None = None,
    with_3d: bool = True,
    num_processes: int = 1,
    **fixed,
) -> dict:
    """``plan(write=True)``, then nnU-Net's preprocessing of its baselines and SAM's data."""
    from autosam.planners.preprocess import baseline_configurations, preprocess

    summary = plan(dataset, device=device, gpu_memory=gpu_memory, write=True, **fixed)
    preprocess(_dataset(dataset), num_processes, baseline_configurations(_dataset(dataset), with_3d))
    return summary


def run(
    dataset: int | str,
    *,
    folds: list[int] | None = None,
    epochs: int | None = None,
    iterations: int | None = None,
    equal_budget: bool = False,
    device: str | None = None,
    gpu_memory: float | None = None,
    seed: int | None = None,
    ray_address: str | None = None,
    **fixed,
) -> Path:
    """``autosam run``: plan, train nnU-Net and SAM on the same folds, compare; returns the report's path.
    ``fixed``: SamOptions fields, as for ``plan``."""
    from autosam.experiments.run import RunOptions
    from autosam.experiments.run import run as run_study
    from autosam.planners.sam_planner import SamOptions

    options = RunOptions(
        folds=folds,
        epochs=epochs,
        iterations=iterations,
        equal_budget=equal_budget,
        device=device,
        gpu_memory=gpu_memory,
        seed=seed,
    )
    return run_study(_dataset(dataset), SamOptions(**fixed), options, ray_address=ray_address)


def predict(
    dataset: int | str,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    folds: list[str] | None = None,
    setup: str | None = None,
    device: str | None = None,
) -> Path:
    """Segment every ``<case>_0000`` image of ``input_dir`` with the model ``autosam predict`` would choose."""
    from autosam.inference.predict import predict as segment
    from autosam.inference.trained_models import resolve_model

    chosen = _dataset(dataset)
    segment(chosen, Path(input_dir), Path(output_dir), folds, resolve_model(chosen, setup), device=device)
    return Path(output_dir)


def status(dataset: int | str) -> list[str]:
    """``autosam status``'s lines: the plan, each model's trained folds, the report."""
    from autosam.experiments.status import status_lines

    return status_lines(_dataset(dataset))
