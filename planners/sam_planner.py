"""nnU-Net experiment planner that adds the SAM configuration ``2d_sam`` to nnU-Net's own plans.

The plans file (``autosamPlans``) holds nnU-Net's regular configurations and ``2d_sam``, which inherits
``2d`` and reuses the ``nnUNetPlans_2d`` preprocessed data: same spacing, normalisation, resampling and
``splits_final.json`` as the nnU-Net baseline, so a comparison differs only in the network and its training.
nnU-Net's ``-pl`` flag only searches its own package; use the class from Python or ``autosam plan-and-preprocess``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from autosam.errors import AutosamError
from autosam.sam.checkpoints import CATALOGUE, find_checkpoint
from autosam.sam.registry import check_image_size, get_backbone
from autosam.sam.setups import Setup
from autosam.sam_plan import PLANS_NAME, SAM_CONFIGURATION, BaseCheckpoint, SamPlan

BASELINE_PLANS = "nnUNetPlans"
DEFAULT_BATCH_SIZE = 2  # the study's batch size; SAM's patches are large


@dataclass
class SamOptions:
    """What the user asked for; anything left None is chosen here."""

    setup: str = "vit_b_encdec_lora"
    image_size: int | None = None
    batch_size: int | None = None
    checkpoint: str | None = None  # catalogue name or path; default: the backbone's official weights
    checkpoint_dir: str | None = None
    from_scratch: bool = False
    num_epochs: int | None = None
    iterations_per_epoch: int | None = None
    lora_rank: int | None = None


def base_checkpoint_for(setup: Setup, options: SamOptions) -> tuple[BaseCheckpoint | None, list[str]]:
    """Where the base weights are; planning never needs the file itself, only a warning when it is absent."""
    if options.from_scratch:
        return None, [f"--from-scratch: {setup.backbone} starts from random weights; expect far lower Dice "
                      "than from pretrained SAM weights"]
    name = options.checkpoint or get_backbone(setup.backbone).checkpoint
    if name is None:
        raise AutosamError(f"backbone {setup.backbone} has no published weights: plan with --from-scratch")
    entry = CATALOGUE.get(name)
    try:
        path = str(find_checkpoint(name, options.checkpoint_dir).resolve())
        warnings = []
    except AutosamError as e:
        if entry is None:
            raise
        path, warnings = None, [str(e)]
    file = entry.filename if entry else name.rsplit("/", 1)[-1]
    return BaseCheckpoint(entry.name if entry else file, file, path, entry.sha256 if entry else None), warnings


def make_sam_plan(options: SamOptions) -> SamPlan:
    setup = Setup.parse(options.setup, **({"lora_rank": options.lora_rank,
                                           "lora_alpha": float(options.lora_rank)} if options.lora_rank else {}))
    image_size = options.image_size or 1024
    check_image_size(get_backbone(setup.backbone), image_size)
    base, warnings = base_checkpoint_for(setup, options)
    entry = CATALOGUE.get(base.name) if base else None
    epochs = options.num_epochs or 100
    iterations = options.iterations_per_epoch or 250
    full_encoder = setup.method == "vanilla" and setup.trains_encoder
    return SamPlan(
        setup=setup,
        image_size=image_size,
        normalisation=entry.normalisation if entry else "imagenet",
        base_checkpoint=base,
        learning_rate=1e-4 if full_encoder else 1e-3,
        warmup_iterations=min(200, max(1, epochs * iterations // 10)),
        num_epochs=epochs,
        iterations_per_epoch=iterations,
        val_iterations_per_epoch=max(1, min(50, iterations // 5)),
        reasons={
            "learning_rate": "AdamW 1e-3 as in the study; 1e-4 when every encoder weight trains",
            "warmup_iterations": "the study warms up for 200 iterations; at most 10% of a shorter budget",
        },
        warnings=warnings,
    )


class SAMPlanner(ExperimentPlanner):
    """nnU-Net's default planner plus a ``2d_sam`` configuration; shares the baseline's preprocessed data."""

    def __init__(
        self,
        dataset_name_or_id: str | int,
        gpu_memory_target_in_gb: float = 8,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str = PLANS_NAME,
        overwrite_target_spacing=None,
        suppress_transpose: bool = False,
        sam_options: SamOptions | None = None,
    ) -> None:
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.sam_options = sam_options or SamOptions()

    def generate_data_identifier(self, configuration_name: str) -> str:
        return f"{BASELINE_PLANS}_{configuration_name}"

    def plan_experiment(self) -> dict:
        plans = super().plan_experiment()
        sam_plan = make_sam_plan(self.sam_options)
        configuration = {
            "inherits_from": "2d",
            "batch_size": self.sam_options.batch_size or DEFAULT_BATCH_SIZE,
            "sam": sam_plan.to_dict(),
        }
        plans["configurations"][SAM_CONFIGURATION] = configuration
        self.plans = plans
        self.save_plans(plans)
        return plans
