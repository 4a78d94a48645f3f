"""Trained models: which one a command means, and a SAM fold checked against its plan and base weights.

A trained model is nnU-Net's results folder of one trainer x plans x configuration. A SAM fold is opened
weights-only, its ``autosam`` block is checked against the plan in that folder and the base file the plan
points at (``fold_checkpoint.check_identity``), and only then is it handed to nnU-Net or rebuilt here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from autosam.errors import AutosamError
from autosam.paths import FINAL_CHECKPOINT, Dataset, fold_is_trained
from autosam.plans import PLANS_NAME, SAM_CONFIGURATION, SamPlan, network_for_plan
from autosam.sam.network import SamSegmenter
from autosam.sam.weights.base import FROM_SCRATCH, BaseIdentity
from autosam.sam.weights.catalogue import sha256_of
from autosam.sam.weights.fold_checkpoint import check_identity, identity, identity_of
from autosam.sam.weights.safe_load import load_fold_checkpoint
from autosam.trainers.variants import PLANNED, trainer_class, trainer_name

SAM_TRAINER = trainer_name(None)


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
        """The trainer of a fixed set-up; ``None`` or ``"planned"`` is the planned set-up."""
        return cls(trainer_name(setup))

    @classmethod
    def from_name(cls, name: str) -> "Model":
        """``<trainer>__<plans>__<configuration>``, nnU-Net's results-folder name."""
        trainer, plans, configuration = name.split("__")
        return cls(trainer, plans, configuration)

    @property
    def setup(self) -> str:
        """The ``--setup`` value that selects this SAM model."""
        return self.trainer.removeprefix(SAM_TRAINER + "_") if self.trainer != SAM_TRAINER else PLANNED

    def folder(self, dataset: Dataset) -> Path:
        return dataset.model_folder(self.trainer, self.plans, self.configuration)

    def for_find_best(self) -> dict:
        """The model as nnU-Net's find_best_configuration takes it."""
        return {"trainer": self.trainer, "plans": self.plans, "configuration": self.configuration}


def _trained(folder: Path) -> bool:
    return any(fold_is_trained(fold) for fold in folder.glob("fold_*"))


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

    @classmethod
    def chosen_by_nnunet(cls, information: dict, source: str) -> "Choice":
        """The ``best_model_or_ensemble`` of find_best_configuration's result (``inference_information.json``)."""
        best = information["best_model_or_ensemble"]
        models = tuple(Model(m["trainer"], m["plans_identifier"], m["configuration"])
                       for m in best["selected_model_or_models"])
        what = "the ensemble" if len(models) > 1 else "the configuration"
        return cls(models, f"{what} nnU-Net's find_best_configuration chose ({source}), with its post-processing",
                   Path(best["postprocessing_file"]), Path(best["some_plans_file"]))


def resolve_model(dataset: Dataset, setup: str | None = None) -> Choice:
    """Which trained model a command uses, and why: the fixed set-up asked for; else what nnU-Net's
    find_best_configuration chose after ``autosam run`` (one configuration or an ensemble, with its
    post-processing); else the only trained SAM model."""
    if setup:
        return Choice((Model.for_setup(setup),), f"the fixed set-up {setup} (--setup)")
    results = dataset.results
    information = results / "inference_information.json"
    if information.is_file():
        return Choice.chosen_by_nnunet(json.loads(information.read_text()), information.name)
    trained = [Model.from_name(f.name) for f in sorted(results.glob(f"{SAM_TRAINER}*__{PLANS_NAME}__{SAM_CONFIGURATION}"))
               if _trained(f)]
    if len(trained) > 1:
        raise AutosamError(f"{results}: several trained SAM models ({', '.join(m.setup for m in trained)}); "
                           f"choose one with --setup")
    if not trained:
        raise AutosamError(f"{results}: no trained SAM model; run 'autosam train -d {dataset.id} -f 0' first")
    return Choice((trained[0],), "the only trained SAM model")


def trained_model_folder(dataset: Dataset, model: Model) -> Path:
    folder = model.folder(dataset)
    if not folder.is_dir():
        hint = f" --setup {model.setup}" if model.is_sam and model.trainer != SAM_TRAINER else ""
        raise AutosamError(f"{folder}: no trained model; run 'autosam train -d {dataset.id} -f 0{hint}' first")
    return folder


@dataclass
class SamFold:
    """One trained SAM fold as its results folder describes it."""

    folder: Path  # the model's results folder (plans.json, dataset.json, fold_*/)
    trainer: str
    configuration: str
    fold: str
    checkpoint: str = FINAL_CHECKPOINT

    @property
    def path(self) -> Path:
        return self.folder / f"fold_{self.fold}" / self.checkpoint

    def configuration_manager(self):
        """nnU-Net's view of the configuration the fold trained (spacing, patch, data)."""
        return PlansManager(str(self.folder / "plans.json")).get_configuration(self.configuration)

    @property
    def data(self) -> str:
        """The preprocessed data the configuration trains on (nnU-Net's data identifier)."""
        return self.configuration_manager().data_identifier

    def plan_and_shape(self) -> tuple[SamPlan, int, int]:
        """The SAM plan the trainer ran, and the network's class and input channel counts."""
        dataset_json = json.loads((self.folder / "dataset.json").read_text())
        plans = PlansManager(str(self.folder / "plans.json"))
        configuration = plans.get_configuration(self.configuration)
        plan = trainer_class(self.trainer).plan_for(configuration)
        heads = plans.get_label_manager(dataset_json).num_segmentation_heads
        return plan, heads, determine_num_input_channels(plans, configuration, dataset_json)

    def _read(self) -> tuple[dict, SamPlan, int, int]:
        checkpoint = load_fold_checkpoint(self.path)
        plan, heads, channels = self.plan_and_shape()
        saved = checkpoint.get("autosam")
        if isinstance(saved, dict) and saved.get("base", {}).get("name") == FROM_SCRATCH.name:
            plan.base_checkpoint = None  # trained with 'train --from-scratch': the fold holds every weight
        return checkpoint, plan, heads, channels

    def read_checked(self) -> dict:
        """The fold checkpoint, opened weights-only and checked against the plan and the base file it names."""
        checkpoint, plan, heads, channels = self._read()
        base = FROM_SCRATCH
        if plan.base_checkpoint is not None:
            file = plan.base_checkpoint.locate()
            base = BaseIdentity(file.name, sha256_of(file))
        expected = identity(plan.setup, plan.image_size, heads, channels, plan.normalisation, base, self.data,
                            plan.prompts)
        check_identity(checkpoint.get("autosam"), expected, str(self.path))
        return checkpoint

    def network(self) -> tuple[SamSegmenter, dict]:
        """The fine-tuned network, rebuilt through the one construction path (eval mode), and its checkpoint."""
        checkpoint, plan, heads, channels = self._read()
        network = network_for_plan(plan, heads, channels)
        network.ensure_base_loaded()
        check_identity(checkpoint.get("autosam"), identity_of(network, self.data), str(self.path))
        network.load_state_dict(checkpoint["network_weights"])
        return network.eval(), checkpoint
