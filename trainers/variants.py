"""The fixed set-ups as trainers, ``nnUNetTrainerSAM_<backbone>_<scope>_<method>``, for ablations: the study's 18
(ViT-T, ViT-B, ViT-H) and SAM 2.1's 24 (Hiera-T, -S, -B+, -L).

Each trains the set-up it names, at that set-up's learning rate, whatever set-up the plan chose.
"""

from __future__ import annotations

from autosam.errors import AutosamError
from autosam.sam.registry import STUDY_BACKBONES
from autosam.sam.setups import all_setups
from autosam.trainers.sam_trainer import nnUNetTrainerSAM

VARIANT_BACKBONES = (*STUDY_BACKBONES, "sam2_t", "sam2_s", "sam2_bplus", "sam2_l")


def _variant(setup: str) -> type[nnUNetTrainerSAM]:
    """``nnUNetTrainerSAM_<setup>``, a module-level class (nnU-Net finds trainers by name; Ray and DDP pickle them)."""
    name = f"{nnUNetTrainerSAM.__name__}_{setup}"
    return type(name, (nnUNetTrainerSAM,), {"setup_override": setup, "__module__": __name__, "__qualname__": name})


globals().update({cls.__name__: cls for cls in map(_variant, (s.name for s in all_setups(VARIANT_BACKBONES)))})

PLANNED = "planned"  # --setup planned: the set-up the plan chose (trainer nnUNetTrainerSAM)
VARIANTS: dict[str, type[nnUNetTrainerSAM]] = {
    cls.__name__: cls for cls in nnUNetTrainerSAM.__subclasses__() if cls.__module__ == __name__
}


def trainer_class(name: str) -> type[nnUNetTrainerSAM]:
    """``nnUNetTrainerSAM`` or one of the fixed set-ups' variants, by trainer name."""
    if name == nnUNetTrainerSAM.__name__:
        return nnUNetTrainerSAM
    if name not in VARIANTS:
        setup = name.removeprefix(nnUNetTrainerSAM.__name__ + "_")
        raise AutosamError(f"--setup {setup}: no trainer for this set-up; the fixed set-ups are the study's 18 and "
                           "SAM 2.1's 24 (list them with 'autosam setups')")
    return VARIANTS[name]


def trainer_name(setup: str | None) -> str:
    """The trainer of a fixed set-up; ``None`` or ``"planned"`` is the planned set-up (``nnUNetTrainerSAM``)."""
    return nnUNetTrainerSAM.__name__ if setup in (None, PLANNED) else f"{nnUNetTrainerSAM.__name__}_{setup}"


def trainer_for_setup(setup: str | None) -> type[nnUNetTrainerSAM]:
    return trainer_class(trainer_name(setup))
