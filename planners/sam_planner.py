"""nnU-Net experiment planner that adds the SAM configuration ``2d_sam`` to nnU-Net's own plans.

The plans file (``autosamPlans``) holds nnU-Net's regular configurations and ``2d_sam``, which inherits
``2d``: the same normalisation, resampling and ``splits_final.json`` as the nnU-Net baseline, so a comparison
differs only in the network, its training and (``sam_sized``) the in-plane spacing SAM's input needs.
The set-up and its numbers are chosen by ``autosam.planners.choose`` from the dataset's facts and the machine.
nnU-Net's ``-pl`` flag only searches its own package; use the class from Python or ``autosam plan``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from autosam.errors import AutosamError
from autosam.files import atomic_write_json
from autosam.paths import Dataset
from autosam.planners.choose import choose
from autosam.planners.fingerprint import dataset_facts
from autosam.planners.hardware import Hardware, detect_hardware
from autosam.planners.rules import RULES, cite, set_by_user
from autosam.plans import DEFAULT_SEED, PLANS_NAME, SAM_CONFIGURATION, BaseCheckpoint, SamPlan
from autosam.sam.prompts import check_mode
from autosam.sam.setups import Setup
from autosam.sam.weights.catalogue import catalogue_entry, catalogue_entry_for, find_checkpoint

BASELINE_PLANS = "nnUNetPlans"


@dataclass
class SamOptions:
    """What the user fixed; anything left None is chosen by the planner (and recorded as such)."""

    setup: str | None = None
    image_size: int | None = None
    batch_size: int | None = None
    checkpoint: str | None = None  # catalogue name or path
    checkpoint_dir: str | None = None
    from_scratch: bool = False
    num_epochs: int | None = None
    iterations_per_epoch: int | None = None
    lora_rank: int | None = None
    unlabelled_dir: str | None = None
    native_patches: bool = False  # keep nnU-Net's 2d patch and data (the network resizes to its input)
    embedding_cache: bool = True  # False: --no-embedding-cache (decoder-only set-ups encode every patch)
    seed: int | None = None
    prompts: str | None = None  # train with box/point prompts derived from the reference (autosam.sam.prompts.MODES)
    family: str | None = None  # "sam" or "sam2": the family the planner chooses from (R28); None: by the weights present


def base_checkpoint_for(setup: Setup, name: str | None, checkpoint_dir: str | None = None
                        ) -> tuple[BaseCheckpoint | None, list[str]]:
    """Where the base weights are; planning never needs the file itself, only a warning when it is absent."""
    if name is None:
        return None, [(f"--from-scratch: {setup.backbone} starts from random weights; expect far lower Dice "
                      "than from pretrained SAM weights")]
    entry = catalogue_entry(name, checkpoint_dir)  # official, or in the folder's user catalogue
    try:
        found = find_checkpoint(name, checkpoint_dir).resolve()
        path, warnings = str(found), []
        entry = entry or catalogue_entry_for(found)  # a user-catalogued file given by its path
    except AutosamError as e:
        if entry is None:
            raise
        path, warnings = None, [str(e)]
    if entry is not None and entry.backbone != setup.backbone:
        raise AutosamError(f"--checkpoint {name}: holds {entry.backbone} weights, but the set-up is {setup.name}")
    file = entry.filename if entry else Path(name).name
    return BaseCheckpoint(entry.name if entry else file, file, path, entry.sha256 if entry else None), warnings


def sam_sized(configuration: dict, image_size: int) -> tuple[dict, str]:
    """``2d_sam``'s own spacing, patch and data, and why.

    The SAM network resizes whatever patch it gets to its square input. When nnU-Net's 2d patch is larger,
    that resize moves into nnU-Net's preprocessing instead: each in-plane spacing is coarsened by the factor the
    network would shrink that axis by, so a patch of the SAM input size covers the same field of view as the
    2d patch, augmentation runs on the pixels SAM sees, and the resolution given up is written in the plan. An
    axis already smaller than the input keeps its spacing (the network enlarges it; nothing is lost)."""
    patch = configuration["patch_size"]
    factors = [max(1.0, p / image_size) for p in patch]
    if all(f == 1.0 for f in factors):
        return {}, (f"nnU-Net's 2d patch {'x'.join(map(str, patch))} fits the {image_size} px SAM input: "
                    f"2d's preprocessed data and patch are used as they are ({RULES['R25'].label})")
    spacing = [s * f for s, f in zip(configuration["spacing"], factors)]
    layout = {
        "spacing": spacing,
        "patch_size": [min(p, image_size) for p in patch],
        "median_image_size_in_voxels": [round(m / f) for m, f in zip(configuration["median_image_size_in_voxels"],
                                                                      factors)],
        "data_identifier": f"{PLANS_NAME}_{SAM_CONFIGURATION}_{image_size}px",
    }
    shown = lambda values: " x ".join(f"{v:.3g}" for v in values)
    return layout, (f"nnU-Net's 2d patch {'x'.join(map(str, patch))} at spacing {shown(configuration['spacing'])} "
                    f"would be resized to the {image_size} px SAM input inside the network; instead the data are "
                    f"resampled to spacing {shown(spacing)} (the same field of view, the resolution SAM sees) and "
                    f"patches are {'x'.join(map(str, layout['patch_size']))}, so augmentation runs on what SAM sees "
                    f"(own preprocessed data; --native-patches keeps 2d's; {cite('R25')})")


class SAMPlanner(ExperimentPlanner):
    """nnU-Net's default planner plus a ``2d_sam`` configuration, with patches of the SAM input size."""

    def __init__(self, dataset_name_or_id: str | int, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = PLANS_NAME,
                 overwrite_target_spacing=None, suppress_transpose: bool = False,
                 sam_options: SamOptions | None = None, hardware: Hardware | None = None, write: bool = True) -> None:
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.sam_options = sam_options or SamOptions()
        self.hardware = hardware or detect_hardware()
        self.choice = None
        self.write = write  # False: a preview, nothing saved

    def generate_data_identifier(self, configuration_name: str) -> str:
        return f"{BASELINE_PLANS}_{configuration_name}"

    def plan_experiment(self) -> dict:
        plans = super().plan_experiment()
        options = self.sam_options
        dataset = Dataset.resolve(self.dataset_name)
        facts = dataset_facts(dataset.raw, dataset.preprocessed, plans["transpose_forward"], options.unlabelled_dir,
                              options.checkpoint_dir)
        num_classes = len([v for v in self.dataset_json["labels"].values() if isinstance(v, int)])
        channels = len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        patch = plans["configurations"]["2d"]["patch_size"]
        self.choice = choice = choose(facts, self.hardware, num_classes, channels, patch, options)
        base, missing = base_checkpoint_for(choice.setup, choice.base_checkpoint, options.checkpoint_dir)
        entry = base and (catalogue_entry_for(Path(base.path)) if base.path else catalogue_entry(base.name))
        plan = SamPlan(
            setup=choice.setup, image_size=choice.image_size,
            normalisation=entry.normalisation if entry else "imagenet", base_checkpoint=base,
            learning_rate=choice.learning_rate, num_epochs=choice.num_epochs,
            iterations_per_epoch=choice.iterations_per_epoch,
            val_iterations_per_epoch=max(1, min(50, choice.iterations_per_epoch // 5)),
            gradient_checkpointing=choice.gradient_checkpointing,
            seed=DEFAULT_SEED if options.seed is None else options.seed,
            predicted_memory_gb=round(choice.predicted_memory_gb, 2), hardware=self.hardware.description,
            reasons=choice.reasons, overridden=choice.overridden, warnings=missing + choice.warnings,
            candidates=[c.to_dict() for c in choice.candidates],
            embedding_cache=options.embedding_cache,
        )
        if options.prompts is not None:
            plan.prompts = check_mode(options.prompts)
            plan.reasons["prompts"] = ("each training image is prompted with its reference's boxes/points half of the "
                                       f"time, else promptless; {set_by_user(f'--prompts {options.prompts}')}")
            plan.overridden.append("prompts")
        layout, plan.reasons["patch_size"] = sam_sized(plans["configurations"]["2d"], choice.image_size)
        if options.native_patches:
            layout, plan.reasons["patch_size"] = {}, f"nnU-Net's 2d patch and data, {set_by_user('--native-patches')}"
            plan.overridden.append("patch_size")
        plans["configurations"][SAM_CONFIGURATION] = {
            "inherits_from": "2d",
            **layout,
            "batch_size": choice.batch_size,
            "sam": plan.to_dict(),
            "autosam_dataset_facts": facts.to_dict(),
        }
        self.plans = plans
        self.save_plans(plans)
        return plans

    def save_plans(self, plans: dict) -> None:
        """Written atomically, so a full disk or a crash keeps the previous plans; configurations the file
        holds beyond these plans' (a user's own) are kept, as nnU-Net's planner keeps them."""
        if not self.write:
            return
        recursive_fix_for_json_export(plans)
        path = Dataset.resolve(self.dataset_name).preprocessed / f"{self.plans_identifier}.json"
        if path.is_file():
            own = json.loads(path.read_text())["configurations"]
            plans["configurations"].update({k: v for k, v in own.items() if k not in plans["configurations"]})
        atomic_write_json(plans, path)
        print(f"Plans were saved to {path}")
