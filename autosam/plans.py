"""The ``sam`` block of a SAM configuration in nnU-Net's plans: the single source of truth for training.

Written by the planner into ``nnUNet_preprocessed/DatasetXXX/autosamPlans.json`` under the configuration
``2d_sam`` (which inherits nnU-Net's ``2d``), read by the trainers and the predictor. ``read_sam_plan`` is the
one reader of that file; a trainer parses the configuration nnU-Net hands it with ``sam_plan_of``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from autosam.errors import AutosamError
from autosam.paths import Dataset
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.prompts import MODES
from autosam.sam.setups import Setup
from autosam.sam.weights.base import BaseCheckpoint

PLAN_FORMAT_VERSION = 1
PLANS_NAME = "autosamPlans"
SAM_CONFIGURATION = "2d_sam"
DEFAULT_SEED = 0


@dataclass
class SamPlan:
    setup: Setup
    image_size: int
    normalisation: str
    base_checkpoint: BaseCheckpoint | None  # None: random initialisation (--from-scratch)
    learning_rate: float
    weight_decay: float = 0.1
    warmup_iterations: int = 200
    poly_exponent: float = 0.9
    num_epochs: int = 100
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    gradient_checkpointing: bool = False
    embedding_cache: bool = True  # decoder-only set-ups train on cached image embeddings (embedding_cache.py)
    precision: str = "bf16"  # "bf16": autocast where the hardware computes bf16 natively (fp32 elsewhere); "fp32"
    seed: int = DEFAULT_SEED  # the training seed when none is given (``--seed``); each fold records the one it used
    prompts: str | None = None  # --prompts: box | point | box+point trains with prompts too; None: promptless
    predicted_memory_gb: float | None = None
    hardware: str = ""
    reasons: dict[str, str] = field(default_factory=dict)
    overridden: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)

    @property
    def from_scratch(self) -> bool:
        return self.base_checkpoint is None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["setup"] = self.setup.to_dict()
        if self.prompts is None:
            del data["prompts"]  # promptless plans are written as before
        return {"format_version": PLAN_FORMAT_VERSION, **data, "from_scratch": self.from_scratch}

    @classmethod
    def from_dict(cls, data: dict, source: str = "plans") -> "SamPlan":
        if data.get("format_version") != PLAN_FORMAT_VERSION:
            raise AutosamError(
                f"{source}: SAM plan format {data.get('format_version')} is not {PLAN_FORMAT_VERSION}; "
                "re-run 'autosam plan-and-preprocess' with this autosam version"
            )
        data = {k: v for k, v in data.items() if k not in ("format_version", "from_scratch")}
        # a plan written before the embedding cache existed trains as planned: with nnU-Net's augmentation
        data.setdefault("embedding_cache", False)
        if data.get("prompts") is not None:
            if data["prompts"] not in MODES:
                raise AutosamError(f"{source}: SAM plan prompts '{data['prompts']}' is not one of {', '.join(MODES)}")
        try:
            base = data.pop("base_checkpoint")
            return cls(
                setup=Setup.from_dict(data.pop("setup")),
                base_checkpoint=BaseCheckpoint(**base) if base else None,
                **data,
            )
        except (KeyError, TypeError) as e:
            raise AutosamError(f"{source}: the SAM plan is incomplete ({e}); re-run 'autosam plan-and-preprocess'") from None


def sam_plan_of(configuration: dict, source: str = "plans") -> SamPlan:
    """The ``sam`` block of a (resolved) nnU-Net configuration dict."""
    if "sam" not in configuration:
        raise AutosamError(
            f"{source}: this configuration has no 'sam' block; train SAM with -p {PLANS_NAME} -c {SAM_CONFIGURATION}"
        )
    return SamPlan.from_dict(configuration["sam"], source)


def network_for_plan(plan: SamPlan, num_classes: int, input_channels: int) -> SamSegmenter:
    """The network a plan describes, through the one construction path (``sam.model.build_network``)."""
    network = build_network(plan.setup, plan.image_size, num_classes, input_channels, plan.normalisation,
                            plan.base_checkpoint, plan.gradient_checkpointing)
    network.precision = plan.precision  # training, validation and prediction compute alike
    network.prompt_mode = plan.prompts  # recorded in the fold's identity
    return network


def read_plans(dataset: Dataset, plans_name: str = PLANS_NAME, configuration: str = SAM_CONFIGURATION) -> dict:
    """A plans file of the dataset that must hold ``configuration``, or a one-line error saying how to make it."""
    plans_file = dataset.preprocessed / f"{plans_name}.json"
    if not plans_file.is_file():
        raise AutosamError(f"{plans_file}: not found; run 'autosam plan-and-preprocess -d {dataset.id}' first")
    plans = json.loads(plans_file.read_text())
    if configuration not in plans["configurations"]:
        raise AutosamError(f"{plans_file}: has no configuration '{configuration}'; re-run 'autosam plan-and-preprocess'")
    return plans


@dataclass(frozen=True)
class PlannedSam:
    """The dataset's SAM configuration as stored: the plan, and nnU-Net's resolved view of the configuration."""

    plan: SamPlan
    configuration: ConfigurationManager
    file: Path

    @property
    def batch_size(self) -> int:
        return self.configuration.batch_size

    @property
    def dataset_facts(self) -> dict:
        return self.configuration.configuration["autosam_dataset_facts"]


def has_sam_plan(dataset: Dataset) -> bool:
    plans_file = dataset.preprocessed / f"{PLANS_NAME}.json"
    return plans_file.is_file() and SAM_CONFIGURATION in json.loads(plans_file.read_text())["configurations"]


def read_sam_plan(dataset: Dataset) -> PlannedSam:
    """The dataset's SAM plan (the ``sam`` block of ``2d_sam`` in autosamPlans.json): the one reader of it."""
    configuration = PlansManager(read_plans(dataset)).get_configuration(SAM_CONFIGURATION)
    file = dataset.preprocessed / f"{PLANS_NAME}.json"
    return PlannedSam(sam_plan_of(configuration.configuration, str(file)), configuration, file)
