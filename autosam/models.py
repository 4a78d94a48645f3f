"""Trained models: which one a command means, and a SAM fold checked against its plan and base weights.

A trained model is nnU-Net's results folder of one trainer x plans x configuration. A SAM fold is opened
weights-only, its ``autosam`` block is checked against the plan in that folder and the base file the plan
points at (``fold_checkpoint.check_identity``), and only then is it handed to nnU-Net or rebuilt here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from autosam.errors import AutosamError
from autosam.nnunet_env import dataset_name, model_folder, require_folders
from autosam.safe_load import load_fold_checkpoint
from autosam.sam_plan import PLANS_NAME, SAM_CONFIGURATION, SamPlan

SAM_TRAINER = "nnUNetTrainerSAM"


@dataclass(frozen=True)
class Model:
    trainer: str
    plans: str = PLANS_NAME
    configuration: str = SAM_CONFIGURATION

    @property
    def name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    @property
    def is_sam(self) -> bool:
        return self.trainer == SAM_TRAINER or self.trainer.startswith(SAM_TRAINER + "_")

    @classmethod
    def for_setup(cls, setup: str | None) -> "Model":
        """The trainer of a fixed set-up; ``None`` is the planned set-up."""
        return cls(f"{SAM_TRAINER}_{setup}" if setup else SAM_TRAINER)


def _trained(folder: Path) -> bool:
    return any((fold / "checkpoint_final.pth").is_file() for fold in folder.glob("fold_*"))


@dataclass(frozen=True)
class Choice:
    """What a command predicts with: one model or nnU-Net's chosen ensemble, and the post-processing
    nnU-Net's find_best_configuration chose with them."""

    models: tuple[Model, ...]
    why: str
    postprocessing: Path | None = None  # nnU-Net's postprocessing.pkl
    plans_file: Path | None = None  # a plans.json of the chosen configuration (for the post-processing)

    @property
    def name(self) -> str:
        return " + ".join(m.name for m in self.models)


def resolve_model(dataset: str, setup: str | None = None) -> Choice:
    """Which trained model a command uses, and why: the fixed set-up asked for; else what nnU-Net's
    find_best_configuration chose after ``autosam run`` (one configuration or an ensemble, with its
    post-processing); else the only trained SAM model."""
    if setup:
        return Choice((Model.for_setup(setup),), f"the fixed set-up {setup} (--setup)")
    results = require_folders("nnUNet_results")["nnUNet_results"] / dataset_name(dataset)
    information = results / "inference_information.json"
    if information.is_file():
        best = json.loads(information.read_text())["best_model_or_ensemble"]
        models = tuple(Model(m["trainer"], m["plans_identifier"], m["configuration"])
                       for m in best["selected_model_or_models"])
        what = "the ensemble" if len(models) > 1 else "the configuration"
        return Choice(models, f"{what} nnU-Net's find_best_configuration chose ({information.name}), with its "
                      "post-processing", Path(best["postprocessing_file"]), Path(best["some_plans_file"]))
    trained = sorted(f.name for f in results.glob(f"{SAM_TRAINER}*__{PLANS_NAME}__{SAM_CONFIGURATION}") if _trained(f))
    if len(trained) > 1:
        setups = ", ".join(name.split("__")[0].removeprefix(SAM_TRAINER + "_") for name in trained)
        raise AutosamError(f"{results}: several trained SAM models ({setups}); choose one with --setup "
                           f"('{SAM_TRAINER}' is the planned set-up)")
    if not trained:
        raise AutosamError(f"{results}: no trained SAM model; run 'autosam train -d {dataset} -f 0' first")
    return Choice((Model(trained[0].split("__")[0]),), "the only trained SAM model")


def trained_model_folder(dataset: str, model: Model) -> Path:
    folder = model_folder(dataset, model.trainer, model.plans, model.configuration)
    if not folder.is_dir():
        hint = f" --setup {model.trainer.removeprefix(SAM_TRAINER + '_')}" if model.trainer != SAM_TRAINER else ""
        raise AutosamError(f"{folder}: no trained model; run 'autosam train -d {dataset} -f 0{hint}' first")
    return folder


@dataclass
class SamFold:
    """One trained SAM fold as its results folder describes it."""

    folder: Path  # the model's results folder (plans.json, dataset.json, fold_*/)
    trainer: str
    configuration: str
    fold: str
    checkpoint: str = "checkpoint_final.pth"

    @property
    def path(self) -> Path:
        return self.folder / f"fold_{self.fold}" / self.checkpoint

    def plan_and_shape(self) -> tuple[SamPlan, int, int]:
        """The SAM plan the trainer ran, and the network's class and input channel counts."""
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from autosam.trainers.variants import trainer_class

        dataset_json = json.loads((self.folder / "dataset.json").read_text())
        plans = PlansManager(str(self.folder / "plans.json"))
        configuration = plans.get_configuration(self.configuration)
        plan = trainer_class(self.trainer).plan_for(configuration)
        heads = plans.get_label_manager(dataset_json).num_segmentation_heads
        return plan, heads, determine_num_input_channels(plans, configuration, dataset_json)

    def read_checked(self) -> dict:
        """The fold checkpoint, opened weights-only and checked against the plan and the base file it names."""
        from autosam.sam.checkpoints import FROM_SCRATCH, BaseIdentity, sha256_of
        from autosam.sam.fold_checkpoint import check_identity, identity

        checkpoint = load_fold_checkpoint(self.path)
        plan, heads, channels = self.plan_and_shape()
        base = FROM_SCRATCH
        if plan.base_checkpoint is not None:
            file = plan.base_checkpoint.locate()
            base = BaseIdentity(file.name, sha256_of(file))
        expected = identity(plan.setup, plan.image_size, heads, channels, plan.normalisation, base)
        check_identity(checkpoint.get("autosam"), expected, str(self.path))
        return checkpoint

    def network(self):
        """The fine-tuned network, rebuilt through the one construction path, in eval mode."""
        from autosam.sam.fold_checkpoint import check_identity, identity_of
        from autosam.sam.model import network_for_plan

        checkpoint = load_fold_checkpoint(self.path)
        plan, heads, channels = self.plan_and_shape()
        network = network_for_plan(plan, heads, channels)
        network.ensure_base_loaded()
        check_identity(checkpoint.get("autosam"), identity_of(network), str(self.path))
        network.load_state_dict(checkpoint["network_weights"])
        return network.eval()
