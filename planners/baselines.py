"""nnU-Net's baselines as nnU-Net's users name them, planned by nnU-Net's own planners.

A baseline is a preset and a configuration, written ``2d``, ``3d_fullres`` (the plain U-Net, ``nnUNetPlans``) or
``resenc_m:2d``, ``resenc_m:3d_fullres``, ``resenc_l:2d``, ``resenc_l:3d_fullres``: the residual-encoder presets of
"nnU-Net Revisited" (Isensee et al., MICCAI 2024), which nnU-Net now recommends over the plain U-Net. A ResEnc
preset is planned by nnU-Net's ``nnUNetPlannerResEncM`` / ``nnUNetPlannerResEncL`` into ``nnUNetResEncUNetMPlans`` /
``nnUNetResEncUNetLPlans`` and trained by the stock ``nnUNetTrainer`` with that plans identifier, as
``nnUNetv2_train DATASET 2d FOLD -p nnUNetResEncUNetMPlans`` would. Those planners reuse the plain plans'
preprocessed data for ``2d`` and ``3d_fullres``, so a ResEnc baseline adds no preprocessing.

Default: the plain configurations; on a GPU also ResEnc M at the same configurations. On a CPU ResEnc M is left
out: its encoder has 1-3-4-6-6-6 residual blocks per stage against the plain U-Net's two convolutions, several
times the compute per step, and a CPU run is sized for a demo or a test; ``--baselines`` adds it anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncL,
    nnUNetPlannerResEncM,
)

from autosam.errors import AutosamError
from autosam.paths import Dataset
from autosam.planners.preprocess import planning_processes
from autosam.planners.sam_planner import BASELINE_PLANS

# preset -> (nnU-Net's planner, the plans identifier it writes, the name in the report)
RESENC = {
    "resenc_m": (nnUNetPlannerResEncM, "nnUNetResEncUNetMPlans", "ResEnc M"),
    "resenc_l": (nnUNetPlannerResEncL, "nnUNetResEncUNetLPlans", "ResEnc L"),
}
CONFIGURATIONS = ("2d", "3d_fullres")
RECOMMENDED = "resenc_m"  # nnU-Net's recommended preset on a GPU ("nnU-Net Revisited")


@dataclass(frozen=True)
class Baseline:
    configuration: str  # "2d", "3d_fullres"
    preset: str = ""  # "" (the plain U-Net), "resenc_m", "resenc_l"

    @property
    def plans(self) -> str:
        return RESENC[self.preset][1] if self.preset else BASELINE_PLANS

    @property
    def name(self) -> str:
        """The method's name in the report: ``nnU-Net 2d``, ``nnU-Net ResEnc M 2d``."""
        return f"nnU-Net {RESENC[self.preset][2] + ' ' if self.preset else ''}{self.configuration}"

    @property
    def spelling(self) -> str:
        return f"{self.preset}:{self.configuration}" if self.preset else self.configuration


CHOICES = [Baseline(c, p).spelling for p in ("", *RESENC) for c in CONFIGURATIONS]


def parse_baselines(spellings: list[str]) -> list[Baseline]:
    """``--baselines`` values as baselines, in the order given; an unknown one is a one-line error."""
    baselines = []
    for spelling in spellings:
        preset, _, configuration = spelling.rpartition(":")
        if spelling not in CHOICES:
            raise AutosamError(f"--baselines {spelling}: not an nnU-Net preset; choose from {', '.join(CHOICES)}")
        if Baseline(configuration, preset) not in baselines:
            baselines.append(Baseline(configuration, preset))
    return baselines


def default_baselines(configurations: tuple[str, ...], on_gpu: bool) -> list[Baseline]:
    """The plain ``configurations``; on a GPU also nnU-Net's recommended ResEnc M at each (see the module)."""
    return [Baseline(c) for c in configurations] + (
        [Baseline(c, RECOMMENDED) for c in configurations] if on_gpu else []
    )


def plan_baselines(dataset: Dataset, baselines: list[Baseline]) -> None:
    """Each ResEnc preset's plans, by nnU-Net's own planner, unless its plans file exists (it reads the fingerprint
    that ``preprocess.plan`` wrote). A preset whose configuration nnU-Net did not plan (3d_fullres on 2D data), or
    whose data are not the plain plans' (a future nnU-Net), is refused."""
    for preset in dict.fromkeys(b.preset for b in baselines if b.preset):
        planner, plans, _ = RESENC[preset]
        if not (dataset.preprocessed / f"{plans}.json").is_file():
            with planning_processes():
                planner(dataset.id).plan_experiment()
    plain = json.loads((dataset.preprocessed / f"{BASELINE_PLANS}.json").read_text())["configurations"]
    for b in baselines:
        planned = json.loads((dataset.preprocessed / f"{b.plans}.json").read_text())["configurations"]
        if b.configuration not in planned:
            raise AutosamError(
                f"--baselines {b.spelling}: nnU-Net planned no '{b.configuration}' configuration for "
                f"{dataset.name} (2D data has only '2d')"
            )
        if b.preset and planned[b.configuration]["data_identifier"] != plain[b.configuration]["data_identifier"]:
            raise AutosamError(
                f"{dataset.preprocessed / b.plans}.json: {b.configuration} does not share the plain "
                "plans' preprocessed data; autosam preprocesses only those"
            )


def baseline_sentence(trained: list[Baseline], default_on_cpu: bool) -> str:
    """The headline's line on the baselines: which were trained and, when only the plain U-Net was, that nnU-Net's
    recommended preset was not (so the comparison is not against nnU-Net's strongest)."""
    line = "baselines: " + ", ".join(b.name for b in trained)
    if all(not b.preset for b in trained):
        why = "the CPU default leaves it out" if default_on_cpu else "not in --baselines"
        line += (
            f"; nnU-Net's recommended residual-encoder preset (ResEnc M, 'nnU-Net Revisited' 2024) was NOT "
            f"trained ({why}; add --baselines {' '.join(b.spelling for b in trained)} "
            f"{' '.join(f'{RECOMMENDED}:{c}' for c in dict.fromkeys(b.configuration for b in trained))}): "
            "SAM is compared with the plain U-Net, not nnU-Net's strongest"
        )
    return line
